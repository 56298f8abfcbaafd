"""The admin's login form, with failed sign-ins limited per client address and per username.

Installed as `admin.site.login_form` (Django's hook for it); the counting is shared with
POST /api/v1/auth/token/ (notifyproject/throttling.py).
"""

from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from notifyproject import throttling


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """Refuses sign-ins past the failure limit before checking the password; counts failures."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        blocked = throttling.signin_blocked_message(self.request, username)
        if blocked:  # refused before the password is checked, right or wrong
            raise ValidationError(blocked, code="too_many_failures")
        try:
            return super().clean()
        except ValidationError:
            throttling.signin_failed(self.request, username)
            raise
