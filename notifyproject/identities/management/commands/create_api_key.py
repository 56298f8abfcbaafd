from django.core.management.base import BaseCommand, CommandError

from devices.selectors import app_exists
from notifyproject.identities.api_keys import api_key_create
from notifyproject.identities.models import ApiScope


class Command(BaseCommand):
    help = "Create an API key for a product backend and print it once (only a hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="A name for the key, e.g. the backend that uses it.")
        parser.add_argument(
            "--scopes", default="send,read", help="Comma-separated: send, read (default both)."
        )
        parser.add_argument(
            "--app",
            default="",
            metavar="SLUG",
            help="Bind the key to this app: it sends only to the app's devices and reads only its own sends.",
        )

    def handle(self, *args, name, scopes, app, **options):
        wanted = [s.strip() for s in scopes.split(",") if s.strip()]
        unknown = sorted(set(wanted) - set(ApiScope.values))
        if unknown or not wanted:
            raise CommandError(f"Scopes are send and read; got {scopes!r}.")
        if len(name) > 50:
            raise CommandError("The name has at most 50 characters.")
        if app and not app_exists(app):
            raise CommandError(f"No app named {app!r} (manage.py create_app {app} creates it).")
        _api_key, key = api_key_create(name=name, scopes=wanted, app=app)
        self.stdout.write(key)
