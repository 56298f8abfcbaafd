"""The admin's login form, with failed sign-ins limited per client address and per username.

Installed as `admin.site.login_form` (Django's hook for it), and the login view answers a
refused sign-in with 429 and Retry-After; the counting is shared with POST /api/v1/auth/token/
(notifyproject/throttling.py).
"""

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from notifyproject import throttling

TOO_MANY_FAILURES = "too_many_failures"


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """Refuses sign-ins past the failure limit before checking the password; counts failures."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        blocked = throttling.signin_blocked_message(self.request, username)
        if blocked:  # refused before the password is checked, right or wrong
            raise ValidationError(blocked, code=TOO_MANY_FAILURES)
        try:
            return super().clean()
        except ValidationError:
            throttling.signin_failed(self.request, username)
            raise


def admin_login(request, extra_context=None):
    """The admin's login view; a sign-in refused for too many failures is a 429, not a 200."""
    response = admin.site.login(request, extra_context)
    form = (getattr(response, "context_data", None) or {}).get("form")
    if form is not None and form.has_error(NON_FIELD_ERRORS, TOO_MANY_FAILURES):
        response.status_code = 429
        response["Retry-After"] = str(settings.CLARION_SIGNIN_FAILURE_WINDOW_SECS)
    return response
