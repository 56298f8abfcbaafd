"""Soak: minutes of steady sends to connected WebSocket clients, through a Redis restart and a
worker SIGKILL; every accepted notification must reach each recipient's client exactly once.

    python -m bench.soak [--minutes 10] [--clients 500] [--rate 20] [--quick]

Real processes on 127.0.0.1: two daphne web processes (the clients split between them, so
frames cross node channels between processes), one `celery worker -B` (beat runs the sweeper
that recovers work whose task was lost), a private redis-server that keeps nothing on disk,
and a scratch PostgreSQL database. This process is the load: one lean asyncio WebSocket
client per user that records every notification id and cursor it receives and, after a close
or an error, reconnects with `?after=<last cursor>` and jittered back-off (as clarion.js
does); a sender that POSTs /api/v1/notifications/ at a steady rate (to one to three random
users, plus a broadcast now and then); a churner that drops a random socket now and then.
A third of the way in, Redis is stopped and started (the broker queue, presence and
subscriptions are lost); two thirds in, the worker is SIGKILLed and a new one started.
At the end sending stops, and the run waits (bounded) until every accepted notification has
reached each of its recipients, then reports lost and duplicated deliveries, reconnects and
each process's RSS and CPU. Exit status 1 when anything was lost, duplicated or reordered.
"""

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from bench.harness import (
    BIN,
    PG_ADMIN_URL,
    ROOT,
    Proc,
    bench_env,
    drop_database,
    migrate,
    record,
    scratch_database,
    wait_for,
)
from bench.realtime_common import free_port, percentile, raise_open_files_limit, start_daphne

DATABASE = "clarion_bench_soak"
WEB_PROCESSES = 2
USER_PREFIX = "soak"

# The client, as clarion.js behaves: ping every ~25 s (±20 %), reconnect when nothing was
# heard for two intervals, back-off random(0, min(cap, base·2ⁿ)), reset once a connection
# has lived 10 s.
HEARTBEAT_SECS = 25
SILENCE_SECS = 2 * HEARTBEAT_SECS
RECONNECT_BASE_SECS = 0.5
RECONNECT_CAP_SECS = 10.0  # clarion.js caps at 30 s; a lower cap keeps the soak's drain short
STABLE_CONNECTION_SECS = 10
OPEN_TIMEOUT_SECS = 20
CONNECT_CONCURRENCY = 50  # initial handshakes in flight at once
ALL_CONNECTED_TIMEOUT_SECS = 180
CLOSE_UNAUTHENTICATED = 4401

# The sender: each send is retried with its Idempotency-Key until accepted, so a send whose
# answer was lost (Redis or the worker down) is still known by id; bounded per send.
SEND_DEADLINE_SECS = 60
SEND_RETRY_PAUSE_SECS = 1.0
# A product backend sends from a bounded pool. Under daphne every concurrent sync request holds
# its own thread and PostgreSQL connection, so this also bounds the web processes' connections
# (the shared server allows 100); when the API slows down, the achieved rate drops instead.
MAX_SENDS_IN_FLIGHT = 8
USERS_PER_SEND = (1, 3)

REDIS_DOWN_SECS = 5
SAMPLE_EVERY_SECS = 10  # process CPU/RSS readings (the last one before a process dies is kept)
PROGRESS_EVERY_SECS = 30
# After sending stops: lost publishes are repaired by the node's periodic check (20 s) and
# lost tasks by the sweeper (CLARION_STALE_WORK_SECS, 30 s), so two minutes is ample.
DRAIN_TIMEOUT_SECS = 180


# -- processes -----------------------------------------------------------------------------


class OneProcess:
    """One pid without its children, measured the way harness.Proc measures a family."""

    def __init__(self, pid: int):
        self.pid = pid

    def pids(self) -> list[int]:
        return [self.pid]

    cpu_secs = Proc.cpu_secs
    rss_mb = Proc.rss_mb


