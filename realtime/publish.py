"""Publishing to users' realtime connections, after commit: one payload per node per batch.

Presence says which nodes (web processes) hold each user's connections; the batch is grouped
by node and each node gets ONE Redis PUBLISH carrying every frame for its users, each frame
serialised once here. Embedded, the node lives in this process and gets the frames directly.
Pub/sub is at-most-once: a lost payload is repaired by the cursor (gap-fill on the next frame,
replay on reconnect). Scaled, one round (one script call) is in flight per process at a time:
a small publish finding none goes out from the caller's thread at once; frames handed over
while a round is in flight go out together in the next one, sent by the publisher thread, so
a worker sending to thousands of users one at a time costs a few round trips, not two per send.
See docs/realtime.md.
"""

import atexit
import collections
import logging
import os
import threading
import time

import orjson
import redis
from django.conf import settings

from notifyproject import metrics
from realtime.node_registry import channel_for, local_nodes
from realtime.presence import get_presence, presence_key
from realtime.streams import notification_frame, read_frame

logger = logging.getLogger(__name__)


def publish_messages(messages: list[tuple[int, dict]]) -> None:
    """Send each (user_id, message) to that user's live connections; at-most-once."""
    if messages:
        frames = [(user_id, message["cursor"], notification_frame(message)) for user_id, message in messages]
        _publish(frames, [])


def publish_read(user_id: int, notification_id: int, read_cursor: int) -> None:
    """Tell the user's other clients that this message was read, so they clear it."""
    _publish([], [(user_id, read_frame(notification_id, read_cursor))])


# Hand-overs waiting for the publisher thread; past this a caller waits (back-pressure), and
# after PUT_TIMEOUT_SECS its frames are dropped and counted (clients repair from the database).
MAX_WAITING_HANDOVERS = 10_000
PUT_TIMEOUT_SECS = 5
# Per presence lookup + PUBLISH round: a node parses each payload whole, so it stays small.
MAX_FRAMES_PER_ROUND = 5_000
MAX_BYTES_PER_ROUND = 512 * 1024
EXIT_FLUSH_SECS = 2
# A publish this small goes out from the caller's own thread when no round is in flight and
# nothing waits: a one-user send's frame leaves right after its commit, without waiting for the
# publisher thread to be woken and to get the GIL (W5). Larger ones (a fan-out batch, whose
# next batch should not wait for Redis) are always handed over.
INLINE_MAX_FRAMES = 16
# ... and only after the publisher has been idle this long. Publishes closer together than this
# are a burst (a worker's loop, several senders at once): each inline round would carry one
# frame while the others queue for the thread, so they are all handed over and share rounds
# (253 script calls for 1,000 sends from 4 threads without this wait, a few with it). A send
# after a quiet moment, the common one-user case, still goes out at once.
INLINE_MIN_IDLE_SECS = 0.002


def _publish(frames: list[tuple[int, int, str]], reads: list[tuple[int, str]]) -> None:
    if not settings.REDIS_URL:
        for node in local_nodes():
            node.loop.call_soon_threadsafe(node.dispatch, frames, reads)
        return
    _publisher().publish(frames, reads)


def flush_publishes(timeout: float = EXIT_FLUSH_SECS) -> bool:
    """Wait until everything handed over so far is published (at exit; in tests)."""
    if _current is None or _current.pid != os.getpid():
        return True
    return _current.flush(timeout)


class _Publisher:
    """The process's publisher: one round (one script call) in flight at a time, in hand-over order.

    A caller that finds no round in flight and nothing waiting runs a small round itself, at once.
    Anything handed over while a round is in flight waits, and the thread sends all of it in the
    next round when the current one ends, whoever ran it: so concurrent sends share rounds as
    they did when every round was the thread's, and an inline frame never overtakes a waiting one.
    """

    def __init__(self):
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)  # the thread's turn has come
        self.space = threading.Condition(self.lock)  # the waiting hand-overs went below the cap
        self.waiting: collections.deque = collections.deque()  # (frames, reads) or a flush's Event
        self.busy = False  # a round is in flight, or the thread has hand-overs to send
        self.thread_turn = False
        self.idle_since = time.monotonic()  # when the last round ended with nothing waiting
        self.thread_rounds = 0  # rounds the thread ran (the rest ran inline)
        threading.Thread(target=self._run, name="clarion-realtime-publisher", daemon=True).start()

    def publish(self, frames: list, reads: list) -> None:
        if len(frames) + len(reads) <= INLINE_MAX_FRAMES and self.inline_round_begin():
            try:
                _publish_logged(frames, reads)
            finally:
                self.inline_round_end()
            return
        with self.lock:
            if self._hand_over_locked((frames, reads)):
                return
        _dropped(len(frames) + len(reads), "the publisher is behind")

    def inline_round_begin(self) -> bool:
        """Claim the next round for the calling thread: True if none is in flight (then nothing
        waits) and none ended within INLINE_MIN_IDLE_SECS."""
        with self.lock:
            if self.busy or time.monotonic() - self.idle_since < INLINE_MIN_IDLE_SECS:
                return False
            self.busy = True
            return True

    def inline_round_end(self) -> None:
        with self.lock:
            if self.waiting:  # handed over meanwhile: the thread sends them, all in one round
                self.thread_turn = True
                self.wake.notify()
            else:
                self.busy = False
                self.idle_since = time.monotonic()

    def flush(self, timeout: float) -> bool:
        done = threading.Event()
        with self.lock:
            if not self.busy:
                return True
            if not self._hand_over_locked(done, timeout):
                return False
        return done.wait(timeout)

    def _hand_over_locked(self, item, timeout: float = PUT_TIMEOUT_SECS) -> bool:
        if len(self.waiting) >= MAX_WAITING_HANDOVERS and not self.space.wait_for(
            lambda: len(self.waiting) < MAX_WAITING_HANDOVERS, timeout
        ):
            return False
        self.waiting.append(item)
        if not self.busy:
            self.busy = self.thread_turn = True
            self.wake.notify()
        return True

    def _round_taken(self) -> tuple[list, list, list[threading.Event]] | None:
        """The next round's hand-overs, or None (and idle) when nothing waits. Holds the lock."""
        if not self.waiting:
            self.busy = self.thread_turn = False
            self.idle_since = time.monotonic()
            return None
        frames, reads, flushed, size = [], [], [], 0
        while self.waiting and len(frames) + len(reads) < MAX_FRAMES_PER_ROUND and size < MAX_BYTES_PER_ROUND:
            item = self.waiting.popleft()
            if isinstance(item, threading.Event):
                flushed.append(item)
                continue
            frames += item[0]
            reads += item[1]
            size += sum(len(frame[-1]) for frame in item[0]) + sum(len(read[-1]) for read in item[1])
        self.space.notify_all()
        return frames, reads, flushed

    def _run(self) -> None:
        while True:
            with self.lock:
                self.wake.wait_for(lambda: self.thread_turn)
                taken = self._round_taken()
            if taken is None:
                continue
            frames, reads, flushed = taken
            self.thread_rounds += 1
            _publish_logged(frames, reads)
            for done in flushed:
                done.set()


