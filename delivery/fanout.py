"""Fan-out: turn one notification into inbox messages and deliveries, batch by batch.

Each batch of recipients is one transaction that writes the users' inbox messages (at
each user's next cursor), their deliveries, and the notification's `fanout_cursor`. A
fan-out killed mid-way resumes at the cursor; a duplicated dispatch task waits on the
notification's row lock and finds the batch already done. Realtime publishes and push
sends are enqueued only after the batch commits.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from delivery.models import (
    Channel,
    Delivery,
    DeliveryStatus,
    InboxMessage,
    Notification,
    NotificationStatus,
    Priority,
    Route,
    UserStream,
)
from delivery.selectors import message_payload, recipient_ids_after, users_reached_fully
from delivery.sending import MAX_COUNTDOWN_SECS
from devices.models import Device
from devices.preferences import quiet_hours_ends
from notifyproject import metrics
from realtime.presence import users_online

logger = logging.getLogger(__name__)

# Users per transaction (settings.CLARION_FANOUT_BATCH, 500 by default): large enough to
# amortise round trips, small enough that a batch's rows, locks and objects stay bounded.
# Deliveries per send task: one provider round of concurrent requests.
PUSH_TASK_DELIVERIES = 100


@dataclass
class BatchPlan:
    """What to do once a batch has committed."""

    realtime: list[tuple[int, dict]] = field(default_factory=list)  # (user id, message)
    realtime_delivery_ids: list[int] = field(default_factory=list)
    push_now: list[int] = field(default_factory=list)
    push_later: dict[int, float] = field(default_factory=dict)  # delivery id → delay in seconds


def notification_fan_out(notification_id: int) -> None:
    while _fan_out_next_batch(notification_id):
        pass


def _fan_out_next_batch(notification_id: int) -> bool:
    """Write one batch; False when there is nothing (more) to do."""
    now = timezone.now()
    with transaction.atomic():
        notification = Notification.objects.select_for_update().filter(pk=notification_id).first()
        if notification is None or notification.status not in (
            NotificationStatus.QUEUED,
            NotificationStatus.DISPATCHING,
        ):
            return False
        if notification.expires_at <= now:
            notification.status = NotificationStatus.EXPIRED
            notification.save(update_fields=["status", "updated_at"])
            return False
        user_ids = recipient_ids_after(
            notification.target, notification.fanout_cursor, settings.CLARION_FANOUT_BATCH
        )
        if not user_ids:
            notification.status = NotificationStatus.DISPATCHED
            notification.dispatched_at = now
            notification.save(update_fields=["status", "dispatched_at", "updated_at"])
            return False
        plan = _write_batch(notification, user_ids, now)
        notification.fanout_cursor = user_ids[-1]
        # A short batch is the last one: finishing here saves a whole transaction per send.
        last = len(user_ids) < settings.CLARION_FANOUT_BATCH
        if last:
            notification.status = NotificationStatus.DISPATCHED
            notification.dispatched_at = now
        else:
            notification.status = NotificationStatus.DISPATCHING
        notification.save(update_fields=["status", "fanout_cursor", "dispatched_at", "updated_at"])
        # A lambda, not functools.partial: Django logs a failing robust hook by its __qualname__,
        # which a partial lacks, so a failure here would raise instead of being logged.
        transaction.on_commit(lambda: _after_commit(plan), robust=True)
    return not last


def allocate_cursors(user_ids: list[int]) -> dict[int, int]:
    """Advance each user's stream by one and return the new positions.

    One upsert for the whole batch; the row locks it takes are held until commit, so for
    any one user, cursor order is commit order and a reader never skips a late commit.
    Users are locked in id order, so concurrent batches cannot deadlock.
    """
    table = connection.ops.quote_name(UserStream._meta.db_table)
    ordered = sorted(user_ids)
    values = ", ".join(["(%s, 1)"] * len(ordered))
    sql = (
        f"INSERT INTO {table} (user_id, last_seq) VALUES {values} "
        f"ON CONFLICT (user_id) DO UPDATE SET last_seq = {table}.last_seq + 1 "
        "RETURNING user_id, last_seq"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, ordered)
        return dict(cursor.fetchall())


def _write_batch(notification: Notification, user_ids: list[int], now: datetime) -> BatchPlan:
    cursors = allocate_cursors(user_ids)
    route = notification.route
    fully = users_reached_fully(notification.target, user_ids)
    InboxMessage.objects.bulk_create(
        [
            InboxMessage(
                user_id=uid,
                notification=notification,
                seq=cursors[uid],
                live=route != Route.PUSH and uid in fully,
            )
            for uid in user_ids
        ]
    )
    if notification.collapse_key:
        _collapse_older(notification, user_ids, now)

    online = users_online(user_ids) if route in (Route.AUTO, Route.REALTIME, Route.ALL) else set()
    if route in (Route.REALTIME, Route.ALL):
        realtime_users = [uid for uid in user_ids if uid in fully]
    elif route == Route.AUTO:
        realtime_users = [uid for uid in user_ids if uid in fully and uid in online]
    else:
        realtime_users = []

    deliveries = [
        Delivery(notification=notification, user_id=uid, channel=Channel.REALTIME) for uid in realtime_users
    ]
    push_deliveries = _push_deliveries(notification, user_ids, fully, set(realtime_users), now)
    Delivery.objects.bulk_create(deliveries + push_deliveries)

    plan = BatchPlan()
    messages = {uid: message_payload(notification, cursors[uid]) for uid in realtime_users if uid in online}
    plan.realtime = list(messages.items())
    plan.realtime_delivery_ids = [d.pk for d in deliveries if d.user_id in messages]
    for delivery in push_deliveries:
        if delivery.next_attempt_at is None:
            plan.push_now.append(delivery.pk)
        else:
            plan.push_later[delivery.pk] = (delivery.next_attempt_at - now).total_seconds()
    return plan


def _push_deliveries(notification, user_ids, fully, realtime_users, now) -> list[Delivery]:
    """Push deliveries: held back by the ack timeout under `auto`, by quiet hours for normal priority."""
    route = notification.route
    if route == Route.REALTIME:
        return []
    device_only = [uid for uid in user_ids if uid not in fully]
    reach = Q(user_id__in=list(fully)) | Q(
        user_id__in=device_only, pk__in=notification.target.get("devices") or []
    )
    devices = list(Device.objects.filter(reach, active=True).values_list("pk", "user_id", "platform"))
    if not devices:
        return []
    quiet_ends = (
        quiet_hours_ends(list({uid for _, uid, _ in devices}), now)
        if notification.priority == Priority.NORMAL
        else {}
    )
    held_until = now + timedelta(seconds=settings.CLARION_ACK_TIMEOUT_SECS) if route == Route.AUTO else None
    deliveries = []
    for device_id, user_id, platform in devices:
        not_before = [
            t for t in (held_until if user_id in realtime_users else None, quiet_ends.get(user_id)) if t
        ]
        next_attempt_at = max(not_before) if not_before else None
        deliveries.append(
            Delivery(
                notification=notification,
                user_id=user_id,
                device_id=device_id,
                channel=platform,
                next_attempt_at=next_attempt_at,
                enqueued_at=next_attempt_at or now,
            )
        )
    return deliveries


def _collapse_older(notification: Notification, user_ids: list[int], now: datetime) -> None:
    """A newer message with the same collapse key replaces older ones not yet delivered."""
    Delivery.objects.filter(
        user_id__in=user_ids,
        status=DeliveryStatus.QUEUED,
        notification__collapse_key=notification.collapse_key,
        notification__sender_label=notification.sender_label,
        notification_id__lt=notification.pk,
    ).update(
        status=DeliveryStatus.CANCELLED,
        error=f"replaced by notification {notification.pk} (same collapse_key)",
        updated_at=now,
    )


def _after_commit(plan: BatchPlan) -> None:
    from delivery.tasks import deliveries_send
    from realtime.publish import publish_messages

    if plan.realtime:
        publish_messages(plan.realtime)
        sent = Delivery.objects.filter(
            pk__in=plan.realtime_delivery_ids, status=DeliveryStatus.QUEUED
        ).update(status=DeliveryStatus.SENT, sent_at=timezone.now(), attempts=1)
        metrics.count("clarion_realtime_published_total", len(plan.realtime))
        metrics.count("clarion_deliveries_total", sent, channel="realtime", status="sent")
    for start in range(0, len(plan.push_now), PUSH_TASK_DELIVERIES):
        deliveries_send.delay(plan.push_now[start : start + PUSH_TASK_DELIVERIES])
    soon = sorted((delay, pk) for pk, delay in plan.push_later.items() if delay <= MAX_COUNTDOWN_SECS)
    for start in range(0, len(soon), PUSH_TASK_DELIVERIES):
        chunk = soon[start : start + PUSH_TASK_DELIVERIES]
        deliveries_send.apply_async(([pk for _, pk in chunk],), countdown=max(delay for delay, _ in chunk))
