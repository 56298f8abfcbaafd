"""Who may call what: end users act on their own data; API keys and staff send and read.

Staff means a staff account signed in with this site's session (`credentials.has_staff_powers`):
an end-user token never carries staff powers, whoever its user is.
"""

from rest_framework.permissions import BasePermission

from notifyproject.identities import credentials
from notifyproject.identities.models import ApiKey


class IsEndUser(BasePermission):
    """A Django user (token or session), acting on their own devices, inbox and topics."""

    message = "This endpoint is for end users (Token or session); API keys cannot use it."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and not isinstance(request.auth, ApiKey))


class _HasScope(BasePermission):
    scope = ""

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ApiKey):
            if request.auth.has_scope(self.scope):
                return True
            self.message = f"This API key lacks the '{self.scope}' scope."
            return False
        self.message = f"Only API keys with the '{self.scope}' scope or signed-in staff may do this."
        return credentials.has_staff_powers(request)


class CanSend(_HasScope):
    scope = "send"


class CanRead(_HasScope):
    scope = "read"
