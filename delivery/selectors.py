"""Reads for sending: recipients, inbox pages, status counts."""

from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from delivery.models import Delivery, DeliveryStatus, InboxMessage, Notification
from devices.models import Device, MutedTopic, TopicSubscription
from notifyproject.identities.models import ApiKey

User = get_user_model()


def recipients_queryset(target: dict) -> QuerySet:
    """Active users a target reaches, without duplicates, muted-topic users excluded.

    One query over users with EXISTS sub-queries, so it can be walked in id order in
    batches (keyset) however large the audience.
    """
    users = User.objects.filter(is_active=True)
    if target.get("broadcast"):
        reach = Q()
    else:
        reach = Q(pk__in=[])
        if target.get("users"):
            reach |= Q(username__in=target["users"])
        if target.get("devices"):
            reach |= Q(Exists(Device.objects.filter(user=OuterRef("pk"), pk__in=target["devices"])))
        if target.get("topic"):
            reach |= Q(Exists(TopicSubscription.objects.filter(user=OuterRef("pk"), topic=target["topic"])))
    users = users.filter(reach)
    if target.get("topic"):
        users = users.exclude(Exists(MutedTopic.objects.filter(user=OuterRef("pk"), topic=target["topic"])))
    return users


def _named_users_only(target: dict) -> bool:
    return connection.vendor == "postgresql" and not (
        target.get("broadcast") or target.get("devices") or target.get("topic")
    )


def _active_users_named(columns: str, usernames: list[str], tail: str = "", params=()) -> list[tuple]:
    """Rows of the active users among `usernames`, in plain SQL with the names as one array:
    the one-user send runs this twice, and building the ORM queries cost more than running them."""
    table = connection.ops.quote_name(User._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM {table} WHERE is_active AND username = ANY(%s::text[]){tail}",
            [list(usernames), *params],
        )
        return cursor.fetchall()


def recipient_ids_after(target: dict, after_user_id: int, limit: int) -> list[int]:
    if _named_users_only(target):
        rows = _active_users_named(
            "id", target.get("users") or [], " AND id > %s ORDER BY id LIMIT %s", (after_user_id, limit)
        )
        return [pk for (pk,) in rows]
    return list(
        recipients_queryset(target)
        .filter(pk__gt=after_user_id)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def users_reached_fully(target: dict, user_ids: list[int]) -> set[int]:
    """Of these recipients, those targeted as users (not only through `to.devices`)."""
    if target.get("broadcast") or not target.get("devices"):
        return set(user_ids)
    only_named = {**target, "devices": []}
    return set(recipients_queryset(only_named).filter(pk__in=user_ids).values_list("pk", flat=True))


def waiters_of(notification_id: int) -> list[int]:
    """Later notifications of the same sender waiting for this one's fan-out to move on."""
    return list(Notification.objects.filter(waiting_for=notification_id).values_list("pk", flat=True))


def recipients_count(target: dict, unknown: dict) -> int:
    """How many users the target reaches; `unknown` is unknown_targets(target).

    Named users alone (the common one-user send) are counted from that answer, not queried again.
    """
    if target.get("broadcast") or target.get("devices") or target.get("topic"):
        return recipients_queryset(target).count()
    return len(set(target.get("users") or []) - set(unknown["users"]))


def unknown_targets(target: dict) -> dict:
    usernames = target.get("users") or []
    device_ids = target.get("devices") or []
    if connection.vendor == "postgresql":
        known_users = {name for (name,) in _active_users_named("username", usernames)} if usernames else set()
    else:
        known_users = set(
            User.objects.filter(username__in=usernames, is_active=True).values_list("username", flat=True)
        )
    known_devices = (
        set(Device.objects.filter(pk__in=device_ids).values_list("pk", flat=True)) if device_ids else set()
    )
    return {
        "users": [name for name in usernames if name not in known_users],
        "devices": [pk for pk in device_ids if pk not in known_devices],
    }


def targets_resolved(target: dict) -> tuple[dict, list[int] | None]:
    """(unknown_targets(target), the recipients' ids in id order when the target names users only).

    For named users both come from one read: a send's first fan-out batch then takes its
    recipients from here instead of reading them again in its transaction.
    """
    usernames = target.get("users") or []
    if not usernames or not _named_users_only(target):
        return unknown_targets(target), None
    rows = _active_users_named("username, id", usernames)
    known = {name for name, _pk in rows}
    unknown = {"users": [name for name in usernames if name not in known], "devices": []}
    return unknown, sorted(pk for _name, pk in rows)


def delivery_counts(notification: Notification) -> dict[str, int]:
    counts = {
        status: 0 for status in ("queued", "sent", "delivered", "failed", "expired", "cancelled", "skipped")
    }
    rows = Delivery.objects.filter(notification=notification).values("status").annotate(n=Count("id"))
    for row in rows:
        status = DeliveryStatus.QUEUED if row["status"] == DeliveryStatus.SENDING else row["status"]
        counts[status] = counts.get(status, 0) + row["n"]
    return counts


def inbox_page(user, after: int, limit: int) -> list[InboxMessage]:
    """The user's messages after the cursor, oldest first; those whose ttl has passed are gone."""
    return list(
        InboxMessage.objects.filter(user=user, seq__gt=after, notification__expires_at__gt=timezone.now())
        .select_related("notification")
        .order_by("seq")[:limit]
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def message_payload(notification: Notification, seq: int, read_at: datetime | None = None) -> dict:
    """A notification as a client sees it (inbox, WebSocket, poll, SSE); read_at null until read."""
    return {
        "id": notification.pk,
        "cursor": seq,
        "title": notification.title,
        "body": notification.body,
        "data": notification.data,
        "url": notification.url,
        "icon": notification.icon,
        "created_at": _iso(notification.created_at),
        "read_at": _iso(read_at),
    }


def notifications_visible_to(auth) -> QuerySet:
    """What a caller may read and cancel: a key bound to an app only what it sent; others everything."""
    if isinstance(auth, ApiKey) and auth.app:
        return Notification.objects.filter(sender_key=auth)
    return Notification.objects.all()


def reads_after(user_id: int, read_after: int, limit: int) -> list[tuple[int, int]]:
    """(read position, notification id) of the user's messages first read after `read_after`, in order."""
    return list(
        InboxMessage.objects.filter(user_id=user_id, read_seq__gt=read_after)
        .order_by("read_seq")
        .values_list("read_seq", "notification_id")[:limit]
    )
