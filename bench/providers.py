"""Provider benchmarks: bulk, W6 and W7, Clarion and its peers side by side in one invocation.

* bulk — one send through POST /api/v1/notifications/ to 10,000 devices of each platform
  (FCM, APNs, Web Push), API → fan-out → Celery prefork ×2 → provider → fake, every delivery
  recorded; django-push-notifications' bulk FCM send to the same 10,000 tokens, same fake.
* w6 — Web Push to 20,000 subscriptions with distinct keys, 230-byte payload, fake answers 201;
  django-webpush (pywebpush.webpush() per message) in tasks of 100 on the same 2 processes.
* w7 — FCM and APNs to 50,000 tokens, fakes add 20 ms per answer, 1% of tokens dead
  (UNREGISTERED / 410 Unregistered), 0.5% answered 429 once (FCM with Retry-After); one
  Celery task per token as the baseline (on 32 threads: prefork ×2 would cap at 2 / 20 ms).

Fakes (tests/fakes) run in their own process; worker CPU and RSS come from /proc. Each figure
is the median of `--runs` timed runs (min–max) after a warm-up.

    python -m bench.providers            # full sizes (about 16 minutes)
    python -m bench.providers --quick    # 2,000 / 5,000 / 5,000 (about 3 minutes)
    python -m bench.providers --only w6 --runs 1
    python -m bench.providers --quick --only w7 --apps 2   # devices spread over two apps

With `--apps 2`, every second device belongs to a second app whose stored credentials point at
the same fakes: each platform then runs two clients per worker (connections, OAuth token, JWT).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import harness

DB_NAME = os.environ.get("BENCH_PROVIDERS_DB", "clarion_bench_providers")
SECOND_APP = "bench-second"
REDIS_URL = os.environ.get("BENCH_PROVIDERS_REDIS_URL", "redis://127.0.0.1:6379/12")
BASELINE_SETTINGS = "bench.providers_baseline_settings"
RUN_TIMEOUT_SECS = 600
FAKES_START_TIMEOUT_SECS = 120
# Per platform, subscribed to the topic bench-<platform>-warm: a few send tasks (IDS_PER_TASK
# each), so that every worker process has built its providers before the timed runs.
WARMUP_DEVICES = 600
DJANGO_WEBPUSH_GROUP_SIZE = 100  # subscriptions per django-webpush group (one task each)
API_KEY_NAME = "bench-providers"
WEB_PUSH_PAYLOAD_BYTES = 230  # W6: what the service worker receives, before encryption
W7_LATENCY_MS = 20
W7_DEAD_EVERY = 100  # 1% of tokens are dead: UNREGISTERED (FCM) / 410 Unregistered (APNs)
W7_BUSY_EVERY = 200  # 0.5% are answered 429 once
W7_BUSY_OFFSET = 50
RETRY_AFTER_SECS = 2  # the FCM fake's Retry-After on 429; Clarion's first back-off is 1–2 s
PER_TOKEN_THREADS = 32  # the one-task-per-token baseline's Celery pool (threads)

FULL = {"bulk": 10_000, "w6": 20_000, "w7": 50_000, "w7_baseline": 5_000}
QUICK = {"bulk": 2_000, "w6": 5_000, "w7": 5_000, "w7_baseline": 1_000}


# -- the fakes, in their own process ---------------------------------------------------------------
def serve_fakes(config_path: str) -> None:
    """Run FakeFCM, FakeAPNs and FakePushService; obey `program`/`dump`/`quit` lines on stdin."""
    from tests.fakes.apns import FakeAPNs
    from tests.fakes.fcm import FakeFCM
    from tests.fakes.serve import environment
    from tests.fakes.webpush import FakePushService, generate_vapid_keypair

    config = json.loads(Path(config_path).read_text())
    latency, retry_after = config["latency_ms"], config["retry_after_secs"]
    vapid = generate_vapid_keypair()
    fcm = FakeFCM(latency_ms=latency, retry_after_s=retry_after)
    apns = FakeAPNs(latency_ms=latency)
    push = FakePushService(latency_ms=latency, retry_after_s=retry_after)
    with fcm, apns, push:
        subscriptions = [
            push.subscribe(application_server_key=vapid[1]) for _ in range(config["subscriptions"])
        ]
        out = {
            "env": environment(fcm, apns, push, vapid),
            "subscriptions": subscriptions,
            "fcm_http1_url": fcm.url,  # for the SDK baselines, which speak HTTP/1.1
        }
        Path(config["out"]).write_text(json.dumps(out))
        print("fakes ready", flush=True)
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "quit":
                break
            # program: forget records, then fail these keys: {platform: {error: [keys, times]}}
            if command == "program":
                plan = json.loads(Path(argument).read_text())
                for fake in (fcm, apns, push):
                    fake.reset()
                for error, (keys, times) in plan.get("fcm", {}).items():
                    for key in keys:
                        fcm.fail_token(key, error, times)
                for error, (keys, times) in plan.get("apns", {}).items():
                    for key in keys:
                        apns.fail_token(key, error, times)
            elif command == "count":  # attempts so far per platform
                counts = {"fcm": len(fcm.attempts), "apns": len(apns.attempts), "webpush": len(push.attempts)}
                print("ok " + json.dumps(counts), flush=True)
                continue
            elif command == "dump":  # every attempt: (key, status, arrival time)
                dump = {
                    "fcm": [(a.target, a.status, a.at) for a in fcm.attempts],
                    "apns": [(a.token, a.status, a.at) for a in apns.attempts],
                    "webpush": [(a.subscription_id, a.status, a.at) for a in push.attempts],
                }
                Path(argument).write_text(json.dumps(dump))
            print("ok", flush=True)


class Fakes:
    """The fakes' process: env for Clarion, programmed failures, attempts, CPU."""

    def __init__(self, workdir: Path, latency_ms: float, subscriptions: int) -> None:
        self.workdir = workdir
        config = workdir / "fakes-config.json"
        out = workdir / "fakes.json"
        config.write_text(
            json.dumps(
                {
                    "latency_ms": latency_ms,
                    "retry_after_secs": RETRY_AFTER_SECS,
                    "subscriptions": subscriptions,
                    "out": str(out),
                }
            )
        )
        self.latency_ms = latency_ms
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.providers", "--serve-fakes", str(config)],
            cwd=harness.ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._expect("fakes ready", FAKES_START_TIMEOUT_SECS)
        info = json.loads(out.read_text())
        self.env: dict = info["env"]
        self.fcm_http1_url: str = info["fcm_http1_url"]
        self.subscriptions: list[dict] = info["subscriptions"]

    def _expect(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the fakes' process exited")
            if line.startswith(marker):
                return line[len(marker) :].strip()
        raise TimeoutError(f"fakes: no {marker!r} within {timeout} s")

    def _command(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._expect("ok", 60)

    def attempt_count(self, platform: str) -> int:
        return json.loads(self._command("count"))[platform]

    def program(self, plan: dict) -> None:
        path = self.workdir / "plan.json"
        path.write_text(json.dumps(plan))
        self._command(f"program {path}")

    def attempts(self) -> dict[str, list]:
        path = self.workdir / "attempts.json"
        self._command(f"dump {path}")
        return json.loads(path.read_text())

    def cpu_secs(self) -> float:
        return proc_cpu_secs(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def proc_cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / harness.CLOCK_TICKS


def machine_busy_secs() -> float:
    """CPU seconds spent by the whole machine (all cores, not idle/iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / harness.CLOCK_TICKS


# -- data ------------------------------------------------------------------------------------------
def load_devices(cursor, platform: str, count: int, subscriptions: list[dict] | None = None) -> None:
    """`count` users `<platform>-<i>` with one device each, subscribed to topic bench-<platform>."""
    cursor.execute(
        "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,"
        " is_staff, is_active, date_joined)"
        " SELECT '!', false, %s || g, '', '', '', false, true, now() FROM generate_series(1, %s) g",
        [f"{platform}-", count],
    )
    if platform == "webpush":
        subs = subscriptions[:count]
        cursor.execute(
            "INSERT INTO devices_device (user_id, platform, token, token_digest, name, environment, p256dh,"
            " auth, active, deactivated_reason, created_at, last_seen_at)"
            " SELECT u.id, 'webpush', s.endpoint, encode(sha256(s.endpoint::bytea), 'hex'), '', '', s.p256dh,"
            " s.auth, true, '', now(), now()"
            " FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY s(endpoint, p256dh, auth, i)"
            " JOIN auth_user u ON u.username = 'webpush-' || s.i",
            [
                [s["endpoint"] for s in subs],
                [s["keys"]["p256dh"] for s in subs],
                [s["keys"]["auth"] for s in subs],
            ],
        )
    else:
        token = "'fcm-token-' || g" if platform == "fcm" else "lpad(to_hex(g), 64, '0')"
        environment = "'production'" if platform == "apns" else "''"
        cursor.execute(
            "INSERT INTO devices_device (user_id, platform, token, token_digest, name, environment, p256dh,"
            " auth, active, deactivated_reason, created_at, last_seen_at)"
            f" SELECT u.id, %s, t.token, encode(sha256(t.token::bytea), 'hex'), '', {environment}, '', '',"
            " true, '', now(), now()"
            f" FROM (SELECT g, {token} AS token FROM generate_series(1, %s) g) t"
            " JOIN auth_user u ON u.username = %s || t.g",
            [platform, count, f"{platform}-"],
        )
    cursor.execute(
        "INSERT INTO devices_topicsubscription (user_id, topic, created_at)"
        " SELECT id, %s, now() FROM auth_user WHERE username LIKE %s",
        [f"bench-{platform}", f"{platform}-%"],
    )
    cursor.execute(
        "INSERT INTO devices_topicsubscription (user_id, topic, created_at)"
        " SELECT id, %s, now() FROM auth_user WHERE username LIKE %s ORDER BY id LIMIT %s",
        [f"bench-{platform}-warm", f"{platform}-%", WARMUP_DEVICES],
    )


def second_app(env: dict) -> None:
    """An app with the default app's credentials (the same fakes), stored encrypted like any app."""
    from delivery.push_apps import PLAIN_FIELDS, app_create

    secrets = {
        "fcm_credentials": Path(env["FCM_CREDENTIALS"]).read_text(),
        "apns_key": Path(env["APNS_KEY"]).read_text(),
        "vapid_private_key": env["VAPID_PRIVATE_KEY"],
    }
    # The default app's variables are the fields' names in capitals (FCM_ENDPOINT, APNS_TOPIC, ...).
    fields = {field: env[field.upper()] for field in PLAIN_FIELDS if field != "name"}
    app_create(slug=SECOND_APP, secrets=secrets, **fields)


def fcm_token(i: int) -> str:
    return f"fcm-token-{i}"


def apns_token(i: int) -> str:
    return f"{i:064x}"


def load_dpn_devices(cursor) -> None:
    """django-push-notifications' GCMDevice rows for the same FCM tokens and users."""
    cursor.execute(
        "INSERT INTO push_notifications_gcmdevice (name, active, user_id, date_created, application_id,"
        " registration_id, cloud_message_type)"
        " SELECT '', true, user_id, now(), NULL, token, 'FCM' FROM devices_device"
        " WHERE platform = 'fcm' ORDER BY id"
    )


def load_django_webpush(cursor, group_size: int) -> int:
    """django-webpush's subscriptions for the same endpoints, in groups of `group_size`; returns groups."""
    cursor.execute(
        "INSERT INTO webpush_subscriptioninfo (browser, user_agent, endpoint, auth, p256dh)"
        " SELECT 'chrome', '', token, auth, p256dh FROM devices_device WHERE platform = 'webpush' ORDER BY id"
    )
    cursor.execute("SELECT count(*) FROM webpush_subscriptioninfo")
    count = cursor.fetchone()[0]
    groups = (count + group_size - 1) // group_size
    cursor.execute(
        "INSERT INTO webpush_group (name) SELECT 'g' || g FROM generate_series(0, %s) g", [groups - 1]
    )
    cursor.execute(
        "INSERT INTO webpush_pushinformation (user_id, subscription_id, group_id)"
        " SELECT NULL, s.id, g.id FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n"
        " FROM webpush_subscriptioninfo) s JOIN webpush_group g ON g.name = 'g' || (s.n / %s)",
        [group_size],
    )
    return groups


def reset_sends(cursor) -> None:
    cursor.execute(
        "TRUNCATE delivery_delivery, delivery_inboxmessage, delivery_notification, delivery_userstream"
        " CASCADE"
    )
    cursor.execute("UPDATE devices_device SET active = true, deactivated_reason = '' WHERE NOT active")
    cursor.execute("UPDATE push_notifications_gcmdevice SET active = true WHERE NOT active")


def w7_plan(platform: str, count: int) -> tuple[dict, set[str], set[str]]:
    """(fakes plan, dead tokens, 429'd tokens) for W7."""
    token = fcm_token if platform == "fcm" else apns_token
    dead = {token(i) for i in range(1, count + 1) if i % W7_DEAD_EVERY == 0}
    busy = {token(i) for i in range(1, count + 1) if i % W7_BUSY_EVERY == W7_BUSY_OFFSET}
    dead_error, busy_error = (
        ("UNREGISTERED", "QUOTA_EXCEEDED") if platform == "fcm" else ("Unregistered", "TooManyRequests")
    )
    return {platform: {dead_error: [sorted(dead), None], busy_error: [sorted(busy), 1]}}, dead, busy


# -- measuring -------------------------------------------------------------------------------------
@dataclass
class Run:
    messages: int  # accepted by the fake
    elapsed: float  # until every first attempt was answered and recorded
    worker_cpu: float
    fakes_cpu: float
    machine_cpu: float
    worker_rss_mb: float
    recorded: int = 0  # delivery rows in a final state (Clarion, the per-token APNs baseline)
    all_done: float = 0.0  # until the 429'd ones were sent too
    checks: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.elapsed

    @property
    def cpu_us_per_message(self) -> float:
        return self.worker_cpu / max(self.messages, 1) * 1e6

    @property
    def fake_us_per_message(self) -> float:
        return self.fakes_cpu / max(self.messages, 1) * 1e6


class Meter:
    """CPU of the worker, the fakes and the machine, and wall time, from start() to stop()."""

    def __init__(self, worker, fakes: Fakes) -> None:
        self.worker, self.fakes = worker, fakes

    def start(self) -> None:
        self.began = time.monotonic()
        self.cpu = (self.worker.cpu_secs(), self.fakes.cpu_secs(), machine_busy_secs())

    def stop(self) -> dict:
        elapsed = time.monotonic() - self.began
        worker, fakes, machine = self.worker.cpu_secs(), self.fakes.cpu_secs(), machine_busy_secs()
        return {
            "elapsed": elapsed,
            "worker_cpu": worker - self.cpu[0],
            "fakes_cpu": fakes - self.cpu[1],
            "machine_cpu": machine - self.cpu[2],
            "worker_rss_mb": self.worker.rss_mb(),
        }


def wait_idle_broker(settled_polls: int = 3) -> None:
    """No task queued or unacknowledged for `settled_polls` polls in a row.

    One poll is not enough: between a worker's BRPOP and its write to `unacked`, a task is in
    neither place.
    """
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    polls = [0]

    def idle() -> bool:
        polls[0] = polls[0] + 1 if client.llen("celery") == 0 and client.hlen("unacked") == 0 else 0
        return polls[0] >= settled_polls

    harness.wait_for(idle, RUN_TIMEOUT_SECS, 0.1)


def worker_ok(worker) -> bool:
    """True, or raise with the worker's output once a task has raised (a bench, not a soak)."""
    failed = [line for line in worker.output if "raised unexpected" in line or "Traceback" in line]
    if failed:
        raise RuntimeError("a task failed in the worker:\n" + "".join(worker.output[-40:]))
    return True


def final_count(cursor, notification_id: int) -> int:
    cursor.execute(
        "SELECT count(*) FROM delivery_delivery WHERE notification_id = %s"
        " AND status IN ('sent', 'failed', 'skipped', 'expired')",
        [notification_id],
    )
    return cursor.fetchone()[0]


def accepted(attempts: list, ok_status: int) -> int:
    return sum(1 for _, status, _ in attempts if status == ok_status)


def backoff_check(attempts: list, busy: set[str], latency_ms: float, retry_after: float) -> dict:
    """For each 429'd token: was it sent later, and never sooner than `retry_after` after the 429?"""
    by_key: dict[str, list] = {}
    for key, status, at in attempts:
        if key in busy:
            by_key.setdefault(key, []).append((at, status))
    resent = early = 0
    gaps = []
    for history in by_key.values():
        history.sort()
        throttled = [at for at, status in history if status == 429]
        later = [at for at, status in history if status in (200, 201) and throttled and at > throttled[0]]
        if later:
            resent += 1
            gap = later[0] - throttled[0] - latency_ms / 1000
            gaps.append(gap)
            early += gap < retry_after
    return {
        "429'd": sum(1 for h in by_key.values() if any(s == 429 for _, s in h)),
        "resent": resent,
        "early": early,
        "min_gap_s": round(min(gaps), 2) if gaps else None,
    }


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-providers-"))
        self.results: dict[str, dict[str, list[Run]]] = {}

    # -- setup ------------------------------------------------------------------------------------
    def prepare(self, fakes: Fakes, platforms: dict[str, int]) -> None:
        """A fresh database with `platforms` ({platform: devices}) and an API key."""
        if getattr(self, "_django_ready", False):
            from django.db import connection

            connection.close()  # the database is about to be dropped and made anew
        database_url = harness.scratch_database(DB_NAME)
        if self.args.apps > 1:  # the second app's credentials are stored encrypted; workers decrypt
            from cryptography.fernet import Fernet

            os.environ.setdefault("CLARION_ENCRYPTION_KEYS", Fernet.generate_key().decode())
        self.env = harness.bench_env(
            database_url,
            REDIS_URL=REDIS_URL,
            ALLOWED_HOSTS="testserver,127.0.0.1,localhost",
            CLARION_SEND_RATE="100000/min",
            **fakes.env,
        )
        self.baseline_env = {
            **self.env,
            "DJANGO_SETTINGS_MODULE": BASELINE_SETTINGS,
            "FCM_ENDPOINT": fakes.fcm_http1_url,  # firebase-admin's requests speak HTTP/1.1
        }
        harness.migrate(self.baseline_env)  # Clarion's tables and the peers'
        if not getattr(self, "_django_ready", False):
            harness.setup_django(self.env)
            self._django_ready = True
        from django.db import connection

        with connection.cursor() as cursor:
            for platform, count in platforms.items():
                load_devices(cursor, platform, count, fakes.subscriptions)
            if "fcm" in platforms:
                load_dpn_devices(cursor)
            if "webpush" in platforms:
                self.webpush_groups = load_django_webpush(cursor, DJANGO_WEBPUSH_GROUP_SIZE)
            if self.args.apps > 1:
                second_app(fakes.env)
                cursor.execute("UPDATE devices_device SET app = %s WHERE id %% 2 = 0", [SECOND_APP])
            cursor.execute("ANALYZE")
        from notifyproject.identities.api_keys import api_key_create

        _, self.api_key = api_key_create(name=API_KEY_NAME, scopes=["send", "read"])

    def send_via_api(self, topic: str, title: str, body: str, data: dict) -> int:
        from django.test import Client

        response = Client().post(
            "/api/v1/notifications/",
            {
                "to": {"topic": topic},
                "title": title,
                "body": body,
                "data": data,
                "route": "push",
                "ttl": 3600,
            },
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {self.api_key}",
        )
        assert response.status_code == 202, response.content
        return response.json()["id"]

    # -- Clarion ----------------------------------------------------------------------------------
    def clarion_run(self, worker, fakes: Fakes, platform: str, count: int, message: dict, plan=None) -> Run:
        from django.db import connection

        plan, dead, busy = plan or ({}, set(), set())
        with connection.cursor() as cursor:
            reset_sends(cursor)
        fakes.program(plan)
        meter = Meter(worker, fakes)
        meter.start()
        notification_id = self.send_via_api(f"bench-{platform}", **message)
        with connection.cursor() as cursor:
            first = count - len(busy)
            harness.wait_for(
                lambda: worker_ok(worker) and final_count(cursor, notification_id) >= first,
                RUN_TIMEOUT_SECS,
                0.05,
            )
            measured = meter.stop()
            harness.wait_for(lambda: final_count(cursor, notification_id) >= count, RUN_TIMEOUT_SECS, 0.05)
            all_done = time.monotonic() - meter.began
            recorded = final_count(cursor, notification_id)
            cursor.execute(
                "SELECT count(*) FROM devices_device WHERE platform = %s AND NOT active", [platform]
            )
            deactivated = cursor.fetchone()[0]
        wait_idle_broker()
        attempts = fakes.attempts()[platform]
        ok = 201 if platform == "webpush" else 200
        run = Run(accepted(attempts, ok), recorded=recorded, all_done=all_done, **measured)
        if plan:
            retry_after = RETRY_AFTER_SECS if platform == "fcm" else 1.0  # APNs: our back-off's floor
            run.checks = {
                "dead": len(dead),
                "deactivated": deactivated,
                **backoff_check(attempts, busy, fakes.latency_ms, retry_after),
            }
        return run

    def clarion(self, fakes: Fakes, platforms: list[str], count: int, message: dict, plans=None) -> dict:
        harness.purge_redis(REDIS_URL)
        worker = harness.celery_worker(self.env, pool="prefork", concurrency=2)
        results = {}
        try:
            for platform in platforms:
                self.warm_up(worker, fakes, platform, message)
                plan = plans[platform] if plans else None
                with self.profiling(worker, f"clarion-{platform}"):
                    runs = [
                        self.clarion_run(worker, fakes, platform, count, message, plan)
                        for _ in range(self.args.runs)
                    ]
                results[f"clarion {platform}"] = runs
                self.progress(f"clarion {platform}", runs)
        finally:
            worker.stop()
        return results

    def warm_up(self, worker, fakes: Fakes, platform: str, message: dict) -> None:
        from django.db import connection

        notification_id = self.send_via_api(f"bench-{platform}-warm", **message)
        with connection.cursor() as cursor:
            harness.wait_for(
                lambda: final_count(cursor, notification_id) >= WARMUP_DEVICES, RUN_TIMEOUT_SECS, 0.1
            )
        wait_idle_broker()

    # -- baselines --------------------------------------------------------------------------------
    def baseline_run(
        self, worker, fakes: Fakes, platform: str, enqueue, expected: int, plan=None, ok=200
    ) -> Run:
        from django.db import connection

        plan, dead, busy = plan or ({}, set(), set())
        with connection.cursor() as cursor:
            reset_sends(cursor)
        fakes.program(plan)
        meter = Meter(worker, fakes)
        meter.start()
        enqueue()
        harness.wait_for(
            lambda: worker_ok(worker) and fakes.attempt_count(platform) >= expected, RUN_TIMEOUT_SECS, 0.05
        )
        wait_idle_broker()  # the last answers are being recorded (rows saved, devices deactivated)
        measured = meter.stop()
        attempts = fakes.attempts()[platform]
        run = Run(accepted(attempts, ok), **measured)
        if plan:
            with connection.cursor() as cursor:
                table = "push_notifications_gcmdevice" if platform == "fcm" else "devices_device"
                where = "" if platform == "fcm" else "AND platform = 'apns'"
                cursor.execute(f"SELECT count(*) FROM {table} WHERE NOT active {where}")
                deactivated = cursor.fetchone()[0]
            retry_after = RETRY_AFTER_SECS if platform == "fcm" else 1.0
            run.checks = {
                "dead": len(dead & {key for key, _, _ in attempts}),
                "deactivated": deactivated,
                **backoff_check(attempts, busy, fakes.latency_ms, retry_after),
            }
        return run

    def baseline(
        self,
        fakes,
        name,
        platform,
        enqueue,
        warm_up,
        expected,
        plan=None,
        ok=200,
        pool="prefork",
        concurrency=2,
    ):
        harness.purge_redis(REDIS_URL)
        worker = harness.celery_worker(
            self.baseline_env, pool=pool, concurrency=concurrency, include="bench.providers_baseline"
        )
        try:
            fakes.program({})
            warm_up()
            harness.wait_for(lambda: fakes.attempt_count(platform) >= WARMUP_DEVICES, RUN_TIMEOUT_SECS, 0.1)
            wait_idle_broker()
            with self.profiling(worker, name.split(" (")[0].replace(" ", "-")):
                runs = [
                    self.baseline_run(worker, fakes, platform, enqueue, expected, plan, ok)
                    for _ in range(self.args.runs)
                ]
        finally:
            worker.stop()
        self.progress(name, runs)
        return {name: runs}

    # -- scenarios --------------------------------------------------------------------------------
    def bulk(self) -> None:
        count = self.sizes["bulk"]
        message = {"title": "Bulk send", "body": "Ten thousand devices", "data": {"bench": "bulk"}}
        fakes = Fakes(self.workdir, latency_ms=0, subscriptions=count)
        try:
            self.prepare(fakes, {"fcm": count, "apns": count, "webpush": count})
            results = self.clarion(fakes, ["fcm", "apns", "webpush"], count, message)
            from bench.providers_baseline import dpn_fcm_bulk

            results.update(
                self.baseline(
                    fakes,
                    "django-push-notifications fcm",
                    "fcm",
                    enqueue=lambda: dpn_fcm_bulk.delay(message["title"], message["body"], message["data"]),
                    warm_up=lambda: dpn_fcm_bulk.delay(
                        message["title"], message["body"], message["data"], WARMUP_DEVICES
                    ),
                    expected=count,
                )
            )
        finally:
            fakes.stop()
        self.results["bulk"] = results

    def w6(self) -> None:
        count = self.sizes["w6"]
        body = "x" * (WEB_PUSH_PAYLOAD_BYTES - len(_web_push_json("W6", "", {"bench": "w6"})))
        message = {"title": "W6", "body": body, "data": {"bench": "w6"}}
        fakes = Fakes(self.workdir, latency_ms=0, subscriptions=count)
        try:
            self.prepare(fakes, {"webpush": count})
            results = self.clarion(fakes, ["webpush"], count, message)
            from bench.providers_baseline import webpush_group

            payload = _web_push_json(message["title"], body, message["data"])
            assert len(payload) == WEB_PUSH_PAYLOAD_BYTES
            groups = self.webpush_groups
            results.update(
                self.baseline(
                    fakes,
                    "django-webpush",
                    "webpush",
                    enqueue=lambda: [webpush_group.delay(f"g{g}", payload, 3600) for g in range(groups)],
                    warm_up=lambda: [
                        webpush_group.delay(f"g{g}", payload, 3600)
                        for g in range(-(-WARMUP_DEVICES // DJANGO_WEBPUSH_GROUP_SIZE))
                    ],
                    expected=count,
                    ok=201,
                )
            )
        finally:
            fakes.stop()
        self.results["w6"] = results

    def w7(self) -> None:
        count, baseline_count = self.sizes["w7"], self.sizes["w7_baseline"]
        message = {"title": "W7", "body": "Fifty thousand tokens", "data": {"bench": "w7"}}
        fakes = Fakes(self.workdir, latency_ms=W7_LATENCY_MS, subscriptions=0)
        try:
            self.prepare(fakes, {"fcm": count, "apns": count})
            plans = {platform: w7_plan(platform, count) for platform in ("fcm", "apns")}
            results = self.clarion(fakes, ["fcm", "apns"], count, message, plans)
            from django.db import connection

            from bench.providers_baseline import apns_one, dpn_fcm_one

            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT id FROM push_notifications_gcmdevice ORDER BY id LIMIT %s", [baseline_count]
                )
                gcm_ids = [row[0] for row in cursor.fetchall()]
                cursor.execute(
                    "SELECT id FROM devices_device WHERE platform = 'apns' ORDER BY id LIMIT %s",
                    [baseline_count],
                )
                apns_ids = [row[0] for row in cursor.fetchall()]

            def fcm_each(ids):
                for device_id in ids:
                    dpn_fcm_one.delay(device_id, message["title"], message["body"], message["data"])

            def apns_each(ids):
                notification_id = self.baseline_notification(message)
                for device_id in ids:
                    apns_one.delay(notification_id, device_id)

            threads = {"pool": "threads", "concurrency": PER_TOKEN_THREADS}
            results.update(
                self.baseline(
                    fakes,
                    f"task per token fcm ({baseline_count:,})",
                    "fcm",
                    enqueue=lambda: fcm_each(gcm_ids),
                    warm_up=lambda: fcm_each(gcm_ids[:WARMUP_DEVICES]),
                    expected=baseline_count,
                    plan=w7_plan("fcm", baseline_count)[:3],
                    **threads,
                )
            )
            results.update(
                self.baseline(
                    fakes,
                    f"task per token apns ({baseline_count:,})",
                    "apns",
                    enqueue=lambda: apns_each(apns_ids),
                    warm_up=lambda: apns_each(apns_ids[:WARMUP_DEVICES]),
                    expected=baseline_count,
                    plan=w7_plan("apns", baseline_count)[:3],
                    **threads,
                )
            )
        finally:
            fakes.stop()
        self.results["w7"] = results

    def baseline_notification(self, message: dict) -> int:
        from django.utils import timezone

        from delivery.models import Notification

        return Notification.objects.create(
            sender_label="baseline",
            title=message["title"],
            body=message["body"],
            data=message["data"],
            ttl=3600,
            expires_at=timezone.now() + timezone.timedelta(hours=1),
            target={"topic": "bench-apns"},
            status="dispatched",
        ).pk

    @contextlib.contextmanager
    def profiling(self, worker, name: str):
        """py-spy on the worker and its children while the block runs (--profile DIR)."""
        if not self.args.profile:
            yield
            return
        path = Path(self.args.profile) / f"{self.scenario}-{name}.txt"
        with harness.py_spy(worker.proc.pid, path, "--subprocesses"):
            yield

    def progress(self, name: str, runs: list[Run]) -> None:
        rates = ", ".join(f"{r.rate:,.0f}/s" for r in runs)
        print(f"  {name}: {rates}", flush=True)


def _web_push_json(title: str, body: str, data: dict) -> bytes:
    """The plaintext Clarion's Web Push provider sends (id is a small integer here)."""
    import orjson

    return orjson.dumps({"id": 1, "title": title, "body": body, "data": data, "url": "", "icon": ""})


# -- report ----------------------------------------------------------------------------------------
TITLES = {
    "bulk": "Bulk — one API send to N devices per platform, fakes answer at once",
    "w6": "W6 — Web Push, distinct subscription keys, 230-byte payload, fake answers 201",
    "w7": f"W7 — fakes add {W7_LATENCY_MS} ms per answer; 1% dead tokens, 0.5% answered 429 once",
}
RATIOS = {
    "bulk": [("clarion fcm", "django-push-notifications fcm")],
    "w6": [("clarion webpush", "django-webpush")],
    "w7": [("clarion fcm", "task per token fcm"), ("clarion apns", "task per token apns")],
}


def report(bench: Bench) -> None:
    sizes = bench.sizes
    for scenario, results in bench.results.items():
        count = sizes[scenario]
        print(f"\n{TITLES[scenario]} (N = {count:,}; median of {bench.args.runs}, min–max)")
        columns = [("msg/s", 22), ("elapsed s", 11), ("worker CPU s", 13), ("CPU µs/msg", 17)]
        columns += [("fake µs/msg", 13), ("machine cores", 14), ("RSS MB", 8), ("recorded", 9)]
        print(f"{'':<34}" + "".join(f"{title:>{width}}" for title, width in columns))
        for name, runs in results.items():
            elapsed = statistics.median(r.elapsed for r in runs)
            cores = statistics.median(r.machine_cpu / r.elapsed for r in runs)
            recorded = statistics.median(r.recorded for r in runs)
            print(
                f"{name:<34}{harness.summary([r.rate for r in runs]):>22}{elapsed:>11.1f}"
                f"{statistics.median(r.worker_cpu for r in runs):>13.1f}"
                f"{harness.summary([r.cpu_us_per_message for r in runs]):>17}"
                f"{statistics.median(r.fake_us_per_message for r in runs):>13,.0f}{cores:>14.2f}"
                f"{statistics.median(r.worker_rss_mb for r in runs):>8,.0f}{recorded:>9,.0f}"
            )
            for r in runs:
                if r.checks or r.all_done > r.elapsed + 0.5:
                    done = f"all done {r.all_done:.1f} s; " if r.all_done else ""
                    print(f"{'':<36}{r.messages:,} accepted; {done}{r.checks}")
        for ours, theirs in RATIOS[scenario]:
            mine = [runs for name, runs in results.items() if name == ours]
            peer = [runs for name, runs in results.items() if name.startswith(theirs)]
            if mine and peer:
                ratio = statistics.median(r.rate for r in mine[0]) / statistics.median(
                    r.rate for r in peer[0]
                )
                print(f"ratio {ours} / {theirs}: {ratio:.1f}×")
        record_scenario(scenario, results)


# scenario → (workload, goal in msg/s, goal text); CPU per message is a second W6 goal.
GOALS = {
    "bulk": ("bulk", None, "at least the peer's rate"),
    "w6": ("W6", 3000, "≥ 3,000/s, ≤ 300 µs CPU/msg"),
    "w7": ("W7", 3000, "≥ 3,000/s, dead tokens off, 429 honoured"),
}


def checks_hold(checks: dict) -> bool:
    """Every dead token deactivated, every 429'd message re-sent, none before its Retry-After."""
    if not checks:
        return True
    return (
        checks["deactivated"] >= checks["dead"]
        and checks["resent"] == checks["429'd"]
        and checks["early"] == 0
    )


def record_scenario(scenario: str, results: dict) -> None:
    workload, goal_rate, goal = GOALS[scenario]
    for ours, theirs in RATIOS[scenario]:
        mine = results.get(ours)
        peer = next((runs for name, runs in results.items() if name.startswith(theirs)), None)
        if not mine:
            continue
        rate = statistics.median(r.rate for r in mine)
        peer_rate = statistics.median(r.rate for r in peer) if peer else None
        cpu = statistics.median(r.cpu_us_per_message for r in mine)
        checks_ok = all(checks_hold(r.checks) for r in mine)
        if goal_rate is None:
            met = bool(peer_rate) and rate >= peer_rate
        else:
            met = rate >= goal_rate and checks_ok and (scenario != "w6" or cpu <= 300)
        harness.record(
            workload,
            f"{ours} msg/s",
            rate,
            {theirs: peer_rate} if peer_rate else {},
            goal=goal,
            met=met,
            note=f"{cpu:,.0f} µs worker CPU/msg" + ("" if checks_ok else f"; checks: {mine[0].checks}"),
        )


def main(argv=None) -> Bench:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes: a few minutes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="bulk,w6,w7", help="comma-separated: bulk, w6, w7")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the workers during the timed runs")
    parser.add_argument("--apps", type=int, choices=(1, 2), default=1, help="spread the devices over 2 apps")
    parser.add_argument("--serve-fakes", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_fakes:
        serve_fakes(args.serve_fakes)
        return None
    bench = Bench(args)
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.2f} before the run; loopback only", flush=True)
    try:
        for scenario in args.only.split(","):
            bench.scenario = scenario.strip()
            print(f"{bench.scenario}: load average {os.getloadavg()[0]:.2f}", flush=True)
            getattr(bench, bench.scenario)()
    finally:
        from django.db import connection

        connection.close()
        harness.drop_database(DB_NAME)
    report(bench)
    return bench


if __name__ == "__main__":
    main()
