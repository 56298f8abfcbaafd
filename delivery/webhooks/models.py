"""Webhook endpoints, their outbox of events (one row per endpoint and event) and every attempt."""

from django.conf import settings
from django.db import models

from notifyproject.identities.models import ApiKey


class EventType(models.TextChoices):
    DELIVERY_SENT = "delivery.sent", "delivery.sent"
    DELIVERY_DELIVERED = "delivery.delivered", "delivery.delivered"
    DELIVERY_FAILED = "delivery.failed", "delivery.failed"
    DELIVERY_EXPIRED = "delivery.expired", "delivery.expired"
    DELIVERY_SKIPPED = "delivery.skipped", "delivery.skipped"
    NOTIFICATION_READ = "notification.read", "notification.read"
    DEVICE_DEACTIVATED = "device.deactivated", "device.deactivated"


class Webhook(models.Model):
    """An HTTPS endpoint of a product backend and the events it wants; owned by the key that made it."""

    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="webhooks"
    )
    # Staff (session) may register webhooks too; theirs are instance-wide.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    url = models.URLField(max_length=2048)
    events = models.JSONField(default=list)
    description = models.CharField(max_length=500, blank=True, default="")
    # "whsec_<base64>": kept so that deliveries can be signed; shown to the caller once.
    secret = models.CharField(max_length=100, editable=False)
    # False for a key bound to an app: only the notifications that key sent.
    all_notifications = models.BooleanField(default=True)
    active = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True, default="")
    # The first failed attempt since the last success; null while the endpoint answers.
    failing_since = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["api_key", "-id"], name="webhook_owner")]

    def __str__(self) -> str:
        return f"webhook {self.pk} → {self.url}"


class EventStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed (gave up)"


class WebhookEvent(models.Model):
    """One event for one webhook: written in the transaction that changed the state (intent first).

    `body` is the exact JSON posted on every attempt and `message_id` the `webhook-id` header,
    so retries are byte-for-byte the same message.
    """

    # No database constraint: a status change must never fail because its webhook was deleted
    # meanwhile (the INSERT checks it exists; the ORM still deletes a webhook's events with it).
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="outbox", db_constraint=False)
    event_type = models.CharField(max_length=32, choices=EventType.choices)
    message_id = models.CharField(max_length=40)
    body = models.TextField()
    status = models.CharField(max_length=10, choices=EventStatus.choices, default=EventStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    # When a send task was last enqueued for it; the sweeper re-enqueues stale ones.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # Set by the send task that claimed it, so a duplicated task finds nothing to send.
    claim = models.UUIDField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = "webhook event"
        indexes = [
            models.Index(
                fields=["next_attempt_at"], condition=models.Q(status="pending"), name="webhookevent_due"
            ),
            models.Index(
                fields=["updated_at"], condition=models.Q(status="sending"), name="webhookevent_sending"
            ),
            models.Index(fields=["claim"], name="webhookevent_claim"),
            models.Index(fields=["webhook", "-id"], name="webhookevent_webhook"),
            models.Index(fields=["created_at"], name="webhookevent_created"),  # retention
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.message_id}"


class WebhookAttempt(models.Model):
    """One POST of one event: what the endpoint answered, or why there was no answer."""

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="attempt_log")
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="attempts")
    attempt = models.PositiveSmallIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["webhook", "-id"], name="webhookattempt_webhook")]

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
