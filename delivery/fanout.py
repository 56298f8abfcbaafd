"""Fan-out: turn one notification into inbox messages and deliveries, batch by batch.

Each batch of recipients is one transaction that writes the users' inbox messages (at
each user's next cursor), their deliveries, and the notification's `fanout_cursor`. A
fan-out killed mid-way resumes at the cursor; a duplicated dispatch task waits on the
notification's row lock and finds the batch already done. Realtime publishes and push
sends are enqueued only after the batch commits.
"""

import functools
import heapq
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from psycopg.errors import LockNotAvailable

from delivery import fanout_sql
from delivery.audiences import audience_recipient_ids_after
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
from delivery.webhooks.events import deliveries_changed, deliveries_update
from devices.models import Device
from devices.preferences import quiet_hours_ends
from notifyproject import metrics
from notifyproject.task_queue import MAX_COUNTDOWN_SECS, ids_enqueue
from realtime.api import publish_messages, users_online

logger = logging.getLogger(__name__)

IN_FLIGHT = (NotificationStatus.QUEUED, NotificationStatus.DISPATCHING)
RESUME_LOCK_WAIT_SECS = 2.0
# A notification's first batch is small: a broadcast's first users are published when it
# commits, instead of after a full batch's transaction (CLARION_FANOUT_BATCH, 2,000 users:
# most of a second under load, W8); the later batches take the full size for throughput.
FIRST_BATCH_USERS = 200


@dataclass
class BatchPlan:
    """What to do once a batch has committed."""

    realtime: list[tuple[int, dict]] = field(default_factory=list)  # (user id, message)
    realtime_delivery_ids: list[int] = field(default_factory=list)  # to mark `sent` once published
    realtime_sent: int = 0  # realtime deliveries written `sent` with the batch (the set-based path)
    push_now: list[int] = field(default_factory=list)
    push_later: dict[int, float] = field(default_factory=dict)  # delivery id → delay in seconds
    # The sender's later notifications that waited for this one's progress: (id, recipients).
    waiters: list[tuple[int, int]] = field(default_factory=list)
    state_written: bool = False  # the notification's status and cursor, with the batch's rows


@dataclass
class Claim:
    """Which run of a notification's fan-out goes on. The sweeper resumes a fan-out whose row has
    not changed for CLARION_STALE_WORK_SECS, and a live run's batch can outlast that: the resume
    may then take the row between two of the live run's batches. Whichever of the two writes a
    batch first keeps the fan-out; the other finds that batch under the row lock and stops, so
    they never alternate batches to the end, each holding a worker. (Two copies of a dispatch
    settle the same way.) If the one that goes on dies, its row goes stale and is resumed again."""

    fanout_cursor: int | None = None  # where this run's last batch left the cursor
    stamped_at: datetime | None = None  # a resume's, until its first batch: the sweeper's stamp

    def taken(self, notification: Notification) -> bool:
        """Another run wrote a batch since this one last did (a resume: since it was stamped)."""
        if self.fanout_cursor is not None:
            return notification.fanout_cursor != self.fanout_cursor
        return self.stamped_at is not None and notification.updated_at != self.stamped_at

    def wrote(self, notification: Notification) -> None:
        self.fanout_cursor, self.stamped_at = notification.fanout_cursor, None


def notification_fan_out(
    notification_id: int, resume: bool = False, claimed_at: datetime | None = None
) -> None:
    """Fan out batch by batch. `resume` (the sweeper's re-dispatch of a fan-out that looks
    stalled) waits at most RESUME_LOCK_WAIT_SECS for the row: long enough for a later send
    registering as a waiter, which holds it for a moment; a live fan-out in a long batch holds
    it longer, and the resume gives up rather than hold a worker until that fan-out ends. A dead
    worker's lock is gone with its connection. `claimed_at`: the `updated_at` the sweeper
    stamped when it dispatched this resume (Claim)."""
    lock_wait = RESUME_LOCK_WAIT_SECS if resume else None
    claim = Claim(stamped_at=claimed_at)
    try:
        while _fan_out_next_batch(notification_id, lock_wait, claim=claim):
            lock_wait = None  # ours now: later batches queue behind whoever takes it in between
    except OperationalError as exc:
        if not isinstance(exc.__cause__, LockNotAvailable):
            raise
        logger.info("notification %s: a live fan-out holds it; not resumed now", notification_id)


