"""Where state changes become events: called inside the transaction that changed the state.

Each status change happens in one place (delivery/sending.py, fanout.py, services.py,
sweeper.py, realtime/streams.py, devices/services.py); that place calls in here. One call
writes one outbox row per (subscribed webhook, event) with one INSERT, in the caller's
transaction, and after commit enqueues send tasks of EVENTS_PER_TASK events and sends the
Django signals. A rolled-back change leaves no row and sends nothing. With no webhook
subscribed and no signal receiver, a change costs at most one small query a second per process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import orjson
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from delivery.models import Delivery, DeliveryStatus, Notification
from delivery.webhooks import signals
from delivery.webhooks.bulk import insert_rows
from delivery.webhooks.models import EventStatus, EventType, Webhook, WebhookEvent
from delivery.webhooks.signing import message_id_generate
from devices import signals as device_signals
from devices.models import Device
from notifyproject.identities.models import ApiKey
from notifyproject.task_queue import ids_enqueue

logger = logging.getLogger(__name__)

EVENTS_PER_TASK = 100  # one task posts this many events concurrently (see delivery/webhooks/sending.py)
EVENT_COLUMNS = {
    "webhook_id": "bigint",
    "event_type": "text",
    "message_id": "text",
    "body": "text",
    "created_at": "timestamptz",
    "status": "text",
    "attempts": "integer",
    "next_attempt_at": "timestamptz",
    "enqueued_at": "timestamptz",
    "last_error": "text",
    "updated_at": "timestamptz",
}
# The list of webhooks is read at most this often per process (and at once after a change in
# this process): a status change costs no query for it while nobody listens. A webhook created
# in another process hears of changes from at most this long after; one deleted or disabled
# meanwhile gets nothing, because the INSERT checks it is still there and active.
SUBSCRIPTIONS_TTL_SECS = 1.0

DELIVERY_EVENTS = {
    DeliveryStatus.SENT: EventType.DELIVERY_SENT,
    DeliveryStatus.DELIVERED: EventType.DELIVERY_DELIVERED,
    DeliveryStatus.FAILED: EventType.DELIVERY_FAILED,
    DeliveryStatus.EXPIRED: EventType.DELIVERY_EXPIRED,
    DeliveryStatus.SKIPPED: EventType.DELIVERY_SKIPPED,
}
DELIVERY_EVENT_TYPES = frozenset(DELIVERY_EVENTS.values())
# A delivery.* event's data: the delivery log's fields (delivery/serializers.py), then "notification".
DELIVERY_KEYS = ("id", "user", "device", "channel", "status", "attempts", "error", "updated_at")
DELIVERY_ROW = ("pk", "user__username", "device_id", "channel", "status", "attempts", "error", "updated_at")


@dataclass(frozen=True)
class Subscription:
    webhook_id: int
    events: frozenset[str]
    api_key_id: int | None
    all_notifications: bool

    def wants(self, event: Event) -> bool:
        return event.type in self.events and (
            self.all_notifications or (self.api_key_id is not None and self.api_key_id == event.sender_key_id)
        )


@dataclass(frozen=True)
class Listeners:
    """Who listens to some event types right now: active webhooks, and signal receivers."""

    subscriptions: tuple[Subscription, ...]
    signal_types: frozenset[str]

    @classmethod
    def of(cls, event_types: Iterable[str]) -> Listeners:
        wanted = frozenset(event_types)
        subscriptions = tuple(
            Subscription(pk, events & wanted, api_key_id, everything)
            for pk, events, api_key_id, everything in active_webhooks()
            if wanted & events
        )
        signal_types = frozenset(t for t in wanted if signals.has_receivers(t))
        return cls(subscriptions, signal_types)

    def __bool__(self) -> bool:
        return bool(self.subscriptions or self.signal_types)


_webhooks_cache: tuple[float, list[tuple]] = (0.0, [])


def active_webhooks() -> list[tuple[int, frozenset[str], int | None, bool]]:
    """(id, events, api key id, all notifications) of every active webhook, cached briefly."""
    global _webhooks_cache
    expires, rows = _webhooks_cache
    if time.monotonic() < expires:
        return rows
    # A revoked key's webhooks hear nothing more (deleting the key deletes them).
    listening = Webhook.objects.filter(active=True).filter(
        Q(api_key__isnull=True) | Q(api_key__revoked=False)
    )
    rows = [
        (pk, frozenset(events), api_key_id, everything)
        for pk, events, api_key_id, everything in listening.values_list(
            "pk", "events", "api_key_id", "all_notifications"
        )
    ]
    _webhooks_cache = (time.monotonic() + SUBSCRIPTIONS_TTL_SECS, rows)
    return rows


def forget_active_webhooks(**kwargs) -> None:
    """A webhook changed in this process: read the list again on the next status change."""
    global _webhooks_cache
    _webhooks_cache = (0.0, [])


post_save.connect(forget_active_webhooks, sender=Webhook, dispatch_uid="webhooks.forget_active")
post_delete.connect(forget_active_webhooks, sender=Webhook, dispatch_uid="webhooks.forget_active")
post_save.connect(forget_active_webhooks, sender=ApiKey, dispatch_uid="webhooks.forget_active_key")


@dataclass(frozen=True)
class Event:
    type: str
    sender_key_id: int | None  # the API key that sent the notification, for webhook ownership
    data: dict
    signal_sender: type


def iso(moment: datetime) -> str:
    """ISO 8601 as the API writes it (DRF's format: UTC with a Z)."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# -- the calls each state change makes --------------------------------------------------------


def deliveries_update(queryset: QuerySet, **values) -> int:
    """`queryset.update(**values)`, recording the delivery.* event of every row it changes.

    Nobody listening: the one plain UPDATE. Otherwise, in one transaction: lock the rows,
    update exactly those, and record their events.
    """
    listeners = Listeners.of(DELIVERY_EVENT_TYPES)
    if not listeners:
        return queryset.update(**values)
    with transaction.atomic():
        ids = list(queryset.select_for_update(of=("self",)).order_by("pk").values_list("pk", flat=True))
        if not ids:
            return 0
        updated = queryset.filter(pk__in=ids).update(**values)
        deliveries_changed(ids, listeners=listeners)
    return updated


def deliveries_changed(delivery_ids: Iterable[int], *, listeners: Listeners | None = None) -> None:
    """These deliveries' status just changed in the current transaction: record their events."""
    delivery_ids = list(delivery_ids)
    if not delivery_ids:
        return
    listeners = listeners if listeners is not None else Listeners.of(DELIVERY_EVENT_TYPES)
    if not listeners:
        return
    # The delivery as the delivery log shows it, plus its notification (docs/webhooks.md).
    rows = Delivery.objects.filter(pk__in=delivery_ids, status__in=list(DELIVERY_EVENTS)).values_list(
        *DELIVERY_ROW, "notification_id", "notification__sender_key_id"
    )
    events = []
    for *fields, notification_id, sender_key_id in rows:
        data = dict(zip(DELIVERY_KEYS, fields, strict=True))
        data["updated_at"] = iso(data["updated_at"])
        data["notification"] = notification_id
        events.append(Event(DELIVERY_EVENTS[data["status"]], sender_key_id, data, Delivery))
    record(events, listeners)


def notification_read(*, user, notification_id: int) -> None:
    """The user acknowledged this notification for the first time (in the current transaction)."""
    listeners = Listeners.of([EventType.NOTIFICATION_READ])
    if not listeners:
        return
    sender_key_id = (
        Notification.objects.filter(pk=notification_id).values_list("sender_key_id", flat=True).first()
    )
    data = {"notification": notification_id, "user": user.get_username()}
    record([Event(EventType.NOTIFICATION_READ, sender_key_id, data, Notification)], listeners)


def devices_deactivated(device_ids: Iterable[int], *, causes: dict[int, int] | None = None) -> None:
    """These devices were just deactivated because a provider said their token is dead.

    `causes` maps a device to the notification whose send found it dead: the webhook of the
    key that sent it hears of it (an instance-wide webhook of every one).
    """
    device_ids = list(device_ids)
    if not device_ids:
        return
    listeners = Listeners.of([EventType.DEVICE_DEACTIVATED])
    if not listeners:
        return
    causes = causes or {}
    sender_keys = dict(
        Notification.objects.filter(pk__in=set(causes.values())).values_list("pk", "sender_key_id")
    )
    rows = Device.objects.filter(pk__in=device_ids).values_list(
        "pk", "user__username", "platform", "deactivated_reason"
    )
    events = [
        Event(
            EventType.DEVICE_DEACTIVATED,
            sender_keys.get(causes.get(pk)),
            {"device": pk, "user": username, "platform": platform, "reason": reason},
            Device,
        )
        for pk, username, platform, reason in rows
    ]
    record(events, listeners)


def _devices_deactivated_received(sender, *, device_ids, causes, **kwargs) -> None:
    devices_deactivated(device_ids, causes=causes)


device_signals.devices_deactivated.connect(
    _devices_deactivated_received, dispatch_uid="webhooks.devices_deactivated"
)


# -- recording -------------------------------------------------------------------------------


def record(events: list[Event], listeners: Listeners) -> None:
    """One outbox row per (subscribed webhook, event), written now; tasks and signals after commit."""
    if not events:
        return
    now = timezone.now()
    timestamp = iso(now)
    rows: list[tuple] = []
    for event in events:
        body = None
        for subscription in listeners.subscriptions:
            if not subscription.wants(event):
                continue
            if body is None:
                body = orjson.dumps({"type": event.type, "timestamp": timestamp, "data": event.data}).decode()
            rows.append((subscription.webhook_id, event.type, message_id_generate(), body, now))
    if rows:
        webhooks = connection.ops.quote_name(Webhook._meta.db_table)
        ids = insert_rows(
            WebhookEvent,
            EVENT_COLUMNS,
            [(*row, EventStatus.PENDING, 0, now, now, "", now) for row in rows],
            where=f"EXISTS (SELECT 1 FROM {webhooks} w WHERE w.id = v.webhook_id AND w.active)",
        )
        transaction.on_commit(lambda: event_sends_enqueue(ids), robust=True)
    signalled = [event for event in events if event.type in listeners.signal_types]
    if signalled:
        transaction.on_commit(lambda: _send_signals(signalled, now), robust=True)


def event_sends_enqueue(event_ids: list[int]) -> None:
    from delivery.webhooks.tasks import webhook_events_send

    ids_enqueue(webhook_events_send, event_ids, EVENTS_PER_TASK)


def _send_signals(events: list[Event], timestamp: datetime) -> None:
    for event in events:
        responses = signals.BY_EVENT[event.type].send_robust(
            sender=event.signal_sender, event=event.type, timestamp=timestamp, data=event.data
        )
        for receiver, response in responses:
            if isinstance(response, Exception):
                logger.error(
                    "%s receiver %s raised %s",
                    event.type,
                    getattr(receiver, "__qualname__", receiver),
                    response,
                    exc_info=response,
                )
