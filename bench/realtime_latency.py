"""Latency to connected users: a burst to all of them, and W5, one user per send.

    python -m bench.realtime_latency [--users 1000] [--rounds 5] [--w5-users 200] [--w5-secs 10]
    python -m bench.realtime_latency --only w5 [--clarion-max-rate 120]

Burst:

1. Clarion end to end: POST /api/v1/notifications/ to all users → worker fan-out →
   node channel → sockets; per-recipient time from the API call to the frame's arrival.
2. Fan-out only, Clarion vs stock Channels: the same 1,000 messages published after a batch
   commits — Clarion's publish_messages (one PUBLISH per node per 500-user batch) against
   one group_send per user to stock consumers (bench/realtime_baseline_asgi.py).
"call p50" is how long the API call / publish call itself took (the publisher's cost).

W5: each send goes to ONE user, at a steady pace of half the system's own max
sustained rate (measured first, flat out with W5_IN_FLIGHT sends in flight, unless given).
Clarion: POST /api/v1/notifications/ → row → worker fan-out → node → socket, timed from the
start of the POST. Baselines: stock Channels consumers (bench/realtime_baseline_asgi.py),
one group_send to the user's group, on RedisChannelLayer and on RedisPubSubChannelLayer,
timed from the start of the group_send. Warm-up, then 3 runs; median (min–max) of each run's
p50 and p99. The client reads each frame's per-user cursor, so loss and reordering are counted.
The client sockets live in this process, so receipt times include its own scheduling.
"""

import argparse
import asyncio
import contextlib
import os
import statistics
import time

import httpx
import orjson
from websockets.exceptions import ConnectionClosed

