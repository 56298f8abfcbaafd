"""End-user token authentication (`Authorization: Token <key>`), hashed and expiring.

Parsing and checking live in notifyproject/identities.py, shared with the realtime transports.
"""

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from notifyproject import identities


class EndUserTokenAuthentication(BaseAuthentication):
    """request.user is the token's end user; request.auth its knox AuthToken (no staff powers)."""

    def authenticate(self, request):
        try:
            token = identities.authorization_credentials(
                get_authorization_header(request), identities.TOKEN_SCHEME
            )
        except identities.MalformedCredentialsError as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        if token is None:
            return None
        identity = identities.authenticate_token(token)
        if identity is None:
            raise exceptions.AuthenticationFailed("Invalid or expired token.")
        return identity.user, identity.auth_token

    def authenticate_header(self, request):
        return identities.TOKEN_SCHEME
