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
# daphne's listen backlog as docs/deploy.md starts it (the kernel caps it at somaxconn). With
# `-b`/`-p`, Twisted's 50, a burst of connects overflows the accept queue whenever the event
# loop is busy for a moment, and each dropped SYN comes back a second later.
LISTEN_BACKLOG = 1024
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


def start_daphne(
    env: dict, app: str = "notifyproject.asgi:application", backlog: int | None = None
) -> tuple[Proc, int]:
    """daphne on a free port; with `backlog`, listening through an endpoint string that sets it
    (docs/deploy.md: `-b`/`-p` listen with Twisted's default backlog of 50)."""
    import httpx

    port = free_port()
    if backlog:
        listen = ["-e", f"tcp:port={port}:interface=127.0.0.1:backlog={backlog}"]
    else:
        listen = ["-b", "127.0.0.1", "-p", str(port)]
    proc = Proc([str(BIN / "daphne"), "-v", "0", *listen, app], env)

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    wait_for(up, 60)
    return proc, port


class DaphneGroup:
    """Several daphne processes of one app, as a machine's web processes behind nginx."""

    def __init__(self, env: dict, app: str, processes: int, backlog: int | None = None):
        self.procs: list[Proc] = []
        self.ports: list[int] = []
        try:
            for _ in range(processes):
                proc, port = start_daphne(env, app, backlog)
                self.procs.append(proc)
                self.ports.append(port)
        except BaseException:
            self.stop()
            raise

    def cpu_secs(self) -> float:
        return sum(proc.cpu_secs() for proc in self.procs)

    def rss_mb(self) -> float:
        return sum(proc.rss_mb() for proc in self.procs)

    def mark(self) -> list[int]:
        """Where each process's output is now, for `lines_since`."""
        return [len(proc.output) for proc in self.procs]

    def lines_since(self, mark: list[int]) -> list[str]:
        return [line for proc, start in zip(self.procs, mark, strict=True) for line in proc.output[start:]]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


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
