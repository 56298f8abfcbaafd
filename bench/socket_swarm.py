"""The lean load client of the idle (W3) and reconnect-storm (W4) benchmarks: one process, many sockets.

    python -m bench.socket_swarm     # driven by bench/realtime_memory.py and bench/reconnect_storm.py

Commands arrive as JSON lines on stdin, answers leave as JSON lines on stdout:

    {"cmd": "connect", "ports": [P, ...], "users": [[user id, token, cursor], ...], "heartbeat": true}
    {"cmd": "status"}                      → open sockets, pongs, closes, frames
    {"cmd": "drop", "window": 10}          → abort every socket; each reconnects after U(0, window) s
                                             with ?after=<its last cursor>
    {"cmd": "verify", "positions": {...}}  → per user: frames missed (gaps + tail) and received twice
    {"cmd": "stop"}

Each socket pings like static/clarion/clarion.js ({"type":"ping"} every 25 s ± 20 %) and reads the
per-user cursor of every notification frame, so loss and duplicates are counted, not guessed.
With several ports (a machine's web processes), each connect goes to one picked at random, as a
balancer would. A handshake refused with 503 (the node's admission, realtime/admission.py) is
retried after its Retry-After, with jitter, and counted as a refusal, not an error.
The same client runs against every server. 127.0.0.1 only; every wait is bounded.
"""

import asyncio
import contextlib
import os
import random
import sys
import time

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

HEARTBEAT_SECS = 25  # as clarion.js: 25 s ± 20 % jitter
HEARTBEAT_JITTER = 0.2
CONNECT_CONCURRENCY = 100  # handshakes in flight at once in the initial connect
OPEN_TIMEOUT_SECS = 60
FIRST_PONG_TIMEOUT_SECS = 60
RECONNECT_ATTEMPTS = 20  # a socket that cannot come back after this many tries gives up
RECONNECT_BACKOFF_SECS = 0.5
MAX_REFUSALS = 200  # 503s one socket accepts before it gives up (each waits its Retry-After)
RETRY_AFTER_JITTER = 0.5  # a refused client waits Retry-After × U(1, 1.5)
ERROR_SAMPLES = 5  # error messages kept per process, for the report
PONG = '{"type":"pong"}'
PING = '{"type":"ping"}'


class Socket:
    """One user's connection, reconnecting with its cursor after a drop."""

    def __init__(self, swarm: "Swarm", user_id: int, token: str, cursor: int):
        self.swarm = swarm
        self.user_id = user_id
        self.token = token
        self.cursor = cursor  # the last notification cursor received
        self.ws = None
        self.open = False
        self.back_at: float | None = None  # first pong after the last (re)connect, monotonic
        self.due_at: float | None = None  # when its reconnect was scheduled (after a drop)
        self.frames = 0
        self.duplicates = 0
        self.gaps = 0  # messages skipped between two frames
        self.reordered = 0
        self.close_codes: list = []
        self.task: asyncio.Task | None = None
        self.heartbeat: asyncio.Task | None = None

    def url(self) -> str:
        port = random.choice(self.swarm.ports)
        return f"ws://127.0.0.1:{port}{self.swarm.path}?token={self.token}&after={self.cursor}"

    async def open_once(self) -> None:
        self.ws = await connect(
            self.url(), open_timeout=OPEN_TIMEOUT_SECS, ping_interval=None, max_queue=None, compression=None
        )
        await self.ws.send(PING)
        # Frames replayed before the pong are counted too; the pong says the server is through connect().
        deadline = time.monotonic() + FIRST_PONG_TIMEOUT_SECS
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), max(0.1, deadline - time.monotonic()))
            if frame == PONG:
                self.swarm.pongs += 1
                break
            self.on_frame(frame)
        self.open = True
        self.back_at = time.monotonic()

    def start_reading(self) -> None:
        self.task = asyncio.create_task(self.read())
        if self.swarm.heartbeat and self.heartbeat is None:
            self.heartbeat = asyncio.create_task(self.ping_forever())

    async def read(self) -> None:
        try:
            async for frame in self.ws:
                if frame == PONG:
                    self.swarm.pongs += 1
                else:
                    self.on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            if self.open and not self.swarm.dropping:
                self.close_codes.append(self.ws.close_code)
            self.open = False

    def on_frame(self, raw) -> None:
        self.frames += 1
        frame = orjson.loads(raw)
        if frame.get("type") != "notification":
            return
        cursor = frame["cursor"]
        if cursor <= self.cursor:
            self.duplicates += 1
            return
        self.gaps += cursor - self.cursor - 1
        self.cursor = cursor

    async def ping_forever(self) -> None:
        await asyncio.sleep(random.uniform(0, HEARTBEAT_SECS))
        while not self.swarm.stopping:
            if self.open:
                try:
                    await self.ws.send(PING)
                    self.swarm.pings += 1
                except ConnectionClosed:
                    pass
            jitter = random.uniform(1 - HEARTBEAT_JITTER, 1 + HEARTBEAT_JITTER)
            await asyncio.sleep(HEARTBEAT_SECS * jitter)

    async def reconnect_after(self, delay: float) -> None:
        self.due_at = time.monotonic() + delay
        await asyncio.sleep(delay)
        attempt = refusals = 0
        while attempt < RECONNECT_ATTEMPTS:
            try:
                await self.open_once()
                self.start_reading()
                return
            except InvalidStatus as refused:
                retry_after = refused.response.headers.get("Retry-After", "")
                if refused.response.status_code != 503 or not retry_after.isdigit():
                    self.swarm.note_error(refused)
                    attempt += 1
                    await asyncio.sleep(RECONNECT_BACKOFF_SECS * attempt * random.uniform(0.5, 1.5))
                    continue
                self.swarm.refusals += 1
                refusals += 1
                if refusals >= MAX_REFUSALS:
                    self.swarm.note_error(refused)
                    return
                await asyncio.sleep(int(retry_after) * random.uniform(1, 1 + RETRY_AFTER_JITTER))
            except (OSError, TimeoutError, WebSocketException) as error:  # refused, timed out, HTTP 500
                attempt += 1
                self.swarm.note_error(error)
                if self.ws is not None and self.ws.transport is not None:
                    self.ws.transport.abort()
                await asyncio.sleep(RECONNECT_BACKOFF_SECS * attempt * random.uniform(0.5, 1.5))


