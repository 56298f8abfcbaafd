"""This web process's realtime node: its local connections, its Redis channel, its presence.

Every web process is a node with an id. It subscribes to one Redis pub/sub channel,
`clarion:node:<id>`, and writes `<id>` into the presence of each user connected to it.
A publisher (a worker's fan-out batch) groups its messages by node and publishes ONE
payload per node; the node hands each frame to the user's local connections. So a batch
of 500 users costs one PUBLISH per node instead of one channel-layer message per socket.
Embedded (no Redis), publishers run in this process and dispatch to the node directly.
See docs/realtime.md.
"""

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import threading
import time
from typing import NamedTuple, Protocol

import orjson
import redis
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from knox.crypto import hash_token

from delivery.streams_api import live_messages_after_many, stream_and_read_positions_of, stream_positions
from notifyproject.identities import credentials
from realtime.admission import Admission
from realtime.node_registry import channel_for, node_of_loop
from realtime.presence import POLL_LINGER_SECS, PRESENCE_REFRESH_SECS, PRESENCE_TTL_SECS, get_presence
from realtime.streams import BatchedLookup, db

logger = logging.getLogger(__name__)

# Sockets replaying per batched read: a far-behind client's page is up to REPLAY_PAGE (200)
# rows, so a batch reads at most 50,000 rows; a storm's clients are a few messages behind.
REPLAY_BATCH_KEYS = 250

# Connections one user may hold on one node (tabs, devices); the oldest is closed past it.
MAX_CONNECTIONS_PER_USER = 20
CLOSE_TOO_MANY_CONNECTIONS = 4409
CLOSE_UNAUTHENTICATED = 4401  # also: the connection's token expired or was revoked
CLOSE_HEARTBEAT_TIMEOUT = 4408
# Clients ping every HEARTBEAT_INTERVAL_SECS (the JS client does, with jitter); one that has
# pinged and then stays silent for two intervals is gone (a frozen tab, a dead network).
HEARTBEAT_INTERVAL_SECS = 25
HEARTBEAT_TIMEOUT_SECS = 2 * HEARTBEAT_INTERVAL_SECS
# The node's housekeeping runs this many times per heartbeat timeout (every 5 s), so a silent
# socket is closed at most 10 % past it. Tests shorten the timeout with
# settings.CLARION_HEARTBEAT_TIMEOUT_SECS.
TICKS_PER_HEARTBEAT_TIMEOUT = 10
# The node's subscription is re-established with capped back-off when Redis goes away.
RESUBSCRIBE_BASE_SECS = 0.5
LISTEN_WAKE_SECS = 1.0  # the subscription's read wakes at least this often (see _subscribe_forever)
RESUBSCRIBE_CAP_SECS = 10
SUBSCRIBE_WAIT_SECS = 5  # a connection waits this long for the node's channel at start-up
HEALTH_WAIT_SECS = 2  # GET /healthz on a fresh process waits this long for the first subscribe
HEALTH_REDIS_TIMEOUT_SECS = 2
PRESENCE_CHUNK = 1000  # users per presence pipeline
# Open token connections are checked this often: expired ones end at once (no query), and
# one query per node finds tokens deleted or users deactivated since. 30 s keeps the end of
# a revoked token's streams within a minute for the price of one indexed query per node.
# Tests shorten it with settings.CLARION_TOKEN_RECHECK_SECS.
TOKEN_RECHECK_SECS = 30
# The token of a socket that closed is remembered this long, so a client that reconnects (a
# network blip, a proxy or node restart: W4) is let in without a token query. Each re-check
# round asks the database about remembered tokens too and forgets those that no longer
# authenticate, so remembering never lets a revoked token stream past the round after its
# revocation, the same bound as an open socket's. Past a minute, a client is not reconnecting.
RECENT_TOKEN_SECS = 60
# Frames kept for a long-poll client between two of its polls (at most this many a user, for
# POLL_LINGER_SECS): a message published while its next poll is on the way then answers that
# poll without a database read. Under load most polls arrived behind, and those reads, a thread
# hop each, were most of a poll answer's cost (W8).
BETWEEN_POLLS_FRAMES = 100
# A user whose presence entry here is known to outlive this many seconds is not written again
# when their next connection (a long-poll's next request) registers: a client polling once a
# second cost two presence writes a poll, and a Redis round trip before each poll could read
# its position (W8). Past it the entry is rewritten; still live (at least this much left), the
# connection does not wait for the write.
PRESENCE_FRESH_SECS = PRESENCE_TTL_SECS - PRESENCE_REFRESH_SECS
PRESENCE_LIVE_SECS = 2


