"""The frames of a user's stream as clients receive them, where a client resumes, and the
thread pool realtime reads the database in. The rows themselves are read through
delivery/streams_api.py; this module imports nothing of delivery/, since publishing uses it."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import orjson
from channels.db import database_sync_to_async


def db(fn):
    """`fn` run in the shared thread pool: thread_sensitive=True would serialise every socket's
    queries on one thread (or park one thread per long-lived request)."""
    return database_sync_to_async(fn, thread_sensitive=False)


# Keys per batched query: one round trip, and a parameter array PostgreSQL plans as one index scan.
BATCH_MAX_KEYS = 1000

# A handshake is through once its token and stream position are read, so the batched lookups
# run in threads of their own: in the shared pool they queued behind the replays of the
# sockets that came back before them (a reconnect storm queues thousands of those, W4), so a
# handshake waited for replays that were not its own. One thread per lookup (token, stream
# position), since each runs one batch at a time. Threads start on first use.
LOOKUP_THREADS = 2
_lookup_executor = ThreadPoolExecutor(max_workers=LOOKUP_THREADS, thread_name_prefix="realtime-lookup")


class BatchedLookup:
    """Concurrent callers' keys looked up together: one thread hop and one query per batch.

    A caller's key joins the next batch, which starts after the caller asked, so what the
    query reads is at least as recent as a lookup of its own would have been. A thousand
    handshakes then cost a few queries, not a thousand thread hops and pool check-outs (the
    bulk of a handshake's CPU: docs/benchmarks.md, "Connections: where the time goes").
    `lookup(keys) -> {key: value}` runs in the lookup threads (with `handshake=False`, in the
    shared pool); a missing key gets None.
    """

    def __init__(self, lookup, *, max_keys: int = BATCH_MAX_KEYS, handshake: bool = True):
        # A handshake's own lookups in their threads; others (replays) in the shared pool.
        executor = _lookup_executor if handshake else None
        self._lookup = database_sync_to_async(lookup, thread_sensitive=False, executor=executor)
        self._max_keys = max_keys
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
            keys = list(self._waiting)[: self._max_keys]
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


# Every notification frame starts so (orjson writes keys in order, without spaces).
_NOTIFICATION_FRAME_HEAD = '{"type":"notification",'


def message_json(frame: str) -> bytes:
    """A notification frame's message as JSON (the frame without its `type`), for poll answers:
    cut from the frame, so a message published once is not decoded and encoded again per poll."""
    if frame.startswith(_NOTIFICATION_FRAME_HEAD):
        return ("{" + frame[len(_NOTIFICATION_FRAME_HEAD) :]).encode()
    message = orjson.loads(frame)  # not written by notification_frame (an older publisher)
    message.pop("type", None)
    return orjson.dumps(message)


def read_frame(notification_id: int, read_cursor: int) -> str:
    """`read_cursor` is the user's read position: a client resumes reads from it (`read_after`)."""
    return orjson.dumps({"type": "read", "id": notification_id, "read_cursor": read_cursor}).decode()


def start_cursor(after: int | None, position: int) -> int:
    """Where a client resumes: its cursor, or the stream's end when it gave none or one past
    the end (another server's, a reset database), so a foreign cursor cannot mute it."""
    return position if after is None else min(after, position)
