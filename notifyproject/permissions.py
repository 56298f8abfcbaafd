"""Who may call what: end users act on their own data; API keys and staff send and read."""

from rest_framework.permissions import BasePermission

from delivery.models import ApiKey


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
        user = request.user
        self.message = f"Only API keys with the '{self.scope}' scope or staff may do this."
        return bool(user and user.is_authenticated and user.is_staff)


class CanSend(_HasScope):
    scope = "send"


class CanRead(_HasScope):
    scope = "read"