def heartbeat_timeout_secs() -> float:
    return getattr(settings, "CLARION_HEARTBEAT_TIMEOUT_SECS", None) or HEARTBEAT_TIMEOUT_SECS


def node_tick_secs() -> float:
    return heartbeat_timeout_secs() / TICKS_PER_HEARTBEAT_TIMEOUT


def token_recheck_secs() -> float:
    return getattr(settings, "CLARION_TOKEN_RECHECK_SECS", None) or TOKEN_RECHECK_SECS


class Connection(Protocol):
    """What the node needs of each local connection: WebSocket, SSE stream, waiting long-poll."""

    user_id: int
    kind: str
    linger_secs: float
    heartbeat: bool  # the client pings, so silence means it is gone
    last_seen: float
    connected_at: float  # time.monotonic() when it authenticated
    silent_tick: int | None  # where the node's heartbeat watch holds it (Node.watch_heartbeat)
    closed: bool
    node: "Node | None"
    token_digest: str | None  # None: authenticated by the session
    token_expires_at: object  # a datetime, or None

    def offer(self, cursor: int, frame: str) -> None: ...

    def offer_read(self, frame: str) -> None: ...

    def resync(self) -> None:
        """The node's subscription was re-established: anything may have been missed."""

    def repair(self, position: int) -> None:
        """The user's stream is at `position`: catch up if behind it (a lost publish)."""

    def close(self, code: int) -> None: ...


class RecentToken(NamedTuple):
    """A token that authenticated a connection here, as its subscriber keeps it."""

    user: object
    digest: str
    expires_at: object  # a datetime, or None
    closed_at: float  # time.monotonic() when its connection closed


