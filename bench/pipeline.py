"""W9 — the pipeline: API → rows → queue → worker → provider, for a broadcast to N recipients.

Clarion: one send, fanned out in batches (one transaction per CLARION_FANOUT_BATCH users,
rows written set-based by PostgreSQL), pushed by tasks of 250 deliveries. Two baselines, in
the same run and on the same data:
- `orm`: Clarion's fan-out with rows built in Python and written with bulk_create, 500 users
  a batch (CLARION_FANOUT_BULK=0), the path the set-based one replaced (and SQLite's);
- `baseline`: stock Django + Celery with one task per device and one save() per delivery row
  (the django-push-notifications / fcm-django pattern); `--skip-stock` leaves it out.
All use the same Celery worker settings and a provider that accepts everything at once, so the
figures are the pipelines' own cost. Fan-out/s: accepted → every inbox and delivery row
committed and every send task enqueued (the notification `dispatched`); rows/s: → every
delivery `sent`.

    python -m bench.pipeline                    # 100,000 recipients
    python -m bench.pipeline --quick            # 10,000 recipients
    python -m bench.pipeline --recipients 1000000 --runs 1 --skip-stock --skip-orm   # the million run
"""

import argparse
import resource
import statistics
import time
from datetime import timedelta

from bench import harness

DB_NAME = "clarion_bench_pipeline"
PROVIDERS = {"fcm": "bench.null_provider.NullProvider"}
RUN_TIMEOUT_SECS = 900  # per run; a larger audience gets one second per 500 recipients
WARMUP_RECIPIENTS = 2_000  # subscribed to the topic "warmup", so a warm-up sends to them alone


def load_audience(connection, recipients: int) -> None:
    """N users with one FCM device each, written by PostgreSQL itself, then analyzed."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,"
            " is_staff, is_active, date_joined)"
            " SELECT '!', false, 'u' || g, '', '', '', false, true, now() FROM generate_series(1, %s) g",
            [recipients],
        )
        cursor.execute(
            "INSERT INTO devices_device (user_id, platform, token, token_digest, name, environment, p256dh,"
            " auth, active, deactivated_reason, created_at, last_seen_at)"
            " SELECT id, 'fcm', 'tok-' || id, md5('tok-' || id) || md5(id::text), '', '', '', '', true, '',"
            " now(), now() FROM auth_user"
        )
        cursor.execute(
            "INSERT INTO devices_topicsubscription (user_id, topic, created_at)"
            " SELECT id, 'warmup', now() FROM auth_user ORDER BY id LIMIT %s",
            [WARMUP_RECIPIENTS],
        )
        # Statistics, as autovacuum would gather them within a minute of such a load: without
        # them the planner walks the audience by scanning every user for each batch.
        cursor.execute("ANALYZE auth_user, devices_device, devices_topicsubscription")


def reset_sends(connection) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE delivery_delivery, delivery_inboxmessage, delivery_notification, delivery_userstream"
            " CASCADE"
        )


GROWTH_TABLES = ("delivery_delivery", "delivery_inboxmessage", "delivery_userstream", "delivery_notification")


def table_bytes(connection) -> int:
    """Tables a send writes, with their indexes and TOAST (pg_total_relation_size)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(pg_total_relation_size(name::regclass)) FROM unnest(%s::text[]) AS name",
            [list(GROWTH_TABLES)],
        )
        return int(cursor.fetchone()[0])


def fanned_out(connection) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM delivery_notification WHERE status NOT IN ('dispatched')")
        return cursor.fetchone()[0] == 0


