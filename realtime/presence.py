"""Which users have a live realtime connection, and on which web process (node) it lives.

Readable by every web process and worker. Scaled: one Redis sorted set per user,
member = node id, score = when that entry expires. A node refreshes the entries of all
its connected users every PRESENCE_REFRESH_SECS in one pipeline, so the users of a
crashed node drop out after PRESENCE_TTL_SECS without anyone cleaning up. Embedded: the
same shape in a dict, since every producer lives in the one process then.
See docs/realtime.md (Presence).
"""

import asyncio
import threading
import time
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings

# A node rewrites its users' entries this often; one Redis round trip per node, not per socket.
PRESENCE_REFRESH_SECS = 20
# Three refresh periods: a node that misses one refresh (a GC pause, a slow Redis) keeps its
# users online, a crashed node's users are offline within a minute.
PRESENCE_TTL_SECS = 3 * PRESENCE_REFRESH_SECS
# Long-polling clients are between two requests for a round trip; they stay online that long.
POLL_LINGER_SECS = 10
KEY_PREFIX = "clarion:presence:"
REDIS_TIMEOUT_SECS = 5
# Each user's live entries (member = node id, score = expiry) for every key, in one command:
# a pipeline of one ZRANGEBYSCORE per user spent most of a publisher's CPU in redis-py's
# per-command packing (W1 profile, bench/realtime_throughput.py). The keys of one call must
# live on one Redis (no Cluster), as the channel layer and broker already assume.
LIVE_ENTRIES_LUA = """
local live = {}
for i, key in ipairs(KEYS) do
  live[i] = redis.call('ZRANGEBYSCORE', key, ARGV[1], '+inf')
end
return live
"""

# Many users' entries for one node in one command (`apply`): KEYS are the users' keys; ARGV is
# the node id, then two values per key: the entry's expiry score and the key's ttl in seconds,
# or "" and "" to remove the entry. The key outlives its longest entry by a second (EXPIRE GT,
# or NX on a key without one). A pipeline of three commands per user cost more CPU in redis-py
# (packing, a timeout per reply) than the rest of a handshake (profile, bench/handshake.py),
# and the 20 s refresh of 10,000 users was most of an idle node's CPU.
APPLY_ENTRIES_LUA = """
local node = ARGV[1]
for i, key in ipairs(KEYS) do
  local score, ttl = ARGV[2 * i], ARGV[2 * i + 1]
  if score == '' then
    redis.call('ZREM', key, node)
  else
    redis.call('ZADD', key, score, node)
    redis.call('EXPIRE', key, ttl, 'GT')
    redis.call('EXPIRE', key, ttl, 'NX')
  end
end
return #KEYS
"""
APPLY_CHUNK = 1000  # keys per script call: Redis runs one call at a time, so it stays short
# The periodic refresh: every key gets the same entry (ARGV: node id, expiry score, ttl), so the
# call carries the keys and three values, not two values per key; at 10,000 users, redis-py
# packing (and formatting) 20,000 values every 20 s was most of the refresh's CPU (W3 profile).
REFRESH_ENTRIES_LUA = """
local node, score, ttl = ARGV[1], ARGV[2], ARGV[3]
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, score, node)
  redis.call('EXPIRE', key, ttl, 'GT')
  redis.call('EXPIRE', key, ttl, 'NX')
end
return #KEYS
"""


def presence_key(user_id: int) -> str:
    """The Redis key of a user's entries (realtime/publish.py's script reads them too)."""
    return f"{KEY_PREFIX}{user_id}"


