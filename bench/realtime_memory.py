"""Memory per idle WebSocket: Clarion's consumer vs a stock Channels consumer (group_add).

    python -m bench.realtime_memory [--clients 2000]

Each server is a fresh daphne on the same database and Redis; its RSS is read from /proc
before and after the clients connect (each has answered a ping), and divided per socket.
"""

import argparse
import asyncio

from bench.harness import bench_env, drop_database, migrate, purge_redis, scratch_database, setup_django
from bench.realtime_common import (
    REALTIME_REDIS_URL,
    close_sockets,
    open_sockets,
    raise_open_files_limit,
    settle,
    start_daphne,
    users_with_tokens,
)

DATABASE = "clarion_bench_realtime"
SETTLE_SECS = 3  # after connecting, before reading RSS: let transient buffers go


def measure(env: dict, app: str, tokens: list[str]) -> dict:
    proc, port = start_daphne(env, app)
    try:
        settle(SETTLE_SECS)
        before = proc.rss_mb()
        sockets = asyncio.run(_connect_and_hold(port, tokens, proc))
        after = sockets["rss"]
        per_socket_kb = (after - before) * 1024 / len(tokens)
        return {"before_mb": before, "after_mb": after, "per_socket_kb": per_socket_kb}
    finally:
        proc.stop()


async def _connect_and_hold(port: int, tokens: list[str], proc) -> dict:
    sockets = await open_sockets(port, tokens)
    await asyncio.sleep(SETTLE_SECS)
    rss = proc.rss_mb()
    await close_sockets(sockets)
    return {"rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    args = parser.parse_args()
    raise_open_files_limit()
    env = bench_env(scratch_database(DATABASE), REDIS_URL=REALTIME_REDIS_URL)
    purge_redis(env["REDIS_URL"])
    migrate(env)
    setup_django(env)
    tokens = [token for _, _, token in users_with_tokens(args.clients, "mem")]
    results = {
        "clarion (node channels)": measure(env, "notifyproject.asgi:application", tokens),
        "stock channels (group_add)": measure(env, "bench.realtime_baseline_asgi:application", tokens),
    }
    print(f"\nIdle WebSockets: {args.clients} clients, daphne RSS from /proc")
    print(f"{'server':<30}{'idle MB':>10}{'connected MB':>15}{'KB / socket':>14}")
    for name, figures in results.items():
        print(
            f"{name:<30}{figures['before_mb']:>10.1f}{figures['after_mb']:>15.1f}{figures['per_socket_kb']:>14.1f}"
        )


if __name__ == "__main__":
    try:
        main()
    finally:
        drop_database(DATABASE)
