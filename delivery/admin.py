from django import forms
from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryApiKey

from delivery import recurring
from delivery.models import ApiKey, ApiScope, RecurringNotification

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


class RecurringNotificationForm(forms.ModelForm):
    url = forms.URLField(max_length=2048, required=False, assume_scheme="https")

    class Meta:
        model = RecurringNotification
        fields = [
            "name",
            "enabled",
            "interval_seconds",
            "crontab",
            "title",
            "body",
            "data",
            "url",
            "target_users",
            "target_topic",
            "broadcast",
            "route",
            "priority",
            "ttl",
        ]

    def clean(self):
        cleaned = super().clean()
        if not (
            cleaned.get("target_users", "").strip() or cleaned.get("target_topic") or cleaned.get("broadcast")
        ):
            raise forms.ValidationError("Choose an audience: users, a topic, or broadcast.")
        recurring.validate_schedule(cleaned.get("interval_seconds"), cleaned.get("crontab", ""))
        return cleaned


@admin.register(RecurringNotification)
class RecurringNotificationAdmin(admin.ModelAdmin):
    """Sends on a schedule through beat; the schedule is kept in django-celery-beat for you."""

    form = RecurringNotificationForm
    list_display = ("name", "enabled", "schedule", "audience", "route", "last_sent_at")
    list_filter = ("enabled", "route")
    search_fields = ("name", "title")
    readonly_fields = ("last_sent_at",)
    fieldsets = (
        (None, {"fields": ("name", "enabled")}),
        (
            "Schedule",
            {"fields": ("interval_seconds", "crontab"), "description": "An interval or a cron line (UTC)."},
        ),
        ("Message", {"fields": ("title", "body", "data", "url")}),
        ("Audience", {"fields": ("target_users", "target_topic", "broadcast")}),
        ("Delivery", {"fields": ("route", "priority", "ttl", "last_sent_at")}),
    )

    @admin.display(description="Schedule")
    def schedule(self, obj) -> str:
        return f"every {obj.interval_seconds} s" if obj.interval_seconds else f"cron {obj.crontab} (UTC)"

    @admin.display(description="Audience")
    def audience(self, obj) -> str:
        if obj.broadcast:
            return "everyone"
        return f"topic {obj.target_topic}" if obj.target_topic else "listed users"

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        recurring.recurring_save(obj)

    def delete_model(self, request, obj):
        recurring.recurring_delete(obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            recurring.recurring_delete(obj)
