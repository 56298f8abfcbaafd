"""Latency to 1,000 connected users: send (API call) to receipt, and publish to receipt.

    python -m bench.realtime_latency [--users 1000] [--rounds 5]

1. Clarion end to end: POST /api/v1/notifications/ to all users → worker fan-out →
   node channel → sockets; per-recipient time from the API call to the frame's arrival.
2. Fan-out only, Clarion vs stock Channels: the same 1,000 messages published after a batch
   commits — Clarion's publish_messages (one PUBLISH per node per 500-user batch) against
   one group_send per user to stock consumers (bench/realtime_baseline_asgi.py).
"call p50" is how long the API call / publish call itself took (the publisher's cost).
The client sockets live in this process, so receipt times include its own scheduling.
"""

import argparse
import asyncio
import time

import httpx

from bench.harness import (
    bench_env,
    celery_worker,
    drop_database,
    migrate,
    purge_redis,
    scratch_database,
    setup_django,
)
from bench.realtime_common import (
    REALTIME_REDIS_URL,
    close_sockets,
    open_sockets,
    percentile,
    raise_open_files_limit,
    start_daphne,
    users_with_tokens,
)

DATABASE = "clarion_bench_realtime"
RECEIVE_TIMEOUT_SECS = 60
FANOUT_BATCH = 500  # as settings.CLARION_FANOUT_BATCH: publish_messages is called per batch


async def _receive_one(ws, marker: str, started: list[float], arrivals: list[float]) -> None:
    deadline = time.monotonic() + RECEIVE_TIMEOUT_SECS
    while time.monotonic() < deadline:
        frame = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
        if marker in frame:
            arrivals.append(time.perf_counter() - started[0])
            return
    raise TimeoutError(marker)


TRIGGER_MS: dict[str, list[float]] = {}  # how long the send/publish call itself took, per path


async def _round(sockets, marker: str, trigger, path: str) -> list[float]:
    """Start receivers, run `trigger` in a thread, return per-socket latencies in ms."""
    started, arrivals = [0.0], []
    receivers = [asyncio.create_task(_receive_one(ws, marker, started, arrivals)) for ws in sockets]
    await asyncio.sleep(0)
    started[0] = time.perf_counter()
    await asyncio.to_thread(trigger)
    TRIGGER_MS.setdefault(path, []).append((time.perf_counter() - started[0]) * 1000)
    await asyncio.wait_for(asyncio.gather(*receivers), RECEIVE_TIMEOUT_SECS)
    return [seconds * 1000 for seconds in arrivals]


def end_to_end(env: dict, users, rounds: int, api_key: str) -> list[float]:
    worker = celery_worker(env, pool="threads", concurrency=4)
    proc, port = start_daphne(env)
    try:

        async def run() -> list[float]:
            sockets = await open_sockets(port, [token for _, _, token in users])
            usernames = [name for _, name, _ in users]
            latencies: list[float] = []
            try:
                for number in range(rounds):
                    marker = f"e2e-{number}-{time.time_ns()}"

                    def trigger(marker=marker):
                        response = httpx.post(
                            f"http://127.0.0.1:{port}/api/v1/notifications/",
                            json={"to": {"users": usernames}, "title": marker, "route": "realtime"},
                            headers={"Authorization": f"Bearer {api_key}"},
                            timeout=30,
                        )
                        response.raise_for_status()

                    latencies += await _round(sockets, marker, trigger, "e2e")
            finally:
                await close_sockets(sockets)
            return latencies

        return asyncio.run(run())
    finally:
        proc.stop()
        worker.stop()


def fan_out_only(env: dict, app: str, users, rounds: int, publish) -> list[float]:
    proc, port = start_daphne(env, app)
    try:
        positions = stream_positions([user_id for user_id, _, _ in users])

        async def run() -> list[float]:
            sockets = await open_sockets(port, [token for _, _, token in users])
            latencies: list[float] = []
            try:
                for number in range(rounds):
                    marker = f"fan-{number}-{time.time_ns()}"
                    batch = [
                        (user_id, message(marker, positions.get(user_id, 0) + number + 1))
                        for user_id, _, _ in users
                    ]
                    latencies += await _round(sockets, marker, lambda batch=batch: publish(batch), app)
            finally:
                await close_sockets(sockets)
            return latencies

        return asyncio.run(run())
    finally:
        proc.stop()


def stream_positions(user_ids: list[int]) -> dict[int, int]:
    """Each user's cursor now: fake messages continue the stream, so no gap-fill is triggered."""
    from delivery.models import UserStream

    return dict(UserStream.objects.filter(user_id__in=user_ids).values_list("user_id", "last_seq"))


def message(title: str, cursor: int) -> dict:
    return {
        "id": cursor,
        "cursor": cursor,
        "title": title,
        "body": "",
        "data": {},
        "url": "",
        "icon": "",
        "created_at": "2026-01-01T00:00:00Z",
    }


def publish_clarion(batch) -> None:
    from realtime.publish import publish_messages

    for start in range(0, len(batch), FANOUT_BATCH):
        publish_messages(batch[start : start + FANOUT_BATCH])


def publish_stock(batch) -> None:
    """What realtime/publish.py did before node channels: one group_send per user."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    async def send_all(chunk):
        layer = get_channel_layer()
        await asyncio.gather(
            *(
                layer.group_send(f"user.{user_id}", {"type": "notification.message", "message": message})
                for user_id, message in chunk
            )
        )

    for start in range(0, len(batch), FANOUT_BATCH):
        async_to_sync(send_all)(batch[start : start + FANOUT_BATCH])


def report(name: str, latencies: list[float], path: str) -> str:
    trigger = percentile(TRIGGER_MS[path], 0.5)
    return (
        f"{name:<44}{percentile(latencies, 0.5):>9.1f}{percentile(latencies, 0.99):>9.1f}"
        f"{max(latencies):>9.1f}{trigger:>12.1f}{len(latencies):>8}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    raise_open_files_limit()
    env = bench_env(scratch_database(DATABASE), REDIS_URL=REALTIME_REDIS_URL)
    purge_redis(env["REDIS_URL"])
    migrate(env)
    setup_django(env)
    from delivery.services import api_key_create

    users = users_with_tokens(args.users, "lat")
    _key, api_key = api_key_create(name="bench", scopes=["send"])
    ours, stock = "notifyproject.asgi:application", "bench.realtime_baseline_asgi:application"
    rows = [
        report("clarion: API send -> receipt (worker)", end_to_end(env, users, args.rounds, api_key), "e2e"),
        report(
            "clarion: publish -> receipt",
            fan_out_only(env, ours, users, args.rounds, publish_clarion),
            ours,
        ),
        report(
            "stock channels: group_send -> receipt",
            fan_out_only(env, stock, users, args.rounds, publish_stock),
            stock,
        ),
    ]
    print(f"\nLatency to {args.users} connected users, {args.rounds} rounds (ms)")
    print(f"{'path':<44}{'p50':>9}{'p99':>9}{'max':>9}{'call p50':>12}{'n':>8}")
    print("\n".join(rows))


if __name__ == "__main__":
    try:
        main()
    finally:
        drop_database(DATABASE)
