"""One live realtime connection's stream state: a cursor, a bounded queue, one writer at a time.

The node hands every live frame to `offer` (no await, no copy: frames are shared strings).
A single drain task writes them in cursor order (through `write_now` where the transport
allows it: no coroutine chain per frame); a frame whose cursor skips ahead is preceded by
the missing messages read from the database (gap-fill), a frame at or below the cursor is
dropped (already sent). So pub/sub may lose, reorder or duplicate and the client still sees
every message once, in order. See docs/realtime.md (Cursor, replay, gap-fill).
"""

import asyncio
import logging
import time
from collections import deque

from django.db import DatabaseError

from delivery.streams_api import (
    REPLAY_PAGE,
    reads_after,
)
from realtime.node import get_node
from realtime.streams import db, notification_frame, read_frame, start_cursor

logger = logging.getLogger(__name__)

# Reads sent to a reconnecting client (`read_after`): the most recent ones. A client away for
# more than this re-reads its inbox (`read_at`) anyway, and the replay stays well inside the
# pending queue (MAX_PENDING_FRAMES).
READ_REPLAY_MAX = 100

# Live frames waiting for the writer, per connection. 256 covers a burst to one user many
# times over; past it (or 1 MiB) the queue is dropped and refilled from the database, or,
# if the socket is not draining (the client stopped reading), the connection is closed.
MAX_PENDING_FRAMES = 256
MAX_PENDING_BYTES = 1024 * 1024

CLOSE_NOT_READING = 4413  # the client let its backlog grow past the bound
# Server-side failure: reconnect and resume. Not 1011: Channels refuses to send codes other than
# 1000 and 3000-4999 (the close raised instead, and the client was left hanging).
CLOSE_SERVER_ERROR = 4500


_background: set[asyncio.Task] = set()


def spawn(coroutine) -> asyncio.Task:
    """A task kept alive until done (the loop itself only holds weak references)."""
    task = asyncio.get_running_loop().create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