class ThisProcess(OneProcess):
    """The load client itself (not its children: those are the servers)."""

    def __init__(self):
        super().__init__(os.getpid())


@dataclass
class Gauge:
    """First and latest reading of one process: CPU seconds and RSS at a wall time."""

    label: str
    target: object
    first: tuple[float, float, float] | None = None  # (monotonic, cpu secs, rss MB)
    last: tuple[float, float, float] | None = None
    peak_rss: float = 0.0
    alive: bool = True

    def sample(self) -> None:
        if not self.alive:
            return
        rss = self.target.rss_mb()
        if rss == 0:  # gone
            return
        reading = (time.monotonic(), self.target.cpu_secs(), rss)
        self.first = self.first or reading
        self.last = reading
        self.peak_rss = max(self.peak_rss, rss)


class Monitor:
    def __init__(self):
        self.gauges: list[Gauge] = []

    def watch(self, label: str, target) -> Gauge:
        gauge = Gauge(label, target)
        gauge.sample()
        self.gauges.append(gauge)
        return gauge

    def retire(self, label: str) -> None:
        """A last reading before the process is stopped or killed."""
        for gauge in self.gauges:
            if gauge.label == label and gauge.alive:
                gauge.sample()
                gauge.alive = False

    def sample(self) -> None:
        for gauge in self.gauges:
            gauge.sample()

    def table(self) -> str:
        lines = [
            f"{'process':<14}{'RSS start MB':>14}{'RSS end MB':>12}{'RSS peak MB':>13}"
            f"{'CPU s':>9}{'CPU %':>8}{'measured s':>12}"
        ]
        for gauge in self.gauges:
            if not gauge.first:
                continue
            (t0, cpu0, rss0), (t1, cpu1, rss1) = gauge.first, gauge.last
            span = max(t1 - t0, 1e-9)
            lines.append(
                f"{gauge.label:<14}{rss0:>14.1f}{rss1:>12.1f}{gauge.peak_rss:>13.1f}"
                f"{cpu1 - cpu0:>9.1f}{100 * (cpu1 - cpu0) / span:>8.1f}{span:>12.0f}"
            )
        return "\n".join(lines)


class PrivateRedis:
    """A redis-server of our own on a spare port that keeps nothing on disk (a restart loses all)."""

    def __init__(self, env: dict):
        self.env = env
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Proc:
        import redis

        self.proc = Proc(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no"],
            self.env,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)

        def pong() -> bool:
            try:
                return client.ping()
            except redis.RedisError:
                return False

        wait_for(pong, 15)
        return self.proc

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


