"""The admin over a big delivery log: `python -m bench.admin_bench` from the project root.

Creates a scratch PostgreSQL database (clarion_bench on 127.0.0.1:5432, user postgres; dropped
at the end unless --keep), loads 100,000 users with a device each, 1,001 notifications and
1,000,000 deliveries with generate_series (one INSERT … SELECT, in created_at order as a real
log grows), then times pages through Django's test client: the delivery log, each filter and
search, a notification's page (one with 100,000 deliveries) and the dashboard. Each figure is
the median of --runs runs after one warm-up, next to a stock ModelAdmin on the same data
(bench/admin_baseline.py). Results go to stdout; docs/admin.md records them.
"""

import argparse
import os
import statistics
import sys
import time
import warnings
from urllib.parse import urlencode

from bench import harness

DB_NAME = "clarion_bench"
SERVER = "postgres://postgres@127.0.0.1:5432"
USERS = 100_000
NORMAL_NOTIFICATIONS = 1_000
DELIVERIES_PER_NOTIFICATION = 900
BIG_NOTIFICATION_DELIVERIES = 100_000  # notification 1001, sent mid-week
GOAL_SECS = 1.0
BIG, NORMAL, PER = BIG_NOTIFICATION_DELIVERIES, NORMAL_NOTIFICATIONS, DELIVERIES_PER_NOTIFICATION
# A stock inline renders one form per delivery: on the 100,000-delivery notification that
# takes minutes, so the baseline is measured once there, and only with --baseline-big.


def configure_django() -> None:
    os.environ.update(
        DATABASE_URL=f"{SERVER}/{DB_NAME}",
        SECRET_KEY="clarion-bench",
        DEBUG="0",
        ALLOWED_HOSTS="testserver",
        CLARION_EMBEDDED_WORKER="0",
        DJANGO_SETTINGS_MODULE="notifyproject.settings",
    )
    os.environ.pop("REDIS_URL", None)  # nothing is sent; presence falls back to in-process
    import django

    django.setup()


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")


def drop_database() -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


