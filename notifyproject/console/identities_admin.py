"""API keys in the admin: created with scopes and shown once, bound to an app, revoked (docs/admin.md)."""

from django import forms
from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryApiKey

from devices.selectors import app_exists
from notifyproject.console.delivery_admin import AppListFilter
from notifyproject.identities.authentication import api_key_cache_clear
from notifyproject.identities.models import ApiKey, ApiScope

# Clarion uses its own key model (scopes, last use); hide the library's unused one.
admin.site.unregister(LibraryApiKey)


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple, required=True
    )
    app = forms.CharField(
        required=False,
        max_length=40,
        help_text="An app's slug binds the key: it sends only to that app's devices and reads only its "
        "own sends. Empty: instance-wide.",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "scopes", "app", "expiry_date", "revoked"]

    def clean_scopes(self) -> list[str]:
        return sorted(set(self.cleaned_data["scopes"]))  # stored as api_key_create stores them

    def clean_app(self) -> str:
        app = self.cleaned_data.get("app") or ""
        if app and not app_exists(app):
            raise forms.ValidationError(f"No app named {app!r}.")
        return app


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    """Create (the key is shown once, by the base class), scope, revoke; never shows a hash."""

    form = ApiKeyForm
    list_display = (
        "name",
        "prefix",
        "scope_list",
        "app",
        "created",
        "last_used_at",
        "expiry_date",
        "revoked",
    )
    list_filter = ("revoked", AppListFilter, "created", "last_used_at")
    search_fields = ("name", "prefix")
    actions = ["revoke"]

    @admin.display(description="Scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), "last_used_at")

    @admin.action(description="Revoke the selected keys (cannot be undone)")
    def revoke(self, request, queryset):
        revoked = queryset.filter(revoked=False).update(revoked=True)
        api_key_cache_clear()  # an update sends no post_save: this process forgets the keys now
        self.message_user(request, f"Revoked {revoked} key(s).")
