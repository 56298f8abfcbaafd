"""Publishing to users' realtime connections, after commit: one payload per node per batch.

Presence says which nodes (web processes) hold each user's connections; the batch is grouped
by node and each node gets ONE Redis PUBLISH carrying every frame for its users, each frame
serialised once here. Embedded, the node lives in this process and gets the frames directly.
Pub/sub is at-most-once: a lost payload is repaired by the cursor (gap-fill on the next frame,
replay on reconnect). Scaled, one publisher thread per process does the Redis work: frames
handed over while a pipeline is in flight go out together in the next one, so a worker sending
to thousands of users one at a time costs a few round trips, not two per send.
See docs/realtime.md.
"""

import atexit
import logging
import os
import queue
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


def _publish(frames: list[tuple[int, int, str]], reads: list[tuple[int, str]]) -> None:
    if not settings.REDIS_URL:
        for node in local_nodes():
            node.loop.call_soon_threadsafe(node.dispatch, frames, reads)
        return
    _publisher().hand_over(frames, reads)


def flush_publishes(timeout: float = EXIT_FLUSH_SECS) -> bool:
    """Wait until everything handed over so far is published (at exit; in tests)."""
    if _current is None or _current.pid != os.getpid():
        return True
    done = threading.Event()
    try:
        _current.handover.put(done, timeout=timeout)
    except queue.Full:
        return False
    return done.wait(timeout)


class _Publisher:
    """The process's publisher thread: what callers hand over while a round is in flight goes
    out together in the next round, so many small sends share one script call."""

    def __init__(self):
        self.pid = os.getpid()
        self.handover: queue.Queue = queue.Queue(MAX_WAITING_HANDOVERS)
        threading.Thread(target=self._run, name="clarion-realtime-publisher", daemon=True).start()

    def hand_over(self, frames: list, reads: list) -> None:
        try:
            self.handover.put((frames, reads), timeout=PUT_TIMEOUT_SECS)
        except queue.Full:
            _dropped(len(frames) + len(reads), "the publisher is behind")

    def _run(self) -> None:
        while True:
            frames, reads, flushed, size = [], [], [], 0
            item = self.handover.get()
            while True:
                if isinstance(item, threading.Event):
                    flushed.append(item)
                else:
                    frames += item[0]
                    reads += item[1]
                    size += sum(len(frame[-1]) for frame in item[0]) + sum(len(read[-1]) for read in item[1])
                if len(frames) + len(reads) >= MAX_FRAMES_PER_ROUND or size >= MAX_BYTES_PER_ROUND:
                    break
                try:
                    item = self.handover.get_nowait()
                except queue.Empty:
                    break
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
        script = presence.sync_client.register_script(PUBLISH_LUA)  # hashes the source; no I/O
        script(keys=[presence_key(user_id) for user_id in by_user], args=args)
    except redis.RedisError:
        # At-most-once by design: clients get these from the database on their next frame
        # or reconnect. The caller's transaction has committed; failing it would help no one.
        _dropped(len(frames) + len(reads), "Redis failed", exc_info=True)
