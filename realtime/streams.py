"""The per-user message stream that WebSocket replay, long-polling and SSE read."""

import asyncio

import orjson
from channels.db import database_sync_to_async
from django.db import connection
from django.utils import timezone

from delivery.models import Channel, Delivery, DeliveryStatus, InboxMessage, UserStream
from delivery.selectors import message_payload
from delivery.webhooks.events import deliveries_update

REPLAY_PAGE = 200  # messages per query while catching a client up


def db(fn):
    """`fn` run in the shared thread pool: thread_sensitive=True would serialise every socket's
    queries on one thread (or park one thread per long-lived request)."""
    return database_sync_to_async(fn, thread_sensitive=False)


# Keys per batched query: one round trip, and a parameter array PostgreSQL plans as one index scan.
BATCH_MAX_KEYS = 1000


class BatchedLookup:
    """Concurrent callers' keys looked up together: one thread hop and one query per batch.

    A caller's key joins the next batch, which starts after the caller asked, so what the
    query reads is at least as recent as a lookup of its own would have been. A thousand
    handshakes then cost a few queries, not a thousand thread hops and pool check-outs (the
    bulk of a handshake's CPU: docs/benchmarks.md, "Connections: where the time goes").
    `lookup(keys) -> {key: value}` runs in the shared thread pool; a missing key gets None.
    """

    def __init__(self, lookup):
        self._lookup = db(lookup)
        self._waiting: dict = {}  # key → [futures of its callers]
        self._running = False

    async def get(self, key):
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(waiter)
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._run()).add_done_callback(self._done)
        return await waiter

    def _done(self, task: asyncio.Task) -> None:
        self._running = False
        if self._waiting:  # keys that arrived as the last batch ended
            self._running = True
            asyncio.get_running_loop().create_task(self._run()).add_done_callback(self._done)

    async def _run(self) -> None:
        while self._waiting:
            keys = list(self._waiting)[:BATCH_MAX_KEYS]
            batch = {key: self._waiting.pop(key) for key in keys}
            try:
                found = await self._lookup(keys)
            except Exception as exc:  # noqa: BLE001 - raised in each caller, as its own query would
                for waiters in batch.values():
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                continue
            for key, waiters in batch.items():
                value = found.get(key)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(value)


def notification_frame(message: dict) -> str:
    """A message as the WebSocket frame (and SSE data) clients receive; serialised once."""
    return orjson.dumps({"type": "notification", **message}).decode()


def read_frame(notification_id: int, read_cursor: int) -> str:
    """`read_cursor` is the user's read position: a client resumes reads from it (`read_after`)."""
    return orjson.dumps({"type": "read", "id": notification_id, "read_cursor": read_cursor}).decode()


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
            f"SELECT user_id, last_seq FROM {UserStream._meta.db_table} WHERE user_id = ANY(%s)",
            [list(user_ids)],
        )
        return dict(cursor.fetchall())


def start_cursor(after: int | None, position: int) -> int:
    """Where a client resumes: its cursor, or the stream's end when it gave none or one past
    the end (another server's, a reset database), so a foreign cursor cannot mute it."""
    return position if after is None else min(after, position)


def stream_position(user_id: int) -> int:
    return UserStream.objects.filter(user_id=user_id).values_list("last_seq", flat=True).first() or 0


def stream_and_read_positions(user_id: int) -> tuple[int, int]:
    """(last cursor, last read position) in one query; (0, 0) for a user with no messages yet."""
    return UserStream.objects.filter(user_id=user_id).values_list("last_seq", "last_read_seq").first() or (
        0,
        0,
    )


def stream_and_read_positions_of(user_ids: list[int]) -> dict[int, tuple[int, int]]:
    """{user id: (last cursor, last read position)} for those of these users with a stream row."""
    rows = UserStream.objects.filter(user_id__in=user_ids).values_list("user_id", "last_seq", "last_read_seq")
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
