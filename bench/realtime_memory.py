"""W3: idle connections held with heartbeats — memory per socket and idle CPU, Clarion vs baselines.

    python -m bench.realtime_memory [--clients 10000] [--minutes 10] [--runs 1]
    python -m bench.realtime_memory --quick        # 2,000 clients for 1 minute, 3 runs

Each server is a fresh process: Clarion (daphne + the node channels), stock Channels under
daphne (`group_add` per socket, bench/realtime_baseline_asgi.py) and a plain `websockets`
server (bench/plain_websockets_server.py, no Django). A warm-up opens and closes 100 sockets
(first-request imports, the database thread pool), then the server's RSS is read from /proc;
the clients connect (bench/socket_swarm.py, split over processes of 2,500 sockets), each
answering a ping first, and ping every 25 s ± 20 % as clarion.js does. After a settle, the
server's CPU (utime + stime from /proc) is read over the whole idle period and its RSS at the
end: KB per connection = (RSS at the end − RSS before connecting) / connections. At the end
every socket must still be open with no close frame received.
"""

import argparse
import statistics
import time

from bench.harness import (
    BIN,
    Proc,
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
    free_port,
    raise_open_files_limit,
    settle,
    start_daphne,
    users_with_tokens,
)
from bench.socket_swarm import Swarms, totals

DATABASE = "clarion_bench_realtime"
WARM_UP_SOCKETS = 100  # as many as connect at once, so the DB thread pool is grown before measuring
SETTLE_SECS = 5  # after connecting, before the idle period: let handshake buffers go
SAMPLE_SECS = 10  # the server is checked alive this often during the idle period
CONNECT_TIMEOUT_SECS = 900  # 10,000 handshakes on a shared 2-core machine
STATUS_TIMEOUT_SECS = 120
# Goals (W3).
GOAL_KB_PER_CONNECTION = 20
GOAL_IDLE_CPU_PCT = 5

SYSTEMS = {
    "clarion": "notifyproject.asgi:application",
    "stock channels (daphne)": "bench.realtime_baseline_asgi:application",
    "plain websockets": None,
}


def start_server(env: dict, app: str | None) -> tuple[Proc, int]:
    if app is not None:
        return start_daphne(env, app, backlog=LISTEN_BACKLOG)  # as deployed (docs/deploy.md)
    port = free_port()
    proc = Proc([str(BIN / "python"), "-m", "bench.plain_websockets_server", str(port)], env, ready="ready")
    proc.wait_ready(60)
    return proc, port


def warm_up(port: int, users: list) -> None:
    swarms = Swarms(len(users))
    try:
        swarms.connect(port, [(uid, token, 0) for uid, _, token in users], 120, heartbeat=False)
    finally:
        swarms.close()


def idle_run(env: dict, app: str | None, users: list, minutes: float) -> dict:
    server, port = start_server(env, app)
    swarms = None
    try:
        warm_up(port, users[:WARM_UP_SOCKETS])
        settle(SETTLE_SECS)
        idle_mb = server.rss_mb()
        swarms = Swarms(len(users))
        started = time.monotonic()
        connected = totals(
            swarms.connect(port, [(uid, token, 0) for uid, _, token in users], CONNECT_TIMEOUT_SECS)
        )
        connect_secs = time.monotonic() - started
        settle(SETTLE_SECS)
        before = totals(swarms.ask_all({"cmd": "status"}, STATUS_TIMEOUT_SECS))
        cpu_start, wall_start = server.cpu_secs(), time.monotonic()
        end = wall_start + minutes * 60
        peak_mb = server.rss_mb()
        while time.monotonic() < end:
            time.sleep(min(SAMPLE_SECS, max(0.0, end - time.monotonic())))
            if server.proc.poll() is not None:
                raise RuntimeError("server died:\n" + "".join(server.output[-30:]))
            peak_mb = max(peak_mb, server.rss_mb())
        cpu_secs, wall_secs = server.cpu_secs() - cpu_start, time.monotonic() - wall_start
        end_mb = server.rss_mb()
        after = totals(swarms.ask_all({"cmd": "status"}, STATUS_TIMEOUT_SECS))
        return {
            "connected": connected["open"],
            "connect_secs": connect_secs,
            "idle_mb": idle_mb,
            "end_mb": end_mb,
            "peak_mb": peak_mb,
            "kb_per_connection": (end_mb - idle_mb) * 1024 / len(users),
            "idle_cpu_pct": 100 * cpu_secs / wall_secs,
            "open_at_end": after["open"],
            "closed_by_server": sum(after["close_codes"].values()),
            "pings": after["pings"] - before["pings"],
            "pongs": after["pongs"] - before["pongs"],
            "client_errors": after["errors"],
            "server_errors": sum(1 for line in server.output if "Error" in line or "Traceback" in line),
        }
    finally:
        if swarms is not None:
            swarms.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2,000 clients for 1 minute, 3 runs")
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.minutes, args.runs = 2000, 1, 3
    raise_open_files_limit()
    try:
        run_all(args)
    finally:
        drop_database(args.database)


