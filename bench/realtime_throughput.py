"""W1 and W2: realtime delivery throughput against stock Channels and bare websockets.

    python -m bench.realtime_throughput [--clients 2000] [--messages 20] [--rounds 5] [--quick]

W1, broadcast: every connected client gets `--messages` 100-byte messages.
  - Clarion, publish path: a separate worker process calls realtime.publish.publish_messages
    per 500-user batch (as the fan-out does) → node channel → sockets.
  - Clarion, end to end: POST /api/v1/notifications/ {"to": {"broadcast": true}} → Celery
    worker fan-out → inbox rows → publish → sockets (the durable path).
  - stock Channels (bench/realtime_baseline_asgi.py, every consumer in one group): one
    `group_send` per message, on RedisChannelLayer and on RedisPubSubChannelLayer.
  - bare websockets (bench/realtime_websockets_baseline.py): `websockets.broadcast()`.
W2, per-user sends: `--rounds` rounds of one message to each client's user, from a worker
  process: Clarion one publish_messages call per send; stock one `group_send("user.<id>")`
  per send, on both layers.
W2, end to end (API → worker → rows): `--sends` notifications, each to every client's user
  (`route: realtime`), POSTed one after another (each waits for its 202)
  - by one API key: per-sender order holds, so each fan-out follows the one before it;
  - split over `--senders` keys sending at once: independent senders fan out in parallel.
  Every frame's title names its sender and position; a frame older than one already
  received from the same sender counts in "order".

One lean asyncio client (raw WebSocket frames, no library) holds every socket in this process:
it counts frames and reads each frame's per-user sequence number (Clarion's `cursor`, the
baselines' `seq`), so loss, duplicates and reordering are counted. Per system: warm-up, then
`--runs` runs; deliveries/s is frames received / (send start → last frame), median (min–max).
Server CPU seconds and RSS come from /proc. Everything is on 127.0.0.1; every wait is bounded.
"""

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import statistics
import sys
import time
from dataclasses import dataclass, field

import orjson

from bench.harness import (
    Proc,
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
    CONNECT_CONCURRENCY,
    CONNECT_TIMEOUT_SECS,
    REALTIME_REDIS_URL,
    free_port,
    raise_open_files_limit,
    start_daphne,
    users_with_tokens,
)

DATABASE = os.environ.get("BENCH_THROUGHPUT_DATABASE", "clarion_bench_throughput")
FANOUT_BATCH = 2000  # as settings.CLARION_FANOUT_BATCH on PostgreSQL: publish_messages is called per batch
BODY = "x" * 100  # the 100-byte message
RUN_TIMEOUT_SECS = 180  # one run, whatever happens
IDLE_SECS = float(
    os.environ.get("BENCH_IDLE_SECS", "3")
)  # after the sender is done, a run ends once no frame came for this long
PUBLISH_THREADS = 4  # Clarion's W2 sender: concurrent per-user sends, like a threads worker
WEBSOCKETS_CHANNEL = "clarion-throughput:websockets-broadcast"
GOAL_W1 = "≥ 40k/s, ≥ 10× stock, ≥ 0.5× websockets, 100% delivered"
GOAL_W2 = "≥ 10k/s, 0 lost, order kept"
E2E_SENDERS = 4  # W2 end to end: the independent senders the one-sender rate is set beside
SENDER_ORDER = re.compile(rb'"title":"s(\d+)-(\d+)"')  # W2 end to end: sender, position


# -- the lean client ------------------------------------------------------------------------


@dataclass
class Tally:
    """One run's count across every socket."""

    expected: int = 0
    delivered: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    last_at: float = 0.0
    sender_order: bool = False  # also check each sender's order by the frames' titles
    done: asyncio.Event = field(default_factory=asyncio.Event)


