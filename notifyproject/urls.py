from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from notifyproject import openapi  # noqa: F401 - registers the auth schemes with drf-spectacular
from notifyproject.console.login import ThrottledAdminAuthenticationForm, admin_login
from notifyproject.health import healthz, metrics

admin.site.login_form = ThrottledAdminAuthenticationForm  # failed sign-ins are limited

urlpatterns = [
    path("admin/login/", admin_login, name="admin-login"),  # before the admin's own
    # API keys live in the identities app; their admin's former addresses under delivery lead there.
    re_path(
        r"^admin/delivery/apikey/(?P<rest>.*)$",
        RedirectView.as_view(url="/admin/identities/apikey/%(rest)s", permanent=True, query_string=True),
    ),
    path("admin/", admin.site.urls),
    path("api/v1/", include("devices.urls")),
    path("api/v1/", include("delivery.urls")),
    path("api/v1/", include("delivery.webhooks.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script for the CSP.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("", include("realtime.urls")),
]
