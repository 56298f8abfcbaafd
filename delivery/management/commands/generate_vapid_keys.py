"""Print a new VAPID key pair (Web Push identity) as lines for an env file."""

from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management.base import BaseCommand, CommandError

from delivery.providers.transport import b64url_encode
from delivery.providers.webpush import vapid_public_key

P256_PRIVATE_KEY_BYTES = 32


class Command(BaseCommand):
    help = (
        "Print VAPID_PRIVATE_KEY (base64url raw P-256 key) and VAPID_PUBLIC_KEY (base64url "
        "uncompressed point, the browser's applicationServerKey) for an env file."
    )

    def add_arguments(self, parser):
        parser.add_argument("--subject", help="also print VAPID_SUBJECT, a mailto: or https: URI")

    def handle(self, *args, subject: str | None = None, **options):
        if subject is not None and not subject.startswith(("mailto:", "https:")):
            raise CommandError("--subject must be a mailto: or https: URI, e.g. mailto:ops@example.com")
        key = ec.generate_private_key(ec.SECP256R1())
        private = key.private_numbers().private_value.to_bytes(P256_PRIVATE_KEY_BYTES, "big")
        self.stdout.write(f"VAPID_PRIVATE_KEY={b64url_encode(private)}")
        self.stdout.write(f"VAPID_PUBLIC_KEY={vapid_public_key(key)}")
        if subject is not None:
            self.stdout.write(f"VAPID_SUBJECT={subject}")