from bench.harness import (
    bench_env,
    celery_worker,
    drop_database,
    migrate,
    purge_redis,
    record,
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

DATABASE = os.environ.get("BENCH_REALTIME_DATABASE", "clarion_bench_realtime")
RECEIVE_TIMEOUT_SECS = 60
# Stock RedisChannelLayer's group_add fails with redis-py's MaxConnectionsError (a pool of 100)
# at 100 handshakes in flight; W5 measures latency, not connects, so every system gets 25.
W5_CONNECT_CONCURRENCY = 25
FANOUT_BATCH = 500  # as settings.CLARION_FANOUT_BATCH: publish_messages is called per batch


class Arrivals:
    """One reader per socket for the whole session (never two `recv` on one socket): for the
    round's marker, when each socket first saw it."""

    def __init__(self, sockets):
        self.expected = len(sockets)
        self.marker = None
        self.started = 0.0
        self.latencies: list[float] = []
        self.seen: set[int] = set()
        self.complete = asyncio.Event()
        self.readers = [asyncio.create_task(self._read(index, ws)) for index, ws in enumerate(sockets)]

    async def _read(self, index: int, ws) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                marker = self.marker
                if marker is not None and index not in self.seen and marker in frame:
                    self.seen.add(index)
                    self.latencies.append((time.perf_counter() - self.started) * 1000)
                    if len(self.seen) == self.expected:
                        self.complete.set()

    async def round(self, marker: str, trigger, path: str) -> list[float]:
        """Run `trigger` in a thread; per-socket latencies in ms of the frame carrying `marker`."""
        self.marker, self.latencies, self.seen = marker, [], set()
        self.complete.clear()
        self.started = time.perf_counter()
        await asyncio.to_thread(trigger)
        TRIGGER_MS.setdefault(path, []).append((time.perf_counter() - self.started) * 1000)
        try:
            await asyncio.wait_for(self.complete.wait(), RECEIVE_TIMEOUT_SECS)
        except TimeoutError:
            raise TimeoutError(f"{marker}: {len(self.seen)} of {self.expected} sockets received it") from None
        return self.latencies

    async def close(self) -> None:
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


TRIGGER_MS: dict[str, list[float]] = {}  # how long the send/publish call itself took, per path


def end_to_end(env: dict, users, rounds: int, api_key: str) -> list[float]:
    worker = celery_worker(env, pool="threads", concurrency=4)
    proc, port = start_daphne(env)
    try:

        async def run() -> list[float]:
            sockets = await open_sockets(port, [token for _, _, token in users])
            arrivals = Arrivals(sockets)
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

                    latencies += await arrivals.round(marker, trigger, "e2e")
            finally:
                await arrivals.close()
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
            arrivals = Arrivals(sockets)
            latencies: list[float] = []
            try:
                for number in range(rounds):
                    marker = f"fan-{number}-{time.time_ns()}"
                    batch = [
                        (user_id, message(marker, positions.get(user_id, 0) + number + 1))
                        for user_id, _, _ in users
                    ]
                    latencies += await arrivals.round(marker, lambda batch=batch: publish(batch), app)
            finally:
                await arrivals.close()
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


# -- W5: one user per send, at half of each system's max sustained rate ----------------------

W5_IN_FLIGHT = 32  # sends in flight while measuring the max rate
W5_MAX_RATE_SENDS = 600  # sends in the flat-out run
W5_WARMUP_SECS = 2
W5_RUNS = 3
W5_SEND_TIMEOUT_SECS = 120
W5_DRAIN_SECS = 10  # after the last send, how long receipts are waited for (then: lost)
STOCK_LAYERS = {
    "core": "Channels RedisChannelLayer",
    "pubsub": "Channels RedisPubSubChannelLayer",
}


class Receipts:
    """What the lean client saw: first arrival per send, per-user order (cursor), frames."""

    def __init__(self):
        self.arrived: dict[str, float] = {}
        self.last_cursor: dict[int, int] = {}
        self.reordered = 0
        self.duplicates = 0

    def frame(self, user_id: int, frame: str | bytes) -> None:
        now = time.perf_counter()
        body = orjson.loads(frame)
        title = body.get("title", "")
        if body.get("type") != "notification" or not title.startswith("w5:"):
            return
        cursor, last = body["cursor"], self.last_cursor.get(user_id, -1)
        if cursor < last:
            self.reordered += 1
        elif cursor == last:
            self.duplicates += 1
        self.last_cursor[user_id] = max(last, cursor)
        self.arrived.setdefault(title, now)


async def _listen(ws, user_id: int, receipts: Receipts) -> None:
    """Until the socket closes or the task is cancelled at the end of the session."""
    async for frame in ws:
        receipts.frame(user_id, frame)


async def _send_phase(send, users, receipts: Receipts, *, phase: str, count: int, rate: float | None) -> dict:
    """`count` sends round-robin over `users`: at `rate` per second, or flat out (rate None)."""
    sent: dict[str, float] = {}
    failures = [0]
    limit = asyncio.Semaphore(W5_IN_FLIGHT)

    async def one(title: str, user) -> None:
        sent[title] = time.perf_counter()
        try:
            await send(user, title)
        except (httpx.HTTPError, RuntimeError, OSError):  # counted; the send is lost
            failures[0] += 1
        finally:
            if rate is None:
                limit.release()

    tasks = []
    start = time.perf_counter()
    for number in range(count):
        title = f"w5:{phase}:{number}"
        if rate is None:
            await limit.acquire()
        else:
            delay = start + number / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(title, users[number % len(users)])))
    await asyncio.wait_for(asyncio.gather(*tasks), W5_SEND_TIMEOUT_SECS)
    deadline = time.perf_counter() + W5_DRAIN_SECS
    while time.perf_counter() < deadline and sum(title in receipts.arrived for title in sent) < count:
        await asyncio.sleep(0.02)
    latencies = [(receipts.arrived[t] - at) * 1000 for t, at in sent.items() if t in receipts.arrived]
    last = max((receipts.arrived[t] for t in sent if t in receipts.arrived), default=start)
    return {
        "latencies": latencies,
        "lost": count - len(latencies),
        "failed": failures[0],
        "rate": len(latencies) / max(last - start, 1e-9),
    }


