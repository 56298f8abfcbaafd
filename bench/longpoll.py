"""W8: long-poll clients, one message per second each: Clarion's poll view against a stock
Channels `AsyncHttpConsumer` long-poll (bench/longpoll_baseline_asgi.py).

    python -m bench.longpoll [--clients 2000] [--secs 10] [--layers pubsub,core] [--processes 1]
                             [--profile DIR]

Every client is one keep-alive HTTP/1.1 connection in this process (a lean asyncio client,
the same for every system) that polls GET /api/v1/poll/?token=…&after=<cursor>&timeout=30
again as soon as an answer arrives. A publisher process sends every user one message per
second: Clarion's is the fan-out a worker would run (notification_send + fan-out, in batches
of 500, rows and cursors included); the baseline's is one group_send per user. Each message
carries its send time and a per-user sequence number (Clarion: the cursor), so the client
counts deliveries, latency (receipt − send), loss and reordering. Server CPU, RSS and thread
count come from /proc. Memory per waiting request: RSS with every client waiting, minus RSS
after a few warm-up polls, over the number of clients. Warm-up, then 3 runs; median (min–max).
With --processes 2, each system runs two daphne processes (docs/deploy.md runs one per core,
so two on this 2-core machine) and the clients are dealt between them; CPU, RSS and threads
are the processes' sums. With --profile, py-spy records Clarion's (first) daphne (the thread
holding the GIL, idle excluded) during the measured runs, as raw folded stacks in DIR.
"""

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import orjson

from bench.harness import (
    Proc,
    bench_env,
    drop_database,
    migrate,
    purge_redis,
    py_spy,
    record,
    scratch_database,
    setup_django,
    summary,
)
from bench.realtime_common import (
    REALTIME_REDIS_URL,
    DaphneGroup,
    percentile,
    raise_open_files_limit,
    users_with_tokens,
)

DATABASE = os.environ.get("BENCH_REALTIME_DATABASE", "clarion_bench_realtime")
USER_PREFIX = "lp"
POLL_TIMEOUT_SECS = 30
CONNECT_CONCURRENCY = 100
CONNECT_TIMEOUT_SECS = 120
READ_TIMEOUT_SECS = POLL_TIMEOUT_SECS + 30  # a poll never legitimately takes longer
WARMUP_SECS = 3
RUNS = 3
SETTLE_SECS = 3  # after every client has sent its first poll, before reading memory
START_DELAY_SECS = 4  # the publisher sets Django up, then starts at this wall-clock offset
DRAIN_SECS = 5  # after a run's last send, how long its messages may still arrive
LAYERS = {
    "pubsub": "Channels AsyncHttpConsumer, RedisPubSub",
    "core": "Channels AsyncHttpConsumer, RedisChannelLayer",
}


# -- the lean client -----------------------------------------------------------------------


class Deliveries:
    def __init__(self):
        self.seen: list[tuple[float, float]] = []  # (sent, received), wall clock
        self.last_seq: dict[int, int] = {}
        self.reordered = 0
        self.errors = 0

    def message(self, user: int, message: dict, received: float) -> None:
        seq, last = message["cursor"], self.last_seq.get(user, -1)
        if seq <= last:
            self.reordered += 1
        self.last_seq[user] = max(seq, last)
        sent = (message.get("data") or {}).get("t")
        if sent is not None:
            self.seen.append((sent, received))


async def _read_response(reader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        for _ in range(10_000):  # bounded: a poll answer is a handful of chunks
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            body += await reader.readexactly(size + 2)
            if size == 0:
                return status, body
        raise ValueError("too many chunks")
    raise ValueError("a response without a length")


async def _client(
    port, user_id, token, deliveries: Deliveries, started: asyncio.Semaphore, stop: asyncio.Event
):
    async with started:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT_SECS
        )
    cursor = None
    try:
        while not stop.is_set():
            after = "" if cursor is None else f"&after={cursor}"
            writer.write(
                f"GET /api/v1/poll/?token={token}&timeout={POLL_TIMEOUT_SECS}{after} HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\n\r\n".encode()
            )
            status, body = await asyncio.wait_for(_read_response(reader), READ_TIMEOUT_SECS)
            received = time.time()
            if status != 200:
                deliveries.errors += 1
                await asyncio.sleep(1)
                continue
            answer = orjson.loads(body)
            for message in answer["results"]:
                deliveries.message(user_id, message, received)
            if answer.get("cursor") is not None:
                cursor = answer["cursor"]
    finally:
        writer.close()


# -- publishers (run as their own process: python -m bench.longpoll publish-…) --------------


def publish_clarion(start_at: float, secs: float) -> dict:
    from delivery.services import NotificationRequest, Sender, notification_send

    names = _usernames()
    rounds, first = 0, None
    for number in range(int(secs)):
        _sleep_until(start_at + number)
        first = first or time.time()
        notification_send(
            sender=Sender(label="bench:longpoll"),
            request=NotificationRequest(
                target={"users": names}, title="lp", data={"t": time.time()}, route="realtime"
            ),
        )  # fanned out here, after commit (CLARION_INLINE_FANOUT_MAX is raised for this process)
        rounds += 1
    return {"rounds": rounds, "first": first}


