"""What realtime/ uses of delivery/: the per-user message stream it replays and polls, the
reads it resends, the ack, and the send behind "send myself a test".

The one module of delivery/ that realtime/ imports (tests/test_realtime_delivery_seam.py;
docs/architecture.md, Parts and allowed imports). Every stream read keeps the cursor order
`allocate_cursors` gives (docs/architecture.md, One cursor per user).
"""

from django.db import connection
from django.db.models.expressions import RawSQL
from django.utils import timezone

from delivery.fanout_sql import id_array
from delivery.models import Channel, Delivery, DeliveryStatus, InboxMessage, Route, UserStream
from delivery.selectors import message_payload, reads_after
from delivery.serializers import NotificationAcceptedSerializer, accepted_body
from delivery.services import NotificationRequest, Sender, inbox_ack, notification_send
from delivery.webhooks.events import deliveries_update

__all__ = [
    "REPLAY_PAGE",
    "NotificationAcceptedSerializer",
    "NotificationRequest",
    "Route",
    "Sender",
    "accepted_body",
    "inbox_ack",
    "live_messages_after",
    "live_messages_after_many",
    "notification_send",
    "reads_after",
    "stream_and_read_positions_of",
    "stream_position",
    "stream_positions",
]

REPLAY_PAGE = 200  # messages per query while catching a client up


def stream_positions(user_ids: list[int]) -> dict[int, int]:
    """Where each user's stream stands now (users with no messages yet are left out).

    On PostgreSQL the ids go as one array parameter: the node asks for all its users every
    20 s, and psycopg building a query with 10,000 placeholders took a tenth of the idle
    server's CPU (W3 profile, 10,000 sockets).
    """
    if connection.vendor != "postgresql":
        return dict(UserStream.objects.filter(user_id__in=user_ids).values_list("user_id", "last_seq"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT user_id, last_seq FROM {UserStream._meta.db_table} WHERE user_id = ANY(%s::bigint[])",
            [id_array(user_ids)],
        )
        return dict(cursor.fetchall())


def stream_position(user_id: int) -> int:
    return UserStream.objects.filter(user_id=user_id).values_list("last_seq", flat=True).first() or 0


def stream_and_read_positions_of(user_ids: list[int]) -> dict[int, tuple[int, int]]:
    """{user id: (last cursor, last read position)} for those of these users with a stream row.

    Every long-poll reads this (batched, up to a thousand users a query); on PostgreSQL in one
    array parameter, since the ORM's `IN` list prepared each id on its own, most of the query's
    CPU (W8 profile).
    """
    if connection.vendor != "postgresql":
        rows = UserStream.objects.filter(user_id__in=user_ids)
        rows = rows.values_list("user_id", "last_seq", "last_read_seq")
    else:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT user_id, last_seq, last_read_seq FROM {UserStream._meta.db_table}"
                " WHERE user_id = ANY(%s::bigint[])",
                [id_array(user_ids)],
            )
            rows = cursor.fetchall()
    return {user_id: (last_seq, last_read_seq) for user_id, last_seq, last_read_seq in rows}


LIVE_MESSAGE_FIELDS = ("seq", "notification_id", "read_at") + tuple(
    f"notification__{name}" for name in ("title", "body", "data", "url", "icon", "created_at")
)


def live_messages_after(
    user_id: int, after: int, limit: int = REPLAY_PAGE, until: int | None = None
) -> list[dict]:
    """Realtime messages with cursor > after (≤ until), oldest first, as clients see them.

    A message whose ttl has passed is skipped (the sweeper marks its delivery `expired`).
    """
    rows = InboxMessage.objects.filter(
        user_id=user_id, seq__gt=after, live=True, notification__expires_at__gt=timezone.now()
    )
    if until is not None:
        rows = rows.filter(seq__lte=until)
    # Only what a client sees: the notification's target and unknown-targets JSON are not decoded.
    rows = list(rows.select_related("notification").only(*LIVE_MESSAGE_FIELDS).order_by("seq")[:limit])
    if rows:
        replayed = [row.notification_id for row in rows]
        _replayed_deliveries_sent(
            Delivery.objects.filter(user_id=user_id, notification_id__in=replayed), timezone.now()
        )
    return [message_payload(row.notification, row.seq, row.read_at) for row in rows]


def live_messages_after_many(keys: list[tuple[int, int, int | None]]) -> dict[tuple, list[dict]]:
    """`live_messages_after(user_id, after, REPLAY_PAGE, until)` for each (user_id, after, until)
    key, in one read and one delivery update for all of them.

    A reconnect storm replays to thousands of sockets at once: one query pair and thread hop
    each queued the replays (and, in the shared pool, the handshakes behind them) for seconds
    (W4, docs/benchmarks.md). Each key's page is the same as its own query's: every live row of
    the user in the key's range comes from the key's own `LATERAL` page, and rows other keys
    of the same user bring in lie past it.
    """
    if connection.vendor != "postgresql":
        return {key: live_messages_after(key[0], key[1], REPLAY_PAGE, key[2]) for key in keys}
    now = timezone.now()
    inbox = InboxMessage._meta.db_table
    notifications = InboxMessage._meta.get_field("notification").related_model._meta.db_table
    pages = RawSQL(
        f"SELECT page.id FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS k(user_id, after, until)"
        f" CROSS JOIN LATERAL (SELECT i.id FROM {inbox} i JOIN {notifications} n ON n.id = i.notification_id"
        "  WHERE i.user_id = k.user_id AND i.seq > k.after AND (k.until IS NULL OR i.seq <= k.until)"
        "  AND i.live AND n.expires_at > %s ORDER BY i.seq LIMIT %s) AS page",
        [
            id_array(user_id for user_id, _, _ in keys),
            id_array(after for _, after, _ in keys),
            "{" + ",".join("NULL" if until is None else str(int(until)) for _, _, until in keys) + "}",
            now,
            REPLAY_PAGE,
        ],
    )
    rows = InboxMessage.objects.filter(pk__in=pages).select_related("notification")
    rows = list(rows.only("user_id", *LIVE_MESSAGE_FIELDS).order_by("user_id", "seq"))
    by_user: dict[int, list] = {}
    for row in rows:
        by_user.setdefault(row.user_id, []).append(row)
    found: dict[tuple, list[dict]] = {}
    replayed: set[tuple[int, int]] = set()
    for key in keys:
        user_id, after, until = key
        page = [
            row for row in by_user.get(user_id, ()) if row.seq > after and (until is None or row.seq <= until)
        ]
        page = page[:REPLAY_PAGE]
        replayed.update((user_id, row.notification_id) for row in page)
        found[key] = [message_payload(row.notification, row.seq, row.read_at) for row in page]
    if replayed:
        deliveries, replayed = Delivery._meta.db_table, list(replayed)
        pairs = RawSQL(
            f"SELECT d.id FROM {deliveries} d"
            " JOIN unnest(%s::bigint[], %s::bigint[]) AS p(user_id, notification_id)"
            " ON d.user_id = p.user_id AND d.notification_id = p.notification_id",
            [id_array(user_id for user_id, _ in replayed), id_array(pk for _, pk in replayed)],
        )
        _replayed_deliveries_sent(Delivery.objects.filter(pk__in=pairs), now)
    return found


def _replayed_deliveries_sent(deliveries, now) -> None:
    """The realtime deliveries of replayed messages that were still queued, written `sent`."""
    deliveries_update(
        deliveries.filter(channel=Channel.REALTIME, status=DeliveryStatus.QUEUED),
        status=DeliveryStatus.SENT,
        sent_at=now,
        attempts=1,
    )