def start_worker(env: dict) -> Proc:
    """`celery worker -B`, the threads pool as the fault tests run it: beat is its one child process."""
    args = [
        str(BIN / "celery"),
        "-A",
        "notifyproject",
        "worker",
        "-B",
        "--pool",
        "threads",
        "--concurrency",
        "4",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    worker = Proc(args, env, ready="ready.")
    worker.wait_ready()
    return worker


def beat_of(worker: Proc) -> OneProcess | None:
    children = [pid for pid in worker.pids() if pid != worker.proc.pid]
    return OneProcess(children[0]) if children else None


class ProcessLogs:
    """Proc keeps every line a child prints: move them out (to DIR/<label>.log, or nowhere),
    so the load's RSS stays its own."""

    def __init__(self, folder: str | None):
        self.folder = folder
        self.procs: dict[str, Proc] = {}
        if folder:
            os.makedirs(folder, exist_ok=True)

    def add(self, label: str, proc: Proc) -> None:
        self.procs[label] = proc

    def drain(self) -> None:
        for label, proc in list(self.procs.items()):  # a fault thread may add a process meanwhile
            lines = proc.output[:]
            del proc.output[: len(lines)]
            if self.folder and lines:
                with open(os.path.join(self.folder, f"{label}.log"), "a") as out:
                    out.writelines(lines)


class Cluster:
    """The processes under test, each measured (Monitor) and its output kept (ProcessLogs)."""

    def __init__(self, env: dict, redis: PrivateRedis, logs: ProcessLogs):
        self.env, self.redis, self.logs = env, redis, logs
        self.monitor = Monitor()
        self.procs: list[Proc] = []
        self.ports: list[int] = []
        self.worker: Proc | None = None

    def start(self, web_processes: int) -> None:
        self._watch("redis", self.redis.start())
        for number in range(web_processes):
            proc, port = start_daphne(self.env)
            self.ports.append(port)
            self._watch(f"web-{number + 1}", proc)
        self.start_worker("worker", "beat")
        self.monitor.watch("load client", ThisProcess())

    def start_worker(self, label: str, beat_label: str) -> None:
        self.worker = start_worker(self.env)
        self.procs.append(self.worker)
        self.logs.add(label, self.worker)
        self.monitor.watch(label, OneProcess(self.worker.proc.pid))
        beat = beat_of(self.worker)
        if beat:
            self.monitor.watch(beat_label, beat)

    def kill_worker(self) -> None:
        self.monitor.retire("worker")
        self.monitor.retire("beat")
        os.killpg(self.worker.proc.pid, signal.SIGKILL)
        self.worker.proc.wait(10)

    def restart_redis(self, down_secs: float) -> None:
        self.monitor.retire("redis")
        self.redis.stop()
        time.sleep(down_secs)
        self._watch("redis (new)", self.redis.start(), keep=False)

    def _watch(self, label: str, proc: Proc, keep: bool = True) -> None:
        if keep:
            self.procs.append(proc)
        self.logs.add(label, proc)
        self.monitor.watch(label, proc)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.redis.stop()
        self.logs.drain()


# -- the clients ----------------------------------------------------------------------------


@dataclass
class Tally:
    received: dict[int, float] = field(default_factory=dict)  # notification id → monotonic receipt
    duplicates: int = 0
    out_of_order: int = 0
    cursor: int = 0


@dataclass
class Totals:
    connections: int = 0
    reconnects: int = 0
    failed_attempts: int = 0
    churned: int = 0
    silent: int = 0
    close_codes: Counter = field(default_factory=Counter)


class SoakClient:
    """One user's WebSocket: records ids and cursors, resumes from its cursor after any close."""

    def __init__(self, username: str, token: str, ports: list[int], home: int, totals: Totals, ack: bool):
        self.username, self.token, self.ports, self.home = username, token, ports, home
        self.totals, self.ack = totals, ack
        self.tally = Tally()  # fresh users: the stream is empty, so cursor 0 loses nothing
        self.ws = None
        self.connected_once = asyncio.Event()
        self.stopping = False
        self.gave_up = False

    def url(self, port: int) -> str:
        return f"ws://127.0.0.1:{port}/ws/v1/notifications/?token={self.token}&after={self.tally.cursor}"

    async def run(self, first_connect: asyncio.Semaphore) -> None:
        attempt = 0
        while not self.stopping:
            # The first connection goes to its home node; later ones wherever a balancer would send them.
            port = self.ports[self.home] if not self.connected_once.is_set() else random.choice(self.ports)
            opened_at = None
            try:
                if self.connected_once.is_set():
                    ws = await self._connect(port)
                else:
                    async with first_connect:
                        ws = await self._connect(port)
                opened_at = time.monotonic()
                self.totals.connections += 1
                if self.connected_once.is_set():
                    self.totals.reconnects += 1
                self.connected_once.set()
                self.ws = ws
                async with ws:
                    await self._read(ws)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else 1006
                if not self.stopping:
                    self.totals.close_codes[code] += 1
                if code == CLOSE_UNAUTHENTICATED:
                    self.gave_up = True
                    return
            except (OSError, TimeoutError, WebSocketException):
                self.totals.failed_attempts += 1
            finally:
                self.ws = None
            if self.stopping:
                return
            if opened_at and time.monotonic() - opened_at >= STABLE_CONNECTION_SECS:
                attempt = 0
            await asyncio.sleep(random.uniform(0, min(RECONNECT_CAP_SECS, RECONNECT_BASE_SECS * 2**attempt)))
            attempt = min(attempt + 1, 30)

    async def _connect(self, port: int):
        return await connect(
            self.url(port),
            open_timeout=OPEN_TIMEOUT_SECS,
            ping_interval=None,  # daphne's protocol pings are answered anyway; we ping as clarion.js
            close_timeout=2,
            compression=None,
            max_queue=None,
        )

    async def _read(self, ws) -> None:
        heard = time.monotonic()
        next_ping = heard + HEARTBEAT_SECS * random.uniform(0.8, 1.2)
        while not self.stopping:
            try:
                raw = await asyncio.wait_for(ws.recv(), max(0.0, next_ping - time.monotonic()))
            except TimeoutError:
                if time.monotonic() - heard > SILENCE_SECS:
                    self.totals.silent += 1
                    return  # the server went quiet: reconnect
                await ws.send('{"type":"ping"}')
                next_ping = time.monotonic() + HEARTBEAT_SECS * random.uniform(0.8, 1.2)
                continue
            heard = time.monotonic()
            frame = json.loads(raw)
            if frame.get("type") == "notification":
                self._receive(frame["id"], frame["cursor"], heard)
                if self.ack:
                    await ws.send(f'{{"type":"ack","id":{frame["id"]}}}')

    def _receive(self, notification_id: int, cursor: int, at: float) -> None:
        tally = self.tally
        if notification_id in tally.received:
            tally.duplicates += 1
        else:
            tally.received[notification_id] = at
        if cursor <= tally.cursor:
            tally.out_of_order += 1
        tally.cursor = max(tally.cursor, cursor)

    async def drop(self) -> bool:
        """Close the socket from the client side (churn); the run loop reconnects."""
        ws = self.ws
        if ws is None:
            return False
        self.totals.churned += 1
        await ws.close()
        return True

    async def stop(self) -> None:
        self.stopping = True
        if self.ws is not None:
            await self.ws.close()


# -- the sender -----------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the API accepted: notification id → recipients, and when its request started."""

    expected: dict[int, list[str]] = field(default_factory=dict)
    started: dict[int, float] = field(default_factory=dict)
    broadcasts: int = 0
    refused: int = 0  # never accepted within SEND_DEADLINE_SECS
    retried: int = 0
    failures: Counter = field(default_factory=Counter)  # why an attempt was not accepted
    recipient_mismatch: int = 0
    call_ms: list[float] = field(default_factory=list)


class Sender:
    def __init__(self, ports: list[int], api_key: str, usernames: list[str], ledger: Ledger):
        self.usernames, self.ledger = usernames, ledger
        self.run_id = f"{os.getpid()}-{time.time_ns()}"
        self.clients = [
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=30,
            )
            for port in ports
        ]
        self.numbers = itertools.count()
        self.in_flight: set[asyncio.Task] = set()
        self.limit = asyncio.Semaphore(MAX_SENDS_IN_FLIGHT)

    async def run(self, rate: float, broadcast_every: float, until: float) -> None:
        interval = 1 / rate
        next_send = next_broadcast = time.monotonic()
        next_broadcast += broadcast_every
        while True:
            now = time.monotonic()
            if now >= until:
                return
            if now < next_send:
                await asyncio.sleep(min(next_send, until) - now)
                continue
            next_send += interval
            broadcast = broadcast_every > 0 and now >= next_broadcast
            if broadcast:
                next_broadcast += broadcast_every
            await self.limit.acquire()
            task = asyncio.create_task(self._send(broadcast))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    async def _send(self, broadcast: bool) -> None:
        try:
            number = next(self.numbers)
            if broadcast:
                to, recipients = {"broadcast": True}, self.usernames
            else:
                recipients = random.sample(self.usernames, random.randint(*USERS_PER_SEND))
                to = {"users": recipients}
            body = {"to": to, "title": f"soak {number}", "body": "steady", "data": {"n": str(number)}}
            headers = {"Idempotency-Key": f"soak-{self.run_id}-{number}"}
            client = self.clients[number % len(self.clients)]
            started = time.monotonic()
            deadline = started + SEND_DEADLINE_SECS
            while True:
                try:
                    response = await client.post("/api/v1/notifications/", json=body, headers=headers)
                    if response.status_code in (200, 202):
                        break
                    self.ledger.failures[f"{response.status_code} {response.text[:80]}"] += 1
                except httpx.HTTPError as error:
                    self.ledger.failures[type(error).__name__] += 1
                if time.monotonic() >= deadline:
                    self.ledger.refused += 1
                    return
                self.ledger.retried += 1
                await asyncio.sleep(SEND_RETRY_PAUSE_SECS)
            answer = response.json()
            self.ledger.call_ms.append((time.monotonic() - started) * 1000)
            if answer["recipients"] != len(recipients):
                self.ledger.recipient_mismatch += 1
            self.ledger.expected[answer["id"]] = recipients
            self.ledger.started[answer["id"]] = started
            self.ledger.broadcasts += broadcast
        finally:
            self.limit.release()

    async def finish(self) -> None:
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=SEND_DEADLINE_SECS + 30)
        for client in self.clients:
            await client.aclose()


