"""Handshake rate: what bounds W1, W3 and W4 at thousands of clients — Clarion vs the baselines.

    python -m bench.handshake [--clients 1000] [--concurrency 100] [--runs 3]

Each system is a fresh server process (the same three as W3; daphne listening with the
backlog docs/deploy.md gives it, 1,024). A warm-up opens and closes 100
sockets; then `--clients` sockets connect with `--concurrency` handshakes in flight, each
counting as connected once it has answered a ping (so the server finished its connect work).
Reported: handshakes per second, the p50/p99 time of one handshake, and the server's CPU per
handshake (utime + stime from /proc over the connect phase). The sockets are then closed.
"""

import argparse
import asyncio
import statistics
import time

from bench.harness import (
    bench_env,
    drop_database,
    migrate,
    purge_redis,
    record,
    scratch_database,
    setup_django,
)
from bench.realtime_common import REALTIME_REDIS_URL, percentile, raise_open_files_limit, users_with_tokens
from bench.realtime_memory import SYSTEMS, start_server

DATABASE = "clarion_bench_handshake"
WARM_UP_SOCKETS = 100
OPEN_TIMEOUT_SECS = 60
RUN_TIMEOUT_SECS = 600


async def connect_all(port: int, tokens: list[str], concurrency: int) -> tuple[list, list[float], int]:
    """Open one socket per token, `concurrency` at a time: (sockets, seconds per handshake, failures)."""
    from websockets.asyncio.client import connect

    limit = asyncio.Semaphore(concurrency)
    sockets, durations, failures = [], [], 0

    async def one(token: str) -> None:
        nonlocal failures
        async with limit:
            started = time.monotonic()
            try:
                ws = await connect(
                    f"ws://127.0.0.1:{port}/ws/v1/notifications/?token={token}",
                    open_timeout=OPEN_TIMEOUT_SECS,
                    ping_interval=None,
                    compression=None,
                )
                await ws.send('{"type":"ping"}')
                await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_SECS)
            except (TimeoutError, OSError, Exception):  # noqa: BLE001 - counted, not raised
                failures += 1
                return
            durations.append(time.monotonic() - started)
            sockets.append(ws)

    await asyncio.wait_for(asyncio.gather(*(one(token) for token in tokens)), RUN_TIMEOUT_SECS)
    return sockets, durations, failures


async def close_all(sockets: list) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def one_run(env: dict, app: str | None, tokens: list[str], concurrency: int) -> dict:
    server, port = start_server(env, app)
    try:
        warm, _, _ = asyncio.run(connect_all(port, tokens[:WARM_UP_SOCKETS], concurrency))
        asyncio.run(close_all(warm))
        cpu_start, started = server.cpu_secs(), time.monotonic()

        async def measure():
            sockets, durations, failures = await connect_all(port, tokens, concurrency)
            wall, cpu = time.monotonic() - started, server.cpu_secs() - cpu_start
            await close_all(sockets)
            return durations, failures, wall, cpu

        durations, failures, wall, cpu = asyncio.run(measure())
        return {
            "rate": len(durations) / wall,
            "p50_ms": 1000 * percentile(durations, 0.5) if durations else float("nan"),
            "p99_ms": 1000 * percentile(durations, 0.99) if durations else float("nan"),
            "cpu_us": 1e6 * cpu / max(1, len(durations)),
            "failures": failures,
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="500 clients, 3 runs")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--database", default=DATABASE)
    args = parser.parse_args()
    if args.quick:
        args.clients = 500
    raise_open_files_limit()
    env = bench_env(scratch_database(args.database), REDIS_URL=REALTIME_REDIS_URL)
    try:
        migrate(env)
        setup_django(env)
        tokens = [token for _, _, token in users_with_tokens(args.clients, "handshake")]
        print(
            f"handshakes: {args.clients} clients, {args.concurrency} in flight, {args.runs} runs "
            "(median [min–max])"
        )
        medians = {}
        for name in args.systems.split(","):
            runs = []
            for _ in range(args.runs):
                purge_redis(REALTIME_REDIS_URL)
                runs.append(one_run(env, SYSTEMS[name], tokens, args.concurrency))
            rates = [run["rate"] for run in runs]
            cpu = [run["cpu_us"] for run in runs]
            print(
                f"  {name:<24} {statistics.median(rates):7.0f}/s [{min(rates):.0f}–{max(rates):.0f}]"
                f"  p50 {statistics.median(r['p50_ms'] for r in runs):6.1f} ms"
                f"  p99 {statistics.median(r['p99_ms'] for r in runs):6.1f} ms"
                f"  server CPU {statistics.median(cpu):6.0f} µs/handshake"
                f"  failed {sum(r['failures'] for r in runs)}",
                flush=True,
            )
            medians[name] = statistics.median(rates)
        clarion = medians.pop("clarion", None)
        if clarion is not None:
            record(
                "W1/W4",
                f"handshakes/s, {args.clients} clients",
                clarion,
                medians,
                note=f"{args.concurrency} handshakes in flight; bounds W1, W3 and W4 connect phases",
            )
    finally:
        drop_database(args.database)


if __name__ == "__main__":
    main()
