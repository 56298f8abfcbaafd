"""Writes for sending: the one place notifications are created, cancelled and acknowledged.

`notification_send` is also the in-process Python API: call it inside your own transaction
and nothing is sent unless that transaction commits (see docs/python-api.md).
"""

import copy
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from delivery.audiences import audience_conditions, users_matching
from delivery.models import (
    Audience,
    Channel,
    Delivery,
    DeliveryStatus,
    InboxMessage,
    Notification,
    NotificationStatus,
    Priority,
    RecurringNotification,
    Route,
    UserStream,
)
from delivery.providers.base import PushMessage, PushOptions
from delivery.selectors import recipients_count, targets_resolved, waiters_of
from delivery.webhooks import events as webhook_events
from notifyproject import metrics
from notifyproject.identities.models import ApiKey
from realtime.api import publish_read

logger = logging.getLogger(__name__)

# FCM and APNs refuse payloads over 4 KB; title, body and data together must fit.
MAX_PAYLOAD_BYTES = 4096
MAX_TTL_SECS = 28 * 24 * 3600  # FCM's and Web Push services' longest retention
DEFAULT_TTL_SECS = MAX_TTL_SECS
IDEMPOTENCY_WINDOW = timedelta(hours=24)
# How far ahead a send may be scheduled: ten years is past any real reminder, and keeps every
# date computed from send_at (send_at + ttl) far from datetime's year-9999 end.
MAX_SCHEDULE_AHEAD = timedelta(days=3653)


class PayloadTooLargeError(ValueError):
    pass


class NotCancellableError(Exception):
    pass


class AudienceWithTargetError(ValueError):
    """A send to a saved audience named users, devices, a topic or broadcast as well."""


@dataclass(frozen=True)
class Sender:
    """Who sends: an API key, a staff user, or Clarion itself (recurring sends)."""

    label: str
    api_key: ApiKey | None = None
    user: object | None = None

    @classmethod
    def for_api_key(cls, api_key: ApiKey) -> "Sender":
        return cls(label=f"key:{api_key.prefix}", api_key=api_key)

    @classmethod
    def for_user(cls, user) -> "Sender":
        return cls(label=f"user:{user.pk}", user=user)


@dataclass
class NotificationRequest:
    """What to send and to whom; the API serializer and the admin both build one.

    To whom: `target` ({"users": [...], "devices": [...], "topic": ..., "broadcast": ...}), or
    a saved `audience` with an empty target (delivery/audiences.py: any size, resolved by the fan-out).
    """

    target: dict
    title: str = ""
    body: str = ""
    data: dict = field(default_factory=dict)
    url: str = ""
    icon: str = ""
    priority: str = Priority.NORMAL
    ttl: int = DEFAULT_TTL_SECS
    collapse_key: str = ""
    send_at: datetime | None = None
    route: str = Route.AUTO
    push: dict = field(default_factory=dict)  # PushOptions fields that are set
    overrides: dict = field(default_factory=dict)
    app: str = ""  # only this app's devices get push; "" is every app's
    audience: Audience | None = None


def push_payload_check(request: NotificationRequest) -> None:
    """PayloadTooLargeError when a push platform would refuse the final payload as too large."""
    if request.route == Route.REALTIME:
        return
    from delivery.providers.limits import WIDEST_NOTIFICATION_ID, payload_too_large

    message = PushMessage(
        notification_id=WIDEST_NOTIFICATION_ID,
        title=request.title,
        body=request.body,
        data=request.data,
        url=request.url,
        icon=request.icon,
        priority=request.priority,
        expires_at=timezone.now() + timedelta(seconds=request.ttl),
        collapse_key=request.collapse_key,
        options=PushOptions.from_dict(request.push),
        overrides=request.overrides,
    )
    reason = payload_too_large(message)
    if reason:
        raise PayloadTooLargeError(reason)


def payload_size(title: str, body: str, data: dict) -> int:
    return len(orjson.dumps({"title": title, "body": body, "data": data}))


