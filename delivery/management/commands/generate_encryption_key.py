from django.core.management.base import BaseCommand

from notifyproject.encryption import generate_key


class Command(BaseCommand):
    help = "Print a new key for CLARION_ENCRYPTION_KEYS (Fernet: 32 random bytes, base64url)."

    def handle(self, *args, **options):
        self.stdout.write(generate_key())