def run_all(args) -> None:
    env = bench_env(scratch_database(args.database), REDIS_URL=REALTIME_REDIS_URL)
    purge_redis(env["REDIS_URL"])
    migrate(env)
    setup_django(env)
    users = users_with_tokens(args.clients, "idle")
    results: dict[str, list[dict]] = {}
    for name in args.systems.split(","):
        for number in range(args.runs):
            purge_redis(env["REDIS_URL"])
            run = idle_run(env, SYSTEMS[name], users, args.minutes)
            results.setdefault(name, []).append(run)
            print(
                f"{name} run {number + 1}: {run['kb_per_connection']:.1f} KB/conn, "
                f"{run['idle_cpu_pct']:.1f}% CPU idle, {run['open_at_end']}/{args.clients} open at end, "
                f"connect {run['connect_secs']:.0f}s",
                flush=True,
            )
    report(args, results)


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def _spread(runs: list[dict], key: str) -> str:
    values = [run[key] for run in runs]
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def report(args, results: dict[str, list[dict]]) -> None:
    print(
        f"\nW3 idle connections: {args.clients} clients held {args.minutes:g} min with heartbeats, "
        f"{args.runs} run(s), median (min–max); server RSS and CPU from /proc"
    )
    print(
        f"{'server':<26}{'KB / conn':>20}{'idle CPU %':>20}{'idle MB':>9}{'end MB':>9}"
        f"{'open at end':>13}{'pongs/pings':>14}{'server closes':>15}"
    )
    for name, runs in results.items():
        pings, pongs = sum(run["pings"] for run in runs), sum(run["pongs"] for run in runs)
        print(
            f"{name:<26}{_spread(runs, 'kb_per_connection'):>20}{_spread(runs, 'idle_cpu_pct'):>20}"
            f"{_median(runs, 'idle_mb'):>9.1f}{_median(runs, 'end_mb'):>9.1f}"
            f"{min(run['open_at_end'] for run in runs):>7}/{args.clients:<5}"
            f"{pongs:>7}/{pings:<6}{sum(run['closed_by_server'] for run in runs):>15}"
        )
        errors = {key: value for run in runs for key, value in run["client_errors"].items()}
        if errors or any(run["server_errors"] for run in runs):
            print(f"  client errors {errors}, server error lines {[run['server_errors'] for run in runs]}")
    if "clarion" not in results:
        return
    clarion = results["clarion"]
    baselines = {name: runs for name, runs in results.items() if name != "clarion"}
    all_open = all(run["open_at_end"] == args.clients for run in clarion)
    kb = _median(clarion, "kb_per_connection")
    cpu = _median(clarion, "idle_cpu_pct")
    size = f"{args.clients:,} sockets, {args.minutes:g} min"
    record(
        "W3",
        "KB RSS per idle connection",
        kb,
        {name: _median(runs, "kb_per_connection") for name, runs in baselines.items()},
        goal=f"≤ {GOAL_KB_PER_CONNECTION} KB",
        met=kb <= GOAL_KB_PER_CONNECTION,
        higher_is_better=False,
        note=f"{size}; all open at end: {'yes' if all_open else 'NO'}",
    )
    record(
        "W3",
        "server CPU % of a core while idle",
        cpu,
        {name: _median(runs, "idle_cpu_pct") for name, runs in baselines.items()},
        goal=f"≤ {GOAL_IDLE_CPU_PCT}%",
        met=cpu <= GOAL_IDLE_CPU_PCT,
        higher_is_better=False,
        note=f"{size}; pings every 25 s ± 20 %",
    )


if __name__ == "__main__":
    main()