async def _w5_session(port: int, users, send, max_rate: float | None, run_secs: float, procs) -> dict:
    """Connect every user, find the max rate (unless given), then warm-up and runs at half of it."""
    receipts = Receipts()
    sockets = await open_sockets(port, [token for _, _, token in users], concurrency=W5_CONNECT_CONCURRENCY)
    listeners = [
        asyncio.create_task(_listen(ws, user_id, receipts))
        for ws, (user_id, _, _) in zip(sockets, users, strict=True)
    ]
    try:
        if max_rate is None:
            flat_out = await _send_phase(
                send, users, receipts, phase="max", count=W5_MAX_RATE_SENDS, rate=None
            )
            max_rate = flat_out["rate"]
        rate = max_rate / 2
        await _send_phase(
            send, users, receipts, phase="warm", count=max(1, int(rate * W5_WARMUP_SECS)), rate=rate
        )
        runs = []
        for run in range(W5_RUNS):
            cpu_before = sum(proc.cpu_secs() for proc in procs)
            result = await _send_phase(
                send, users, receipts, phase=f"run{run}", count=max(1, int(rate * run_secs)), rate=rate
            )
            result["cpu"] = sum(proc.cpu_secs() for proc in procs) - cpu_before
            result["rss"] = sum(proc.rss_mb() for proc in procs)
            runs.append(result)
    finally:
        for listener in listeners:
            listener.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        await close_sockets(sockets)
    return {
        "max_rate": max_rate,
        "rate": rate,
        "runs": runs,
        "reordered": receipts.reordered,
        "duplicates": receipts.duplicates,
    }


def w5_clarion(env: dict, users, api_key: str, max_rate: float | None, run_secs: float) -> dict:
    env = {**env, "CLARION_SEND_RATE": "1000000/min"}  # the per-key limit (3000/min) is not measured here
    worker = celery_worker(env)
    proc, port = start_daphne(env)
    try:

        async def run() -> dict:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {api_key}"},
                limits=httpx.Limits(max_connections=W5_IN_FLIGHT, max_keepalive_connections=W5_IN_FLIGHT),
                timeout=30,
            ) as client:

                async def send(user, title: str) -> None:
                    response = await client.post(
                        "/api/v1/notifications/", json={"to": {"users": [user[1]]}, "title": title}
                    )
                    if response.status_code != 202:
                        raise RuntimeError(f"{response.status_code} {response.text[:200]}")

                return await _w5_session(port, users, send, max_rate, run_secs, [proc, worker])

        return asyncio.run(run())
    finally:
        proc.stop()
        worker.stop()


def w5_stock(env: dict, layer_name: str, users, run_secs: float) -> dict:
    env = {
        **env,
        "DJANGO_SETTINGS_MODULE": "bench.realtime_baseline_settings",
        "BENCH_CHANNEL_LAYER": layer_name,
    }
    proc, port = start_daphne(env, "bench.realtime_baseline_asgi:application")
    try:

        async def run() -> dict:
            layer = _stock_layer(layer_name, env["REDIS_URL"])
            cursors: dict[int, int] = {}

            async def send(user, title: str) -> None:
                user_id = user[0]
                cursors[user_id] = cursor = cursors.get(user_id, 0) + 1
                await layer.group_send(
                    f"user.{user_id}", {"type": "notification.message", "message": message(title, cursor)}
                )

            try:
                return await _w5_session(port, users, send, None, run_secs, [proc])
            finally:
                if hasattr(layer, "flush"):
                    await layer.flush()

        return asyncio.run(run())
    except Exception:
        print("stock daphne's last output:\n" + "".join(proc.output[-40:]), flush=True)
        raise
    finally:
        proc.stop()


def _stock_layer(name: str, redis_url: str):
    """The same channel layer the stock daphne uses, in this process (the publisher's side)."""
    if name == "core":
        from channels_redis.core import RedisChannelLayer

        return RedisChannelLayer(hosts=[redis_url])
    from channels_redis.pubsub import RedisPubSubChannelLayer

    return RedisPubSubChannelLayer(hosts=[{"address": redis_url}])


def w5_row(name: str, result: dict) -> tuple[str, float, float]:
    runs = result["runs"]
    p50s = [percentile(run["latencies"], 0.5) for run in runs if run["latencies"]]
    p99s = [percentile(run["latencies"], 0.99) for run in runs if run["latencies"]]
    if not p50s:
        return f"{name:<34} nothing arrived: {runs}", float("nan"), float("nan")
    lost = sum(run["lost"] for run in runs)
    sends = sum(len(run["latencies"]) + run["lost"] for run in runs)
    cpu_ms = statistics.median(run["cpu"] * 1000 / max(1, len(run["latencies"])) for run in runs)
    line = (
        f"{name:<34}{result['max_rate']:>9.0f}{result['rate']:>8.0f}  {_ms(p50s):<20}{_ms(p99s):<22}"
        f"{lost:>5}/{sends:<6}{result['reordered']:>5}{cpu_ms:>9.2f}{runs[-1]['rss']:>8.0f}"
    )
    return line, statistics.median(p50s), statistics.median(p99s)


