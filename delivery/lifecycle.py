"""Data lifecycle: old delivery rows and webhook events, expired end-user tokens and stale devices.

Runs hourly from beat. Deletes go in batches by primary key, so a first run over a large
backlog never holds one long transaction or lock.
"""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from knox.models import AuthToken

from delivery.models import Delivery
from devices.models import Device

DELETE_BATCH_ROWS = 5000
MAX_BATCHES_PER_RUN = 200  # ≤ 1M rows an hour; a larger backlog finishes over the next runs


def deliveries_purge(now=None) -> int:
    cutoff = (now or timezone.now()) - timedelta(days=settings.CLARION_RETENTION_DAYS)
    deleted = 0
    for _ in range(MAX_BATCHES_PER_RUN):
        ids = list(
            Delivery.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:DELETE_BATCH_ROWS]
        )
        if not ids:
            break
        deleted += Delivery.objects.filter(pk__in=ids).delete()[0]
    return deleted


def webhook_events_purge(now=None) -> int:
    """Webhook events (and their attempts) are kept as long as deliveries; a pending one is younger."""
    from delivery.webhooks.models import WebhookEvent

    cutoff = (now or timezone.now()) - timedelta(days=settings.CLARION_RETENTION_DAYS)
    deleted = 0
    for _ in range(MAX_BATCHES_PER_RUN):
        ids = list(
            WebhookEvent.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[
                :DELETE_BATCH_ROWS
            ]
        )
        if not ids:
            break
        deleted += WebhookEvent.objects.filter(pk__in=ids).delete()[1].get(WebhookEvent._meta.label, 0)
    return deleted


def end_user_tokens_purge(now=None) -> int:
    return AuthToken.objects.filter(expiry__lt=now or timezone.now()).delete()[0]


def stale_devices_deactivate(now=None) -> int:
    cutoff = (now or timezone.now()) - timedelta(days=settings.CLARION_STALE_DEVICE_DAYS)
    return Device.objects.filter(active=True, last_seen_at__lt=cutoff).update(
        active=False, deactivated_reason=f"not seen for {settings.CLARION_STALE_DEVICE_DAYS} days"
    )


def data_retention_sweep() -> dict[str, int]:
    now = timezone.now()
    return {
        "deliveries_deleted": deliveries_purge(now),
        "webhook_events_deleted": webhook_events_purge(now),
        "tokens_deleted": end_user_tokens_purge(now),
        "devices_deactivated": stale_devices_deactivate(now),
    }