class LeanSocket(asyncio.Protocol):
    """A WebSocket client as small as it can be: handshake, unmasked server frames, pings."""

    def __init__(self, request: bytes, seq_pattern: re.Pattern):
        self.request = request
        self.seq_pattern = seq_pattern
        self.buffer = bytearray()
        self.upgraded = False
        self.opened = asyncio.get_running_loop().create_future()
        self.first_frame = asyncio.get_running_loop().create_future()
        self.transport = None
        self.last_seq = 0
        self.seen: set[int] = set()
        self.tally: Tally | None = None
        self.closed = False
        self.sender_positions: dict[bytes, int] = {}  # W2 end to end: last position per sender

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during handshake"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[:end]).split(b"\r\n", 1)[0]
            del buffer[: end + 4]
            if b" 101 " not in status + b" ":
                self.opened.set_exception(ConnectionError(status.decode("latin1")))
                self.transport.close()
                return
            self.upgraded = True
            self.opened.set_result(True)
        position, size = 0, len(buffer)
        while size - position >= 2:
            opcode, length, head = buffer[position] & 0x0F, buffer[position + 1] & 0x7F, 2
            if length == 126:
                if size - position < 4:
                    break
                length, head = int.from_bytes(buffer[position + 2 : position + 4], "big"), 4
            elif length == 127:
                if size - position < 10:
                    break
                length, head = int.from_bytes(buffer[position + 2 : position + 10], "big"), 10
            end = position + head + length
            if end > size:
                break
            if opcode == 1 or opcode == 2:
                self._message(buffer, position + head, end)
            elif opcode == 9:  # the server's keep-alive ping: answer it
                self.send(bytes(buffer[position + head : end]), opcode=0xA)
            elif opcode == 8:
                self.transport.close()
            position = end
        del buffer[:position]

    def _message(self, buffer: bytearray, start: int, end: int) -> None:
        if not self.first_frame.done():
            self.first_frame.set_result(True)
        found = self.seq_pattern.search(buffer, start, end)
        tally = self.tally
        if found is None or tally is None:
            return
        seq = int(found.group(1))
        if seq in self.seen:
            tally.duplicates += 1
            return
        self.seen.add(seq)
        if seq < self.last_seq:
            tally.out_of_order += 1
        else:
            self.last_seq = seq
        if tally.sender_order:
            titled = SENDER_ORDER.search(buffer, start, end)
            if titled is not None:
                sender_id, position = titled.group(1), int(titled.group(2))
                if position < self.sender_positions.get(sender_id, -1):
                    tally.out_of_order += 1
                else:
                    self.sender_positions[sender_id] = position
        tally.delivered += 1
        tally.last_at = time.perf_counter()
        if tally.delivered >= tally.expected:
            tally.done.set()

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        """A masked client frame (clients must mask)."""
        mask = secrets.token_bytes(4)
        size = len(payload)
        header = bytes([0x80 | opcode])
        if size < 126:
            header += bytes([0x80 | size])
        else:
            header += bytes([0x80 | 126]) + size.to_bytes(2, "big")
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.transport.write(header + mask + masked)


async def open_lean_sockets(port: int, paths: list[str], seq_key: str) -> list[LeanSocket]:
    """One socket per path; each has answered a ping before it counts as connected."""
    loop = asyncio.get_running_loop()
    pattern = re.compile(rb'"' + seq_key.encode() + rb'":(\d+)')
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(path: str) -> LeanSocket:
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        async with limit:
            _transport, lean = await loop.create_connection(
                lambda: LeanSocket(request, pattern), "127.0.0.1", port
            )
            await asyncio.wait_for(lean.opened, 60)
            lean.send(b'{"type": "ping"}')
            await asyncio.wait_for(lean.first_frame, 60)
            return lean

    return await asyncio.wait_for(asyncio.gather(*(one(path) for path in paths)), CONNECT_TIMEOUT_SECS)


# -- the sender: a separate process, as a worker is ------------------------------------------