def _ms(values: list[float]) -> str:
    """median (min–max) with one decimal: W5's figures are a few milliseconds."""
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def run_w5(env: dict, users, api_key: str, max_rate: float | None, run_secs: float) -> None:
    rows = {"Clarion (API → worker → node)": w5_clarion(env, users, api_key, max_rate, run_secs)}
    for layer_name, label in STOCK_LAYERS.items():
        purge_redis(env["REDIS_URL"])
        rows[label] = w5_stock(env, layer_name, users, run_secs)
    print(f"\nW5: one user per send, {len(users)} connected users, at half of each system's max rate")
    print(
        f"{'system':<34}{'max/s':>9}{'sent/s':>8}  {'p50 ms':<20}{'p99 ms':<22}{'lost/sent':>12}{'reord':>5}"
        f"{'cpu ms':>9}{'RSS MB':>8}"
    )
    figures = {}
    for name, result in rows.items():
        line, p50, p99 = w5_row(name, result)
        print(line)
        figures[name] = (p50, p99)
    print(
        "cpu ms: server CPU (daphne, + the Celery worker for Clarion) per delivered message; "
        "RSS: the same processes"
    )
    clarion_p50, clarion_p99 = next(iter(figures.values()))
    baselines = {name: value for name, value in list(figures.items())[1:]}
    record(
        "W5",
        "API → socket p50 ms, half max rate",
        clarion_p50,
        {name: p50 for name, (p50, _) in baselines.items()},
        goal="≤ 5 ms",
        met=clarion_p50 <= 5,
        higher_is_better=False,
    )
    record(
        "W5",
        "API → socket p99 ms, half max rate",
        clarion_p99,
        {name: p99 for name, (_, p99) in baselines.items()},
        goal="≤ 50 ms",
        met=clarion_p99 <= 50,
        higher_is_better=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["burst", "w5"], help="run one part only")
    parser.add_argument("--w5-users", type=int, default=200, help="connected users for W5")
    parser.add_argument("--w5-secs", type=float, default=10, help="seconds per W5 run")
    parser.add_argument(
        "--clarion-max-rate", type=float, help="Clarion's max sends/s for W5 (measured when not given)"
    )
    args = parser.parse_args()
    raise_open_files_limit()
    env = bench_env(scratch_database(DATABASE), REDIS_URL=REALTIME_REDIS_URL)
    purge_redis(env["REDIS_URL"])
    migrate(env)
    setup_django(env)
    from notifyproject.identities.api_keys import api_key_create

    _key, api_key = api_key_create(name="bench", scopes=["send"])
    if args.only != "w5":
        burst(env, args.users, args.rounds, api_key)
    if args.only != "burst":
        run_w5(env, users_with_tokens(args.w5_users, "w5u"), api_key, args.clarion_max_rate, args.w5_secs)


def burst(env: dict, user_count: int, rounds: int, api_key: str) -> None:
    users = users_with_tokens(user_count, "lat")
    ours, stock = "notifyproject.asgi:application", "bench.realtime_baseline_asgi:application"
    rows = [
        report("clarion: API send -> receipt (worker)", end_to_end(env, users, rounds, api_key), "e2e"),
        report(
            "clarion: publish -> receipt",
            fan_out_only(env, ours, users, rounds, publish_clarion),
            ours,
        ),
        report(
            "stock channels: group_send -> receipt",
            fan_out_only(env, stock, users, rounds, publish_stock),
            stock,
        ),
    ]
    print(f"\nLatency to {user_count} connected users, {rounds} rounds (ms)")
    print(f"{'path':<44}{'p50':>9}{'p99':>9}{'max':>9}{'call p50':>12}{'n':>8}")
    print("\n".join(rows))


if __name__ == "__main__":
    try:
        main()
    finally:
        drop_database(DATABASE)
