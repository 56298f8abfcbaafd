"""Which users have a live realtime connection, readable by every web process and worker.

Scaled: one Redis sorted set per user, member = connection id, score = when it expires.
A connection refreshes its entry on every heartbeat, so the sockets of a crashed instance
drop out after PRESENCE_TTL_SECS without anyone cleaning up. Embedded: a dict in the
process, which is where every producer lives then.
"""

import asyncio
import threading
import time
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings

# Two heartbeat intervals (30 s each) plus slack: one missed heartbeat does not go offline.
PRESENCE_TTL_SECS = 75
KEY_PREFIX = "clarion:presence:"


def _key(user_id: int) -> str:
    return f"{KEY_PREFIX}{user_id}"


class RedisPresence:
    def __init__(self, url: str):
        self._sync = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        # An asyncio client belongs to the loop it first ran on; sync callers (async_to_sync)
        # bring their own loops, so keep one client per loop.
        self._async_by_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._url = url

    def _aclient(self):
        loop = asyncio.get_running_loop()
        client = self._async_by_loop.get(loop)
        if client is None:
            client = aioredis.Redis.from_url(self._url, socket_timeout=5, socket_connect_timeout=5)
            self._async_by_loop[loop] = client
        return client

    async def touch(self, user_id: int, connection_id: str) -> None:
        key = _key(user_id)
        async with self._aclient().pipeline(transaction=False) as pipe:
            pipe.zadd(key, {connection_id: time.time() + PRESENCE_TTL_SECS})
            pipe.expire(key, PRESENCE_TTL_SECS)
            await pipe.execute()

    async def leave(self, user_id: int, connection_id: str) -> None:
        await self._aclient().zrem(_key(user_id), connection_id)

    def online(self, user_ids: list[int]) -> set[int]:
        now = time.time()
        with self._sync.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.zcount(_key(user_id), now, "+inf")
            counts = pipe.execute()
        return {user_id for user_id, count in zip(user_ids, counts, strict=True) if count}


class MemoryPresence:
    def __init__(self):
        self._lock = threading.Lock()
        self._connections: dict[int, dict[str, float]] = {}

    async def touch(self, user_id: int, connection_id: str) -> None:
        with self._lock:
            self._connections.setdefault(user_id, {})[connection_id] = time.time() + PRESENCE_TTL_SECS

    async def leave(self, user_id: int, connection_id: str) -> None:
        with self._lock:
            connections = self._connections.get(user_id, {})
            connections.pop(connection_id, None)
            if not connections:
                self._connections.pop(user_id, None)

    def online(self, user_ids: list[int]) -> set[int]:
        now = time.time()
        with self._lock:
            return {
                user_id
                for user_id in user_ids
                if any(expiry > now for expiry in self._connections.get(user_id, {}).values())
            }


_presence = None
_presence_lock = threading.Lock()


def get_presence():
    global _presence
    with _presence_lock:
        if _presence is None:
            _presence = RedisPresence(settings.REDIS_URL) if settings.REDIS_URL else MemoryPresence()
        return _presence


def users_online(user_ids: list[int]) -> set[int]:
    return get_presence().online(user_ids) if user_ids else set()
