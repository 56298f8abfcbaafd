from django import forms
from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryApiKey

from delivery.models import ApiKey, ApiScope

# Clarion uses its own key model (scopes, last use); hide the library's unused one.
admin.site.unregister(LibraryApiKey)


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple, required=True
    )

    class Meta:
        model = ApiKey
        fields = ["name", "scopes", "expiry_date", "revoked"]


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    """Create (the key is shown once, by the base class), scope, revoke; never shows a hash."""

    form = ApiKeyForm
    list_display = ("name", "prefix", "scope_list", "created", "last_used_at", "expiry_date", "revoked")
    list_filter = ("revoked", "created", "last_used_at")
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
        self.message_user(request, f"Revoked {revoked} key(s).")
