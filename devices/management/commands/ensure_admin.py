import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a superuser with a random password (printed once) when none exists."

    def handle(self, *args, **options):
        User = get_user_model()  # noqa: N806 - Django's idiom
        if User.objects.filter(is_superuser=True).exists():
            return
        username = "admin"
        while User.objects.filter(username=username).exists():
            username = f"admin-{secrets.token_hex(2)}"
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, password=password)
        self.stdout.write(
            self.style.SUCCESS(
                "\nCreated the first admin. This password is shown only now:\n"
                f"  username: {username}\n  password: {password}\n"
                "  sign in at http://127.0.0.1:8000/admin/\n"
            )
        )
