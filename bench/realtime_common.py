"""Shared pieces of the realtime benchmarks: a daphne per ASGI app, users with tokens, many sockets.

127.0.0.1 only; every loop is bounded in count and time.
"""

import asyncio
import os
import resource
import socket
import time

from bench.harness import BIN, Proc, wait_for

# Its own Redis database: the benchmarks flush it, and other benches use theirs.
REALTIME_REDIS_URL = os.environ.get("BENCH_REALTIME_REDIS_URL", "redis://127.0.0.1:6379/15")

OPEN_FILES = 20_000  # thousands of client sockets live in this one process
CONNECT_CONCURRENCY = 100  # handshakes in flight at once
CONNECT_TIMEOUT_SECS = 180


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(OPEN_FILES, hard) if hard != resource.RLIM_INFINITY else OPEN_FILES
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_daphne(env: dict, app: str = "notifyproject.asgi:application") -> tuple[Proc, int]:
    import httpx

    port = free_port()
    proc = Proc([str(BIN / "daphne"), "-v", "0", "-b", "127.0.0.1", "-p", str(port), app], env)

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    wait_for(up, 60)
    return proc, port


def users_with_tokens(count: int, prefix: str) -> list[tuple[int, str, str]]:
    """[(user id, username, token)], users created once, a fresh token each run."""
    from django.contrib.auth import get_user_model

    from notifyproject.identities.client_tokens import end_user_token_create

    user_model = get_user_model()
    names = [f"{prefix}{n}" for n in range(count)]
    existing = set(user_model.objects.filter(username__in=names).values_list("username", flat=True))
    user_model.objects.bulk_create([user_model(username=name) for name in names if name not in existing])
    users = list(user_model.objects.filter(username__in=names).order_by("pk"))
    return [(user.pk, user.username, end_user_token_create(user=user, ttl=None)[0]) for user in users]


async def open_sockets(
    port: int, tokens: list[str], concurrency: int = CONNECT_CONCURRENCY, **connect_options
) -> list:
    """One WebSocket per token, each answering a ping before it counts as connected."""
    from websockets.asyncio.client import connect

    limit = asyncio.Semaphore(concurrency)

    async def one(token: str):
        async with limit:
            ws = await connect(
                f"ws://127.0.0.1:{port}/ws/v1/notifications/?token={token}",
                open_timeout=60,
                ping_interval=None,
                max_queue=None,
                **connect_options,
            )
            await ws.send('{"type": "ping"}')
            await asyncio.wait_for(ws.recv(), 60)
            return ws

    return await asyncio.wait_for(asyncio.gather(*(one(token) for token in tokens)), CONNECT_TIMEOUT_SECS)


async def close_sockets(sockets: list) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def settle(seconds: float) -> None:
    """A fixed pause before a memory reading, so transient buffers are freed; bounded."""
    time.sleep(seconds)
