from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import ShowFacets
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from delivery.push_apps import SECRET_FIELDS, app_save, app_validate
from devices.models import App, Device, DeviceOwnershipChange, TopicSubscription
from notifyproject.console.compose import MAX_TEST_DEVICES, devices_test_send
from notifyproject.console.lists import EstimatedCountPaginator
from notifyproject.console.views import SEND_PERMISSION, require_send_permission
from notifyproject.encryption import EncryptionKeyMissingError, encrypt


class OwnershipChangeInline(admin.TabularInline):
    model = DeviceOwnershipChange
    fields = ("changed_at", "previous_user", "new_user")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "Rebinding history"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class LastSeenFilter(admin.SimpleListFilter):
    """Recent devices, or stale ones worth cleaning up; one indexed range on last_seen_at."""

    title = "last seen"
    parameter_name = "last_seen"
    ranges = {
        "1d": ("In the last 24 hours", timedelta(days=1), True),
        "7d": ("In the last 7 days", timedelta(days=7), True),
        "30d": ("In the last 30 days", timedelta(days=30), True),
        "stale30": ("More than 30 days ago", timedelta(days=30), False),
        "stale90": ("More than 90 days ago", timedelta(days=90), False),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _span, _recent) in self.ranges.items()]

    def queryset(self, request, queryset):
        if self.value() not in self.ranges:
            return queryset
        _label, span, recent = self.ranges[self.value()]
        since = timezone.now() - span
        return queryset.filter(last_seen_at__gte=since) if recent else queryset.filter(last_seen_at__lt=since)


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    class Media:
        css = {"all": ["clarion-admin/admin.css"]}

    list_display = (
        "id",
        "user",
        "app",
        "platform",
        "name",
        "environment",
        "active",
        "last_seen_at",
        "created_at",
    )
    list_filter = ("app", "platform", "active", "environment", LastSeenFilter)
    search_fields = ("user__username", "name", "=token")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    readonly_fields = ("token_digest", "created_at", "deactivated_reason", "deliveries_link")
    inlines = [OwnershipChangeInline]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    actions = ["deactivate", "reactivate", "send_test"]
    change_form_template = "admin/devices/device/change_form.html"

    def has_send_permission(self, request) -> bool:
        return request.user.has_perm(SEND_PERMISSION)

    def get_urls(self):
        send_test = self.admin_site.admin_view(self.send_test_view)
        return [
            path("<int:object_id>/send-test/", send_test, name="devices_device_send_test"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_send": self.has_send_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="Deliveries")
    def deliveries_link(self, obj: Device) -> str:
        if obj.pk is None:
            return "–"
        url = reverse("admin:delivery_delivery_changelist")
        return format_html('<a href="{}?device={}">This device’s delivery log</a>', url, obj.pk)

    @admin.action(description="Deactivate the selected devices")
    def deactivate(self, request, queryset):
        updated = queryset.update(active=False, deactivated_reason="deactivated in the admin")
        self.message_user(request, f"Deactivated {updated} device(s).")

    @admin.action(description="Reactivate the selected devices")
    def reactivate(self, request, queryset):
        updated = queryset.update(active=True, deactivated_reason="")
        self.message_user(request, f"Reactivated {updated} device(s).")

    @admin.action(description="Send a test notification to the selected devices", permissions=["send"])
    def send_test(self, request, queryset):
        device_ids = list(queryset.values_list("pk", flat=True)[: MAX_TEST_DEVICES + 1])
        if len(device_ids) > MAX_TEST_DEVICES:
            self.message_user(
                request, f"Select at most {MAX_TEST_DEVICES} devices for a test send.", messages.ERROR
            )
            return
        notification = devices_test_send(user=request.user, device_ids=device_ids)
        self._message_test_queued(request, notification, len(device_ids))

    @staticmethod
    def _message_test_queued(request, notification, device_count: int) -> None:
        url = reverse("admin:delivery_notification_change", args=[notification.pk])
        messages.success(
            request,
            format_html(
                'Test <a href="{}">notification #{}</a> queued for {} device(s).',
                url,
                notification.pk,
                device_count,
            ),
        )

    def send_test_view(self, request, object_id: int):
        """POST from the device page's "Send a test" button; the send itself happens in the worker."""
        return _send_test(request, self, object_id)


@require_POST
def _send_test(request, model_admin: DeviceAdmin, object_id: int):
    require_send_permission(request)
    device = get_object_or_404(Device, pk=object_id)
    notification = devices_test_send(user=request.user, device_ids=[device.pk])
    model_admin._message_test_queued(request, notification, 1)
    if not device.active:
        messages.warning(request, "This device is inactive, so the test will be skipped.")
    return HttpResponseRedirect(reverse("admin:devices_device_change", args=[device.pk]))


@admin.register(TopicSubscription)
class TopicSubscriptionAdmin(admin.ModelAdmin):
    list_display = ("topic", "user", "created_at")
    search_fields = ("topic", "user__username")
    raw_id_fields = ("user",)
    list_select_related = ("user",)


class AppForm(forms.ModelForm):
    """Secrets are write-only: typed (or pasted) here, stored encrypted, never shown again."""

    fcm_credentials = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "autocomplete": "off"}),
        help_text="Paste the Firebase service-account JSON. Leave empty to keep the stored one.",
    )
    apns_key = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "autocomplete": "off"}),
        help_text="Paste the APNs .p8 key (PEM). Leave empty to keep the stored one.",
    )
    vapid_private_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(attrs={"size": 60, "autocomplete": "off"}),
        help_text="base64url or PEM. Leave empty to keep the stored one.",
    )
    remove = forms.MultipleChoiceField(
        required=False,
        choices=[(field, field) for field in SECRET_FIELDS],
        widget=forms.CheckboxSelectMultiple,
        help_text="Remove these stored secrets (that platform is then skipped for the app's devices).",
    )

    fcm_endpoint = forms.URLField(required=False, assume_scheme="https", help_text="Empty: FCM_ENDPOINT.")
    apns_endpoint = forms.URLField(required=False, assume_scheme="https", help_text="Empty: APNS_ENDPOINT.")
    apns_sandbox_endpoint = forms.URLField(
        required=False, assume_scheme="https", help_text="Empty: APNS_SANDBOX_ENDPOINT."
    )

    class Meta:
        model = App
        fields = [
            "slug",
            "name",
            "fcm_credentials",
            "fcm_endpoint",
            "apns_key",
            "apns_key_id",
            "apns_team_id",
            "apns_topic",
            "apns_endpoint",
            "apns_sandbox_endpoint",
            "vapid_private_key",
            "vapid_public_key",
            "vapid_subject",
            "remove",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in SECRET_FIELDS:  # never render a stored (encrypted) value back
            self.initial[field] = ""
        if self.instance.pk:
            self.fields["slug"].disabled = True  # devices and keys name the app by it

    def _post_clean(self):
        super()._post_clean()  # copies the fields onto the instance, plaintext secrets included
        app = self.instance
        secrets = {field: self.cleaned_data.get(field) or None for field in SECRET_FIELDS}
        for field in self.cleaned_data.get("remove") or []:
            secrets[field] = ""
        stored = App.objects.filter(pk=app.pk).values(*SECRET_FIELDS).first() if app.pk else None
        for field in SECRET_FIELDS:  # the instance keeps what is stored; app_save encrypts new ones
            setattr(app, field, stored[field] if stored else "")
        self.secrets = secrets
        if self.errors:
            return
        try:
            app_validate(app, secrets)
            if any(secrets.values()):
                encrypt("probe")  # there is a key to store them with
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        except EncryptionKeyMissingError as exc:
            self.add_error(None, str(exc))


@admin.register(App)
class AppAdmin(admin.ModelAdmin):
    form = AppForm
    list_display = ("slug", "name", "fcm_configured", "apns_configured", "webpush_configured", "updated_at")
    search_fields = ("slug", "name")
    fieldsets = (
        (None, {"fields": ("slug", "name")}),
        ("FCM", {"fields": ("fcm_credentials", "fcm_endpoint")}),
        (
            "APNs",
            {
                "fields": (
                    "apns_key",
                    "apns_key_id",
                    "apns_team_id",
                    "apns_topic",
                    "apns_endpoint",
                    "apns_sandbox_endpoint",
                )
            },
        ),
        ("Web Push", {"fields": ("vapid_private_key", "vapid_public_key", "vapid_subject")}),
        ("Stored secrets", {"fields": ("remove",)}),
    )

    def save_model(self, request, obj, form, change):
        app_save(app=obj, secrets=form.secrets)  # validated in the form; encrypts the secrets

    @admin.display(boolean=True, description="FCM")
    def fcm_configured(self, obj: App) -> bool:
        return bool(obj.fcm_credentials)

    @admin.display(boolean=True, description="APNs")
    def apns_configured(self, obj: App) -> bool:
        return bool(obj.apns_key)

    @admin.display(boolean=True, description="Web Push")
    def webpush_configured(self, obj: App) -> bool:
        return bool(obj.vapid_private_key)