class Sender:
    """A long-lived sender process; one JSON command per line on stdin, "done <secs>" back."""

    def __init__(self, process):
        self.process = process

    @classmethod
    async def start(cls, system: str, env: dict, user_ids: list[int]) -> "Sender":
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.realtime_throughput",
            "--sender",
            system,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        sender = cls(process)
        await sender.command({"op": "hello", "users": user_ids})
        return sender

    async def command(self, body: dict) -> float:
        self.process.stdin.write(json.dumps(body).encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), RUN_TIMEOUT_SECS)
        if not line.startswith(b"done"):
            raise RuntimeError(f"sender failed: {line!r}")
        return float(line.split()[1])

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def message(seq: int, key: str) -> dict:
    """The same ~250-byte notification for every system; `key` names its sequence number."""
    return {
        "id": seq,
        key: seq,
        "title": f"Throughput {seq}",
        "body": BODY,
        "data": {},
        "url": "",
        "icon": "",
        "created_at": "2026-01-01T00:00:00Z",
    }


def sender_main(system: str) -> None:
    """Run as `--sender SYSTEM` with the server's environment: sends what stdin asks for."""
    setup_django(dict(os.environ))
    asyncio.run(_sender_loop(system))


async def _sender_loop(system: str) -> None:
    from delivery.models import UserStream

    loop = asyncio.get_running_loop()
    user_ids: list[int] = []
    positions: dict[int, int] = {}
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        body = json.loads(line)
        started = time.perf_counter()
        if body["op"] == "hello":
            user_ids = body["users"]
            if system == "clarion":
                # Clarion's frames continue each user's stream, so no gap-fill is triggered.
                rows = UserStream.objects.filter(user_id__in=user_ids).values_list("user_id", "last_seq")
                positions = await asyncio.to_thread(lambda rows=rows: dict(rows))
        elif system == "clarion":
            await asyncio.to_thread(_send_clarion, body, user_ids, positions)
        elif system == "websockets":
            await _send_websockets(body)
        else:
            await _send_stock(body, user_ids)
        sys.stdout.write(f"done {time.perf_counter() - started:.6f}\n")
        sys.stdout.flush()


def _send_clarion(body: dict, user_ids: list[int], positions: dict[int, int]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from realtime.publish import flush_publishes, publish_messages

    first = body["start"] + 1
    if body["op"] == "broadcast":
        for seq in range(first, first + body["count"]):
            for start in range(0, len(user_ids), FANOUT_BATCH):
                batch = user_ids[start : start + FANOUT_BATCH]
                publish_messages([(uid, message(positions.get(uid, 0) + seq, "cursor")) for uid in batch])
    else:
        with ThreadPoolExecutor(PUBLISH_THREADS) as pool:
            for seq in range(first, first + body["count"]):
                sends = [[(uid, message(positions.get(uid, 0) + seq, "cursor"))] for uid in user_ids]
                list(pool.map(publish_messages, sends, chunksize=64))
    flush_publishes(timeout=60)  # handed to this process's publisher thread: count it in "send s"


async def _send_stock(body: dict, user_ids: list[int]) -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    first = body["start"] + 1
    for seq in range(first, first + body["count"]):
        event = {"type": "notification.message", "message": message(seq, "seq")}
        if body["op"] == "broadcast":
            await layer.group_send("broadcast", event)
            continue
        for start in range(0, len(user_ids), FANOUT_BATCH):
            chunk = user_ids[start : start + FANOUT_BATCH]
            await asyncio.gather(*(layer.group_send(f"user.{uid}", event) for uid in chunk))


async def _send_websockets(body: dict) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    first = body["start"] + 1
    async with client.pipeline(transaction=False) as pipe:
        for seq in range(first, first + body["count"]):
            frame = orjson.dumps({"type": "notification", **message(seq, "seq")})
            pipe.publish(WEBSOCKETS_CHANNEL, frame)
        await pipe.execute()
    await client.aclose()


# -- one system: a server, its sockets, a sender, warm-up and runs ---------------------------


@dataclass
class Result:
    name: str
    rates: list[float] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    out_of_order: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_mb: float = 0.0
    send_secs: list[float] = field(default_factory=list)

    def median_rate(self) -> float:
        return statistics.median(self.rates)

    def row(self) -> str:
        rates = f"{self.median_rate():,.0f} ({min(self.rates):,.0f}–{max(self.rates):,.0f})"
        return (
            f"{self.name:<46}{rates:>26}{max(self.lost):>7}{max(self.duplicates):>6}"
            f"{max(self.out_of_order):>7}{statistics.median(self.cpu):>9.2f}{self.rss_mb:>9.0f}"
            f"{statistics.median(self.send_secs):>9.2f}"
        )


async def _run_once(
    sockets, server: Proc, trigger, expected: int, result: Result | None, sender_order: bool = False
) -> None:
    tally = Tally(expected=expected, sender_order=sender_order)
    for lean in sockets:
        lean.seen = set()
        lean.sender_positions = {}
        lean.tally = tally
    cpu_before = server.cpu_secs()
    started = time.perf_counter()
    send_secs = await trigger()
    deadline = started + RUN_TIMEOUT_SECS
    while not tally.done.is_set() and time.perf_counter() < deadline:
        quiet_since = max(tally.last_at, started + send_secs)
        if time.perf_counter() - quiet_since > IDLE_SECS:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.done.wait(), 0.25)
    for lean in sockets:
        lean.tally = None
    if result is None:
        return
    elapsed = (tally.last_at or time.perf_counter()) - started
    result.rates.append(tally.delivered / elapsed if elapsed > 0 else 0.0)
    result.lost.append(expected - tally.delivered)
    result.duplicates.append(tally.duplicates)
    result.out_of_order.append(tally.out_of_order)
    result.cpu.append(server.cpu_secs() - cpu_before)
    result.send_secs.append(send_secs)
    result.rss_mb = max(result.rss_mb, server.rss_mb())


