"""The sweeper (beat, every CLARION_SWEEP_INTERVAL seconds): time-driven and recovery work.

- scheduled notifications whose `send_at` has come are released to fan-out (a send to a saved
  audience taking the audience's conditions as they are then);
- fan-outs that stopped making progress (a worker died) are dispatched again (not those
  waiting for their sender's earlier send, which wakes them);
- push deliveries due (retry back-off, quiet hours, auto's ack timeout) whose task is
  missing or stale are enqueued again;
- deliveries stuck in `sending` far longer than any provider timeout are re-queued;
- undelivered deliveries past their notification's ttl become `expired`.
Every step claims rows with a conditional UPDATE, so overlapping sweeps do no harm.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from delivery.audiences import scheduled_audience_refresh
from delivery.models import Channel, Delivery, DeliveryStatus, Notification, NotificationStatus
from delivery.webhooks.events import deliveries_update
from notifyproject.task_queue import ids_enqueue

logger = logging.getLogger(__name__)

SWEEP_LIMIT = 5000  # rows per step per sweep, so one sweep stays short under any backlog


def sweep() -> dict[str, int]:
    now = timezone.now()
    return {
        "released": release_due_scheduled(now),
        "redispatched": redispatch_stalled_fanouts(now),
        "requeued_sending": requeue_stuck_sending(now),
        "enqueued": enqueue_due_deliveries(now),
        "expired": expire_overdue(now),
    }


def release_due_scheduled(now) -> int:
    from delivery.tasks import notification_dispatch

    due = list(
        Notification.objects.filter(status=NotificationStatus.SCHEDULED, send_at__lte=now).values_list(
            "pk", "audience_id"
        )[:SWEEP_LIMIT]
    )
    released = 0
    for notification_id, audience_id in due:
        if audience_id is not None:  # before release: a started fan-out's conditions never change
            scheduled_audience_refresh(notification_id)
        if Notification.objects.filter(pk=notification_id, status=NotificationStatus.SCHEDULED).update(
            status=NotificationStatus.QUEUED, updated_at=now
        ):
            notification_dispatch.delay(notification_id)
            released += 1
    return released


def redispatch_stalled_fanouts(now) -> int:
    """Fan-outs with no progress for CLARION_STALE_WORK_SECS, except those waiting for an earlier
    send of their sender that is still in flight: its next commit wakes them (and it is swept
    itself if it stalls), so re-checking each of them every interval would only keep the
    workers busy behind a long fan-out.

    A row locked now is passed over, not waited for: a live transaction holds it (a batch
    slower than CLARION_STALE_WORK_SECS, or blocked on a recipient's stream row; a later send
    registering as a waiter), and a dead worker's lock goes with its connection. A sweep that
    waited for it held a worker thread until that batch ended, one more every interval, until
    the worker had none left for the sends the batch's end depends on."""
    from delivery.tasks import notification_dispatch

    stale = now - timedelta(seconds=settings.CLARION_STALE_WORK_SECS)
    in_flight = [NotificationStatus.QUEUED, NotificationStatus.DISPATCHING]
    blocker_in_flight = Notification.objects.filter(pk=OuterRef("waiting_for"), status__in=in_flight)
    stalled = list(
        Notification.objects.filter(status__in=in_flight, updated_at__lt=stale)
        .exclude(Exists(blocker_in_flight))
        .values_list("pk", flat=True)[:SWEEP_LIMIT]
    )
    if not stalled:
        return 0
    # Touch first, so the next sweep waits another interval for this attempt; the stamp is
    # the resume's claim: a live run that writes its next batch first keeps the fan-out,
    # else the resume takes it over and the live run stops (fanout.Claim).
    with transaction.atomic():
        claimed = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(pk__in=stalled, updated_at__lt=stale)
            .values_list("pk", flat=True)
        )
        Notification.objects.filter(pk__in=claimed).update(updated_at=now)
    for notification_id in claimed:
        notification_dispatch.delay(notification_id, resume=True, claimed_at=now.isoformat())
    return len(claimed)


def requeue_stuck_sending(now) -> int:
    """A provider call is bounded by its timeouts; a delivery `sending` for much longer belongs to a
    worker that died. Re-sending it is at-least-once, the documented guarantee."""
    stale = now - timedelta(seconds=settings.CLARION_SENDING_STALE_SECS)
    return Delivery.objects.filter(status=DeliveryStatus.SENDING, updated_at__lt=stale).update(
        status=DeliveryStatus.QUEUED, claim=None, next_attempt_at=now, enqueued_at=None, updated_at=now
    )


def enqueue_due_deliveries(now) -> int:
    from delivery.tasks import deliveries_send

    due = stale_due_delivery_ids(now, SWEEP_LIMIT)
    if not due:
        return 0
    Delivery.objects.filter(pk__in=due).update(enqueued_at=now)
    ids_enqueue(deliveries_send, due)
    return len(due)


def stale_due_delivery_ids(now, limit: int) -> list[int]:
    """Up to `limit` queued push deliveries that are due and whose send task is missing or
    stale: never enqueued since they were re-queued (`enqueued_at` null) first, then the longest
    since their last enqueue.

    Two walks of `delivery_push_enqueued` (a partial index on `enqueued_at` of the queued push
    deliveries), each stopping at the stale end: the cost follows the stale rows, not the queue.
    Every writer of a queued delivery sets `enqueued_at` no earlier than its `next_attempt_at`
    (or `next_attempt_at` to now), so the walks meet almost no row that is stale but not yet due.
    """
    stale = now - timedelta(seconds=settings.CLARION_STALE_WORK_SECS)
    due = (
        Delivery.objects.filter(status=DeliveryStatus.QUEUED)
        .exclude(channel=Channel.REALTIME)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    )
    ids = list(due.filter(enqueued_at__isnull=True).values_list("pk", flat=True)[:limit])
    if len(ids) < limit:
        lost = due.filter(enqueued_at__lt=stale).order_by("enqueued_at")
        ids += lost.values_list("pk", flat=True)[: limit - len(ids)]
    return ids


def expire_overdue(now) -> int:
    overdue = list(
        Delivery.objects.filter(status=DeliveryStatus.QUEUED, notification__expires_at__lte=now).values_list(
            "pk", flat=True
        )[:SWEEP_LIMIT]
    )
    if not overdue:
        return 0
    return deliveries_update(
        Delivery.objects.filter(pk__in=overdue, status=DeliveryStatus.QUEUED),
        status=DeliveryStatus.EXPIRED,
        error="ttl passed before it was delivered",
        updated_at=now,
    )
