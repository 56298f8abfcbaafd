"""Shared pieces for benchmarks: a scratch database, real processes, /proc CPU and RSS, stats.

Everything runs on 127.0.0.1; every wait is bounded in time.
"""

import atexit
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def scratch_database(name: str) -> str:
    """Drop and create database `name`; return its URL."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_env(database_url: str, **overrides) -> dict:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="notifyproject.settings",
        DATABASE_URL=database_url,
        REDIS_URL=BENCH_REDIS_URL,
        SECRET_KEY="clarion-bench",
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        CLARION_EMBEDDED_WORKER="0",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update({k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in overrides.items()})
    return env


def setup_django(env: dict) -> None:
    """Configure this process's Django for the bench database (call before importing models)."""
    for key in (
        "DJANGO_SETTINGS_MODULE",
        "DATABASE_URL",
        "REDIS_URL",
        "SECRET_KEY",
        "DEBUG",
        "ALLOWED_HOSTS",
        "CLARION_EMBEDDED_WORKER",
        "CLARION_PROVIDERS",
        "LOG_LEVEL",
    ):
        if key in env:
            os.environ[key] = env[key]
    import django

    django.setup()


def migrate(env: dict) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300
    )


_children: set["Proc"] = set()


def _stop_children() -> None:
    for child in list(_children):
        child.stop()


# Children run in sessions of their own (so a stop reaches their whole process group); a
# benchmark killed by `timeout` or Ctrl-C must not leave them running: exit through atexit.
atexit.register(_stop_children)


def _exit_on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # `timeout` may signal twice; clean up once
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _exit_on_sigterm)


class Proc:
    """A child process whose CPU time and memory we read from /proc (children included)."""

    def __init__(self, args: list[str], env: dict, ready: str | None = None):
        self.output: list[str] = []
        self._ready = threading.Event()
        self.ready_marker = ready
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._pumper = threading.Thread(target=self._pump, daemon=True)
        self._pumper.start()
        _children.add(self)

    def _pump(self):
        for line in self.proc.stdout:
            self.output.append(line)
            if self.ready_marker and self.ready_marker in line:
                self._ready.set()

    def finish(self, timeout: float) -> int:
        """Wait for the process to exit and for its output to be read to the last line."""
        code = self.proc.wait(timeout)
        self._pumper.join(timeout)
        return code

    def json_result(self) -> dict:
        """The last JSON line the process printed (a child bench's result)."""
        for line in reversed(self.output):
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError("no result printed:\n" + "".join(self.output[-30:]))

    def wait_ready(self, timeout: float = 60):
        if not self._ready.wait(timeout):
            raise RuntimeError("process not ready:\n" + "".join(self.output[-30:]))

    def pids(self) -> list[int]:
        """The process and its descendants."""
        family, frontier = [self.proc.pid], [self.proc.pid]
        while frontier:
            parent = frontier.pop()
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    if int(fields[1]) == parent:
                        family.append(int(entry))
                        frontier.append(int(entry))
        return family

    def cpu_secs(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except OSError:
                pass
        return total / CLOCK_TICKS

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def peak_rss_mb(self) -> float:
        """The largest peak resident size (VmHWM) of any one process of the family."""
        peak = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
        return peak / 1024

    def stop(self):
        _children.discard(self)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def celery_worker(
    env: dict, *, pool: str = "prefork", concurrency: int = 2, include: str | None = None
) -> Proc:
    args = [
        str(BIN / "celery"),
        "-A",
        "notifyproject",
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    if include:
        args += ["--include", include]
    worker = Proc(args, env, ready="ready.")
    worker.wait_ready()
    return worker


def purge_redis(url: str = BENCH_REDIS_URL) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def wait_for_idle_broker(timeout: float, url: str = BENCH_REDIS_URL) -> None:
    """Until no task waits in the queue or runs unacknowledged (acks_late)."""
    import redis

    client = redis.Redis.from_url(url)
    wait_for(lambda: client.llen("celery") == 0 and client.hlen("unacked") == 0, timeout, interval=0.1)


def wait_for(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout}s")


def summary(values: list[float]) -> str:
    """median (min–max), the form every figure is reported in."""
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"


# -- the one table `python -m bench` prints ---------------------------------------------------

RESULTS_ENV = "CLARION_BENCH_RESULTS"


def record(
    workload: str,
    metric: str,
    clarion: float,
    baselines: dict[str, float] | None = None,
    *,
    goal: str = "",
    met: bool | None = None,
    higher_is_better: bool = True,
    note: str = "",
) -> None:
    """Add one row (Clarion's median and each baseline's) to the table `python -m bench` prints.

    Rows go as JSON lines to the file named by $CLARION_BENCH_RESULTS; a benchmark run alone
    (no such variable) prints its own tables and records nothing.
    """
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    row = {
        "workload": workload,
        "metric": metric,
        "clarion": clarion,
        "baselines": baselines or {},
        "goal": goal,
        "met": met,
        "higher_is_better": higher_is_better,
        "note": note,
    }
    with open(path, "a") as out:
        out.write(json.dumps(row) + "\n")


def read_records(path: str) -> list[dict]:
    try:
        with open(path) as source:
            return [json.loads(line) for line in source if line.strip()]
    except FileNotFoundError:
        return []


def ratio(clarion: float, baseline: float, higher_is_better: bool) -> str:
    """How many times better Clarion is than the baseline (>1 is better, whichever the unit)."""
    if not baseline or not clarion:
        return "–"
    return f"{(clarion / baseline) if higher_is_better else (baseline / clarion):.1f}×"


def format_table(rows: list[dict]) -> str:
    lines = [
        f"{'workload':<6} {'metric':<34} {'Clarion':>12} {'baseline':<30} {'value':>12} {'ratio':>7}  goal",
    ]
    for row in rows:
        baselines = list(row["baselines"].items()) or [("", None)]
        met = {True: "met", False: "NOT met", None: ""}[row["met"]]
        goal = f"{row['goal']} {met}".strip()
        for index, (name, value) in enumerate(baselines):
            first = index == 0
            lines.append(
                f"{row['workload'] if first else '':<6} {row['metric'] if first else '':<34} "
                f"{_figure(row['clarion']) if first else '':>12} {name:<30} {_figure(value):>12} "
                f"{ratio(row['clarion'], value, row['higher_is_better']) if value else '':>7}  "
                f"{goal if first else ''}"
            )
        if row["note"]:
            lines.append(f"{'':<6} {'':<34} {'':>12} note: {row['note']}")
    return "\n".join(lines)


def _figure(value) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


@contextlib.contextmanager
def py_spy(pid: int, path: Path, *flags: str):
    """py-spy on `pid` while the block runs: raw folded stacks of the thread holding the GIL (CPU)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [str(BIN / "py-spy"), "record", "--pid", str(pid), "--gil", "--nonblocking", *flags]
        + ["--rate", "200", "--format", "raw", "--output", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)  # attached
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
        print(f"  profile: {path}", flush=True)
