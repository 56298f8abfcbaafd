"""The push send task's own CPU per message: `sending.deliveries_send` with a provider that
answers at once (bench/null_provider.py), in this process, so no network, worker or fake counts.

What is measured is the pipeline around a provider: claiming the deliveries, reading their
devices and notification, building the targets, recording outcomes, metrics and webhook events.
Each run resets the same deliveries to `queued` and sends them in calls of `--per-task` ids.

    python -m bench.send_cpu                         # 5,000 deliveries, 100 and 250 per call
    python -m bench.send_cpu --per-task 250 --runs 5
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta

from bench import harness

DB_NAME = os.environ.get("BENCH_SEND_CPU_DB", "clarion_bench_send_cpu")
PROVIDERS = {"fcm": "bench.null_provider.NullProvider"}


def load(cursor, deliveries: int, notification_id: int) -> None:
    """`deliveries` users with one FCM device each, and one queued delivery per device."""
    cursor.execute(
        "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,"
        " is_staff, is_active, date_joined)"
        " SELECT '!', false, 'u' || g, '', '', '', false, true, now() FROM generate_series(1, %s) g",
        [deliveries],
    )
    cursor.execute(
        "INSERT INTO devices_device (user_id, platform, token, token_digest, name, environment, p256dh,"
        " auth, active, deactivated_reason, created_at, last_seen_at)"
        " SELECT id, 'fcm', 'fcm-token-' || id, md5(id::text), '', '', '', '', true, '', now(), now()"
        " FROM auth_user"
    )
    cursor.execute(
        "INSERT INTO delivery_delivery (notification_id, user_id, device_id, channel, status, attempts,"
        " error, provider_message_id, created_at, updated_at, enqueued_at)"
        " SELECT %s, user_id, id, 'fcm', 'queued', 0, '', '', now(), now(), now() FROM devices_device",
        [notification_id],
    )
    cursor.execute("ANALYZE")


def run(ids: list[int], per_task: int) -> float:
    """CPU µs per message of sending every id, `per_task` ids per call."""
    from delivery import sending
    from delivery.models import Delivery

    Delivery.objects.update(status="queued", attempts=0, claim=None, sent_at=None, provider_message_id="")
    started = time.process_time()
    for start in range(0, len(ids), per_task):
        sending.deliveries_send(ids[start : start + per_task])
    cpu = time.process_time() - started
    assert Delivery.objects.filter(status="sent").count() == len(ids)
    return cpu / len(ids) * 1e6


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=5000)
    parser.add_argument("--per-task", default="100,250", help="comma-separated ids per call")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    env = harness.bench_env(harness.scratch_database(DB_NAME), CLARION_PROVIDERS=PROVIDERS)
    harness.migrate(env)
    harness.setup_django(env)
    from django.db import connection
    from django.utils import timezone

    from delivery.models import Delivery, Notification

    try:
        notification = Notification.objects.create(
            sender_label="bench",
            title="Send CPU",
            body="One notification, many deliveries",
            data={"bench": "send_cpu"},
            ttl=3600,
            expires_at=timezone.now() + timedelta(hours=1),
            target={"topic": "bench"},
            status="dispatched",
        )
        with connection.cursor() as cursor:
            load(cursor, args.deliveries, notification.pk)
        ids = list(Delivery.objects.order_by("pk").values_list("pk", flat=True))
        print(f"deliveries_send CPU µs/msg, null provider, N = {len(ids):,}; median of {args.runs} (min–max)")
        for per_task in (int(n) for n in args.per_task.split(",")):
            run(ids, per_task)  # warm-up
            figures = [run(ids, per_task) for _ in range(args.runs)]
            print(f"  {per_task:>5} per task: {harness.summary(figures)}", flush=True)
    finally:
        connection.close()
        harness.drop_database(DB_NAME)


if __name__ == "__main__":
    main()
