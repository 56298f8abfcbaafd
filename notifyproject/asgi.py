"""The ASGI application: HTTP through Django (long waits and common sends beside it), WebSockets
through Channels."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifyproject.settings")
django.setup(set_prefix=False)  # as get_asgi_application() does

from notifyproject.logredact import drop_twisted_access_log, redact_daphne_access_log  # noqa: E402

redact_daphne_access_log()  # before the first request: `?token=` never reaches the access log
drop_twisted_access_log()

from django.conf import settings  # noqa: E402

from notifyproject import daphne_body_limit, twisted_request  # noqa: E402
from notifyproject.handler import OneHopASGIHandler  # noqa: E402
from notifyproject.request_guards import RequestGuard  # noqa: E402

# daphne buffers a request's body before calling the application; refuse oversized ones there.
daphne_body_limit.install(settings.CLARION_MAX_BODY_BYTES)
twisted_request.install()

django_asgi_app = OneHopASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from delivery.send_endpoint import DirectSends  # noqa: E402
from realtime.auth import SessionsForCookieSockets  # noqa: E402
from realtime.longwait import LongWaitEndpoints  # noqa: E402
from realtime.node import StartRealtimeNode  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402

application = RequestGuard(
    ProtocolTypeRouter(
        {
            # Long-polls and event streams wait without a thread each (realtime/longwait.py);
            # a common send is answered without a Django request (delivery/send_endpoint.py).
            "http": DirectSends(LongWaitEndpoints(django_asgi_app)),
            # Origins are checked per connection in realtime.auth: token sockets may come from
            # the embedding app's origin, session sockets only from this site's own origins.
            "websocket": SessionsForCookieSockets(URLRouter(websocket_urlpatterns)),
        }
    ),
    max_body_bytes=settings.CLARION_MAX_BODY_BYTES,
)
application = StartRealtimeNode(application)  # the node's subscription is up before a socket needs it

if settings.CLARION_EMBEDDED_WORKER:
    from notifyproject.embedded import start_embedded_worker

    start_embedded_worker()

from notifyproject.startup_heap import freeze_startup_heap  # noqa: E402

freeze_startup_heap()  # last: everything imported and built above is long-lived