def count_sent(connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM delivery_delivery WHERE status = 'sent'")
        return cursor.fetchone()[0]


def tasks_executed(app) -> dict[str, int]:
    totals: dict[str, int] = {}
    for stats in (app.control.inspect(timeout=3).stats() or {}).values():
        for name, count in stats.get("total", {}).items():
            totals[name] = totals.get(name, 0) + count
    return totals


def timed_run(worker, connection, recipients: int, start, fan_out: bool = True) -> dict:
    from notifyproject.celery import app

    timeout = max(RUN_TIMEOUT_SECS, recipients / 500)
    reset_sends(connection)
    tasks_before = tasks_executed(app)
    cpu_before = worker.cpu_secs()
    bytes_before = table_bytes(connection)
    began = time.monotonic()
    start()
    fanout_elapsed = None
    if fan_out:
        harness.wait_for(lambda: fanned_out(connection), timeout, interval=0.05)
        fanout_elapsed = time.monotonic() - began
    harness.wait_for(lambda: count_sent(connection) >= recipients, timeout, interval=0.2)
    elapsed = time.monotonic() - began
    harness.wait_for_idle_broker(timeout)  # nothing of this run leaks into the next
    tasks_after = tasks_executed(app)
    tasks = sum(tasks_after.values()) - sum(tasks_before.values())
    return {
        "elapsed": elapsed,
        "fanout_secs": fanout_elapsed,
        "fanout_per_sec": recipients / fanout_elapsed if fan_out else None,
        "bytes_per_recipient": (table_bytes(connection) - bytes_before) / recipients,
        "rows_per_sec": recipients / elapsed,
        "tasks": tasks,
        "deliveries_per_task": recipients / max(tasks, 1),
        "worker_cpu": worker.cpu_secs() - cpu_before,
        "worker_rss_mb": worker.rss_mb(),
        "worker_peak_rss_mb": worker.peak_rss_mb(),
    }


def clarion_start(recipients: int, warmup: bool = False):
    target = {"topic": "warmup"} if warmup else {"broadcast": True}

    def start():
        from django.db import transaction

        from delivery.services import NotificationRequest, Sender, notification_send

        with transaction.atomic():
            notification_send(
                sender=Sender(label="bench"),
                request=NotificationRequest(target=target, title="W9", body="bench", route="push"),
            )

    return start


def baseline_start(recipients: int, warmup: bool = False):
    def start():
        from django.db import connection
        from django.utils import timezone

        from bench.pipeline_baseline import baseline_send_one
        from delivery.models import Notification

        notification = Notification.objects.create(
            sender_label="baseline",
            title="W9",
            body="bench",
            ttl=3600,
            expires_at=timezone.now() + timezone.timedelta(hours=1),
            target={"broadcast": True},
            status="dispatched",
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM devices_device ORDER BY id LIMIT %s", [recipients])
            device_ids = [row[0] for row in cursor.fetchall()]
        for device_id in device_ids:
            baseline_send_one.delay(notification.pk, device_id)

    return start


# name → (worker environment, start a send, whether it fans out)
def variants(args) -> list[tuple[str, dict, object, bool]]:
    chosen = [("clarion", {}, clarion_start, True)]
    if not args.skip_orm:
        chosen.append(("orm", {"CLARION_FANOUT_BULK": 0, "CLARION_FANOUT_BATCH": 500}, clarion_start, True))
    if not args.skip_stock:
        chosen.append(("baseline", {}, baseline_start, False))
    return chosen


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 recipients instead of 100,000")
    parser.add_argument("--recipients", type=int, help="audience size (users with one FCM device each)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-orm", action="store_true", help="leave out the ORM fan-out baseline")
    parser.add_argument(
        "--skip-stock", action="store_true", help="leave out the one-task-per-device baseline"
    )
    parser.add_argument("--retention", action="store_true", help="then time data_retention_sweep's delete")
    parser.add_argument("--database", default=DB_NAME, help="scratch database (dropped and created)")
    args = parser.parse_args(argv)
    recipients = args.recipients or (10_000 if args.quick else 100_000)

    database_url = harness.scratch_database(args.database)
    env = harness.bench_env(database_url, CLARION_PROVIDERS=PROVIDERS, CLARION_SWEEP_INTERVAL=1.0)
    harness.migrate(env)
    harness.setup_django(env)
    from django.db import connection

    load_audience(connection, recipients)
    results = {}
    try:
        for name, overrides, start, fans_out in variants(args):
            harness.purge_redis()
            worker = harness.celery_worker(
                {**env, **{k: str(v) for k, v in overrides.items()}}, include="bench.pipeline_baseline"
            )
            try:
                warmup = min(recipients, WARMUP_RECIPIENTS)
                timed_run(worker, connection, warmup, start(warmup, warmup=True), fans_out)
                results[name] = [
                    timed_run(worker, connection, recipients, start(recipients), fans_out)
                    for _ in range(args.runs)
                ]
            finally:
                worker.stop()
        retention = retention_run(connection) if args.retention else None
    finally:
        connection.close()
        harness.drop_database(args.database)
    report(recipients, results, retention)
    return results


def retention_run(connection) -> dict:
    """The last run's deliveries, all past retention: data_retention_sweep's delete, timed."""
    from django.conf import settings
    from django.utils import timezone

    from delivery import lifecycle

    later = timezone.now() + timedelta(days=settings.CLARION_RETENTION_DAYS, minutes=1)
    began = time.monotonic()
    deleted = lifecycle.deliveries_purge(later)
    elapsed = time.monotonic() - began
    return {"deleted": deleted, "secs": elapsed, "batch_rows": lifecycle.DELETE_BATCH_ROWS}


def report(recipients: int, results: dict, retention: dict | None = None) -> None:
    runs_of = len(next(iter(results.values())))
    print(
        f"\nW9 pipeline: broadcast to {recipients:,} recipients with one device each "
        f"(Celery prefork ×2, null provider; median of {runs_of} runs, min–max)"
    )
    columns = [("fan-out/s", 22), ("rows/s", 22), ("elapsed s", 11), ("Celery tasks", 22)]
    columns += [("deliveries/task", 17), ("worker CPU s", 16), ("B/recipient", 22), ("peak RSS MB", 13)]
    print(f"{'':<10}" + "".join(f"{title:>{width}}" for title, width in columns))
    for name, runs in results.items():

        def col(key, runs=runs):
            values = [r[key] for r in runs if r[key] is not None]
            return harness.summary(values) if values else "—"

        elapsed = statistics.median(r["elapsed"] for r in runs)
        peak = max(r["worker_peak_rss_mb"] for r in runs)
        print(
            f"{name:<10}{col('fanout_per_sec'):>22}{col('rows_per_sec'):>22}{elapsed:>11.1f}{col('tasks'):>22}"
            f"{col('deliveries_per_task'):>17}{col('worker_cpu'):>16}{col('bytes_per_recipient'):>22}{peak:>13.0f}"
        )

    def median(name, key):
        return statistics.median(r[key] for r in results[name])

    if "orm" in results:
        fanout_ratio = median("clarion", "fanout_per_sec") / median("orm", "fanout_per_sec")
        rows_ratio = median("clarion", "rows_per_sec") / median("orm", "rows_per_sec")
        print(f"ratio set-based/ORM fan-out/s: {fanout_ratio:.1f}×; rows/s: {rows_ratio:.1f}×")
    if "baseline" in results:
        stock_ratio = median("clarion", "rows_per_sec") / median("baseline", "rows_per_sec")
        print(f"ratio clarion/baseline rows/s: {stock_ratio:.1f}×")
    accepting_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"peak RSS: worker process {max(r['worker_peak_rss_mb'] for r in results['clarion']):.0f} MB,"
        f" accepting process (notification_send, this one) {accepting_peak:.0f} MB"
    )
    if retention:
        print(
            f"retention: {retention['deleted']:,} deliveries deleted in {retention['secs']:.1f} s,"
            f" {retention['batch_rows']:,} rows per transaction"
        )
    if "orm" in results:
        harness.record(
            "W9 fan-out",
            f"fan-out recipients/s, {recipients:,} recipients",
            median("clarion", "fanout_per_sec"),
            {"ORM rows (the previous path, CLARION_FANOUT_BULK=0)": median("orm", "fanout_per_sec")},
            goal="≥ 25,000/s and ≥ 4.5× the ORM path",
            met=median("clarion", "fanout_per_sec") >= 25_000
            and median("clarion", "fanout_per_sec") >= 4.5 * median("orm", "fanout_per_sec"),
            note=f"{median('clarion', 'bytes_per_recipient'):.0f} bytes per recipient",
        )
    if "baseline" in results:
        per_task = median("clarion", "deliveries_per_task")
        harness.record(
            "W9",
            f"pipeline rows/s, {recipients:,} recipients",
            median("clarion", "rows_per_sec"),
            {"one task per device": median("baseline", "rows_per_sec")},
            goal="≤ 1 task per ≥ 100 deliveries, bulk rows",
            met=per_task >= 99,  # one extra dispatch task per broadcast on top of 100-row batches
            note=f"{per_task:.0f} deliveries per Celery task",
        )


if __name__ == "__main__":
    main()
