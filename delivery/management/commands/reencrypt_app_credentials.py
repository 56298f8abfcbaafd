from django.core.management.base import BaseCommand, CommandError

from delivery.push_apps import app_credentials_reencrypt
from notifyproject.encryption import DecryptionError, EncryptionKeyMissingError


class Command(BaseCommand):
    help = (
        "Rewrite every app's stored credentials under the first key of CLARION_ENCRYPTION_KEYS "
        "(after a new key was put first); then older keys can be dropped."
    )

    def handle(self, *args, **options):
        try:
            count = app_credentials_reencrypt()
        except (DecryptionError, EncryptionKeyMissingError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Re-encrypted the credentials of {count} app(s).")
