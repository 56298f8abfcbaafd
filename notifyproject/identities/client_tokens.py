"""End users and their tokens: a product backend names a user by its own id and mints a token.

Tokens are knox's (only a sha512 digest is stored); `credentials` checks them.
"""

from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from knox.models import AuthToken

from notifyproject.identities.credentials import may_hold_client_token

User = get_user_model()


def end_user_get_or_create(username: str):
    """The Django user a product backend names by its own id, created without a password."""
    user = User.objects.filter(username=username).first()
    if user is not None:
        return user
    try:
        with transaction.atomic():
            user = User(username=username)
            user.set_unusable_password()
            user.save()
            return user
    except IntegrityError:
        return User.objects.get(username=username)


def end_user_token_create(*, user, ttl: timedelta | None) -> tuple[str, datetime | None]:
    """Mint an end-user token; only its digest is stored. Returns (token, expires_at)."""
    instance, token = AuthToken.objects.create(user=user, expiry=ttl)
    return token, instance.expiry


class ClientTokenRefusedError(Exception):
    """The named account may not hold a client token (a staff account, or deactivated)."""


def client_token_create(*, username: str, ttl: timedelta) -> tuple[str, datetime | None]:
    """A product backend's token for one of its end users (created if unknown).

    Staff and superuser accounts are refused before anything is written: a client token
    must never let a `send` key act as an administrator.
    """
    user = end_user_get_or_create(username)  # an existing account is only read
    if not may_hold_client_token(user):
        raise ClientTokenRefusedError("Client tokens are for end users only; this account cannot have one.")
    if not user.is_active:
        raise ClientTokenRefusedError("That user is deactivated.")
    return end_user_token_create(user=user, ttl=ttl)