def notification_send(
    *, sender: Sender, request: NotificationRequest, idempotency_key: str | None = None
) -> tuple[Notification, bool]:
    """Record a notification and enqueue its fan-out when the transaction commits.

    Returns (notification, created); created is False when `idempotency_key` was already
    used by this sender within 24 hours, in which case nothing is sent again.
    """
    if payload_size(request.title, request.body, request.data) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLargeError(f"title, body and data exceed {MAX_PAYLOAD_BYTES} bytes")
    push_payload_check(request)
    _app_of_send(sender, request)  # refused before anything is read or written
    now = timezone.now()
    if idempotency_key:
        existing = _idempotent_match(sender.label, idempotency_key, now)
        if existing is not None:
            return existing, False

    starts_at = request.send_at if request.send_at and request.send_at > now else now
    conditions = _audience_conditions_of_send(request, now)
    unknown, recipient_ids = targets_resolved(request.target)
    notification = Notification(
        sender_key=sender.api_key,
        sender_user=sender.user,
        sender_label=sender.label,
        idempotency_key=idempotency_key or None,
        title=request.title,
        body=request.body,
        data=request.data,
        url=request.url,
        icon=request.icon,
        priority=request.priority,
        ttl=request.ttl,
        expires_at=starts_at + timedelta(seconds=request.ttl),
        collapse_key=request.collapse_key,
        send_at=request.send_at,
        route=request.route,
        push=request.push,
        overrides=request.overrides,
        app=_app_of_send(sender, request),
        target=request.target,
        audience=request.audience,
        audience_conditions=conditions,
        unknown=unknown,
        recipients=(
            users_matching(conditions).count()
            if conditions is not None
            else recipients_count(request.target, unknown)
        ),
        status=NotificationStatus.SCHEDULED if starts_at > now else NotificationStatus.QUEUED,
    )
    inline = notification.status == NotificationStatus.QUEUED and (
        notification.recipients <= settings.CLARION_INLINE_FANOUT_MAX
    )
    # An audience's conditions are read back from the row by the fan-out, so it goes the usual way.
    if inline and conditions is None and not transaction.get_connection().in_atomic_block:
        try:
            return _insert_with_first_batch(notification, request.route, recipient_ids), True
        except Exception as exc:
            if not isinstance(exc, IntegrityError):  # else a concurrent send took the key: below says so
                logger.exception("fan-out of a new notification failed; the worker does it instead")
            notification.pk, notification._state.adding = None, True  # rolled back: insert it again
            inline = False  # the same fan-out just failed here
    try:
        with transaction.atomic():
            notification.save()
            if notification.status == NotificationStatus.QUEUED:
                # A lambda: Django logs a failing robust hook by __qualname__, which a partial lacks.
                transaction.on_commit(lambda: _dispatch(notification.pk, inline=inline), robust=True)
            transaction.on_commit(
                lambda: metrics.count("clarion_notifications_total", route=request.route), robust=True
            )
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key won the insert.
        return Notification.objects.get(sender_label=sender.label, idempotency_key=idempotency_key), False
    return notification, True


def _insert_with_first_batch(
    notification: Notification, route: str, recipient_ids: list[int] | None
) -> Notification:
    """A small send outside any caller's transaction: its row and its first (for a few users,
    only) fan-out batch in one transaction, so one commit stands between the request and the
    realtime publish. The batch works on a copy: the caller answers with the accepted state.
    `recipient_ids`: the recipients as the send resolved them, if it did (named users)."""
    from delivery.fanout import notification_fan_out_first_batch, notification_insert

    with transaction.atomic():
        blocker = notification_insert(notification)
        if notification_fan_out_first_batch(copy.copy(notification), blocker, recipient_ids):
            transaction.on_commit(lambda: _dispatch(notification.pk, inline=True), robust=True)
        transaction.on_commit(lambda: metrics.count("clarion_notifications_total", route=route), robust=True)
    return notification


def _audience_conditions_of_send(request: NotificationRequest, now: datetime) -> dict | None:
    if request.audience is None:
        return None
    if any(request.target.values()):
        raise AudienceWithTargetError("A send to a saved audience names no other recipients.")
    return audience_conditions(request.audience, now)


class AppNotAllowedError(Exception):
    """A key bound to one app asked to send to another."""


def _app_of_send(sender: Sender, request: NotificationRequest) -> str:
    """A bound key's sends are its app's; anyone else's are what they asked for."""
    bound = sender.api_key.app if sender.api_key is not None else ""
    if bound and request.app and request.app != bound:
        raise AppNotAllowedError(f"This API key sends only to the app {bound!r}.")
    return bound or request.app


