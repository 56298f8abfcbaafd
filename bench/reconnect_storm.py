"""W4: reconnect storm — every client drops at once and comes back within 10 s while messages flow.

    python -m bench.reconnect_storm [--clients 10000] [--runs 3]
    python -m bench.reconnect_storm --quick        # 2,000 clients
    python -m bench.reconnect_storm --processes 1 --backlog 0   # one daphne, Twisted's backlog of 50

The server is the documented layout (docs/deploy.md): one daphne per core, here `--processes`
(2), each listening with a backlog of `--backlog` (1024); every connect goes to one of them at
random, as nginx would send it. N clients (bench/socket_swarm.py) hold one socket per user. A
publisher process sends per-user messages all along: for Clarion through the worker's path
(`notification_send` then the fan-out, which writes inbox rows at each user's next cursor and
publishes after commit); for stock Channels (bench/realtime_baseline_asgi.py) one `group_send`
per user with a per-user sequence number. Two seconds in, every client's TCP connection is
aborted (no close frame, as in a network blip or a load-balancer restart); each reconnects
after U(0, 10 s) with `?after=<last cursor it received>`: what static/clarion/clarion.js does
after an established socket drops so (`reconnectWindowMs`, 10 s). "Back" is the first pong
after the reconnect (the server is through `connect()`); "replayed by" is when every client
holds what its user's stream held as the last one came back. Per run it prints the wait from
each client's scheduled reconnect to its first pong (percentiles), and per second after the
drop the clients back and the servers' CPU; server CPU per reconnect is the servers' CPU over
the storm divided by the clients. After the publisher stops, the clients' cursors are checked
against each user's final position: a message never received is missed, one received twice
is a duplicate. Stock Channels has no replay, so what it misses is what a storm loses. The
server's output is searched for error lines (Redis connection errors among them). Handshakes
a node refuses (503 with Retry-After, realtime/admission.py) are retried after Retry-After and
counted (as a non-browser client should; a browser cannot read the header, and clarion.js
backs off 0-0.5 s, 0-1 s, ... instead). Each client is a Python `websockets` socket
(bench/socket_swarm.py), 2,500 to a process, on the same 2 cores as the servers.
One warm-up storm, then `--runs` storms on the same servers; server CPU and RSS (summed over the
processes) from /proc.
"""

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

from bench.harness import (
    ROOT,
    bench_env,
    drop_database,
    migrate,
    purge_redis,
    record,
    scratch_database,
    setup_django,
)
from bench.realtime_common import (
    LISTEN_BACKLOG,
    REALTIME_REDIS_URL,
    DaphneGroup,
    raise_open_files_limit,
    users_with_tokens,
)
from bench.socket_swarm import Swarms, totals

DATABASE = "clarion_bench_storm"
USER_PREFIX = "storm"
DROP_WINDOW_SECS = 10  # every client is back to reconnecting within this window (jittered)
LEAD_SECS = 2  # messages flowing to connected clients before the drop
TAIL_SECS = 3  # messages still flowing after the last scheduled reconnect
BACK_TIMEOUT_SECS = 120  # stop waiting for stragglers after this long
CONVERGE_TIMEOUT_SECS = 30  # after the publisher stops: until every cursor reaches its position
CONNECT_TIMEOUT_SECS = 900
POLL_SECS = 0.5
WEB_PROCESSES = 2  # docs/deploy.md: one daphne per core, on the 2-core benchmark machine
USERS_PER_NOTIFICATION = 50  # one notification_send / one burst of group_sends per tick
# Goals (W4).
GOAL_BACK_SECS = 15
ERROR_LINE = re.compile(r"error|exception|traceback", re.IGNORECASE)
REDIS_ERROR_LINE = re.compile(
    r"redis.*(error|lost|fail|refused|timeout|too many)|max number of clients", re.IGNORECASE
)

SYSTEMS = {
    "clarion": "notifyproject.asgi:application",
    "stock channels": "bench.realtime_baseline_asgi:application",
}


# -- the publisher process --------------------------------------------------------------------


def publish(system: str, seconds: float, rate: float, counters_path: str) -> None:
    """Send `rate` per-user messages a second for `seconds`, to random users; bounded in time."""
    from django.contrib.auth import get_user_model

    users = list(
        get_user_model()
        .objects.filter(username__startswith=USER_PREFIX)
        .order_by("pk")
        .values_list("pk", "username")
    )
    with open(counters_path) as source:
        counters = {int(uid): seq for uid, seq in json.load(source).items()}
    ticks_per_sec = max(1.0, rate / USERS_PER_NOTIFICATION)
    per_tick = max(1, round(rate / ticks_per_sec))
    send = _clarion_sender() if system == "clarion" else _stock_sender(counters)
    print("publishing", flush=True)
    sent, started = 0, time.monotonic()
    for tick in range(int(seconds * ticks_per_sec)):
        due = started + tick / ticks_per_sec
        time.sleep(max(0.0, due - time.monotonic()))
        if time.monotonic() > started + seconds + 5:
            break  # fell too far behind: stop rather than run on
        batch = random.sample(users, min(per_tick, len(users)))
        send(batch, f"storm-{tick}")
        sent += len(batch)
    with open(counters_path, "w") as out:
        json.dump({str(uid): seq for uid, seq in counters.items()}, out)
    print(json.dumps({"sent": sent, "secs": time.monotonic() - started}), flush=True)