def notification_fan_out_first_batch(
    notification: Notification, blocker: tuple[int, int] | None, recipient_ids: list[int] | None = None
) -> bool:
    """The first batch of a notification inserted by notification_insert in the current
    transaction (so its row is ours already), written in that transaction: one commit for a
    small send. True if more remain. `blocker`: what notification_insert returned;
    `recipient_ids`: all its recipients in id order, when the send has read them already."""
    return _fan_out_next_batch(
        notification.pk, inserted=notification, recipient_ids=recipient_ids, inserted_blocker=blocker
    )


@functools.cache
def _insert_statement() -> tuple[str, tuple]:
    """The INSERT of a notification with the sender's order blocker, and the fields it writes."""
    table = connection.ops.quote_name(Notification._meta.db_table)
    fields = tuple(field for field in Notification._meta.concrete_fields if not field.primary_key)
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    in_flight = ", ".join(f"'{status}'" for status in IN_FLIGHT)  # literals: the partial index applies
    sql = (
        f"WITH new AS (INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
        " RETURNING id)"
        " SELECT new.id, blocker.id, blocker.fanout_cursor FROM new LEFT JOIN LATERAL"
        f" (SELECT id, fanout_cursor FROM {table} WHERE sender_label = %s AND status IN ({in_flight})"
        " AND id < new.id ORDER BY fanout_cursor, id LIMIT 1) AS blocker ON true"
    )
    return sql, fields