class Subscriber:
    """Base for WebSocket and SSE connections; subclasses implement `write` and `_close`."""

    kind = "stream"
    linger_secs = 0.0  # presence kept this long after the user's last connection here ends
    heartbeat = False  # set once the client sends its own pings (see consumers.py)
    silent_tick = None  # set by the node while it watches the heartbeat

    def __init__(self, user, token=None):
        self.user = user
        # The end-user token it opened with (None: the session), re-checked by the node so a
        # stream ends when its token expires or is revoked.
        self.token_digest = token.digest if token is not None else None
        self.token_expires_at = token.expires_at if token is not None else None
        self.user_id = user.pk
        self.cursor = 0  # set by open()
        self.last_seen = self.connected_at = time.monotonic()
        self.closed = False
        self.close_code: int | None = None
        # Frames waiting for the writer; created when one has to wait (most never do: an idle
        # socket is written from `offer`), since an empty deque alone is ~600 bytes per socket.
        self._pending: deque | None = None
        self._pending_bytes = 0
        self._resync = False  # the next drain re-reads the database first
        self._repair_to = 0  # a stream position the periodic check found us behind
        self._draining = True  # nothing is written until open()
        # The socket's send buffer is full (Twisted paused us); the writer awaits `_resumed`.
        # A flag and a future made on demand, not an asyncio.Event: one writer ever waits, and
        # an Event's waiter deque is another ~600 bytes of every idle socket (W3).
        self._paused = False
        self._resumed: asyncio.Future | None = None
        # The socket filled up (paused) since the queue was last empty: the client is not
        # keeping up. Judged over time, not at one instant: written in bursts, a socket that
        # is not read still drains into the kernel between bursts and looks writable then.
        self._stalled = False
        self._task: asyncio.Task | None = None
        self.node = None

    # -- called by the node, on the event loop, never awaiting --------------------------

    def offer(self, cursor: int, frame: str) -> None:
        if self.closed or cursor <= self.cursor:
            return
        self._enqueue(cursor, frame)

    def offer_read(self, frame: str) -> None:
        if not self.closed:
            self._enqueue(None, frame)

    def resync(self) -> None:
        """Messages may have been missed (the node's subscription dropped): re-read the database."""
        self._resync = True
        self._kick()

    def repair(self, position: int) -> None:
        """The user's stream is at `position` and we are behind it: a publish was lost."""
        if not self.closed and position > self.cursor:
            self._repair_to = max(self._repair_to, position)
            self._kick()

    def pause(self) -> None:
        """The socket's send buffer is full: the client is not reading fast enough."""
        self._paused = True
        self._stalled = True

    def resume(self) -> None:
        self._unpause()
        if not self._pending:
            self._stalled = False  # it caught up with everything we had

    def close(self, code: int) -> None:
        """End the connection from the server side with this close code."""
        if self.closed:
            return
        self.close_code = code
        self.detach()
        self._close(code)

    def detach(self) -> None:
        """The connection is gone: stop writing and leave the node."""
        self.closed = True
        self._pending = None
        self._pending_bytes = 0
        self._unpause()
        if self.node is not None:
            self.node.unregister(self)

    # -- the writer ----------------------------------------------------------------------

    async def open(self, after: int | None, read_after: int | None = None) -> None:
        """Join this process's node, then stream from cursor `after` (None: from now on).

        Registered before the stream's position is read, so every message committed after
        that read is offered here live: only a client that is behind reads the database to
        start. With `read_after` (a read position), the reads made since then are sent too,
        after the replayed messages; one read may come twice, never none.
        """
        node = get_node()
        await node.register(self)
        position, read_position = await node.position_lookup.get(self.user_id) or (0, 0)
        if read_after is not None and read_after < read_position:
            # Read positions have no gaps, so this is the last READ_REPLAY_MAX reads at most.
            since = max(read_after, read_position - READ_REPLAY_MAX)
            for read_cursor, notification_id in await db(reads_after)(self.user_id, since, READ_REPLAY_MAX):
                self._enqueue(None, read_frame(notification_id, read_cursor))  # written after open()
        self.cursor = start_cursor(after, position)
        self._resync = self._resync or self.cursor < position
        self._draining = False
        self._kick()

    def _enqueue(self, cursor: int | None, frame: str) -> None:
        if self._idle_and_in_order(cursor) and self._write_at_once(cursor, frame):
            return
        if self._pending is None:
            self._pending = deque()
        self._pending.append((cursor, frame))
        self._pending_bytes += len(frame)
        if len(self._pending) > MAX_PENDING_FRAMES or self._pending_bytes > MAX_PENDING_BYTES:
            if self._stalled or self._paused:
                self.close(CLOSE_NOT_READING)
                return
            # Reading, just behind: the database holds every message, so forget the copies.
            self._pending = None
            self._pending_bytes = 0
            self._resync = True
        self._kick()

    def _idle_and_in_order(self, cursor: int | None) -> bool:
        """No writer running, nothing queued or to re-read, the socket taking writes, and the
        frame the next one: then it is written from here, without a writer task per frame."""
        return (
            not self._draining
            and not self._pending
            and not self._resync
            and self._repair_to <= self.cursor
            and not self._paused
            and (cursor is None or cursor == self.cursor + 1)
        )

    def _write_at_once(self, cursor: int | None, frame: str) -> bool:
        try:
            written = self.write_now(frame)
        except Exception:
            logger.exception("realtime write to user %s failed", self.user_id)
            self.close(CLOSE_SERVER_ERROR)
            return True
        if written and cursor is not None:
            self.cursor = cursor
        return written

    def _kick(self) -> None:
        if not self._draining and not self.closed:
            self._draining = True
            self._task = spawn(self._drain())

    async def _drain(self) -> None:
        try:
            while not self.closed:
                if self._resync:
                    self._resync = False
                    await self._catch_up()
                    continue
                if self._repair_to > self.cursor:
                    until, self._repair_to = self._repair_to, 0
                    await self._catch_up(until=until)
                    continue
                if not self._pending:
                    self._pending = None
                    if not self._paused:
                        self._stalled = False  # caught up with a socket that takes writes
                    break
                cursor, frame = self._pending.popleft()
                self._pending_bytes -= len(frame)
                if cursor is None:
                    await self._send(frame, None)
                    continue
                if cursor <= self.cursor:
                    continue
                if cursor > self.cursor + 1:
                    # Earlier messages were published out of order, lost, or were push-only.
                    await self._catch_up(until=cursor - 1)
                await self._send(frame, cursor)
        except DatabaseError:
            logger.warning("database unavailable while streaming to user %s", self.user_id, exc_info=True)
            self.close(CLOSE_SERVER_ERROR)
        except Exception:
            logger.exception("realtime stream to user %s failed", self.user_id)
            self.close(CLOSE_SERVER_ERROR)
        finally:
            self._draining = False

    async def _catch_up(self, until: int | None = None) -> None:
        while not self.closed:
            # Batched with the other sockets replaying now: one read for all (delivery/streams_api.py).
            messages = await get_node().replay_lookup.get((self.user_id, self.cursor, until))
            for message in messages:
                if message["cursor"] > self.cursor:
                    await self._send(notification_frame(message), message["cursor"])
            if len(messages) < REPLAY_PAGE:
                break
        if until is not None and not self.closed:
            self.cursor = max(self.cursor, until)

    async def _send(self, frame: str, cursor: int | None) -> None:
        while self._paused and not self.closed:
            self._resumed = asyncio.get_running_loop().create_future()
            await self._resumed
        if self.closed:
            return
        if not self.write_now(frame):
            await self.write(frame, cursor)
        if cursor is not None:
            self.cursor = cursor

    def _unpause(self) -> None:
        self._paused = False
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    def write_now(self, frame: str) -> bool:
        """Write `frame` synchronously if the transport can (True), else leave it to `write`."""
        return False

    async def write(self, frame: str, cursor: int | None) -> None:
        raise NotImplementedError

    def _close(self, code: int) -> None:
        raise NotImplementedError