async def measure(
    name: str,
    server: Proc,
    port: int,
    paths: list[str],
    seq_key: str,
    runs: int,
    trigger_for,
    sender_order: bool = False,
):
    """Open the sockets, then warm-up and `runs` runs; `trigger_for(start)` → (coroutine fn, expected)."""
    sockets = await open_lean_sockets(port, paths, seq_key)
    result = Result(name)
    start = 0
    try:
        for number in range(runs + 1):
            trigger, per_socket = trigger_for(start)
            expected = per_socket * len(sockets)
            await _run_once(sockets, server, trigger, expected, result if number else None, sender_order)
            start += per_socket
    finally:
        for lean in sockets:
            lean.transport.close()
    return result


def websocket_paths(users, broadcast: bool = False) -> list[str]:
    extra = "&broadcast=1" if broadcast else ""
    return [f"/ws/v1/notifications/?token={token}{extra}" for _, _, token in users]


async def sender_system(name, env, app, users, workload, args) -> Result:
    """A daphne with `app`, a sender process for `name`, and the workload's runs."""
    proc, port = start_daphne(env, app)
    sender = await Sender.start(name.split(":")[0], env, [uid for uid, _, _ in users])
    try:
        op, count = ("broadcast", args.messages) if workload == "W1" else ("per_user", args.rounds)

        def trigger_for(start):
            return (lambda: sender.command({"op": op, "start": start, "count": count})), count

        paths = websocket_paths(users, broadcast=workload == "W1" and name != "clarion")
        key = "cursor" if name == "clarion" else "seq"
        return await measure(f"{workload} {name}", proc, port, paths, key, args.runs, trigger_for)
    finally:
        await sender.stop()
        proc.stop()
        if os.environ.get("BENCH_SERVER_LOG"):
            print("".join(proc.output[-60:]))


async def websockets_system(env, users, args) -> Result:
    port = free_port()
    proc = Proc(
        [
            sys.executable,
            "-m",
            "bench.realtime_websockets_baseline",
            str(port),
            env["REDIS_URL"],
            WEBSOCKETS_CHANNEL,
        ],
        env,
        ready="listening",
    )
    proc.wait_ready()
    sender = await Sender.start("websockets", env, [])
    try:

        def trigger_for(start):
            return (
                lambda: sender.command({"op": "broadcast", "start": start, "count": args.messages})
            ), args.messages

        paths = ["/" for _ in users]
        return await measure("W1 websockets.broadcast()", proc, port, paths, "seq", args.runs, trigger_for)
    finally:
        await sender.stop()
        proc.stop()


