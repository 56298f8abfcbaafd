"""DRF authentication for product backends (`Authorization: Bearer <API key>`) and end users
(`Authorization: Token <client token>`, hashed and expiring).

Parsing and token checks live in `credentials`, shared with the realtime transports. Settings
name these classes in REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"].

A verified key is remembered in this process for API_KEY_CACHE_SECS, keyed by a SHA-256 digest
of the presented key (never the key itself): a backend sending many notifications then costs
no database round trip per request for its key. Any save or delete of an ApiKey in this process
(the admin's revoke action, `revoked = True; save()`) empties the cache at once; a key revoked
by another process is refused here within API_KEY_CACHE_SECS. Expiry is checked on every request.
Only keys that verified are cached, and at most API_KEY_CACHE_MAX of them.
"""

import hashlib
import threading
import time
from datetime import timedelta

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from notifyproject.identities import credentials
from notifyproject.identities.models import ApiKey

# last_used_at is for humans reading the admin; a write per request would be waste.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# How long another process's revocation may take to reach this one: a few seconds is short next
# to how long a leaked key goes unnoticed, and saves a query on every request of a busy sender.
API_KEY_CACHE_SECS = 5.0
API_KEY_CACHE_MAX = 1024  # distinct keys remembered; beyond it the cache starts over

_verified: dict[bytes, tuple[float, ApiKey]] = {}  # digest of the presented key → (until, key)
_verified_lock = threading.Lock()


def api_key_verified(key: str) -> ApiKey:
    """The unrevoked ApiKey the presented key verifies against; ApiKey.DoesNotExist if none."""
    digest = hashlib.sha256(key.encode()).digest()
    now = time.monotonic()
    cached = _verified.get(digest)
    if cached is not None and cached[0] > now:
        return cached[1]
    api_key = ApiKey.objects.get_from_key(key)
    with _verified_lock:
        if len(_verified) >= API_KEY_CACHE_MAX:
            _verified.clear()
        _verified[digest] = (now + API_KEY_CACHE_SECS, api_key)
    return api_key


def api_key_caller(key: str) -> ApiKey:
    """The ApiKey a request presenting `key` acts as, its last use noted (to the minute);
    AuthenticationFailed if the key is unknown, revoked or expired."""
    try:
        api_key = api_key_verified(key)
    except ApiKey.DoesNotExist:
        raise exceptions.AuthenticationFailed("Invalid API key.") from None
    if api_key.has_expired:
        raise exceptions.AuthenticationFailed("This API key has expired.")
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now  # the cached instance too: the next write is a minute away
    return api_key


@receiver([post_save, post_delete], sender=ApiKey, dispatch_uid="api_key_cache_clear")
def api_key_cache_clear(**_kwargs) -> None:
    """A key changed here (revoked, re-scoped, deleted): nothing cached may outlive the change."""
    with _verified_lock:
        _verified.clear()


class ApiKeyPrincipal:
    """request.user for an API key: authenticated, but not a Django user or staff."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    is_active = True
    pk = None

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key

    def __str__(self) -> str:
        return f"API key {self.api_key.name}"

    def get_username(self) -> str:
        return ""

    def has_perm(self, perm, obj=None) -> bool:
        return False


class _SchemeAuthentication(BaseAuthentication):
    """Reads `Authorization: <scheme> <credentials>`; another scheme is left to the next class."""

    scheme = ""

    def presented(self, request) -> str | None:
        try:
            return credentials.authorization_credentials(get_authorization_header(request), self.scheme)
        except credentials.MalformedCredentialsError as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None

    def authenticate_header(self, request):
        return self.scheme


class ApiKeyAuthentication(_SchemeAuthentication):
    scheme = credentials.API_KEY_SCHEME

    def authenticate(self, request):
        key = self.presented(request)
        if key is None:
            return None
        api_key = api_key_caller(key)
        return ApiKeyPrincipal(api_key), api_key


class EndUserTokenAuthentication(_SchemeAuthentication):
    """request.user is the token's end user; request.auth its knox AuthToken (no staff powers)."""

    scheme = credentials.TOKEN_SCHEME

    def authenticate(self, request):
        token = self.presented(request)
        if token is None:
            return None
        identity = credentials.authenticate_token(token)
        if identity is None:
            raise exceptions.AuthenticationFailed("Invalid or expired token.")
        return identity.user, identity.auth_token