# -- the run --------------------------------------------------------------------------------


@dataclass
class Outcome:
    accepted: int
    expected: int
    received: int
    lost: list[tuple[str, int]]
    duplicated: int
    out_of_order: int
    unexpected: int
    latencies_ms: list[float]


def tally_outcome(ledger: Ledger, clients: dict[str, SoakClient]) -> Outcome:
    lost, latencies, expected = [], [], 0
    for notification_id, recipients in ledger.expected.items():
        for username in recipients:
            expected += 1
            at = clients[username].tally.received.get(notification_id)
            if at is None:
                lost.append((username, notification_id))
            else:
                latencies.append((at - ledger.started[notification_id]) * 1000)
    tallies = [client.tally for client in clients.values()]
    return Outcome(
        accepted=len(ledger.expected),
        expected=expected,
        received=sum(len(t.received) for t in tallies),
        lost=lost,
        duplicated=sum(t.duplicates for t in tallies),
        out_of_order=sum(t.out_of_order for t in tallies),
        unexpected=sum(1 for t in tallies for nid in t.received if nid not in ledger.expected),
        latencies_ms=latencies,
    )


def outstanding(ledger: Ledger, clients: dict[str, SoakClient]) -> int:
    return sum(
        1
        for notification_id, recipients in list(ledger.expected.items())
        for username in recipients
        if notification_id not in clients[username].tally.received
    )