def _clarion_sender():
    from delivery.fanout import notification_fan_out
    from delivery.models import Route
    from delivery.services import NotificationRequest, Sender, notification_send

    sender = Sender(label="bench:storm")

    def send(batch, title: str) -> None:
        request = NotificationRequest(
            target={"users": [name for _, name in batch]}, title=title, route=Route.REALTIME
        )
        notification, _ = notification_send(sender=sender, request=request)
        notification_fan_out(notification.pk)  # what the worker's dispatch task runs

    return send


def _stock_sender(counters: dict[int, int]):
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    async def send_all(batch, title):
        layer = get_channel_layer()
        sends = []
        for uid, _ in batch:
            counters[uid] = seq = counters.get(uid, 0) + 1
            message = {"id": seq, "cursor": seq, "title": title, "body": "", "data": {}}
            event = {"type": "notification.message", "message": message}
            sends.append(layer.group_send(f"user.{uid}", event))
        await asyncio.gather(*sends)

    return async_to_sync(send_all)


# -- the storm --------------------------------------------------------------------------------


class Publisher:
    def __init__(self, env: dict, system: str, seconds: float, rate: float, counters_path: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.reconnect_storm", "--publish", system, "--seconds", str(seconds)]
            + ["--rate", str(rate), "--counters", counters_path],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []

    def wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if line.startswith("publishing"):
                return
        raise RuntimeError("publisher did not start:\n" + "".join(self.lines[-20:]))

    def finish(self, timeout: float) -> dict:
        output, _ = self.proc.communicate(timeout=timeout)
        self.lines += output.splitlines(keepends=True)
        if self.proc.returncode:
            raise RuntimeError("publisher failed:\n" + "".join(self.lines[-30:]))
        return json.loads(self.lines[-1])


def positions(system: str, users: list, counters_path: str) -> dict[str, int]:
    if system == "clarion":
        from delivery.streams_api import stream_positions

        found = stream_positions([uid for uid, _, _ in users])
        return {str(uid): found.get(uid, 0) for uid, _, _ in users}
    with open(counters_path) as source:
        return json.load(source)


def storm(env, system, server, swarms, users, rate, counters_path) -> dict:
    count = len(users)
    output_from = server.mark()
    start = positions(system, users, counters_path)
    before = totals(swarms.ask_all({"cmd": "verify", "positions": start}, 120))
    before_refusals = totals(swarms.ask_all({"cmd": "status"}, 120)).get("refusals", 0)
    publisher = Publisher(env, system, LEAD_SECS + DROP_WINDOW_SECS + TAIL_SECS, rate, counters_path)
    try:
        publisher.wait_started(60)
        time.sleep(LEAD_SECS)
        cpu_start, started = server.cpu_secs(), time.monotonic()
        load_before = os.getloadavg()[0]
        peak_mb = server.rss_mb()
        cpu_samples = [(0.0, cpu_start)]  # (seconds after the drop, server CPU seconds so far)
        swarms.ask_all({"cmd": "drop", "window": DROP_WINDOW_SECS}, 120)
        status = {}
        while time.monotonic() < started + BACK_TIMEOUT_SECS:
            time.sleep(POLL_SECS)
            cpu_samples.append((time.monotonic() - started, server.cpu_secs()))
            peak_mb = max(peak_mb, server.rss_mb())
            status = totals(swarms.ask_all({"cmd": "status"}, 120))
            if status["back"] >= count:
                break
        back_secs = status.get("last_back_secs") if status.get("back", 0) >= count else None
        # Replayed: every client has what its user's stream held when the last one came back.
        replayed_secs = None
        if back_secs is not None:
            caught_up_to = positions(system, users, counters_path)
            while time.monotonic() < started + BACK_TIMEOUT_SECS:
                verified = totals(swarms.ask_all({"cmd": "verify", "positions": caught_up_to}, 120))
                if not verified["behind_users"]:
                    replayed_secs = time.monotonic() - started
                    break
                time.sleep(POLL_SECS)
        sent = publisher.finish(BACK_TIMEOUT_SECS)["sent"]
    finally:
        if publisher.proc.poll() is None:
            publisher.proc.kill()
    final = positions(system, users, counters_path)
    deadline = time.monotonic() + CONVERGE_TIMEOUT_SECS
    while True:
        after = totals(swarms.ask_all({"cmd": "verify", "positions": final}, 120))
        if not after["missed"] and not after["behind_users"] or time.monotonic() > deadline:
            break
        time.sleep(POLL_SECS)
    cpu_secs, wall_secs = server.cpu_secs() - cpu_start, time.monotonic() - started
    status = totals(swarms.ask_all({"cmd": "status", "timeline": True}, 120))
    lines = server.lines_since(output_from)
    return {
        "back": status["back"],
        "back_secs": back_secs,
        "replayed_secs": replayed_secs,
        "sent": sent,
        "missed": after["missed"] - before["missed"],
        "duplicates": after["duplicates"] - before["duplicates"],
        "error_lines": sum(1 for line in lines if ERROR_LINE.search(line)),
        "redis_error_lines": sum(1 for line in lines if REDIS_ERROR_LINE.search(line)),
        "client_errors": status["errors"],
        "refusals": status.get("refusals", 0) - before_refusals,
        "client_error_samples": status.get("error_samples", [])[:3],
        "cpu_secs": cpu_secs,
        "cpu_ms_per_reconnect": 1000 * cpu_secs / count,
        "load": (load_before, os.getloadavg()[0]),
        "timeline": _timeline(status.get("back_per_sec", {}), cpu_samples),
        "waits": _percentiles(status.get("waits", [])),
        "cpu_pct": 100 * cpu_secs / wall_secs,
        "peak_mb": peak_mb,
        "sample": "".join(line for line in lines if ERROR_LINE.search(line))[:600],
    }


def _timeline(back_per_sec: dict[str, int], cpu_samples: list[tuple[float, float]]) -> str:
    """Per second after the drop: clients back, and the server's CPU (% of one core, spread
    evenly over the interval between two samples)."""
    seconds = [int(second) for second in back_per_sec]
    last = max(seconds + [int(cpu_samples[-1][0])])
    busy = [0.0] * (last + 1)
    for (t0, c0), (t1, c1) in zip(cpu_samples, cpu_samples[1:], strict=False):
        for second in range(int(t0), min(last, int(t1)) + 1):
            overlap = min(t1, second + 1) - max(t0, second)
            if overlap > 0 and t1 > t0:
                busy[second] += (c1 - c0) * overlap / (t1 - t0)
    return " ".join(f"{s}:{back_per_sec.get(str(s), 0)}/{100 * busy[s]:.0f}%" for s in range(last + 1))


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    at = [values[min(len(values) - 1, int(len(values) * q))] for q in (0.5, 0.9, 0.99)]
    return f"p50 {at[0]:.1f} s, p90 {at[1]:.1f} s, p99 {at[2]:.1f} s, max {values[-1]:.1f} s"


def run_system(
    env, system: str, users: list, runs: int, rate: float, processes: int, backlog: int
) -> list[dict]:
    server = DaphneGroup(env, SYSTEMS[system], processes, backlog or None)
    handle, counters_path = tempfile.mkstemp(prefix="clarion-storm-", suffix=".json")
    os.close(handle)
    with open(counters_path, "w") as out:
        json.dump({}, out)
    swarms = Swarms(len(users))
    try:
        start = positions(system, users, counters_path)
        connected = totals(
            swarms.connect(
                server.ports,
                [(uid, token, start.get(str(uid), 0)) for uid, _, token in users],
                CONNECT_TIMEOUT_SECS,
            )
        )
        print(
            f"{system}: {connected['open']}/{len(users)} connected in {connected['secs']:.0f} s, "
            f"{connected.get('refusals', 0)} handshakes refused (503) and retried",
            flush=True,
        )
        if connected["open"] < len(users):
            raise RuntimeError(
                f"only {connected['open']} of {len(users)} clients connected: {connected['errors']} "
                f"{connected.get('error_samples', [])[:3]}"
            )
        results = []
        for number in range(runs + 1):
            result = storm(env, system, server, swarms, users, rate, counters_path)
            label = "warm-up" if number == 0 else f"run {number}"
            print(
                f"{system} {label}: back {result['back']}/{len(users)} in "
                f"{result['back_secs'] if result['back_secs'] is None else round(result['back_secs'], 1)} s, "
                f"replayed by {_secs(result['replayed_secs'])} s, "
                f"sent {result['sent']}, missed {result['missed']}, twice {result['duplicates']}, "
                f"error lines {result['error_lines']} (redis {result['redis_error_lines']}), "
                f"client errors {result['client_errors']}, refused {result['refusals']}, "
                f"CPU {result['cpu_pct']:.0f}%, {result['cpu_ms_per_reconnect']:.2f} ms per reconnect, "
                f"peak {result['peak_mb']:.0f} MB, load {result['load'][0]:.1f}-{result['load'][1]:.1f}",
                flush=True,
            )
            print(f"  scheduled reconnect to first pong: {result['waits']}", flush=True)
            print(f"  per second after the drop, back/server CPU: {result['timeline']}", flush=True)
            if result["client_error_samples"]:
                print("  clients saw:", result["client_error_samples"], flush=True)
            if result["sample"]:
                print("  server said:", result["sample"].strip()[:600], flush=True)
            if number:
                results.append(result)
        return results
    finally:
        swarms.close()
        server.stop()
        os.unlink(counters_path)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def report(args, results: dict[str, list[dict]]) -> None:
    print(
        f"\nW4 reconnect storm: {args.clients} clients on {args.processes} daphne processes "
        f"(backlog {args.backlog or 50}) dropped at once, back within "
        f"U(0, {DROP_WINDOW_SECS}) s, ~{args.rate:g} per-user messages/s meanwhile; "
        f"{args.runs} runs after a warm-up, median (min–max)"
    )
    print(
        f"{'server':<16}{'all back s':>20}{'back':>8}{'sent':>8}{'missed':>8}{'twice':>7}"
        f"{'err lines':>11}{'redis err':>11}{'refused':>9}{'CPU %':>20}{'peak MB':>9}"
    )
    for name, runs in results.items():
        backs = [run["back_secs"] if run["back_secs"] is not None else float("inf") for run in runs]
        print(
            f"{name:<16}{_spread(backs):>20}{min(run['back'] for run in runs):>8}"
            f"{sum(run['sent'] for run in runs):>8}{sum(run['missed'] for run in runs):>8}"
            f"{sum(run['duplicates'] for run in runs):>7}{sum(run['error_lines'] for run in runs):>11}"
            f"{sum(run['redis_error_lines'] for run in runs):>11}{sum(run['refusals'] for run in runs):>9}"
            f"{_spread([run['cpu_pct'] for run in runs]):>20}{max(run['peak_mb'] for run in runs):>9.0f}"
        )
    if "clarion" not in results:
        return
    clarion, baselines = results["clarion"], {k: v for k, v in results.items() if k != "clarion"}

    def back(runs):
        return statistics.median(
            run["back_secs"] if run["back_secs"] is not None else BACK_TIMEOUT_SECS for run in runs
        )

    all_back = all(run["back"] == args.clients for run in clarion)
    clean = all(not (run["missed"] or run["duplicates"] or run["redis_error_lines"]) for run in clarion)
    record(
        "W4",
        "storm: seconds until all are back",
        back(clarion),
        {name: back(runs) for name, runs in baselines.items()},
        goal=f"≤ {GOAL_BACK_SECS} s",
        met=all_back and back(clarion) <= GOAL_BACK_SECS,
        higher_is_better=False,
        note=(
            f"{args.clients:,} clients on {args.processes} web processes, reconnects spread over "
            f"{DROP_WINDOW_SECS} s; {sum(run['refusals'] for run in clarion)} handshakes refused (503) "
            "and retried"
        ),
    )
    record(
        "W4",
        "storm: messages missed (all runs)",
        sum(run["missed"] for run in clarion),
        {name: sum(run["missed"] for run in runs) for name, runs in baselines.items()},
        goal="none missed, none twice, no Redis errors",
        met=clean,
        higher_is_better=False,
        note=(
            f"of {sum(run['sent'] for run in clarion)} sent to Clarion; twice: "
            f"{sum(run['duplicates'] for run in clarion)}; Redis error lines: "
            f"{sum(run['redis_error_lines'] for run in clarion)}"
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=500, help="per-user messages a second, all users")
    parser.add_argument("--quick", action="store_true", help="2,000 clients")
    parser.add_argument("--processes", type=int, default=WEB_PROCESSES, help="daphne processes")
    parser.add_argument("--backlog", type=int, default=LISTEN_BACKLOG, help="0: daphne's -b/-p")
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--publish", help=argparse.SUPPRESS)  # the publisher process
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--counters", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        import django

        django.setup()
        publish(args.publish, args.seconds, args.rate, args.counters)
        return
    if args.quick:
        args.clients = 2000
    raise_open_files_limit()
    try:
        env = bench_env(scratch_database(args.database), REDIS_URL=REALTIME_REDIS_URL)
        purge_redis(env["REDIS_URL"])
        migrate(env)
        setup_django(env)
        users = users_with_tokens(args.clients, USER_PREFIX)
        results = {}
        for system in args.systems.split(","):
            purge_redis(env["REDIS_URL"])
            results[system] = run_system(
                env, system, users, args.runs, args.rate, args.processes, args.backlog
            )
        report(args, results)
    finally:
        drop_database(args.database)


if __name__ == "__main__":
    main()