def _idempotent_match(sender_label: str, key: str, now: datetime) -> Notification | None:
    existing = Notification.objects.filter(sender_label=sender_label, idempotency_key=key).first()
    if existing is None:
        return None
    if existing.created_at >= now - IDEMPOTENCY_WINDOW:
        return existing
    # Outside the window the key is free again; release it from the old notification.
    Notification.objects.filter(pk=existing.pk).update(idempotency_key=None)
    return None


def _dispatch(notification_id: int, *, inline: bool) -> None:
    """After commit: fan a small audience out right here, a large one in the worker.

    A handful of named users is one short batch; doing it in this process saves the broker
    hop and the worker's wake-up, most of a single send's latency. It is the same resumable
    fan-out the task runs (row lock, cursor), so a duplicate dispatch still finds it done; if
    it fails here, the task is enqueued instead, and if this process dies first, the sweeper
    dispatches the still-`queued` notification after CLARION_STALE_WORK_SECS.
    """
    if inline:
        from delivery.fanout import notification_fan_out

        try:
            notification_fan_out(notification_id)
            return
        except Exception:  # the worker gets the fan-out instead (robust on_commit: never raise here)
            logger.exception("inline fan-out of notification %s failed; enqueueing it", notification_id)
    _enqueue_dispatch(notification_id)


def _enqueue_dispatch(notification_id: int) -> None:
    from delivery.tasks import notification_dispatch

    notification_dispatch.delay(notification_id)


def _enqueue_dispatches(notification_ids: list[int]) -> None:
    for notification_id in notification_ids:
        _enqueue_dispatch(notification_id)


def notification_cancel(notification_id: int) -> Notification:
    """Cancel a notification that has not started sending; NotCancellableError otherwise."""
    with transaction.atomic():
        notification = Notification.objects.select_for_update().get(pk=notification_id)
        if notification.status == NotificationStatus.CANCELLED:
            return notification
        if notification.status not in (NotificationStatus.SCHEDULED, NotificationStatus.QUEUED):
            raise NotCancellableError(f"notification is already {notification.status}")
        notification.status = NotificationStatus.CANCELLED
        notification.save(update_fields=["status", "updated_at"])
        Delivery.objects.filter(notification=notification, status=DeliveryStatus.QUEUED).update(
            status=DeliveryStatus.CANCELLED, error="cancelled by the sender", updated_at=timezone.now()
        )
        # The sender's later sends that waited for this one go on without it.
        waiters = waiters_of(notification.pk)
        if waiters:
            transaction.on_commit(lambda: _enqueue_dispatches(waiters), robust=True)
    return notification


# A push in one of these states may be on the device's screen: a read withdraws it.
SHOWN_PUSH_STATUSES = (DeliveryStatus.SENT, DeliveryStatus.SENDING, DeliveryStatus.DELIVERED)


