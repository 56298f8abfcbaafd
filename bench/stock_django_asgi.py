"""The baseline for bench/request_cost.py: the same Django project behind Django's own ASGI handler."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifyproject.settings")
application = get_asgi_application()
