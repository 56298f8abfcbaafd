"""Webhooks in the admin, beside the delivery log: endpoints, their events and every attempt.

Thin: the "send again" and "enable" actions call webhooks.services; nothing is sent inside
the request (the worker sends after commit).
"""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from delivery.webhooks import services
from delivery.webhooks.models import Webhook, WebhookAttempt, WebhookEvent


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "url",
        "owner",
        "event_list",
        "state",
        "failing_since",
        "last_success_at",
        "created_at",
    ]
    list_filter = ["active"]
    list_select_related = ["api_key", "created_by"]
    search_fields = ["url", "description"]
    readonly_fields = [
        "api_key",
        "created_by",
        "url",
        "events",
        "all_notifications",
        "active",
        "disabled_at",
        "disabled_reason",
        "failing_since",
        "last_success_at",
        "created_at",
        "outbox_link",
    ]
    fields = ["description", *readonly_fields]
    actions = ["enable"]

    def has_add_permission(self, request) -> bool:
        return False  # registered through the API, which checks the URL and shows the secret once

    @admin.display(description="Owner")
    def owner(self, obj: Webhook) -> str:
        if obj.api_key_id:
            return f"API key {obj.api_key.name}"
        return f"staff {obj.created_by}" if obj.created_by_id else "-"

    @admin.display(description="Events")
    def event_list(self, obj: Webhook) -> str:
        return ", ".join(obj.events)

    @admin.display(description="State")
    def state(self, obj: Webhook) -> str:
        return "active" if obj.active else f"DISABLED: {obj.disabled_reason}"

    @admin.display(description="Events sent to it")
    def outbox_link(self, obj: Webhook) -> str:
        url = reverse("admin:webhooks_webhookevent_changelist") + f"?webhook__id__exact={obj.pk}"
        return format_html('<a href="{}">events and attempts</a>', url)

    @admin.action(description="Enable the selected disabled webhooks again", permissions=["change"])
    def enable(self, request, queryset):
        enabled = services.webhooks_enable(list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{enabled} webhook(s) enabled.", messages.SUCCESS)


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ["attempt", "status_code", "error", "duration_ms", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-id"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "event_type",
        "webhook",
        "message_id",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["status", "event_type"]
    list_select_related = ["webhook"]
    search_fields = ["message_id"]
    show_full_result_count = False
    readonly_fields = [
        "webhook",
        "event_type",
        "message_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "updated_at",
        "body",
    ]
    fields = readonly_fields
    inlines = [AttemptInline]
    actions = ["send_again"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Send the selected events again (same webhook-id)", permissions=["change"])
    def send_again(self, request, queryset):
        queued = services.events_send_again(list(queryset.values_list("pk", flat=True)))
        skipped = queryset.count() - queued
        note = f" ({skipped} skipped: being sent now, or the webhook is disabled)" if skipped else ""
        self.message_user(request, f"{queued} event(s) queued to be sent again{note}.", messages.SUCCESS)