def notification_insert(notification: Notification) -> tuple[int, int] | None:
    """Save a new notification and return its blocker as sender_order_state() would find it.

    On PostgreSQL one statement with fields prepared as save() prepares them, instead of the
    ORM's insert compiler (a tenth of a one-user send's CPU) and the blocker's own query. The
    statement sees the rows committed before it, as that query would, and a row just inserted
    has no waiters: a later send can wait for it only once it has seen it committed.
    """
    if connection.vendor != "postgresql":
        notification.save()
        return sender_order_state(notification)[0]
    sql, fields = _insert_statement()
    params = [field.get_db_prep_save(field.pre_save(notification, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, notification.sender_label])
        notification.pk, blocker_id, blocker_cursor = cursor.fetchone()
    notification._state.adding, notification._state.db = False, connection.alias
    return None if blocker_id is None else (blocker_id, blocker_cursor)


def _fan_out_next_batch(
    notification_id: int,
    lock_wait_secs: float | None = None,
    inserted: Notification | None = None,
    recipient_ids: list[int] | None = None,
    inserted_blocker: tuple[int, int] | None = None,
    claim: Claim | None = None,
) -> bool:
    """Write one batch; False when there is nothing (more) to do now, or another run holds `claim`."""
    now = timezone.now()
    with transaction.atomic(savepoint=inserted is None):
        if lock_wait_secs is not None and connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # this transaction only
                cursor.execute(f"SET LOCAL lock_timeout = '{int(lock_wait_secs * 1000)}ms'")
        locked = Notification.objects.select_for_update()
        notification = inserted or locked.filter(pk=notification_id).first()
        if lock_wait_secs is not None and connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # the batch's own locks wait as long as they need
                cursor.execute("SET LOCAL lock_timeout TO DEFAULT")
        if notification is None or notification.status not in IN_FLIGHT:
            return False
        if claim is not None and claim.taken(notification):
            logger.info("notification %s: another run of its fan-out goes on", notification_id)
            return False
        # Read under our row lock: a later send registers as our waiter only while holding it.
        # A row inserted by notification_insert came with its blocker, and has no waiters yet.
        if inserted is not None:
            blocker, waiters = inserted_blocker, []
        else:
            blocker, waiters = sender_order_state(notification)
        if notification.expires_at <= now:
            notification.status = NotificationStatus.EXPIRED
            notification.save(update_fields=["status", "updated_at"])
            _on_commit(BatchPlan(waiters=waiters))
            return False
        size = settings.CLARION_FANOUT_BATCH
        if notification.fanout_cursor == 0:  # no batch written yet
            size = min(size, FIRST_BATCH_USERS)
        if notification.audience_conditions is not None:  # a saved audience: delivery/audiences.py
            user_ids = audience_recipient_ids_after(
                notification.audience_conditions, notification.fanout_cursor, size
            )
        elif recipient_ids is not None:
            user_ids = [uid for uid in recipient_ids if uid > notification.fanout_cursor][:size]
        else:
            user_ids = recipient_ids_after(notification.target, notification.fanout_cursor, size)
        # A short batch is the last one: finishing here saves a whole transaction per send.
        last = len(user_ids) < size
        truncated = blocker is not None and bool(user_ids) and user_ids[-1] > blocker[1]
        if truncated:
            # Per-sender order: only the users the earlier send has already reached.
            user_ids = [uid for uid in user_ids if uid <= blocker[1]]
            last = False
            if not user_ids:
                return _wait_for(notification, *blocker)
        if truncated:
            # No recipient lies between the last one written and the blocker's cursor, so
            # ours may stand there too (and this sender's later sends follow up to it).
            notification.fanout_cursor = blocker[1]
            notification.status = NotificationStatus.DISPATCHING
        elif not last:
            notification.fanout_cursor = user_ids[-1]
            notification.status = NotificationStatus.DISPATCHING
        else:
            if user_ids:
                notification.fanout_cursor = user_ids[-1]
            notification.status = NotificationStatus.DISPATCHED
            notification.dispatched_at = now
        notification.waiting_for = None
        # The batch's rows and the state above: the set-based path writes both in one statement.
        plan = _write_batch(notification, user_ids, now) if user_ids else BatchPlan()
        if not plan.state_written:
            notification.save(
                update_fields=["status", "fanout_cursor", "dispatched_at", "waiting_for", "updated_at"]
            )
        if claim is not None:
            claim.wrote(notification)
        plan.waiters = waiters
        _on_commit(plan)
    return not last


def _on_commit(plan: BatchPlan) -> None:
    # A lambda, not functools.partial: Django logs a failing robust hook by its __qualname__,
    # which a partial lacks, so a failure here would raise instead of being logged.
    transaction.on_commit(lambda: _after_commit(plan), robust=True)


def sender_order_state(notification: Notification) -> tuple[tuple[int, int] | None, list[tuple[int, int]]]:
    """(blocker, waiters): the sender's earlier notification in flight that is furthest behind,
    as (id, fanout_cursor), if any (users up to its cursor have it or are not its recipients,
    so this one may reach them); and the later ones waiting for this one to move on, oldest
    first.

    One round trip in plain SQL: it runs in every batch, a one-user send's only batch too,
    where the two ORM queries cost a fifth of the fan-out's CPU.
    """
    table = connection.ops.quote_name(Notification._meta.db_table)
    in_flight = ", ".join(f"'{status}'" for status in IN_FLIGHT)  # literals: the partial index applies
    sql = (
        f"SELECT 0, id, fanout_cursor FROM (SELECT id, fanout_cursor FROM {table}"
        f" WHERE sender_label = %s AND status IN ({in_flight}) AND id < %s"
        " ORDER BY fanout_cursor, id LIMIT 1) AS blocker"
        f" UNION ALL SELECT 1, id, recipients FROM {table} WHERE waiting_for = %s"
        " ORDER BY 1, 2"  # waiters oldest first: woken out of order, a later one would wait again
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [notification.sender_label, notification.pk, notification.pk])
        rows = cursor.fetchall()
    blocker = next(((pk, position) for kind, pk, position in rows if kind == 0), None)
    return blocker, [(pk, recipients) for kind, pk, recipients in rows if kind == 1]


def _wait_for(notification: Notification, blocker_id: int, blocker_cursor: int) -> bool:
    """Caught up with an earlier send of the same sender: wait until it writes its next batch.

    The blocker's row is locked while we look again, so it cannot commit a batch between our
    look and our registration (its batch holds the row lock, and wakes `waiting_for` rows
    after it commits). True: it moved meanwhile, so try again now.
    """
    blocker = (
        Notification.objects.select_for_update(no_key=True)
        .filter(pk=blocker_id)
        .values_list("status", "fanout_cursor")
        .first()
    )
    if blocker is None or blocker[0] not in IN_FLIGHT or blocker[1] != blocker_cursor:
        return True
    if notification.waiting_for != blocker_id:
        notification.waiting_for = blocker_id
        notification.save(update_fields=["waiting_for", "updated_at"])
    return False


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


def bulk_writes() -> bool:
    """Rows written set-based by PostgreSQL (delivery/fanout_sql.py) rather than built in Python;
    the ORM path serves SQLite, and CLARION_FANOUT_BULK=0 keeps it on PostgreSQL too."""
    return settings.CLARION_FANOUT_BULK and connection.vendor == "postgresql"


def _write_batch(notification: Notification, user_ids: list[int], now: datetime) -> BatchPlan:
    if notification.collapse_key:
        replaced = _users_with_newer(notification, user_ids)
        user_ids = [uid for uid in user_ids if uid not in replaced]
        if not user_ids:
            return BatchPlan()
    if bulk_writes():
        return _write_batch_bulk(notification, user_ids, now)
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
    realtime_users = _realtime_users(route, user_ids, fully, online)

    deliveries = [
        Delivery(notification=notification, user_id=uid, channel=Channel.REALTIME) for uid in realtime_users
    ]
    push_deliveries = _push_deliveries(notification, user_ids, fully, set(realtime_users), now)
    Delivery.objects.bulk_create(deliveries + push_deliveries)

    plan = BatchPlan()
    messages = {uid: message_payload(notification, cursors[uid]) for uid in realtime_users if uid in online}
    plan.realtime = list(messages.items())
    plan.realtime_delivery_ids = [d.pk for d in deliveries if d.user_id in messages]
    _plan_push(plan, [(d.pk, d.next_attempt_at) for d in push_deliveries], now)
    return plan


def _realtime_users(route: str, user_ids: list[int], fully: set[int], online: set[int]) -> list[int]:
    if route in (Route.REALTIME, Route.ALL):
        return [uid for uid in user_ids if uid in fully]
    if route == Route.AUTO:
        return [uid for uid in user_ids if uid in fully and uid in online]
    return []


def _plan_push(plan: BatchPlan, deliveries: list[tuple[int, datetime | None]], now: datetime) -> None:
    for pk, next_attempt_at in deliveries:
        if next_attempt_at is None:
            plan.push_now.append(pk)
        else:
            plan.push_later[pk] = (next_attempt_at - now).total_seconds()


def _write_batch_bulk(notification: Notification, user_ids: list[int], now: datetime) -> BatchPlan:
    """The same rows as the ORM path, each kind written by one INSERT … SELECT."""
    route = notification.route
    fully = users_reached_fully(notification.target, user_ids)
    device_only = [uid for uid in user_ids if uid not in fully]
    online = users_online(user_ids) if route in (Route.AUTO, Route.REALTIME, Route.ALL) else set()
    realtime_users = _realtime_users(route, user_ids, fully, online)
    published = [uid for uid in realtime_users if uid in online]
    cursors, realtime_delivery_ids = fanout_sql.inbox_write(
        notification,
        user_ids,
        not_live=user_ids if route == Route.PUSH else device_only,
        published=published,
        realtime_users=realtime_users,
        now=now,
        with_state=True,
    )
    if notification.collapse_key:
        _collapse_older(notification, user_ids, now)

    plan = BatchPlan(state_written=True)
    if realtime_users:
        deliveries_changed(realtime_delivery_ids)  # written `sent`: their delivery.sent events
        plan.realtime_sent = len(realtime_delivery_ids)
        plan.realtime = [(uid, message_payload(notification, cursors[uid])) for uid in published]
    if route != Route.REALTIME:
        push = fanout_sql.push_deliveries_write(
            notification,
            user_ids=user_ids,
            device_only=device_only,
            held_users=realtime_users if route == Route.AUTO else [],
            held_until=_held_until(route, now),
            quiet_hours=notification.priority == Priority.NORMAL,
            now=now,
        )
        _plan_push(plan, push, now)
    return plan


def _held_until(route: str, now: datetime) -> datetime | None:
    """Under `auto`, push to a user reached in realtime waits for the ack timeout."""
    return now + timedelta(seconds=settings.CLARION_ACK_TIMEOUT_SECS) if route == Route.AUTO else None


def _push_deliveries(notification, user_ids, fully, realtime_users, now) -> list[Delivery]:
    """Push deliveries: held back by the ack timeout under `auto`, by quiet hours for normal priority."""
    route = notification.route
    if route == Route.REALTIME:
        return []
    device_only = [uid for uid in user_ids if uid not in fully]
    reach = Q(user_id__in=list(fully)) | Q(
        user_id__in=device_only, pk__in=notification.target.get("devices") or []
    )
    devices = Device.objects.filter(reach, active=True)
    if notification.app:  # a send for one app reaches only that app's devices
        devices = devices.filter(app=notification.app)
    # Grouped by app and platform, so each send task's slice is (mostly) one provider call:
    # deliveries_send calls a provider once per (notification, platform, app), one after another.
    devices = sorted(devices.values_list("app", "platform", "pk", "user_id"))
    if not devices:
        return []
    quiet_ends = (
        quiet_hours_ends(list({uid for _, _, _, uid in devices}), now)
        if notification.priority == Priority.NORMAL
        else {}
    )
    held_until = _held_until(route, now)
    deliveries = []
    for _app, platform, device_id, user_id in devices:
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


def _same_collapse_key(notification: Notification):
    """The sender's notifications that share this one's collapse key (the scope of a collapse)."""
    return Notification.objects.filter(
        sender_label=notification.sender_label, collapse_key=notification.collapse_key
    ).exclude(pk=notification.pk)


def _collapse_older(notification: Notification, user_ids: list[int], now: datetime) -> None:
    """A newer message with the same collapse key replaces older ones not yet delivered:
    their pending deliveries are cancelled and they leave the users' streams, so no inbox,
    replay, poll or SSE answer shows them again."""
    older = _same_collapse_key(notification).filter(pk__lt=notification.pk)
    InboxMessage.objects.filter(user_id__in=user_ids, notification__in=older).delete()
    Delivery.objects.filter(
        user_id__in=user_ids,
        status=DeliveryStatus.QUEUED,
        notification__in=older,
    ).update(
        status=DeliveryStatus.CANCELLED,
        error=f"replaced by notification {notification.pk} (same collapse_key)",
        updated_at=now,
    )


def _users_with_newer(notification: Notification, user_ids: list[int]) -> set[int]:
    """Users who already have a newer message with this collapse key: this one is replaced for
    them before it arrives (only sends accepted concurrently can fan out in that order)."""
    newer = _same_collapse_key(notification).filter(pk__gt=notification.pk)
    return set(
        InboxMessage.objects.filter(user_id__in=user_ids, notification__in=newer).values_list(
            "user_id", flat=True
        )
    )


def _after_commit(plan: BatchPlan) -> None:
    """Publish, enqueue the push sends, wake the waiters: each step on its own, so one that
    fails (Redis or the broker down) does not take the others with it. What fails is
    recovered from the committed rows: sockets replay their streams, the sweeper enqueues due
    push deliveries and fan-outs whose blocker has moved on."""
    for step in (_publish_realtime, _enqueue_push, _wake_waiters):
        try:
            step(plan)
        except Exception:
            logger.exception("%s after a fan-out batch failed; recovered from the stored rows", step.__name__)


def _publish_realtime(plan: BatchPlan) -> None:
    if not plan.realtime:
        return
    publish_messages(plan.realtime)
    sent = plan.realtime_sent
    if plan.realtime_delivery_ids:
        sent += deliveries_update(
            Delivery.objects.filter(pk__in=plan.realtime_delivery_ids, status=DeliveryStatus.QUEUED),
            status=DeliveryStatus.SENT,
            sent_at=timezone.now(),
            attempts=1,
        )
    metrics.count("clarion_realtime_published_total", len(plan.realtime))
    metrics.count("clarion_deliveries_total", sent, channel="realtime", status="sent")


def _enqueue_push(plan: BatchPlan) -> None:
    from delivery.tasks import deliveries_send

    ids_enqueue(deliveries_send, plan.push_now)
    soon = sorted((delay, pk) for pk, delay in plan.push_later.items() if delay <= MAX_COUNTDOWN_SECS)
    ids_enqueue(deliveries_send, [pk for _, pk in soon], countdown={pk: delay for delay, pk in soon})


def _wake_waiters(plan: BatchPlan) -> None:
    if plan.waiters:
        _wake(plan.waiters)


_waking = threading.local()


def _wake(waiters: list[tuple[int, int]]) -> None:
    """Continue the sender's later sends that waited for this one: small ones right here, as a
    new small send is (no broker hop per link of a chain of waits), larger ones in a task.

    Oldest first, always: a send woken before an earlier one still in flight would only
    register as its waiter again, which made a backlog of n waiting sends (an outage's) cost
    n² fan-out attempts. Iterative: a fan-out run here that wakes further sends adds them to
    this thread's heap instead of nesting another call, so a long chain never deepens the stack.
    """
    from delivery.tasks import notification_dispatch

    pending = getattr(_waking, "pending", None)
    if pending is not None:
        for waiter in waiters:
            heapq.heappush(pending, waiter)
        return
    _waking.pending = pending = sorted(waiters)
    claimed_at = float("-inf")
    try:
        while pending:
            if len(pending) > 1 and time.monotonic() - claimed_at > settings.CLARION_STALE_WORK_SECS / 3:
                _still_in_hand([pk for pk, _ in pending])
                claimed_at = time.monotonic()
            notification_id, recipients = heapq.heappop(pending)
            if recipients <= settings.CLARION_INLINE_FANOUT_MAX:
                try:
                    notification_fan_out(notification_id)
                    continue
                except Exception:  # a worker task does it instead (never raise from a commit hook)
                    logger.exception(
                        "fan-out of woken notification %s failed; enqueueing it", notification_id
                    )
            notification_dispatch.delay(notification_id)
    finally:
        _waking.pending = None


def _still_in_hand(notification_ids: list[int]) -> None:
    """Tell the sweeper that woken sends still queued in this thread are being handled (it
    resumes fan-outs without progress for CLARION_STALE_WORK_SECS): a long backlog drains here
    in order, without resumed copies of its tail contending for the same rows. If this thread
    dies, the touches stop and the sweeper takes over."""
    Notification.objects.filter(pk__in=notification_ids, status__in=IN_FLIGHT).update(
        updated_at=timezone.now()
    )