async def soak(args, cluster: Cluster, api_key: str) -> dict:
    ports, monitor = cluster.ports, cluster.monitor
    usernames = [f"{USER_PREFIX}{n}" for n in range(args.clients)]
    tokens = await mint_tokens(ports[0], api_key, usernames)
    totals = Totals()
    clients = {
        name: SoakClient(name, tokens[name], ports, index % len(ports), totals, ack=not args.no_ack)
        for index, name in enumerate(usernames)
    }
    first_connect = asyncio.Semaphore(CONNECT_CONCURRENCY)
    runners = [asyncio.create_task(client.run(first_connect)) for client in clients.values()]
    await asyncio.wait_for(
        asyncio.gather(*(client.connected_once.wait() for client in clients.values())),
        ALL_CONNECTED_TIMEOUT_SECS,
    )
    print(f"{args.clients} clients connected ({len(ports)} web processes)", flush=True)

    await asyncio.to_thread(monitor.sample)
    for gauge in monitor.gauges:  # the load phase starts now: CPU and RSS are measured from here
        gauge.first = gauge.last
    ledger = Ledger()
    sender = Sender(ports, api_key, usernames, ledger)
    started = time.monotonic()
    until = started + args.minutes * 60
    fault_log: list[str] = []
    sending = asyncio.create_task(sender.run(args.rate, args.broadcast_every, until))
    churning = asyncio.create_task(churn(clients, args.churn, until))
    injecting = asyncio.create_task(faults(args, cluster, fault_log, started, until))
    sampling = asyncio.create_task(sample_forever(cluster, ledger, clients, totals, started))
    await sending
    await sender.finish()
    await asyncio.gather(churning, injecting)
    print(f"sending stopped at {time.monotonic() - started:.0f} s; waiting for the rest", flush=True)
    drain_started = time.monotonic()
    drain_deadline = drain_started + args.drain_secs
    while outstanding(ledger, clients) and time.monotonic() < drain_deadline:
        await asyncio.sleep(0.5)
    drained_in = time.monotonic() - drain_started
    await asyncio.to_thread(monitor.sample)
    sampling.cancel()
    outcome = tally_outcome(ledger, clients)
    await asyncio.gather(*(client.stop() for client in clients.values()), return_exceptions=True)
    await asyncio.wait(runners, timeout=15)
    return {
        "outcome": outcome,
        "ledger": ledger,
        "totals": totals,
        "clients": clients,
        "faults": fault_log,
        "drained_in": drained_in,
        "load_secs": until - started,
        "gave_up": sum(client.gave_up for client in clients.values()),
    }


