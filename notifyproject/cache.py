"""One Redis connection pool per process for Django's cache.

Django keeps a cache object per async context (`caches` is an asgiref Local), so under ASGI
every request built its own RedisCache, its own pool and a fresh TCP connection to Redis for
its rate-limit counters (~10 % of a send's time in a profile). Pools from this class are shared
by URL and options; redis-py's pool itself is thread-safe and re-creates its connections in a
forked child.
"""

import threading

import redis


class SharedConnectionPool(redis.ConnectionPool):
    _shared: dict = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url, **kwargs):
        key = (url, tuple(sorted((name, repr(value)) for name, value in kwargs.items())))
        with cls._lock:
            pool = cls._shared.get(key)
            if pool is None:
                pool = cls._shared[key] = super().from_url(url, **kwargs)
            return pool