def publish_stock(layer_name: str, start_at: float, secs: float) -> dict:
    from django.contrib.auth import get_user_model

    from bench.realtime_latency import _stock_layer

    user_ids = list(
        get_user_model().objects.filter(username__startswith=USER_PREFIX).values_list("pk", flat=True)
    )

    async def run() -> int:
        layer = _stock_layer(layer_name, os.environ["REDIS_URL"])
        rounds, first = 0, None
        for number in range(int(secs)):
            await asyncio.sleep(max(0.0, start_at + number - time.time()))
            first = first or time.time()

            async def send(user_id, seq):
                message = {"cursor": seq, "title": "lp", "data": {"t": time.time()}}
                await layer.group_send(
                    f"user.{user_id}", {"type": "notification.message", "message": message}
                )

            # 50 group_sends in flight: redis-py's pool (100 connections) refuses more at once.
            for start in range(0, len(user_ids), 50):
                await asyncio.gather(*(send(uid, number + 1) for uid in user_ids[start : start + 50]))
            rounds += 1
        if hasattr(layer, "flush"):
            await layer.flush()
        return rounds, first

    rounds, first = asyncio.run(run())
    return {"rounds": rounds, "first": first}


def _usernames() -> list[str]:
    from django.contrib.auth import get_user_model

    return list(
        get_user_model()
        .objects.filter(username__startswith=USER_PREFIX)
        .order_by("pk")
        .values_list("username", flat=True)
    )


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def _publisher(env: dict, kind: str, start_at: float, secs: float) -> Proc:
    args = [sys.executable, "-m", "bench.longpoll", "publish", kind, str(start_at), str(secs)]
    return Proc(args, {**env, "CLARION_INLINE_FANOUT_MAX": "1000000"})


# -- one system ------------------------------------------------------------------------------


def threads(server: DaphneGroup) -> int:
    count = 0
    for proc in server.procs:
        for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                count += int(line.split()[1])
    return count


def run_system(
    env: dict, app: str, kind: str, users, secs: float, processes: int = 1, profile: Path | None = None
) -> dict:
    server = DaphneGroup(env, app, processes)
    try:
        return asyncio.run(_session(env, server, kind, users, secs, profile))
    finally:
        server.stop()