LOAD_SQL = [
    # Users and one device each (platform by id; about 5% inactive; last seen over 90 days).
    f"""
    INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,
                           is_active, date_joined)
    SELECT '', false, 'user' || g, '', '', '', false, true, now() - interval '90 days'
    FROM generate_series(1, {USERS}) g
    """,
    f"""
    INSERT INTO devices_device (user_id, platform, token, token_digest, name, environment, p256dh, auth,
                                active, deactivated_reason, created_at, last_seen_at)
    SELECT g, (ARRAY['fcm', 'apns', 'webpush'])[g % 3 + 1], 'tok-' || g,
           encode(sha256(convert_to('tok-' || g, 'UTF8')), 'hex'), 'phone', '', '', '',
           g % 20 <> 0, '', now() - interval '90 days', now() - (g % 90) * interval '1 day'
    FROM generate_series(1, {USERS}) g
    """,
    # 1,000 notifications spread over the last 7 days, and a big broadcast in the middle.
    f"""
    INSERT INTO delivery_notification (sender_label, title, body, data, url, icon, priority, ttl, expires_at,
        collapse_key, route, target, unknown, recipients, status, fanout_cursor, created_at, updated_at,
        dispatched_at)
    SELECT 'key:bench', 'Notification ' || n, 'Something happened', '{{}}', '', '', 'normal', 86400,
           ts + interval '1 day', '', 'auto', '{{"topic": "news"}}', '{{}}',
           CASE WHEN n > {NORMAL_NOTIFICATIONS} THEN {BIG_NOTIFICATION_DELIVERIES}
                ELSE {DELIVERIES_PER_NOTIFICATION} END,
           'dispatched', 0, ts, ts, ts
    FROM (SELECT n, CASE WHEN n > {NORMAL_NOTIFICATIONS} THEN now() - interval '84 hours'
                         ELSE now() - interval '7 days' + n * interval '7 days' / {NORMAL_NOTIFICATIONS + 1}
                    END AS ts
          FROM generate_series(1, {NORMAL_NOTIFICATIONS + 1}) n) s
    """,
    # 1,000,000 deliveries: half realtime, half on the user's device; 55% delivered, 30% sent,
    # 5% failed, 3% expired, 3% cancelled, 2% skipped, 2% queued; errors on the unhappy ones.
    f"""
    INSERT INTO delivery_delivery (notification_id, user_id, device_id, channel, status, attempts, error,
        provider_message_id, created_at, updated_at, sent_at, delivered_at)
    SELECT notification_id, user_id, device_id, channel, status, attempts, error,
           CASE WHEN status IN ('sent', 'delivered') AND channel <> 'realtime'
                THEN 'projects/bench/messages/' || seq ELSE '' END,
           created_at, created_at + latency * 3,
           CASE WHEN status IN ('sent', 'delivered') THEN created_at + latency END,
           CASE WHEN status = 'delivered' THEN created_at + latency * 3 END
    FROM (
        SELECT seq, n AS notification_id, user_id,
               CASE WHEN i % 2 = 0 THEN NULL ELSE user_id END AS device_id,
               CASE WHEN i % 2 = 0 THEN 'realtime' ELSE (ARRAY['fcm', 'apns', 'webpush'])[user_id % 3 + 1] END
                   AS channel,
               CASE WHEN r < 55 THEN 'delivered' WHEN r < 85 THEN 'sent' WHEN r < 90 THEN 'failed'
                    WHEN r < 93 THEN 'expired' WHEN r < 96 THEN 'cancelled' WHEN r < 98 THEN 'skipped'
                    ELSE 'queued' END AS status,
               CASE WHEN r BETWEEN 85 AND 89 THEN 5 ELSE 1 END AS attempts,
               CASE WHEN r BETWEEN 85 AND 89 THEN
                        (ARRAY['UNREGISTERED: token gone',
                               'INVALID_ARGUMENT: bad payload',
                               'gave up after 5 attempts: UNAVAILABLE',
                               'QUOTA_EXCEEDED: slow down'])[seq % 4 + 1]
                    WHEN r BETWEEN 90 AND 92 THEN 'ttl passed before it was delivered'
                    WHEN r BETWEEN 93 AND 95 THEN 'cancelled by the sender'
                    WHEN r BETWEEN 96 AND 97 THEN 'the device is inactive: UNREGISTERED'
                    ELSE '' END AS error,
               nt.created_at + (i % 600) * interval '200 milliseconds' AS created_at,
               ((seq * 7919) % 3000 + 20) * interval '1 millisecond' AS latency
        FROM (
            SELECT seq,
                   CASE WHEN seq <= {BIG} THEN {NORMAL + 1} ELSE (seq - {BIG} - 1) / {PER} + 1 END AS n,
                   CASE WHEN seq <= {BIG} THEN seq ELSE (seq - {BIG} - 1) % {PER} + 1 END AS i,
                   (seq * 7919) % 100 AS r
            FROM generate_series(1::bigint, {BIG + NORMAL * PER}) seq
        ) s
        JOIN delivery_notification nt ON nt.id = s.n
        CROSS JOIN LATERAL (SELECT (s.i * 37 + s.n * 101) % {USERS} + 1 AS user_id) u
    ) d
    ORDER BY created_at
    """,
]


def load() -> float:
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        for sql in LOAD_SQL:
            cursor.execute(sql)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def cases(big: int, normal: int) -> list[tuple[str, str, str | None]]:
    """(name, our URL, the stock admin's URL for the same question)."""
    log, stock = "/admin/delivery/delivery/", "/baseline-admin/delivery/delivery/"
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    today = time.strftime("%Y-%m-%d", time.gmtime())

    def q(base, **params):
        return f"{base}?{urlencode(params)}" if params else base

    return [
        ("delivery log", log, stock),
        ("  page 50", q(log, p=50), q(stock, p=50)),
        ("  status = failed", q(log, status__exact="failed"), q(stock, status__exact="failed")),
        ("  status = delivered", q(log, status__exact="delivered"), q(stock, status__exact="delivered")),
        ("  channel = apns", q(log, channel__exact="apns"), q(stock, channel__exact="apns")),
        (
            "  created yesterday",
            q(log, created_at_from=yesterday, created_at_to=yesterday),
            q(stock, created_at__gte=yesterday, created_at__lt=today),
        ),
        ("  has an error", q(log, has_error="yes"), q(stock, error__gt="")),
        ("  error text 'quota'", q(log, error_contains="quota"), q(stock, error__icontains="quota")),
        (
            "  failed + fcm + yesterday",
            q(
                log,
                status__exact="failed",
                channel__exact="fcm",
                created_at_from=yesterday,
                created_at_to=yesterday,
            ),
            q(
                stock,
                status__exact="failed",
                channel__exact="fcm",
                created_at__gte=yesterday,
                created_at__lt=today,
            ),
        ),
        (
            "  notification (100k)",
            q(log, notification=big),
            q(stock, notification__id__exact=big),
        ),
        ("  search user", q(log, q="user4242"), q(stock, q="user4242")),
        ("  search token", q(log, q="tok-4243"), q(stock, q="tok-4243")),
        ("notification page (100k)", f"/admin/delivery/notification/{big}/change/", None),
        (
            "notification page (900)",
            f"/admin/delivery/notification/{normal}/change/",
            f"/baseline-admin/delivery/notification/{normal}/change/",
        ),
        ("notifications list", "/admin/delivery/notification/", "/baseline-admin/delivery/notification/"),
        ("dashboard", "/admin/delivery/deliverydashboard/", None),
    ]