class RedisPresence:
    def __init__(self, url: str):
        self._url = url
        self._sync = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECS, socket_connect_timeout=REDIS_TIMEOUT_SECS
        )
        self._live_entries = self._sync.register_script(LIVE_ENTRIES_LUA)
        # An asyncio client belongs to the loop it first ran on.
        self._async_by_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def sync_client(self) -> redis.Redis:
        return self._sync

    def async_client(self) -> aioredis.Redis:
        return self._async_parts()[0]

    def _async_parts(self) -> tuple:
        """(this loop's client, its APPLY_ENTRIES_LUA script, its REFRESH_ENTRIES_LUA script)."""
        loop = asyncio.get_running_loop()
        parts = self._async_by_loop.get(loop)
        if parts is None:
            client = aioredis.Redis.from_url(
                self._url, socket_timeout=REDIS_TIMEOUT_SECS, socket_connect_timeout=REDIS_TIMEOUT_SECS
            )
            parts = self._async_by_loop[loop] = (
                client,
                client.register_script(APPLY_ENTRIES_LUA),
                client.register_script(REFRESH_ENTRIES_LUA),
            )
        return parts

    async def refresh(self, node_id: str, user_ids, ttl: float = PRESENCE_TTL_SECS) -> None:
        """Mark these users online on this node for `ttl` seconds, a script call per APPLY_CHUNK users."""
        args = [node_id, repr(time.time() + ttl), int(ttl) + 1]
        refresh_entries = self._async_parts()[2]
        user_ids = list(user_ids)
        for start in range(0, len(user_ids), APPLY_CHUNK):
            chunk = user_ids[start : start + APPLY_CHUNK]
            await refresh_entries(keys=[presence_key(user_id) for user_id in chunk], args=args)

    async def remove(self, node_id: str, user_id: int) -> None:
        await self.async_client().zrem(presence_key(user_id), node_id)

    async def apply(self, node_id: str, changes: dict[int, float | None]) -> None:
        """Many users' entries for this node, a script call per APPLY_CHUNK users: {user id: ttl,
        or None to remove}."""
        now = time.time()
        apply_entries = self._async_parts()[1]
        items = list(changes.items())
        for start in range(0, len(items), APPLY_CHUNK):
            chunk = items[start : start + APPLY_CHUNK]
            args = [node_id]
            for _user_id, ttl in chunk:
                args += ("", "") if ttl is None else (repr(now + ttl), int(ttl) + 1)
            await apply_entries(keys=[presence_key(user_id) for user_id, _ttl in chunk], args=args)

    async def touch(self, user_id: int, entry_id: str) -> None:
        """One entry for a user, refreshed by its owner (a node, or a caller tracking its own)."""
        await self.refresh(entry_id, [user_id])

    async def leave(self, user_id: int, entry_id: str) -> None:
        await self.remove(entry_id, user_id)

    def online(self, user_ids: list[int]) -> set[int]:
        return {user_id for user_id, nodes in zip(user_ids, self._entries(user_ids), strict=True) if nodes}

    def nodes_for_users(self, user_ids: list[int]) -> dict[str, list[int]]:
        """{node id: [user ids connected there]} for the users online now."""
        nodes: dict[str, list[int]] = {}
        for user_id, members in zip(user_ids, self._entries(user_ids), strict=True):
            for node_id in members:
                nodes.setdefault(node_id.decode(), []).append(user_id)
        return nodes

    def _entries(self, user_ids: list[int]) -> list[list[bytes]]:
        if not user_ids:
            return []
        return self._live_entries(keys=[presence_key(user_id) for user_id in user_ids], args=[time.time()])

    def connected_count(self) -> int:
        """Users online now, for dashboards and /metrics: a SCAN, so call it per scrape, not per send."""
        now, total = time.time(), 0
        keys = self._sync.scan_iter(match=f"{KEY_PREFIX}*", count=1000)
        while batch := [key for _, key in zip(range(1000), keys, strict=False)]:
            with self._sync.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.zcount(key, now, "+inf")
                total += sum(1 for count in pipe.execute() if count)
        return total


class MemoryPresence:
    """The embedded process's presence: {user id: {node id: expiry}}."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[int, dict[str, float]] = {}

    async def refresh(self, node_id: str, user_ids, ttl: float = PRESENCE_TTL_SECS) -> None:
        expires = time.time() + ttl
        with self._lock:
            for user_id in user_ids:
                self._entries.setdefault(user_id, {})[node_id] = expires

    async def remove(self, node_id: str, user_id: int) -> None:
        with self._lock:
            nodes = self._entries.get(user_id, {})
            nodes.pop(node_id, None)
            if not nodes:
                self._entries.pop(user_id, None)

    async def apply(self, node_id: str, changes: dict[int, float | None]) -> None:
        for user_id, ttl in changes.items():
            if ttl is None:
                await self.remove(node_id, user_id)
            else:
                await self.refresh(node_id, [user_id], ttl)

    async def touch(self, user_id: int, entry_id: str) -> None:
        await self.refresh(entry_id, [user_id])

    async def leave(self, user_id: int, entry_id: str) -> None:
        await self.remove(entry_id, user_id)

    def online(self, user_ids: list[int]) -> set[int]:
        return {user_id for users in self.nodes_for_users(user_ids).values() for user_id in users}

    def nodes_for_users(self, user_ids: list[int]) -> dict[str, list[int]]:
        now = time.time()
        nodes: dict[str, list[int]] = {}
        with self._lock:
            for user_id in user_ids:
                for node_id, expiry in self._entries.get(user_id, {}).items():
                    if expiry > now:
                        nodes.setdefault(node_id, []).append(user_id)
        return nodes

    def connected_count(self) -> int:
        now = time.time()
        with self._lock:
            return sum(1 for nodes in self._entries.values() if max(nodes.values(), default=0) > now)


_presence = None
_presence_lock = threading.Lock()


def get_presence() -> RedisPresence | MemoryPresence:
    global _presence
    with _presence_lock:
        if _presence is None:
            _presence = RedisPresence(settings.REDIS_URL) if settings.REDIS_URL else MemoryPresence()
        return _presence


def users_online(user_ids: list[int]) -> set[int]:
    """Of these users, those with a live realtime connection on any node."""
    return get_presence().online(user_ids) if user_ids else set()


def connected_users_count() -> int:
    return get_presence().connected_count()