async def mint_tokens(port: int, api_key: str, usernames: list[str]) -> dict[str, str]:
    """End-user tokens through the public API, as a product backend mints them (users are created)."""
    limit = asyncio.Semaphore(20)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    ) as api:

        async def one(name: str) -> tuple[str, str]:
            async with limit:
                response = await api.post("/api/v1/client-tokens/", json={"user": name, "ttl": 86400})
                response.raise_for_status()
                return name, response.json()["token"]

        return dict(await asyncio.gather(*(one(name) for name in usernames)))


async def churn(clients: dict[str, SoakClient], per_sec: float, until: float) -> None:
    """Drop a random connected socket `per_sec` times a second, as networks and tabs do."""
    if per_sec <= 0:
        return
    population = list(clients.values())
    while time.monotonic() < until:
        await asyncio.sleep(random.expovariate(per_sec))
        await random.choice(population).drop()


async def faults(args, cluster: Cluster, fault_log: list[str], started: float, until: float) -> None:
    """One Redis restart a third of the way in, one worker SIGKILL two thirds in."""
    span = until - started
    await asyncio.sleep(max(0.0, started + span / 3 - time.monotonic()))
    at = time.monotonic() - started
    await asyncio.to_thread(cluster.restart_redis, args.redis_down_secs)
    fault_log.append(f"Redis stopped at {at:.0f} s, started {args.redis_down_secs:.0f} s later")
    print(f"[{at:.0f} s] Redis restarted (down {args.redis_down_secs:.0f} s; nothing kept)", flush=True)

    await asyncio.sleep(max(0.0, started + 2 * span / 3 - time.monotonic()))
    at = time.monotonic() - started
    await asyncio.to_thread(cluster.kill_worker)
    await asyncio.to_thread(cluster.start_worker, "worker (new)", "beat (new)")
    fault_log.append(f"worker (and its beat) SIGKILLed at {at:.0f} s, a new one started")
    ready_in = time.monotonic() - started - at
    print(f"[{at:.0f} s] worker SIGKILLed; a new one was ready {ready_in:.1f} s later", flush=True)


