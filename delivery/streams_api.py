"""What realtime/ uses of delivery/: the per-user message stream it replays and polls, the
reads it resends, the ack, and the send behind "send myself a test".

The one module of delivery/ that realtime/ imports (tests/test_realtime_delivery_seam.py;
docs/architecture.md, Parts and allowed imports). Every stream read keeps the cursor order
`allocate_cursors` gives (docs/architecture.md, One cursor per user).
"""

from django.db import connection
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
        deliveries_update(
            Delivery.objects.filter(
                user_id=user_id,
                channel=Channel.REALTIME,
                status=DeliveryStatus.QUEUED,
                notification_id__in=[row.notification_id for row in rows],
            ),
            status=DeliveryStatus.SENT,
            sent_at=timezone.now(),
            attempts=1,
        )
    return [message_payload(row.notification, row.seq, row.read_at) for row in rows]