class Swarm:
    def __init__(self):
        self.sockets: list[Socket] = []
        self.ports = [0]
        self.refusals = 0  # handshakes answered 503 (and retried after Retry-After)
        self.path = "/ws/v1/notifications/"
        self.heartbeat = True
        self.pongs = 0
        self.pings = 0
        self.errors: dict[str, int] = {}
        self.error_samples: list[str] = []
        self.dropping = False
        self.stopping = False
        self.dropped_at = 0.0

    def note_error(self, error: Exception) -> None:
        name = type(error).__name__
        self.errors[name] = self.errors.get(name, 0) + 1
        if len(self.error_samples) < ERROR_SAMPLES:
            self.error_samples.append(f"{name}: {error}"[:160])

    async def connect(self, command: dict) -> dict:
        self.ports = command["ports"]
        self.path = command.get("path", self.path)
        self.heartbeat = command.get("heartbeat", True)
        self.sockets = [Socket(self, user_id, token, cursor) for user_id, token, cursor in command["users"]]
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        started = time.monotonic()

        async def one(sock: Socket) -> None:
            async with limit:
                await sock.reconnect_after(0)

        await asyncio.gather(*(one(sock) for sock in self.sockets))
        return {"event": "connected", "secs": time.monotonic() - started, **self.status()}

    async def drop(self, command: dict) -> dict:
        """Every socket's TCP connection dies at once (a network blip); each comes back jittered."""
        window = command["window"]
        self.dropping = True
        for sock in self.sockets:
            sock.open = False
            sock.back_at = None
            if sock.ws is not None and sock.ws.transport is not None:
                sock.ws.transport.abort()
        await asyncio.gather(*(sock.task for sock in self.sockets if sock.task), return_exceptions=True)
        self.dropping = False
        self.dropped_at = time.monotonic()
        for sock in self.sockets:
            asyncio.create_task(sock.reconnect_after(random.uniform(0, window)))
        return {"event": "dropped"}

    def status(self, timeline: bool = False) -> dict:
        backs = sorted(sock.back_at - self.dropped_at for sock in self.sockets if sock.back_at is not None)
        # Per second after the drop: clients back, and their wait from the scheduled reconnect to
        # the first pong (refusals and queueing included), for the report's timeline.
        back_per_sec: dict[str, int] = {}
        waits = []
        for sock in self.sockets if timeline else ():
            if sock.back_at is not None and sock.back_at >= self.dropped_at and sock.due_at is not None:
                second = str(int(sock.back_at - self.dropped_at))
                back_per_sec[second] = back_per_sec.get(second, 0) + 1
                waits.append(sock.back_at - sock.due_at)
        codes: dict[str, int] = {}
        for sock in self.sockets:
            for code in sock.close_codes:
                codes[str(code)] = codes.get(str(code), 0) + 1
        return {
            "sockets": len(self.sockets),
            "open": sum(1 for sock in self.sockets if sock.open),
            "pongs": self.pongs,
            "pings": self.pings,
            "refusals": self.refusals,
            "frames": sum(sock.frames for sock in self.sockets),
            "close_codes": codes,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "back": len(backs),
            "last_back_secs": backs[-1] if backs else None,
            "back_per_sec": back_per_sec,
            "waits": [round(wait, 2) for wait in waits],
            "cursors": {str(sock.user_id): sock.cursor for sock in self.sockets},
        }

    def verify(self, command: dict) -> dict:
        """Against each user's final stream position: how many messages never arrived, how many twice."""
        positions = command["positions"]
        missed = duplicates = behind_users = 0
        for sock in self.sockets:
            position = positions.get(str(sock.user_id), 0)
            tail = max(0, position - sock.cursor)
            missed += sock.gaps + tail
            behind_users += 1 if tail else 0
            duplicates += sock.duplicates
        return {"event": "verified", "missed": missed, "duplicates": duplicates, "behind_users": behind_users}

    async def stop(self) -> dict:
        self.stopping = True
        status = self.status()
        await asyncio.gather(
            *(sock.ws.close() for sock in self.sockets if sock.ws is not None), return_exceptions=True
        )
        return {"event": "stopped", **status}


