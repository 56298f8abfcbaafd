"""Resend: put failed push deliveries back in the queue (the admin's "resend failed").

Rows go back to `queued` due now, keeping their attempt count, and the send tasks are
enqueued only after the transaction commits; the request itself sends nothing. The send
task's claim (UPDATE … WHERE status='queued') makes a duplicate enqueue harmless.
"""

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from delivery.models import Channel, Delivery, DeliveryStatus, Notification, NotificationStatus
from notifyproject.task_queue import ids_enqueue

# Rows updated per statement, so resending a huge broadcast never builds one giant IN list.
RESEND_UPDATE_BATCH = 1000


class NotResendableError(Exception):
    pass


def notification_resend_failed(notification_id: int) -> int:
    """Re-queue the notification's failed push deliveries; returns how many."""
    notification = Notification.objects.get(pk=notification_id)
    if notification.status == NotificationStatus.CANCELLED:
        raise NotResendableError("the notification was cancelled")
    if notification.expires_at <= timezone.now():
        raise NotResendableError("its ttl has passed, so the deliveries would only expire")
    return deliveries_resend(Delivery.objects.filter(notification_id=notification_id))


def deliveries_resend(deliveries: QuerySet) -> int:
    """Re-queue the failed push deliveries among `deliveries`; returns how many."""
    failed = deliveries.filter(status=DeliveryStatus.FAILED).exclude(channel=Channel.REALTIME)
    requeued: list[int] = []
    updated = 0
    now = timezone.now()
    with transaction.atomic():
        last_id = 0
        while True:
            after = failed.filter(pk__gt=last_id).order_by("pk")
            batch = list(after.values_list("pk", flat=True)[:RESEND_UPDATE_BATCH])
            if not batch:
                break
            last_id = batch[-1]
            updated += Delivery.objects.filter(pk__in=batch, status=DeliveryStatus.FAILED).update(
                status=DeliveryStatus.QUEUED,
                next_attempt_at=now,
                enqueued_at=now,
                claim=None,
                updated_at=now,
            )
            requeued.extend(batch)
        if requeued:
            transaction.on_commit(lambda: _enqueue_sends(requeued), robust=True)
    return updated


def _enqueue_sends(delivery_ids: list[int]) -> None:
    from delivery.tasks import deliveries_send

    ids_enqueue(deliveries_send, delivery_ids)