def inbox_ack(*, user, notification_id: int) -> bool:
    """The user has seen this message: mark their deliveries delivered, hold back pending push.

    False when the user has no such message. The first ack reads it: `read_at` and the next read
    position are recorded, the user's realtime clients are told (`read`) and the pushes already
    shown on their devices are withdrawn (docs/realtime.md, "Read everywhere"). The first ack is
    the `notification.read` event, and each delivery it marks delivered a `delivery.delivered`.
    """
    now = timezone.now()
    with transaction.atomic():
        # The message, with the user's stream row locked (the fan-out also locks it first: one
        # lock order, so no deadlock), so read positions follow commit order as cursors do.
        found = (
            UserStream.objects.select_for_update(of=("self",))
            .filter(user=user, user__inbox__notification_id=notification_id)
            .values_list("last_read_seq", "user__inbox__pk", "user__inbox__read_at")
            .first()
        )
        if found is None:
            return False
        last_read_seq, message_pk, read_at = found
        deliveries = list(
            Delivery.objects.filter(user=user, notification_id=notification_id).values_list(
                "pk", "channel", "status"
            )
        )
        seen, realtime_unsent, push_unneeded, shown_push = [], [], [], []
        for pk, channel, status in deliveries:
            if status in (DeliveryStatus.SENT, DeliveryStatus.SENDING):
                seen.append(pk)
            elif status == DeliveryStatus.QUEUED:
                (realtime_unsent if channel == Channel.REALTIME else push_unneeded).append(pk)
            if channel != Channel.REALTIME and status in SHOWN_PUSH_STATUSES:
                shown_push.append(pk)
        if seen:
            webhook_events.deliveries_update(
                Delivery.objects.filter(
                    pk__in=seen, status__in=[DeliveryStatus.SENT, DeliveryStatus.SENDING]
                ),
                status=DeliveryStatus.DELIVERED,
                delivered_at=now,
                updated_at=now,
            )
        if realtime_unsent:
            webhook_events.deliveries_update(
                Delivery.objects.filter(pk__in=realtime_unsent, status=DeliveryStatus.QUEUED),
                status=DeliveryStatus.DELIVERED,
                delivered_at=now,
                sent_at=now,
                updated_at=now,
            )
        if push_unneeded:
            # auto routing's held-back push (and quiet-hours push) is no longer needed.
            Delivery.objects.filter(pk__in=push_unneeded, status=DeliveryStatus.QUEUED).update(
                status=DeliveryStatus.CANCELLED, error="acknowledged before push was needed", updated_at=now
            )
        read_seq = last_read_seq + 1  # the stream row is locked (and was re-read when we got it)
        # read_at as the query above saw it may predate a concurrent ack that held the lock
        # first (PostgreSQL re-reads only the locked row), so the update re-checks it.
        first_read = (
            read_at is None
            and InboxMessage.objects.filter(pk=message_pk, read_at__isnull=True).update(
                read_at=now, read_seq=read_seq
            )
            == 1
        )
        if first_read:
            UserStream.objects.filter(user=user).update(last_read_seq=read_seq)
            webhook_events.notification_read(user=user, notification_id=notification_id)
            transaction.on_commit(lambda: publish_read(user.pk, notification_id, read_seq), robust=True)
            if shown_push:
                transaction.on_commit(lambda: _enqueue_withdraw(shown_push), robust=True)
    return True


def _enqueue_withdraw(delivery_ids: list[int]) -> None:
    from delivery.tasks import push_withdraw

    push_withdraw.delay(delivery_ids)


# A crontab fires at most once a minute: ticks closer than this are one occurrence.
CRONTAB_MIN_GAP_SECS = 30


def recurring_notification_fire(recurring_id: int) -> Notification | None:
    """Send one occurrence of a recurring notification (called by beat through a task).

    Beat may send one tick twice (django-celery-beat re-reads a schedule that changed and runs
    it again before the first run's time is saved), so an occurrence is claimed first: a tick
    within half an interval of the last one sends nothing.
    """
    with transaction.atomic():
        return _recurring_occurrence_send(recurring_id)


def _recurring_occurrence_send(recurring_id: int) -> Notification | None:
    recurring = (
        RecurringNotification.objects.select_for_update(of=("self",))
        .filter(pk=recurring_id, enabled=True)
        .select_related("audience")
        .first()
    )
    if recurring is None:
        return None
    now = timezone.now()
    min_gap = recurring.interval_seconds / 2 if recurring.interval_seconds else CRONTAB_MIN_GAP_SECS
    if recurring.last_sent_at is not None and (now - recurring.last_sent_at).total_seconds() < min_gap:
        logger.info("recurring notification %s: a repeated tick, not sent again", recurring.pk)
        return None
    users = [name.strip() for name in recurring.target_users.replace(",", "\n").splitlines() if name.strip()]
    if recurring.audience_id:  # the audience as it is now (the send takes its conditions)
        target = {}
    else:
        target = {"users": users, "topic": recurring.target_topic or None, "broadcast": recurring.broadcast}
    request = NotificationRequest(
        target=target,
        audience=recurring.audience,
        title=recurring.title,
        body=recurring.body,
        data=recurring.data,
        url=recurring.url,
        priority=recurring.priority,
        ttl=recurring.ttl,
        route=recurring.route,
    )
    notification, _ = notification_send(sender=Sender(label=f"recurring:{recurring.pk}"), request=request)
    RecurringNotification.objects.filter(pk=recurring.pk).update(last_sent_at=now)
    return notification
