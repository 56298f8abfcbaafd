"""API key authentication for product backends (`Authorization: Bearer <key>`)."""

from datetime import timedelta

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from delivery.models import ApiKey
from notifyproject import identities

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


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        try:
            key = identities.authorization_credentials(
                get_authorization_header(request), identities.API_KEY_SCHEME
            )
        except identities.MalformedCredentialsError as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
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

    def authenticate_header(self, request):
        return identities.API_KEY_SCHEME
