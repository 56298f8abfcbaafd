from django.conf import settings
from rest_framework import serializers

from delivery.webhooks.models import EventType, Webhook, WebhookAttempt
from notifyproject.api import StrictCharField
from notifyproject.outbound import UnsafeURLError, clean_url

MAX_URL_CHARS = 2048


class WebhookCreateSerializer(serializers.Serializer):
    url = StrictCharField(max_length=MAX_URL_CHARS)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.values), allow_empty=False, max_length=len(EventType)
    )
    description = StrictCharField(
        max_length=500, required=False, allow_blank=True, allow_null=True, default=""
    )

    def validate_url(self, value: str) -> str:
        try:
            return clean_url(value, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_URLS)
        except UnsafeURLError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_description(self, value):
        return value or ""


class WebhookSerializer(serializers.ModelSerializer):
    class Meta:
        model = Webhook
        fields = ["id", "url", "events", "description", "active", "disabled_reason", "created_at"]


class WebhookCreatedSerializer(serializers.ModelSerializer):
    class Meta:
        model = Webhook
        fields = ["id", "url", "events", "description", "secret", "created_at"]


class WebhookAttemptSerializer(serializers.ModelSerializer):
    webhook_id = serializers.CharField(source="event.message_id", help_text="The webhook-id header sent.")
    event = serializers.CharField(source="event.event_type")

    class Meta:
        model = WebhookAttempt
        fields = ["id", "webhook_id", "event", "status_code", "error", "attempt", "duration_ms", "created_at"]