class Node:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.loop = loop
        self.presence = get_presence()
        # user id → {subscriber: None}, insertion-ordered so the oldest is first.
        self.subscribers: dict[int, dict] = {}
        self._lingering: set[int] = set()
        # Heartbeating connections by the tick (time.monotonic() // tick secs) at which they would
        # have been silent too long, as of when last looked at (Node.watch_heartbeat).
        self._silent_by_tick: dict[int, set] = {}
        self._presence_lock = asyncio.Lock()
        # Users whose presence here changed, written together by one pending batch.
        self._presence_changed: set[int] = set()
        self._presence_batch: asyncio.Future | None = None
        # user id → time.monotonic() when this node's presence entry for them, as last written, expires.
        self._presence_until: dict[int, float] = {}
        self._ready = asyncio.Event()
        self._started = False
        # "ok" while subscribed to its channel, "error: ..." while not; read by /healthz's
        # thread, so `_subscription_known` is a threading.Event (set once it is known).
        self.subscription = "starting"
        self._subscription_known = threading.Event()
        self._tasks: set[asyncio.Task] = set()
        self._last_refresh = 0.0
        self._recent_tokens: dict[str, RecentToken] = {}  # digest → token of a closed connection
        # user id → (when their last poll ended, {cursor: frame} published since), while no
        # connection of theirs is open here.
        self._between_polls: dict[int, tuple[float, dict[int, str]]] = {}
        # What concurrent handshakes read, one query per batch: tokens, then stream positions.
        self.token_lookup = BatchedLookup(credentials.authenticate_tokens)
        self.position_lookup = BatchedLookup(stream_and_read_positions_of)
        # And what reconnecting sockets replay: (user id, after, until) → the page of messages.
        self.replay_lookup = BatchedLookup(
            live_messages_after_many, max_keys=REPLAY_BATCH_KEYS, handshake=False
        )
        self.admission = Admission(loop)  # refuses handshakes past its bounds (realtime/admission.py)

    # -- connections ---------------------------------------------------------------------

    async def register(self, subscriber: Connection) -> None:
        """Route this user's frames to `subscriber`; closes their oldest connection past the cap."""
        self.start()
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), SUBSCRIBE_WAIT_SECS)
            except TimeoutError:
                logger.warning("node %s not subscribed yet; live frames may arrive late", self.id)
        subscriber.node = self
        subscribers = self.subscribers.setdefault(subscriber.user_id, {})
        first = not subscribers
        subscribers[subscriber] = None
        self._lingering.discard(subscriber.user_id)
        if len(subscribers) > MAX_CONNECTIONS_PER_USER:
            next(iter(subscribers)).close(CLOSE_TOO_MANY_CONNECTIONS)
        if first:
            left = self._presence_until.get(subscriber.user_id, 0.0) - time.monotonic()
            if left >= PRESENCE_FRESH_SECS:
                return  # written lately (by this user's last poll, or the periodic refresh)
            written = self._sync_presence(subscriber.user_id)
            if left < PRESENCE_LIVE_SECS:
                # Shielded: the batch is shared with other connections and outlives this one's task.
                await asyncio.shield(written)

    def unregister(self, subscriber: Connection) -> None:
        subscribers = self.subscribers.get(subscriber.user_id)
        if not subscribers or subscriber not in subscribers:
            return
        del subscribers[subscriber]
        self._remember_token(subscriber)
        if subscriber.silent_tick is not None:
            self._silent_by_tick.get(subscriber.silent_tick, set()).discard(subscriber)
        if not subscribers:
            del self.subscribers[subscriber.user_id]
            if subscriber.kind == "poll":
                now = time.monotonic()
                self._between_polls[subscriber.user_id] = (now, {})
                if self._presence_until.get(subscriber.user_id, 0.0) - now > POLL_LINGER_SECS:
                    # The entry outlives the linger: the tick removes it once the linger has
                    # passed with no new poll (_forget_between_polls), one write, not two a poll.
                    return
            if subscriber.linger_secs:
                self._lingering.add(subscriber.user_id)
            self._sync_presence(subscriber.user_id)

    def _remember_token(self, subscriber) -> None:
        """Remember a closed WebSocket's or answered long-poll's token for the client's next
        connection or poll (realtime/auth.py asks first)."""
        if (
            subscriber.kind in ("websocket", "poll")
            and subscriber.token_digest is not None
            and subscriber.close_code != CLOSE_UNAUTHENTICATED
        ):
            self._recent_tokens[subscriber.token_digest] = RecentToken(
                subscriber.user, subscriber.token_digest, subscriber.token_expires_at, time.monotonic()
            )

    def recent_token(self, token: str) -> RecentToken | None:
        """The still-valid token a connection closed here recently presented, found without a query."""
        if not self._recent_tokens:
            return None
        try:
            known = self._recent_tokens.get(hash_token(token))  # knox's digest: equal iff the token is
        except (TypeError, ValueError):
            return None
        if known is None or (known.expires_at is not None and known.expires_at <= timezone.now()):
            return None
        return known

    def frames_since_last_poll(self, user_id: int) -> dict[int, str]:
        """{cursor: frame} published to this user since their last poll here ended, taken once.
        Not necessarily every frame (publishes may be lost), so a poll answers from them only
        when they continue its cursor without a gap (PollWaiter.messages_after)."""
        _ended, frames = self._between_polls.pop(user_id, (0.0, {}))
        return frames

    def _forget_between_polls(self) -> None:
        """Forget the frames of poll clients that stopped polling, and end their presence here."""
        ended_before = time.monotonic() - POLL_LINGER_SECS
        for user_id, (ended, _frames) in list(self._between_polls.items()):
            if ended < ended_before:
                del self._between_polls[user_id]
                if user_id not in self.subscribers and user_id in self._presence_until:
                    self._sync_presence(user_id)

    def connection_count(self) -> int:
        return sum(len(subscribers) for subscribers in self.subscribers.values())

    # -- dispatch ------------------------------------------------------------------------

    def dispatch(self, messages, reads=()) -> None:
        """Hand frames to local connections: messages [(user id, cursor, frame)], reads [(user id, frame)]."""
        for user_id, cursor, frame in messages:
            subscribers = self.subscribers.get(user_id)
            if subscribers:
                for subscriber in tuple(subscribers):
                    subscriber.offer(cursor, frame)
            elif user_id in self._between_polls:
                frames = self._between_polls[user_id][1]
                if len(frames) < BETWEEN_POLLS_FRAMES:
                    frames[cursor] = frame
        for user_id, frame in reads:
            for subscriber in tuple(self.subscribers.get(user_id, ())):
                subscriber.offer_read(frame)

    def dispatch_payload(self, payload: bytes) -> None:
        body = orjson.loads(payload)
        self.dispatch(body.get("m", ()), body.get("r", ()))

    def resync_all(self) -> None:
        for subscribers in list(self.subscribers.values()):
            for subscriber in tuple(subscribers):
                subscriber.resync()

    # -- background work -----------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to this node's channel and start housekeeping (once; on the event loop)."""
        if self._started:
            return
        self._started = True
        if settings.REDIS_URL:
            self._spawn(self._subscribe_forever())
        else:
            self._ready.set()
            self._set_subscription("ok")  # embedded: publishers call dispatch directly
        self._spawn(self._tick_forever())
        self._spawn(self._recheck_tokens_forever())
        self.admission.start()

    def _set_subscription(self, state: str) -> None:
        self.subscription = state
        self._subscription_known.set()

    def subscription_health(self) -> str:
        """ "ok" if this node is subscribed to its channel and Redis lists the subscription.

        Called from a request thread (GET /healthz). Redis is asked too (PUBSUB NUMSUB on the
        channel publishers use): a connection the node still believes in may be gone there.
        """
        if not self._subscription_known.wait(HEALTH_WAIT_SECS):
            return "error: not subscribed yet"
        if self.subscription != "ok" or not settings.REDIS_URL:
            return self.subscription
        client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=HEALTH_REDIS_TIMEOUT_SECS,
            socket_connect_timeout=HEALTH_REDIS_TIMEOUT_SECS,
        )
        try:
            [(_channel, subscribers)] = client.pubsub_numsub(channel_for(self.id))
        except redis.RedisError as exc:
            return f"error: {type(exc).__name__}"
        finally:
            client.close()
        return "ok" if subscribers else "error: Redis lists no subscription to this node's channel"

    def _spawn(self, coroutine) -> None:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _subscribe_forever(self) -> None:
        client = aioredis.Redis.from_url(settings.REDIS_URL, health_check_interval=30)
        failures = 0
        while True:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel_for(self.id))
                if self._ready.is_set():
                    self.resync_all()  # frames published while we were away are in the database
                    self._presence_until.clear()  # Redis may have restarted: write entries again
                self._ready.set()
                self._set_subscription("ok")
                failures = 0
                this_task = asyncio.current_task()
                while True:
                    message = await pubsub.get_message(timeout=LISTEN_WAKE_SECS)
                    if message is not None and message["type"] == "message":
                        self.dispatch_payload(message["data"])
                    if this_task.cancelling():
                        # redis-py's asyncio read can swallow a cancellation that lands at the
                        # wrong moment; a task that must end then still ends within a wake-up.
                        raise asyncio.CancelledError
            except (aioredis.RedisError, OSError) as exc:  # refused, timed out, or e.g. NOPERM
                self._set_subscription(f"error: {type(exc).__name__}")
                failures += 1
                delay = min(RESUBSCRIBE_CAP_SECS, RESUBSCRIBE_BASE_SECS * 2**failures)
                logger.warning(
                    "node %s lost its Redis subscription (%s); retrying in %.1fs", self.id, exc, delay
                )
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(aioredis.RedisError, OSError):
                    await pubsub.aclose()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(node_tick_secs())
            try:
                self._close_silent()
                self._forget_between_polls()
                if time.monotonic() - self._last_refresh >= PRESENCE_REFRESH_SECS:
                    await self._refresh_presence()
                    await self.repair_missed()
            except Exception:
                logger.exception("node %s housekeeping failed", self.id)

    def watch_heartbeat(self, subscriber: Connection) -> None:
        """The client pings: from now on, silence past the heartbeat timeout closes it (4408)."""
        if not subscriber.closed and subscriber.silent_tick is None:
            self._watch_until(subscriber, subscriber.last_seen + heartbeat_timeout_secs())

    def _watch_until(self, subscriber: Connection, deadline: float, tick_secs: float | None = None) -> None:
        tick = math.floor(deadline / (tick_secs or node_tick_secs()))
        subscriber.silent_tick = tick
        self._silent_by_tick.setdefault(tick, set()).add(subscriber)

    def _close_silent(self) -> None:
        """Close the heartbeating connections silent past the timeout, looking only at those whose
        deadline, as of when last looked at, has come: a ping moves `last_seen` and nothing
        else, so a connection that pings every 25 s is looked at about once in 25-50 s, not
        every tick (a tick over 10,000 sockets was a fifth of the idle node's own CPU, W3)."""
        now = time.monotonic()
        timeout, tick_secs = heartbeat_timeout_secs(), node_tick_secs()
        current = math.floor(now / tick_secs)
        for tick in [tick for tick in self._silent_by_tick if tick <= current]:
            for subscriber in self._silent_by_tick.pop(tick):
                if subscriber.closed:
                    continue
                if subscriber.last_seen + timeout <= now:
                    subscriber.silent_tick = None
                    subscriber.close(CLOSE_HEARTBEAT_TIMEOUT)
                else:
                    self._watch_until(subscriber, subscriber.last_seen + timeout, tick_secs)

    async def _refresh_presence(self) -> None:
        self._last_refresh = now = time.monotonic()
        async with self._presence_lock:
            user_ids = list(self.subscribers)
            for start in range(0, len(user_ids), PRESENCE_CHUNK):
                chunk = user_ids[start : start + PRESENCE_CHUNK]
                await self.presence.refresh(self.id, chunk)
                self._presence_until.update(dict.fromkeys(chunk, now + PRESENCE_TTL_SECS))

    async def repair_missed(self) -> None:
        """Pub/sub is at-most-once: once per refresh, one query finds connections behind their stream.

        A publish can be lost (Redis restarted, presence briefly empty when a batch was routed);
        the message is in the database, so a connection that is behind catches up from there.
        """
        user_ids = list(self.subscribers)
        if not user_ids:
            return
        positions = await database_sync_to_async(stream_positions)(user_ids)
        for user_id, position in positions.items():
            for subscriber in tuple(self.subscribers.get(user_id, ())):
                subscriber.repair(position)

    async def _recheck_tokens_forever(self) -> None:
        while True:
            await asyncio.sleep(token_recheck_secs())
            try:
                await self.recheck_tokens()
            except DatabaseError:
                self._recent_tokens.clear()  # unchecked this round: no longer vouched for
                logger.warning(
                    "node %s could not re-check tokens; retrying next round", self.id, exc_info=True
                )
            except Exception:
                logger.exception("node %s token re-check failed", self.id)

    async def recheck_tokens(self) -> None:
        """End every local connection whose token has expired or no longer authenticates, and
        forget the recently closed connections' tokens that are stale, expired or revoked.

        One pass collecting digests, without a list per token: at 10,000 sockets, building
        {digest: [connections]} every round was the largest share of the idle node's own CPU
        (W3 profile). The rare revoked token's connections are found by a second pass.
        """
        now = timezone.now()
        checked_at = time.monotonic()
        forget_before = checked_at - RECENT_TOKEN_SECS
        recent = {
            digest: known
            for digest, known in self._recent_tokens.items()
            if known.closed_at >= forget_before and (known.expires_at is None or known.expires_at > now)
        }
        self._recent_tokens = recent
        digests: set[str] = set()
        expired: list[Connection] = []
        for subscribers in self.subscribers.values():
            for subscriber in subscribers:
                digest = subscriber.token_digest
                if digest is None:
                    continue
                expires_at = subscriber.token_expires_at
                if expires_at is not None and expires_at <= now:
                    expired.append(subscriber)
                else:
                    digests.add(digest)
        for subscriber in expired:
            subscriber.close(CLOSE_UNAUTHENTICATED)
        if not digests and not recent:
            return
        invalid = await db(credentials.invalid_token_digests)(digests | recent.keys())
        revoked = invalid & digests
        if revoked:
            # Connections opened since this round began are left to the next one, as before.
            for subscribers in list(self.subscribers.values()):
                for subscriber in tuple(subscribers):
                    if subscriber.token_digest in revoked and subscriber.connected_at <= checked_at:
                        subscriber.close(CLOSE_UNAUTHENTICATED)
        for digest in invalid & recent.keys():
            self._recent_tokens.pop(digest, None)

    def _sync_presence(self, user_id: int) -> asyncio.Future:
        """Have this user's presence here written as it is by then; done once written.

        Batched: every user whose connections changed while a write is in flight goes in the
        next pipeline, so a thousand handshakes cost a few Redis round trips, not a thousand.
        """
        self._presence_changed.add(user_id)
        # Unknown until written: a connection registering meanwhile writes (and waits) too.
        self._presence_until.pop(user_id, None)
        if self._presence_batch is None:
            self._presence_batch = self.loop.create_future()
            self._spawn(self._write_presence())
        return self._presence_batch

    async def _write_presence(self) -> None:
        async with self._presence_lock:  # serialised, so the last state wins
            changed, self._presence_changed = self._presence_changed, set()
            written, self._presence_batch = self._presence_batch, None
            changes: dict[int, float | None] = {}
            now = time.monotonic()
            for user_id in changed:
                self._presence_until.pop(user_id, None)  # as above, while this write is in flight
                if user_id in self.subscribers:
                    changes[user_id] = PRESENCE_TTL_SECS
                elif user_id in self._lingering:
                    self._lingering.discard(user_id)
                    changes[user_id] = POLL_LINGER_SECS
                else:
                    changes[user_id] = None
            try:
                await self.presence.apply(self.id, changes)
            except (aioredis.RedisError, OSError):
                logger.warning("presence update for %d users failed", len(changes), exc_info=True)
                for user_id in changes:
                    self._presence_until.pop(user_id, None)  # unknown: written again next time
            else:
                for user_id, ttl in changes.items():
                    if ttl is None:
                        self._presence_until.pop(user_id, None)
                    else:
                        self._presence_until[user_id] = now + ttl
            finally:
                if not written.done():
                    written.set_result(None)


def get_node() -> Node:
    """The node of the running event loop (one per web process; tests may run several loops)."""
    return node_of_loop(asyncio.get_running_loop(), Node)


class StartRealtimeNode:
    """ASGI wrapper: the node (its Redis subscription) starts with the process's first request,
    not its first realtime connection, so GET /healthz checks it from the start."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        get_node().start()  # a dict lookup once started
        return await self.app(scope, receive, send)