def measure(client, url: str, runs: int) -> tuple[float, int]:
    """Median seconds over `runs` after a warm-up, and the queries one request makes."""
    from django.db import connection

    executed = []

    def count(execute, sql, params, many, context):
        executed.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        response = client.get(url)
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}")
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        client.get(url)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), len(executed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per page (median reported)")
    parser.add_argument("--keep", action="store_true", help=f"keep the {DB_NAME} database afterwards")
    parser.add_argument(
        "--baseline-big",
        action="store_true",
        help="also time the stock inline on the 100k notification (slow)",
    )
    args = parser.parse_args()
    # The stock admin's date filter is given bare dates, as its own sidebar links would be.
    warnings.filterwarnings("ignore", message=r"DateTimeField .* received a naive datetime")

    recreate_database()
    configure_django()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import override_settings

    try:
        call_command("migrate", verbosity=0)
        load_secs = load()
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM delivery_delivery")
            rows = cursor.fetchone()[0]
        print(f"loaded {rows:,} deliveries, {USERS:,} users and devices in {load_secs:.1f} s (PostgreSQL)")
        staff = get_user_model().objects.create_superuser("bench", password="unused-bench-password")
        client = Client()
        client.force_login(staff)
        big, normal = NORMAL_NOTIFICATIONS + 1, NORMAL_NOTIFICATIONS // 2

        header = f"{'page':<30} {'Clarion':>10} {'queries':>8}   {'stock admin':>12} {'queries':>8}"
        print(f"\nmedian of {args.runs} runs, ms\n{header}\n{'-' * len(header)}")
        slowest = stock_slowest = 0.0
        with override_settings(ROOT_URLCONF="bench.admin_baseline"):
            for name, ours, stock in cases(big, normal):
                ours_secs, ours_queries = measure(client, ours, args.runs)
                slowest = max(slowest, ours_secs) if name != "dashboard" else slowest
                if stock is None and name.startswith("notification page") and args.baseline_big:
                    stock = f"/baseline-admin/delivery/notification/{big}/change/"
                    stock_secs, stock_queries = measure(client, stock, 1)
                    stock_slowest = max(stock_slowest, stock_secs)
                    stock_text = f"{stock_secs * 1000:>12.0f} {stock_queries:>8}"
                elif stock is None:
                    stock_text = f"{'–':>12} {'':>8}"
                else:
                    stock_secs, stock_queries = measure(client, stock, args.runs)
                    stock_slowest = max(stock_slowest, stock_secs)
                    stock_text = f"{stock_secs * 1000:>12.0f} {stock_queries:>8}"
                print(f"{name:<30} {ours_secs * 1000:>10.0f} {ours_queries:>8}   {stock_text}", flush=True)
        verdict = "within" if slowest < GOAL_SECS else "OVER"
        print(f"\nslowest delivery-log / notification page: {slowest * 1000:.0f} ms ({verdict} the 1 s goal)")
        harness.record(
            "admin",
            f"slowest page ms, {rows:,} deliveries",
            slowest * 1000,
            {"stock ModelAdmin, slowest": stock_slowest * 1000} if stock_slowest else {},
            goal="every page < 1 s",
            met=slowest < GOAL_SECS,
            higher_is_better=False,
        )
    finally:
        if args.keep:
            print(f"kept database {DB_NAME}")
        else:
            drop_database()


if __name__ == "__main__":
    sys.exit(main())
