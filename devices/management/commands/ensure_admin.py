"""The first admin of a new instance, and a new password for it when the old one is lost."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

# Where the generated password is kept for its owner (var/ is git-ignored); mode 0600.
PASSWORD_FILE = Path(settings.BASE_DIR) / "var" / "admin-password.txt"


class Command(BaseCommand):
    help = (
        "Create a superuser with a random password when none exists; --reset gives an existing "
        "one a new random password. The password is printed and written to var/admin-password.txt "
        "(readable only by you)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset", action="store_true", help="Set a new random password for an existing admin."
        )
        parser.add_argument(
            "--username", default=None, help="The admin to reset (default: the first superuser)."
        )
        parser.add_argument(
            "--password-file", type=Path, default=PASSWORD_FILE, help="Where to write the password."
        )

    def handle(self, *args, reset: bool, username: str | None, password_file: Path, **options):
        self.password_file = password_file
        User = get_user_model()  # noqa: N806 - Django's idiom
        password = secrets.token_urlsafe(12)
        if reset:
            admins = User.objects.filter(is_superuser=True).order_by("pk")
            user = admins.filter(username=username).first() if username else admins.first()
            if user is None:
                raise CommandError(
                    f"No superuser named {username!r}." if username else "There is no superuser yet."
                )
            user.set_password(password)
            user.save(update_fields=["password"])
            self._show(user.username, password, "New password for")
            return
        if User.objects.filter(is_superuser=True).exists():
            return
        username = "admin"
        while User.objects.filter(username=username).exists():
            username = f"admin-{secrets.token_hex(2)}"
        User.objects.create_superuser(username=username, password=password)
        self._show(username, password, "Created the first admin,")

    def _show(self, username: str, password: str, what: str) -> None:
        self.password_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # an older file keeps its mode through O_CREAT
        with os.fdopen(descriptor, "w") as file:
            file.write(f"username: {username}\npassword: {password}\n")
        self.stdout.write(
            self.style.SUCCESS(
                f"\n{what} {username}:\n"
                f"  username: {username}\n  password: {password}\n"
                f"  also in {self.password_file} (readable only by you)\n"
                "  sign in at /admin/; a new password any time: make admin-password\n"
            )
        )
