"""End-user token authentication (`Authorization: Token <key>`), hashed and expiring."""

from django.utils import timezone
from knox.auth import TokenAuthentication


class EndUserTokenAuthentication(TokenAuthentication):
    """knox's token auth without its per-request sweep of the user's other tokens.

    knox deletes every expired token of the user on each request, which is a query per
    token on the hot path; here an expired token is simply refused (and purged by the
    retention task).
    """

    def _cleanup_token(self, auth_token) -> bool:
        return auth_token.expiry is not None and auth_token.expiry < timezone.now()


def user_for_token(token: str):
    """The active user a raw end-user token belongs to, or None (for WebSocket/SSE auth)."""
    from rest_framework.exceptions import AuthenticationFailed

    try:
        user, _auth_token = EndUserTokenAuthentication().authenticate_credentials(token.encode())
    except (AuthenticationFailed, UnicodeError):
        return None
    return user
