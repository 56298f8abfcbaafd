"""Recovery for the outbox (beat's sweep task, every CLARION_SWEEP_INTERVAL seconds).

- events `sending` far longer than any attempt can take belong to a worker that died: they
  go back to `pending` (at-least-once: the receiver may see that attempt twice, with the same
  `webhook-id`);
- pending events that are due and whose task is missing or stale are enqueued again.
Every step claims rows with a conditional UPDATE, so overlapping sweeps do no harm.
"""

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from delivery.webhooks.events import EVENTS_PER_TASK
from delivery.webhooks.models import EventStatus, WebhookEvent
from notifyproject.task_queue import ids_enqueue

SWEEP_LIMIT = 5000  # rows per step per sweep


def sweep() -> dict[str, int]:
    now = timezone.now()
    return {"requeued_sending": requeue_stuck_sending(now), "enqueued": enqueue_due(now)}


def requeue_stuck_sending(now) -> int:
    stale = now - timedelta(seconds=settings.CLARION_WEBHOOK_SENDING_STALE_SECS)
    return WebhookEvent.objects.filter(status=EventStatus.SENDING, updated_at__lt=stale).update(
        status=EventStatus.PENDING, claim=None, next_attempt_at=now, enqueued_at=None, updated_at=now
    )


def enqueue_due(now) -> int:
    from delivery.webhooks.tasks import webhook_events_send

    stale = now - timedelta(seconds=settings.CLARION_STALE_WORK_SECS)
    due = list(
        WebhookEvent.objects.filter(status=EventStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:SWEEP_LIMIT]
    )
    if not due:
        return 0
    WebhookEvent.objects.filter(pk__in=due).update(enqueued_at=now)
    ids_enqueue(webhook_events_send, due, EVENTS_PER_TASK)
    return len(due)
