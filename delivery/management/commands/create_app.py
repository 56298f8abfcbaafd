from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from delivery.push_apps import PLAIN_FIELDS, app_create
from devices.models import App
from notifyproject.encryption import EncryptionKeyMissingError


class Command(BaseCommand):
    help = (
        "Create an app: a set of push credentials beside the environment's `default` app. "
        "Secrets are stored encrypted with CLARION_ENCRYPTION_KEYS (docs/apps.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="[a-z0-9-]{1,40}; devices and sends name the app by it.")
        parser.add_argument("--name", default="")
        parser.add_argument("--fcm-credentials", metavar="PATH", help="Firebase service-account JSON file.")
        parser.add_argument("--fcm-endpoint", metavar="URL", default="")
        parser.add_argument("--apns-key", metavar="PATH", help="APNs .p8 key file.")
        parser.add_argument("--apns-key-id", metavar="ID", default="")
        parser.add_argument("--apns-team-id", metavar="ID", default="")
        parser.add_argument("--apns-topic", metavar="BUNDLE", default="")
        parser.add_argument("--apns-endpoint", metavar="URL", default="")
        parser.add_argument("--apns-sandbox-endpoint", metavar="URL", default="")
        parser.add_argument("--vapid-private-key", metavar="K", default="")
        parser.add_argument("--vapid-public-key", metavar="K", default="")
        parser.add_argument("--vapid-subject", metavar="S", default="")

    def handle(self, *args, slug, **options):
        if App.objects.filter(slug=slug).exists():
            raise CommandError(f"An app {slug!r} exists already; edit it in the admin.")
        secrets = {
            "fcm_credentials": _read(options["fcm_credentials"], "--fcm-credentials"),
            "apns_key": _read(options["apns_key"], "--apns-key"),
            "vapid_private_key": options["vapid_private_key"],
        }
        try:
            app = app_create(slug=slug, secrets=secrets, **{field: options[field] for field in PLAIN_FIELDS})
        except ValidationError as exc:
            problems = "; ".join(
                f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
            )
            raise CommandError(f"App not created: {problems}") from None
        except EncryptionKeyMissingError as exc:
            raise CommandError(str(exc)) from None
        platforms = [
            name
            for name, field in (
                ("fcm", "fcm_credentials"),
                ("apns", "apns_key"),
                ("webpush", "vapid_private_key"),
            )
            if getattr(app, field)
        ]
        self.stdout.write(f"Created app {app.slug} ({', '.join(platforms) or 'no push credentials yet'}).")


def _read(path: str | None, option: str) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{option}: cannot read {path}: {exc}") from None