async def _session(env, server: DaphneGroup, kind: str, users, secs: float, profile=None) -> dict:
    deliveries, stop = Deliveries(), asyncio.Event()
    ports = server.ports
    # Warm-up polls (timeout 0): Django, the view and the connections are loaded before "idle".
    for number, (_user_id, _name, token) in enumerate(users[: 10 * len(ports)]):
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[number % len(ports)])
        writer.write(f"GET /api/v1/poll/?token={token}&timeout=0 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await asyncio.wait_for(_read_response(reader), READ_TIMEOUT_SECS)
        writer.close()
    await asyncio.sleep(1)
    idle_rss, idle_threads = server.rss_mb(), threads(server)

    started = asyncio.Semaphore(CONNECT_CONCURRENCY)
    clients = [
        asyncio.create_task(_client(ports[number % len(ports)], user_id, token, deliveries, started, stop))
        for number, (user_id, _, token) in enumerate(users)
    ]
    await asyncio.sleep(SETTLE_SECS + len(users) / 1000)
    waiting_rss, waiting_threads = server.rss_mb(), threads(server)
    runs = []
    spy = contextlib.nullcontext()
    try:
        for number in range(RUNS + 1):  # the first is the warm-up
            if number == 1 and profile is not None:
                spy = py_spy(server.procs[0].proc.pid, profile / f"longpoll-{kind}-{len(users)}.txt")
                await asyncio.to_thread(spy.__enter__)  # it waits a second to attach
            run_secs = WARMUP_SECS if number == 0 else secs
            start_at = time.time() + START_DELAY_SECS
            publisher = _publisher(env, kind, start_at, run_secs)
            await asyncio.sleep(START_DELAY_SECS - 0.5)
            cpu_before = server.cpu_secs()
            await asyncio.to_thread(publisher.finish, 120)
            await asyncio.sleep(DRAIN_SECS)
            cpu = server.cpu_secs() - cpu_before
            result = publisher.json_result()
            if number == 0:
                continue
            # The publisher's own first send opens the window (its start-up may overrun START_DELAY_SECS).
            opened = result.get("first") or start_at
            window = [(s, r) for s, r in deliveries.seen if opened <= s < opened + result["rounds"]]
            latencies = [(r - s) * 1000 for s, r in window]
            sent = result["rounds"] * len(users)
            runs.append(
                {
                    "rate": len(window) / max(1, result["rounds"]),
                    "p50": percentile(latencies, 0.5) if latencies else float("nan"),
                    "p99": percentile(latencies, 0.99) if latencies else float("nan"),
                    "lost": sent - len(window),
                    "sent": sent,
                    "cpu": cpu,
                    "rss": server.rss_mb(),
                    "threads": threads(server),
                }
            )
    finally:
        await asyncio.to_thread(spy.__exit__, None, None, None)
        stop.set()
        for client in clients:
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    return {
        "runs": runs,
        "idle_rss": idle_rss,
        "waiting_rss": waiting_rss,
        "kb_per_wait": (waiting_rss - idle_rss) * 1024 / len(users),
        "idle_threads": idle_threads,
        "waiting_threads": waiting_threads,
        "reordered": deliveries.reordered,
        "errors": deliveries.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--secs", type=float, default=10, help="seconds per run")
    parser.add_argument("--layers", default="pubsub,core", help="baseline channel layers: pubsub,core")
    parser.add_argument("--processes", type=int, default=1, help="daphne processes per system")
    parser.add_argument("--profile", type=Path, help="py-spy Clarion's (first) daphne into this directory")
    args = parser.parse_args()
    raise_open_files_limit()
    env = bench_env(scratch_database(DATABASE), REDIS_URL=REALTIME_REDIS_URL)
    purge_redis(env["REDIS_URL"])
    migrate(env)
    setup_django(env)
    users = users_with_tokens(args.clients, USER_PREFIX)
    results = {
        "Clarion (poll view, node)": run_system(
            env, "notifyproject.asgi:application", "clarion", users, args.secs, args.processes, args.profile
        )
    }
    for layer in [name for name in args.layers.split(",") if name]:
        purge_redis(env["REDIS_URL"])
        stock_env = {
            **env,
            "DJANGO_SETTINGS_MODULE": "bench.realtime_baseline_settings",
            "BENCH_CHANNEL_LAYER": layer,
        }
        results[LAYERS[layer]] = run_system(
            stock_env,
            "bench.longpoll_baseline_asgi:application",
            f"stock-{layer}",
            users,
            args.secs,
            args.processes,
        )
    report(results, args.clients, args.secs, args.processes)


def report(results: dict, clients: int, secs: float, processes: int = 1) -> None:
    print(
        f"\nW8: {clients} long-poll clients, 1 message/s each, {RUNS} runs of {secs:.0f} s"
        f" (median (min–max)), {processes} daphne process{'es' if processes > 1 else ''} per system"
    )
    print(
        f"{'system':<42}{'deliveries/s':<22}{'p50 ms':<20}{'p99 ms':<22}{'lost/sent':>13}{'reord':>6}"
        f"{'cpu s/s':>8}{'ms/dlv':>7}{'KB/wait':>8}{'threads':>12}"
    )
    figures = {}
    for name, result in results.items():
        runs = result["runs"]
        rate, p50, p99 = ([run[key] for run in runs] for key in ("rate", "p50", "p99"))
        cpu = statistics.median(run["cpu"] / secs for run in runs)
        per_delivery = statistics.median(run["cpu"] / secs / max(1, run["rate"]) * 1000 for run in runs)
        lost, sent = sum(run["lost"] for run in runs), sum(run["sent"] for run in runs)
        print(
            f"{name:<42}{summary(rate):<22}{summary(p50):<20}{summary(p99):<22}{lost:>6}/{sent:<6}"
            f"{result['reordered']:>6}{cpu:>8.2f}{per_delivery:>7.2f}{result['kb_per_wait']:>8.1f}"
            f"{result['idle_threads']:>5} → {result['waiting_threads']:<4}"
        )
        figures[name] = (
            statistics.median(rate),
            statistics.median(p50),
            statistics.median(p99),
            result["kb_per_wait"],
        )
    print(
        "p50/p99: send → receipt (Clarion's includes the fan-out, first 200 users first); "
        "cpu: daphne's, s per s of run, and ms per delivery; threads: daphne's, idle → all clients "
        "waiting; errors: " + ", ".join(f"{name}: {result['errors']}" for name, result in results.items())
    )
    clarion = next(iter(figures.values()))
    others = list(figures.items())[1:]
    for index, (metric, goal, met, higher) in enumerate(
        [
            ("deliveries/s", "≥ 2,000/s", clarion[0] >= 2000, True),
            ("send → receipt p50 ms", "≤ 1 s added", clarion[1] <= 1000, False),
            ("send → receipt p99 ms", "≤ 1 s added", clarion[2] <= 1000, False),
            ("KB RSS per waiting request", "≤ 30 KB", clarion[3] <= 30, False),
        ]
    ):
        record(
            "W8",
            metric,
            clarion[index],
            {name: values[index] for name, values in others},
            goal=goal,
            met=met,
            higher_is_better=higher,
        )


def publisher_main(argv: list[str]) -> None:
    kind, start_at, secs = argv[0], float(argv[1]), float(argv[2])
    import django

    django.setup()
    result = publish_clarion(start_at, secs) if kind == "clarion" else publish_stock(kind[6:], start_at, secs)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["publish"]:
        publisher_main(sys.argv[2:])
    else:
        try:
            main()
        finally:
            drop_database(DATABASE)
