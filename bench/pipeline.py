"""W9 — the pipeline: API → rows → queue → worker → provider, for a broadcast to N recipients.

Clarion: one send, fanned out in batches (one transaction per 500 users), pushed by tasks of
100 deliveries. Baseline, in the same run and on the same data: stock Django + Celery with
one task per device and one save() per delivery row (the django-push-notifications /
fcm-django pattern). Both use the same Celery worker settings and a provider that accepts
everything at once, so the figures are the pipelines' own cost.

    python -m bench.pipeline            # 100,000 recipients
    python -m bench.pipeline --quick    # 10,000 recipients
"""

import argparse
import statistics
import time

from bench import harness

DB_NAME = "clarion_bench_pipeline"
PROVIDERS = {"fcm": "bench.null_provider.NullProvider"}
RUN_TIMEOUT_SECS = 900
WARMUP_RECIPIENTS = 2_000  # subscribed to the topic "warmup", so a warm-up sends to them alone


def load_audience(connection, recipients: int) -> None:
    """N users with one FCM device each, written by PostgreSQL itself in two statements."""
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


def reset_sends(connection) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE delivery_delivery, delivery_inboxmessage, delivery_notification, delivery_userstream"
            " CASCADE"
        )


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


def timed_run(worker, connection, recipients: int, start) -> dict:
    from notifyproject.celery import app

    reset_sends(connection)
    tasks_before = tasks_executed(app)
    cpu_before = worker.cpu_secs()
    began = time.monotonic()
    start()
    harness.wait_for(lambda: count_sent(connection) >= recipients, RUN_TIMEOUT_SECS, interval=0.2)
    elapsed = time.monotonic() - began
    harness.wait_for_idle_broker(RUN_TIMEOUT_SECS)  # nothing of this run leaks into the next
    tasks_after = tasks_executed(app)
    tasks = sum(tasks_after.values()) - sum(tasks_before.values())
    return {
        "elapsed": elapsed,
        "rows_per_sec": recipients / elapsed,
        "tasks": tasks,
        "deliveries_per_task": recipients / max(tasks, 1),
        "worker_cpu": worker.cpu_secs() - cpu_before,
        "worker_rss_mb": worker.rss_mb(),
    }


def clarion_start(recipients: int):
    def start():
        from django.db import transaction

        from delivery.services import NotificationRequest, Sender, notification_send

        with transaction.atomic():
            notification_send(
                sender=Sender(label="bench"),
                request=NotificationRequest(
                    target={"broadcast": True}, title="W9", body="bench", route="push"
                ),
            )

    return start


def baseline_start(recipients: int):
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
            cursor.execute("SELECT id FROM devices_device ORDER BY id")
            device_ids = [row[0] for row in cursor.fetchall()]
        for device_id in device_ids:
            baseline_send_one.delay(notification.pk, device_id)

    return start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 recipients instead of 100,000")
    parser.add_argument("--recipients", type=int)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    recipients = args.recipients or (10_000 if args.quick else 100_000)

    database_url = harness.scratch_database(DB_NAME)
    env = harness.bench_env(database_url, CLARION_PROVIDERS=PROVIDERS, CLARION_SWEEP_INTERVAL=1.0)
    harness.migrate(env)
    harness.setup_django(env)
    from django.db import connection

    load_audience(connection, recipients)
    results = {}
    try:
        for name, start in (("clarion", clarion_start), ("baseline", baseline_start)):
            harness.purge_redis()
            worker = harness.celery_worker(env, include="bench.pipeline_baseline")
            try:
                timed_run(
                    worker, connection, min(recipients, 2_000), start(min(recipients, 2_000))
                )  # warm-up
                load_audience_rows = recipients
                runs = [
                    timed_run(worker, connection, load_audience_rows, start(recipients))
                    for _ in range(args.runs)
                ]
            finally:
                worker.stop()
            results[name] = runs
    finally:
        connection.close()
        harness.drop_database(DB_NAME)
    report(recipients, results)
    return results


def report(recipients: int, results: dict) -> None:
    print(
        f"\nW9 pipeline: broadcast to {recipients:,} recipients with one device each "
        f"(Celery prefork ×2, null provider; median of {len(results['clarion'])} runs, min–max)"
    )
    columns = [("rows/s", 22), ("elapsed s", 12), ("Celery tasks", 24)]
    columns += [("deliveries/task", 17), ("worker CPU s", 14)]
    print(f"{'':<10}" + "".join(f"{title:>{width}}" for title, width in columns))
    for name, runs in results.items():

        def col(key, runs=runs):
            return harness.summary([r[key] for r in runs])

        elapsed = statistics.median(r["elapsed"] for r in runs)
        print(
            f"{name:<10}{col('rows_per_sec'):>22}{elapsed:>12.1f}{col('tasks'):>24}"
            f"{col('deliveries_per_task'):>17}{col('worker_cpu'):>14}"
        )
    ratio = statistics.median(r["rows_per_sec"] for r in results["clarion"]) / statistics.median(
        r["rows_per_sec"] for r in results["baseline"]
    )
    print(f"ratio clarion/baseline rows/s: {ratio:.1f}×")
    per_task = statistics.median(r["deliveries_per_task"] for r in results["clarion"])
    harness.record(
        "W9",
        f"pipeline rows/s, {recipients:,} recipients",
        statistics.median(r["rows_per_sec"] for r in results["clarion"]),
        {"one task per device": statistics.median(r["rows_per_sec"] for r in results["baseline"])},
        goal="≤ 1 task per ≥ 100 deliveries, bulk rows",
        met=per_task >= 99,  # one extra dispatch task per broadcast on top of 100-row batches
        note=f"{per_task:.0f} deliveries per Celery task",
    )


if __name__ == "__main__":
    main()