async def serve_commands() -> None:
    swarm = Swarm()
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        command = orjson.loads(line)
        kind = command["cmd"]
        if kind == "connect":
            answer = await swarm.connect(command)
        elif kind == "drop":
            answer = await swarm.drop(command)
        elif kind == "status":
            answer = {"event": "status", **swarm.status(command.get("timeline", False))}
        elif kind == "verify":
            answer = swarm.verify(command)
        elif kind == "stop":
            answer = await swarm.stop()
        else:
            answer = {"event": "error", "message": f"unknown command {kind}"}
        if not command.get("cursors"):
            answer.pop("cursors", None)
        sys.stdout.write(orjson.dumps(answer).decode() + "\n")
        sys.stdout.flush()
        if kind == "stop":
            return


# -- the driving side (the benchmark process) -------------------------------------------------

CLIENTS_PER_PROCESS = 2500  # past this one Python process answers its sockets' frames late


class SwarmProcess:
    """One client process, spoken to over its stdin/stdout with bounded waits."""

    def __init__(self):
        import queue
        import subprocess
        import threading

        from bench.harness import ROOT

        self.answers: queue.Queue = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.socket_swarm"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.answers.put(orjson.loads(line))
        self.answers.put({"event": "exited", "code": self.proc.wait()})

    def send(self, command: dict) -> None:
        self.proc.stdin.write(orjson.dumps(command).decode() + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float) -> dict:
        import queue

        try:
            answer = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"client process silent for {timeout}s") from None
        if answer.get("event") in ("exited", "error"):
            raise RuntimeError(f"client process failed: {answer}")
        return answer

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Swarms:
    """The client sockets split over as many processes as they need."""

    def __init__(self, count: int):
        self.processes = [SwarmProcess() for _ in range(max(1, -(-count // CLIENTS_PER_PROCESS)))]

    def ask(self, commands: list[dict], timeout: float) -> list[dict]:
        for process, command in zip(self.processes, commands, strict=True):
            process.send(command)
        return [process.answer(timeout) for process in self.processes]

    def ask_all(self, command: dict, timeout: float) -> list[dict]:
        return self.ask([command] * len(self.processes), timeout)

    def connect(self, ports: int | list[int], users: list, timeout: float, **options) -> list[dict]:
        """users: [(user id, token, cursor)], dealt round-robin over the processes; each socket
        connects to one of `ports` at random."""
        ports = [ports] if isinstance(ports, int) else list(ports)
        shares = [users[index :: len(self.processes)] for index in range(len(self.processes))]
        commands = [{"cmd": "connect", "ports": ports, "users": share, **options} for share in shares]
        return self.ask(commands, timeout)

    def close(self) -> None:
        with contextlib.suppress(TimeoutError, RuntimeError, OSError):
            self.ask_all({"cmd": "stop"}, 60)
        for process in self.processes:
            process.kill()


def totals(answers: list[dict]) -> dict:
    """Sum the processes' counters; the latest reconnect is the max."""
    merged: dict = {"close_codes": {}, "errors": {}}
    for answer in answers:
        for key, value in answer.items():
            if isinstance(value, bool) or key == "event":
                continue
            if isinstance(value, (int, float)) and key != "last_back_secs" and key != "secs":
                merged[key] = merged.get(key, 0) + value
            elif key in ("error_samples", "waits"):
                merged.setdefault(key, []).extend(value)
            elif key in ("close_codes", "errors", "back_per_sec"):
                merged.setdefault(key, {})
                for name, count in value.items():
                    merged[key][name] = merged[key].get(name, 0) + count
            elif key in ("last_back_secs", "secs") and value is not None:
                merged[key] = max(merged.get(key) or 0, value)
    return merged


def main() -> None:
    from bench.realtime_common import raise_open_files_limit

    raise_open_files_limit()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(serve_commands())


if __name__ == "__main__":
    main()
