"""Webhooks: events/s delivered to a loopback receiver, and W9 with and without a webhook.

1. W9 (bench/pipeline.py's broadcast, null provider) with no webhook: deliveries sent per second.
2. The same broadcast with one webhook subscribed to `delivery.sent`: deliveries sent per second
   (the pipeline's own rate, which the outbox rows must not slow much), and events delivered per
   second end to end (from the send until the receiver has acknowledged every event).
3. The sender alone: N pending events enqueued at once, events/s until all succeeded.
The receiver is an aiohttp server in this process on 127.0.0.1 answering 204 to every POST;
the worker is Celery prefork ×2, as in W9.

    python -m bench.webhooks                     # 10,000 recipients / events
    python -m bench.webhooks --recipients 2000   # smaller
"""

import argparse
import asyncio
import socket
import statistics
import threading
import time

from bench import harness
from bench.pipeline import clarion_start, count_sent, load_audience, reset_sends, tasks_executed, timed_run

DB_NAME = "clarion_bench_webhooks"
PROVIDERS = {"fcm": "bench.null_provider.NullProvider"}
RUN_TIMEOUT_SECS = 900


class Receiver:
    """Counts POSTs on a loopback port; answers 204 at once over kept-alive connections."""

    def __init__(self) -> None:
        self.count = 0
        self.port = 0
        self._ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)

    def _serve(self) -> None:
        from aiohttp import web

        async def hook(request):
            await request.read()
            self.count += 1
            return web.Response(status=204)

        async def main():
            app = web.Application()
            app.router.add_post("/hook", hook)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            self.port = listener.getsockname()[1]
            await web.SockSite(runner, listener).start()
            self._ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def count_succeeded(connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM webhooks_webhookevent WHERE status = 'succeeded'")
        return cursor.fetchone()[0]


def reset_events(connection) -> None:
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE webhooks_webhookattempt, webhooks_webhookevent")


def pipeline_with_webhook(worker, connection, recipients: int, receiver: Receiver) -> dict:
    """W9's timed run, also timing the last event's 2xx (from the same start)."""
    from notifyproject.celery import app

    reset_sends(connection)
    reset_events(connection)
    tasks_before = tasks_executed(app)
    received_before = receiver.count
    cpu_before = worker.cpu_secs()
    began = time.monotonic()
    clarion_start(recipients)()
    harness.wait_for(lambda: count_sent(connection) >= recipients, RUN_TIMEOUT_SECS, interval=0.1)
    sent_elapsed = time.monotonic() - began
    harness.wait_for(lambda: count_succeeded(connection) >= recipients, RUN_TIMEOUT_SECS, interval=0.1)
    events_elapsed = time.monotonic() - began
    harness.wait_for_idle_broker(RUN_TIMEOUT_SECS)
    worker_cpu = worker.cpu_secs() - cpu_before
    tasks = sum(tasks_executed(app).values()) - sum(tasks_before.values())
    return {
        "worker_cpu": worker_cpu,
        "rows_per_sec": recipients / sent_elapsed,
        "events_per_sec": recipients / events_elapsed,
        "tasks": tasks,
        "received": receiver.count - received_before,
    }


def sender_alone(connection, events: int, webhook_id: int, receiver: Receiver) -> dict:
    """`events` pending rows written by PostgreSQL, enqueued in tasks of 100 as a commit would."""
    from delivery.webhooks.events import event_sends_enqueue

    reset_events(connection)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO webhooks_webhookevent (webhook_id, event_type, message_id, body, status, attempts,"
            " next_attempt_at, enqueued_at, last_error, created_at, updated_at)"
            " SELECT %s, 'delivery.sent', 'msg_bench' || g,"
            ' \'{"type":"delivery.sent","timestamp":"2026-01-01T00:00:00Z","data":{"id":\' || g || \'}}\','
            " 'pending', 0, now(), now(), '', now(), now() FROM generate_series(1, %s) g RETURNING id",
            [webhook_id, events],
        )
        ids = [row[0] for row in cursor.fetchall()]
    received_before = receiver.count
    began = time.monotonic()
    event_sends_enqueue(ids)
    harness.wait_for(lambda: count_succeeded(connection) >= events, RUN_TIMEOUT_SECS, interval=0.2)
    elapsed = time.monotonic() - began
    return {
        "elapsed": elapsed,
        "events_per_sec": events / elapsed,
        "received": receiver.count - received_before,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 recipients instead of 10,000")
    parser.add_argument("--recipients", type=int)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    recipients = args.recipients or (2_000 if args.quick else 10_000)

    database_url = harness.scratch_database(DB_NAME)
    env = harness.bench_env(database_url, CLARION_PROVIDERS=PROVIDERS, WEBHOOK_ALLOW_PRIVATE_URLS=1)
    harness.migrate(env)
    harness.setup_django(env)
    from django.db import connection

    load_audience(connection, recipients)
    receiver = Receiver()
    results: dict[str, list[dict]] = {"without": [], "with": [], "sender": []}
    try:
        harness.purge_redis()
        worker = harness.celery_worker(env)
        try:
            timed_run(
                worker, connection, min(recipients, 2_000), clarion_start(min(recipients, 2_000))
            )  # warm-up
            for _ in range(args.runs):
                results["without"].append(
                    timed_run(worker, connection, recipients, clarion_start(recipients))
                )
            from delivery.webhooks.events import SUBSCRIPTIONS_TTL_SECS
            from delivery.webhooks.services import Owner, webhook_create
            from notifyproject.identities.api_keys import api_key_create

            api_key, _ = api_key_create(name="bench", scopes=["send"])
            webhook = webhook_create(owner=Owner(api_key=api_key), url=receiver.url, events=["delivery.sent"])
            # The worker's processes re-read the list of webhooks at most this often.
            time.sleep(SUBSCRIPTIONS_TTL_SECS + 0.5)
            for _ in range(args.runs):
                results["with"].append(pipeline_with_webhook(worker, connection, recipients, receiver))
            for _ in range(args.runs):
                results["sender"].append(sender_alone(connection, recipients, webhook.pk, receiver))
            harness.wait_for_idle_broker(RUN_TIMEOUT_SECS)
        finally:
            worker.stop()
        reset_sends(connection)
    finally:
        connection.close()
        harness.drop_database(DB_NAME)
    report(recipients, results)
    return results


def report(recipients: int, results: dict) -> None:
    def median(name, key):
        return statistics.median(r[key] for r in results[name])

    print(
        f"\nWebhooks: broadcast to {recipients:,} recipients, one webhook on delivery.sent "
        f"(Celery prefork ×2, null provider, loopback receiver; median of {len(results['with'])} run(s))"
    )

    def line(label, name, key):
        print(f"{label:<42}{harness.summary([r[key] for r in results[name]])}")

    line("W9 rows/s without a webhook", "without", "rows_per_sec")
    line("W9 rows/s with delivery.sent subscribed", "with", "rows_per_sec")
    line("Celery tasks, without a webhook", "without", "tasks")
    line("Celery tasks, with the webhook", "with", "tasks")
    line("events/s delivered, send to last 2xx", "with", "events_per_sec")
    line("events/s delivered, sender alone", "sender", "events_per_sec")
    line("worker CPU s, without a webhook", "without", "worker_cpu")
    line("worker CPU s, with the webhook", "with", "worker_cpu")
    extra = (median("with", "worker_cpu") - median("without", "worker_cpu")) / recipients * 1e6
    print(f"{'worker CPU per event (with − without)':<42}{extra:,.0f} µs")
    line("POSTs received, pipeline run", "with", "received")
    line("POSTs received, sender alone", "sender", "received")
    slowdown = median("with", "rows_per_sec") / median("without", "rows_per_sec")
    print(f"W9 with / without a webhook: {slowdown:.2f}×")
    harness.record(
        "W9+webhook",
        f"pipeline rows/s with a delivery.sent webhook, {recipients:,} recipients",
        median("with", "rows_per_sec"),
        {"no webhook": median("without", "rows_per_sec")},
        goal="not much slower than without",
        met=slowdown >= 0.7,
        note=f"{median('with', 'events_per_sec'):,.0f} events/s delivered end to end; "
        f"sender alone {median('sender', 'events_per_sec'):,.0f}/s",
    )


if __name__ == "__main__":
    main()