async def sample_forever(cluster: Cluster, ledger: Ledger, clients, totals: Totals, started: float) -> None:
    last_progress = time.monotonic()
    while True:
        await asyncio.sleep(SAMPLE_EVERY_SECS)
        await asyncio.to_thread(cluster.monitor.sample)
        cluster.logs.drain()
        if time.monotonic() - last_progress >= PROGRESS_EVERY_SECS:
            last_progress = time.monotonic()
            expected = sum(len(r) for r in list(ledger.expected.values()))
            received = sum(len(c.tally.received) for c in clients.values())
            webs = [g for g in cluster.monitor.gauges if g.label.startswith("web")]
            print(
                f"[{time.monotonic() - started:.0f} s] accepted {len(ledger.expected)}, expected {expected}, "
                f"received {received}, connected {sum(c.ws is not None for c in clients.values())}, "
                f"reconnects {totals.reconnects}, web RSS MB {' '.join(f'{g.last[2]:.0f}' for g in webs)}",
                flush=True,
            )


# -- reporting ------------------------------------------------------------------------------


def explain_lost(database_url: str, lost: list[tuple[str, int]], clients: dict[str, SoakClient]) -> str:
    """For the first few lost deliveries: what the database says happened to them."""
    import psycopg

    lines = []
    with psycopg.connect(database_url) as conn:
        for username, notification_id in lost[:10]:
            row = conn.execute(
                """
                SELECT n.status, m.seq, m.live, s.last_seq,
                       (SELECT string_agg(d.channel || ':' || d.status, ',') FROM delivery_delivery d
                         WHERE d.notification_id = n.id AND d.user_id = u.id)
                FROM auth_user u
                JOIN delivery_notification n ON n.id = %s
                LEFT JOIN delivery_inboxmessage m ON m.notification_id = n.id AND m.user_id = u.id
                LEFT JOIN delivery_userstream s ON s.user_id = u.id
                WHERE u.username = %s
                """,
                (notification_id, username),
            ).fetchone()
            lines.append(
                f"  {username} notification {notification_id}: "
                f"(status, seq, live, stream end, deliveries) = {row}; "
                f"client cursor {clients[username].tally.cursor}"
            )
    return "\n".join(lines)