def _publish_logged(frames: list, reads: list) -> None:
    try:
        _publish_now(frames, reads)
    except Exception:
        logger.exception("realtime publish of %s frames failed", len(frames) + len(reads))


_current: _Publisher | None = None
_current_lock = threading.Lock()


def _publisher() -> _Publisher:
    global _current
    with _current_lock:
        if _current is None or _current.pid != os.getpid():  # none yet, or inherited through fork
            _current = _Publisher()
        return _current


atexit.register(flush_publishes)


def _dropped(count: int, why: str, exc_info: bool = False) -> None:
    logger.warning("realtime publish of %s frames dropped: %s", count, why, exc_info=exc_info)
    metrics.count("clarion_realtime_publish_dropped_total", count)


# The presence lookup and every node's PUBLISH of a round in one command, run after the commit as
# before: KEYS are the users' presence keys; ARGV is the time now, the node channels' prefix, then
# two strings per key: that user's frames and reads, each already JSON and comma-joined. Each node
# gets `{"m": [frames], "r": [reads]}`, byte for byte what orjson made of the same payload; a
# lookup then a pipelined PUBLISH was two round trips between a send's commit and its frame.
# Returns the number of nodes published to.
PUBLISH_LUA = """
local now, prefix = ARGV[1], ARGV[2]
local order, frames, reads = {}, {}, {}
for i, key in ipairs(KEYS) do
  local m, r = ARGV[2 * i + 1], ARGV[2 * i + 2]
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', key, now, '+inf')) do
    if frames[node] == nil then
      order[#order + 1] = node
      frames[node], reads[node] = {}, {}
    end
    if m ~= '' then table.insert(frames[node], m) end
    if r ~= '' then table.insert(reads[node], r) end
  end
end
for _, node in ipairs(order) do
  redis.call('PUBLISH', prefix .. node,
    '{"m":[' .. table.concat(frames[node], ',') .. '],"r":[' .. table.concat(reads[node], ',') .. ']}')
end
return #order
"""


_script_of_client: tuple = (None, None)


def _publish_script(client):
    """PUBLISH_LUA registered with this client once (registering hashes the source; no I/O)."""
    global _script_of_client
    cached_client, script = _script_of_client
    if cached_client is not client:
        script = client.register_script(PUBLISH_LUA)
        _script_of_client = (client, script)
    return script


def _publish_now(frames: list[tuple[int, int, str]], reads: list[tuple[int, str]]) -> None:
    """One presence lookup and one PUBLISH per node for everything handed over in a round, in
    one script call."""
    if not frames and not reads:
        return
    presence = get_presence()
    by_user: dict[int, tuple[list[bytes], list[bytes]]] = {}
    for frame in frames:
        by_user.setdefault(frame[0], ([], []))[0].append(orjson.dumps(frame))
    for read in reads:
        by_user.setdefault(read[0], ([], []))[1].append(orjson.dumps(read))
    args: list = [repr(time.time()), channel_for("")]
    for user_frames, user_reads in by_user.values():
        args += (b",".join(user_frames), b",".join(user_reads))
    try:
        script = _publish_script(presence.sync_client)
        script(keys=[presence_key(user_id) for user_id in by_user], args=args)
    except redis.RedisError:
        # At-most-once by design: clients get these from the database on their next frame
        # or reconnect. The caller's transaction has committed; failing it would help no one.
        _dropped(len(frames) + len(reads), "Redis failed", exc_info=True)
