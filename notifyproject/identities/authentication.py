"""DRF authentication for product backends (`Authorization: Bearer <API key>`) and end users
(`Authorization: Token <client token>`, hashed and expiring).

Parsing and token checks live in `credentials`, shared with the realtime transports. Settings
name these classes in REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"].
"""

from datetime import timedelta

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from notifyproject.identities import credentials
from notifyproject.identities.models import ApiKey

# last_used_at is for humans reading the admin; a write per request would be waste.
LAST_USED_RESOLUTION = timedelta(minutes=1)


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
        try:
            api_key = ApiKey.objects.get_from_key(key)
        except ApiKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
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