def report(args, result: dict, monitor: Monitor, database_url: str) -> bool:
    outcome, ledger, totals = result["outcome"], result["ledger"], result["totals"]
    ok = not outcome.lost and not outcome.duplicated and not outcome.out_of_order
    latencies = outcome.latencies_ms or [0.0]
    print(
        f"\nSoak: {args.clients} clients on {WEB_PROCESSES} web processes, {args.rate:g} sends/s for "
        f"{result['load_secs'] / 60:.1f} min (a broadcast every {args.broadcast_every:g} s, "
        f"churn {args.churn:g} drops/s, acks {'off' if args.no_ack else 'on'})"
    )
    for fault in result["faults"]:
        print(f"  fault: {fault}")
    rows = [
        (
            "accepted sends",
            f"{outcome.accepted:,} ({ledger.broadcasts} broadcasts; "
            f"{outcome.accepted / result['load_secs']:.1f}/s achieved of {args.rate:g}/s asked)",
        ),
        ("sends never accepted", f"{ledger.refused} (attempts retried: {ledger.retried})"),
        ("why attempts were retried", f"{dict(ledger.failures)}"),
        ("expected deliveries", f"{outcome.expected:,}"),
        ("received", f"{outcome.received:,}"),
        ("LOST", f"{len(outcome.lost)}"),
        ("DUPLICATED", f"{outcome.duplicated}"),
        ("out of cursor order", f"{outcome.out_of_order}"),
        ("received but never accepted", f"{outcome.unexpected}"),
        ("recipient count mismatches", f"{ledger.recipient_mismatch}"),
        (
            "send → receipt ms",
            f"p50 {percentile(latencies, 0.5):,.0f}, p99 {percentile(latencies, 0.99):,.0f}, "
            f"max {max(latencies):,.0f}",
        ),
        ("API call ms", f"p50 {statistics.median(ledger.call_ms or [0]):,.0f}"),
        ("last delivery after sending stopped", f"{result['drained_in']:.1f} s"),
        (
            "reconnects",
            f"{totals.reconnects} ({totals.churned} deliberate drops, {totals.silent} silent servers, "
            f"{totals.failed_attempts} failed attempts, close codes {dict(totals.close_codes)})",
        ),
        ("clients that gave up (4401)", f"{result['gave_up']}"),
    ]
    for name, value in rows:
        print(f"  {name:<38}{value}")
    print("\nProcesses over the load phase (RSS from /proc; CPU % of one core):")
    print(monitor.table())
    if outcome.lost:
        print("\nLost deliveries (first 10):")
        print(explain_lost(database_url, outcome.lost, result["clients"]))

    note = (
        f"{outcome.accepted:,} sends / {outcome.expected:,} deliveries to {args.clients} clients at "
        f"{outcome.accepted / result['load_secs']:.1f}/s for {result['load_secs'] / 60:.0f} min; "
        "Redis restart + worker SIGKILL; "
        f"{totals.reconnects} reconnects"
    )
    record(
        "soak",
        "lost / duplicated",
        len(outcome.lost) + outcome.duplicated,
        goal="0 lost, 0 duplicated",
        met=ok,
        higher_is_better=False,
        note=f"{len(outcome.lost)} lost, {outcome.duplicated} duplicated, "
        f"{outcome.out_of_order} reordered; {note}",
    )
    record(
        "soak",
        "send → receipt p99 ms (with faults)",
        percentile(latencies, 0.99),
        higher_is_better=False,
        note=f"p50 {percentile(latencies, 0.5):,.0f} ms, max {max(latencies):,.0f} ms",
    )
    webs = [g for g in monitor.gauges if g.label.startswith("web") and g.first]
    record(
        "soak",
        "web RSS growth MB (max of 2)",
        max(g.last[2] - g.first[2] for g in webs),
        higher_is_better=False,
        note=", ".join(f"{g.label} {g.first[2]:.0f} → {g.last[2]:.0f} MB" for g in webs),
    )
    print(f"\n{'PASS' if ok else 'FAIL'}: {len(outcome.lost)} lost, {outcome.duplicated} duplicated")
    return ok


def create_api_key(env: dict) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "soak", "--scopes", "send,read"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20, help="notifications per second")
    parser.add_argument("--broadcast-every", type=float, default=30, help="seconds apart (0: none)")
    parser.add_argument("--churn", type=float, default=0.5, help="client-side socket drops per second")
    parser.add_argument("--redis-down-secs", type=float, default=REDIS_DOWN_SECS)
    parser.add_argument("--drain-secs", type=float, default=DRAIN_TIMEOUT_SECS)
    parser.add_argument("--no-ack", action="store_true", help="do not ack on receipt (clarion.js does)")
    parser.add_argument("--logs", metavar="DIR", help="write each process's output to DIR/<process>.log")
    parser.add_argument("--quick", action="store_true", help="2 minutes, 100 clients")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.clients = 2, 100
    raise_open_files_limit()

    database_url = scratch_database(DATABASE)
    redis = PrivateRedis(bench_env(database_url))
    cluster = Cluster(bench_env(database_url, REDIS_URL=redis.url), redis, ProcessLogs(args.logs))
    ok = False
    try:
        migrate(cluster.env)
        api_key = create_api_key(cluster.env)
        cluster.start(WEB_PROCESSES)
        result = asyncio.run(soak(args, cluster, api_key))
        ok = report(args, result, cluster.monitor, database_url)
        return 0 if ok else 1
    finally:
        cluster.stop()
        if ok:
            drop_database(DATABASE)
        else:
            print(f"kept database {DATABASE} for inspection ({PG_ADMIN_URL.rsplit('/', 1)[0]}/{DATABASE})")


if __name__ == "__main__":
    sys.exit(main())