async def end_to_end_system(env, users, args, api_key: str) -> Result:
    import httpx

    worker = celery_worker(env, pool="threads", concurrency=4)
    proc, port = start_daphne(env)
    try:

        def trigger_for(start):
            async def trigger() -> float:
                began = time.perf_counter()
                async with httpx.AsyncClient(timeout=30) as client:
                    for number in range(args.messages):
                        response = await client.post(
                            f"http://127.0.0.1:{port}/api/v1/notifications/",
                            json={
                                "to": {"broadcast": True},
                                "title": f"Throughput {start + number}",
                                "body": BODY,
                                "route": "realtime",
                            },
                            headers={"Authorization": f"Bearer {api_key}"},
                        )
                        response.raise_for_status()
                return time.perf_counter() - began

            return trigger, args.messages

        name = "W1 clarion end to end (API → worker → rows)"
        return await measure(name, proc, port, websocket_paths(users), "cursor", args.runs, trigger_for)
    finally:
        proc.stop()
        worker.stop()


async def end_to_end_senders_system(env, users, args, api_keys: list[str]) -> Result:
    """W2 end to end: `--sends` notifications to every user, split evenly over `api_keys`; each
    key POSTs its share one after another, the keys at the same time."""
    import httpx

    worker = celery_worker(env, pool="threads", concurrency=4)
    proc, port = start_daphne(env)
    usernames = [name for _, name, _ in users]
    per_sender = args.sends // len(api_keys)
    try:

        def trigger_for(start):
            async def one_sender(client, index: int, key: str) -> None:
                for position in range(start, start + per_sender):
                    response = await client.post(
                        f"http://127.0.0.1:{port}/api/v1/notifications/",
                        json={
                            "to": {"users": usernames},
                            "title": f"s{index}-{position}",
                            "body": BODY,
                            "route": "realtime",
                        },
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    response.raise_for_status()

            async def trigger() -> float:
                began = time.perf_counter()
                async with httpx.AsyncClient(timeout=60) as client:
                    await asyncio.gather(*(one_sender(client, i, key) for i, key in enumerate(api_keys)))
                return time.perf_counter() - began

            return trigger, per_sender * len(api_keys)

        senders = "one sender, order kept" if len(api_keys) == 1 else f"{len(api_keys)} senders at once"
        name = f"W2 clarion end to end, {senders}"
        return await measure(
            name, proc, port, websocket_paths(users), "cursor", args.runs, trigger_for, sender_order=True
        )
    finally:
        proc.stop()
        worker.stop()


def print_table(title: str, results: list[Result]) -> None:
    print(f"\n{title}")
    print(
        f"{'system':<46}{'deliveries/s median (min–max)':>26}{'lost':>7}{'dup':>6}{'order':>7}"
        f"{'cpu s':>9}{'rss MB':>9}{'send s':>9}"
    )
    for result in results:
        print(result.row())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=20, help="W1: broadcasts per run")
    parser.add_argument("--rounds", type=int, default=5, help="W2: messages per user per run")
    parser.add_argument(
        "--sends", type=int, default=20, help=f"W2 end to end: sends per run (a multiple of {E2E_SENDERS})"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="500 clients")
    parser.add_argument("--only", choices=["W1", "W2"], help="run one workload")
    parser.add_argument(
        "--systems",
        default="clarion,e2e,core,pubsub,websockets",
        help="comma-separated subset of clarion,e2e,core,pubsub,websockets (e2e: W1's, and W2's one-sender"
        " and multi-sender runs)",
    )
    parser.add_argument("--sender", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sender:
        sender_main(args.sender)
        return
    if args.quick:
        args.clients = min(args.clients, 500)
    systems = set(args.systems.split(","))
    raise_open_files_limit()
    env = bench_env(scratch_database(DATABASE), REDIS_URL=REALTIME_REDIS_URL)
    purge_redis(env["REDIS_URL"])
    migrate(env)
    setup_django(env)
    from delivery.services import api_key_create

    users = users_with_tokens(args.clients, "thr")
    _key, api_key = api_key_create(name="bench", scopes=["send"])
    sender_keys = [api_key_create(name=f"bench-{n}", scopes=["send"])[1] for n in range(E2E_SENDERS)]
    stock_env = {
        layer: {
            **env,
            "DJANGO_SETTINGS_MODULE": "bench.realtime_throughput_settings",
            "BENCH_CHANNEL_LAYER": layer,
            "BENCH_CHANNEL_PREFIX": f"clarion-throughput-{os.getpid()}-",
        }
        for layer in ("core", "pubsub")
    }
    ours, stock = "notifyproject.asgi:application", "bench.realtime_baseline_asgi:application"
    stock_names = {"core": "stock RedisChannelLayer", "pubsub": "stock RedisPubSubChannelLayer"}

    async def run() -> dict[str, list[Result]]:
        tables: dict[str, list[Result]] = {}
        for workload in ("W1", "W2"):
            if args.only and workload != args.only:
                continue
            results = []
            if "clarion" in systems:
                results.append(await sender_system("clarion", env, ours, users, workload, args))
            if workload == "W1" and "e2e" in systems:
                results.append(await end_to_end_system(env, users, args, api_key))
            if workload == "W2" and "e2e" in systems:
                for keys in (sender_keys[:1], sender_keys):
                    results.append(await end_to_end_senders_system(env, users, args, keys))
            for layer in ("core", "pubsub"):
                if layer in systems:
                    result = await sender_system(
                        f"stock:{layer}", stock_env[layer], stock, users, workload, args
                    )
                    result.name = f"{workload} {stock_names[layer]}"
                    results.append(result)
            if workload == "W1" and "websockets" in systems:
                results.append(await websockets_system(env, users, args))
            tables[workload] = results
        return tables

    tables = asyncio.run(run())
    sizes = {
        "W1": f"W1: broadcast, {args.clients} clients × {args.messages} messages",
        "W2": f"W2: per-user sends, {args.clients} users × {args.rounds} rounds"
        f" (end to end: × {args.sends} sends)",
    }
    for workload, results in tables.items():
        print_table(f"{sizes[workload]}, {args.runs} runs after a warm-up", results)
    if {"clarion", "e2e", "core", "pubsub", "websockets"} <= systems:
        _record(tables)


def _record(tables: dict[str, list[Result]]) -> None:
    for workload, results in tables.items():
        clarion, *others = results
        end_to_end = [result for result in others if "clarion" in result.name]
        others = [result for result in others if "clarion" not in result.name]
        baselines = {result.name.split(" ", 1)[1]: result.median_rate() for result in others}
        for result in end_to_end:
            if workload == "W1":
                metric = "broadcast deliveries/s (API → worker → rows)"
            else:
                metric = "deliveries/s API → worker → rows, " + result.name.split(", ", 1)[1]
            record(
                workload,
                metric,
                result.median_rate(),
                goal="durable path, reported",
                note=f"lost per run (max): {max(result.lost)}, out of order: {max(result.out_of_order)}",
            )
        complete = max(clarion.lost) == 0 and max(clarion.duplicates) == 0 and max(clarion.out_of_order) == 0
        rate = clarion.median_rate()
        if workload == "W1":
            stock = max(value for name, value in baselines.items() if name.startswith("stock"))
            bare = baselines.get("websockets.broadcast()", 0)
            met = complete and rate >= 40_000 and rate >= 10 * stock and rate >= 0.5 * bare
            record("W1", "broadcast deliveries/s (publish path)", rate, baselines, goal=GOAL_W1, met=met)
        else:
            met = complete and rate >= 10_000
            lost = {name: max(result.lost) for name, result in zip(baselines, others, strict=True)}
            record(
                "W2",
                "per-user deliveries/s",
                rate,
                baselines,
                goal=GOAL_W2,
                met=met,
                note="lost per run (max): clarion "
                + f"{max(clarion.lost)}, "
                + ", ".join(f"{name} {value}" for name, value in lost.items()),
            )


if __name__ == "__main__":
    if "--sender" in sys.argv:
        main()
    else:
        try:
            main()
        finally:
            drop_database(DATABASE)
