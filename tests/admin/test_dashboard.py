"""The dashboard: per-channel sends and deliveries, failure rates, latency percentiles, presence."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from delivery.models import Delivery, Notification
from notifyproject.console import dashboard
from tests.delivery.factories import send, users

pytestmark = pytest.mark.django_db

URL = "/admin/delivery/deliverydashboard/"
RECENT = timedelta(minutes=5)


def add_deliveries(users, specs, now) -> None:
    """specs: (channel, status, age, seconds to sent, seconds to delivered, error); one user per row."""
    notification = send({"users": [users[0].username]}, title="t")
    rows = Delivery.objects.bulk_create(
        [
            Delivery(notification=notification, user=user, channel=c, status=s, error=e)
            for user, (c, s, _, _, _, e) in zip(users, specs, strict=False)
        ]
    )
    for delivery, (_, _, age, to_sent, to_delivered, _) in zip(rows, specs, strict=True):
        created = now - age
        Delivery.objects.filter(pk=delivery.pk).update(
            created_at=created,
            sent_at=None if to_sent is None else created + timedelta(seconds=to_sent),
            delivered_at=None if to_delivered is None else created + timedelta(seconds=to_delivered),
        )


@pytest.fixture
def traffic():
    """Known traffic: most of it five minutes ago, a little three days ago, and one row ten days ago."""
    now = timezone.now()
    add_deliveries(
        users(25, "traffic"),
        [
            *(("realtime", "delivered", RECENT, 0.1 * i, 0.5 * i, "") for i in range(1, 11)),
            *(("fcm", "sent", RECENT, float(i), None, "") for i in range(1, 7)),
            ("fcm", "failed", RECENT, None, None, "UNREGISTERED: token gone"),
            ("fcm", "failed", RECENT, None, None, "UNREGISTERED: token gone"),
            ("apns", "failed", RECENT, None, None, "BadDeviceToken"),
            ("webpush", "skipped", RECENT, None, None, "Web Push is not configured"),
            ("fcm", "sent", timedelta(days=3), 2.0, None, ""),
            ("fcm", "failed", timedelta(days=3), None, None, "QUOTA_EXCEEDED"),
            ("fcm", "sent", timedelta(days=10), 2.0, None, ""),
        ],
        now,
    )
    Notification.objects.update(created_at=now - RECENT)
    return now


class TestFigures:
    def test_counts_failure_rates_and_errors_per_window(self, traffic):
        day, week = dashboard.dashboard_stats(traffic)
        assert {c: s.total for c, s in day.channels.items()} == {
            "realtime": 10,
            "fcm": 8,
            "apns": 1,
            "webpush": 1,
        }
        assert {c: s.total for c, s in week.channels.items()} == {
            "realtime": 10,
            "fcm": 10,
            "apns": 1,
            "webpush": 1,
        }
        assert day.channels["fcm"].failure_rate == pytest.approx(2 / 8)
        assert week.channels["fcm"].failure_rate == pytest.approx(3 / 10)
        assert day.channels["realtime"].failure_rate == 0
        assert day.channels["webpush"].failure_rate is None  # skipped is not a try
        assert day.top_errors == [("fcm", "UNREGISTERED: token gone", 2), ("apns", "BadDeviceToken", 1)]
        assert ("fcm", "QUOTA_EXCEEDED", 1) in week.top_errors
        assert day.total_sends == 1 and len(day.buckets) == 24 and len(week.buckets) == 7
        assert sum(counts["fcm"] for counts in day.deliveries.values()) == 8

    def test_latency_percentiles_match_percentile_cont(self, traffic):
        day, _ = dashboard.dashboard_stats(traffic)
        realtime, fcm = day.channels["realtime"], day.channels["fcm"]
        sent = [0.1 * i for i in range(1, 11)]
        assert realtime.sent_p50 == pytest.approx(dashboard.percentile_cont(sent, 0.5)) == pytest.approx(0.55)
        assert realtime.sent_p95 == pytest.approx(0.955)
        assert realtime.delivered_p50 == pytest.approx(2.75) and realtime.delivered_p95 == pytest.approx(
            4.775
        )
        assert fcm.sent_p50 == pytest.approx(3.5) and fcm.delivered_p50 is None
        assert (realtime.latency_sample, fcm.latency_sample) == (10, 6)

    def test_the_sqlite_fallback_computes_the_same_percentiles(self, traffic):
        windows = {"recent": traffic - timedelta(hours=1), "week": traffic - timedelta(days=7)}
        in_sql = dashboard._latency_postgresql(windows)
        in_python = dashboard._latency_in_python(windows)
        assert in_sql["recent"].keys() == {"realtime", "fcm"}
        assert in_sql["week"]["fcm"][4] == 7  # the three-day-old row is in the week only
        for key in windows:
            assert in_sql[key].keys() == in_python[key].keys()
            for channel, row in in_sql[key].items():
                assert row == pytest.approx(in_python[key][channel]), (key, channel)

    def test_the_latency_sample_is_bounded(self, traffic, monkeypatch):
        monkeypatch.setattr(dashboard, "LATENCY_SAMPLE_ROWS", 3)
        day, _ = dashboard.dashboard_stats(traffic)
        assert sum(stats.latency_sample for stats in day.channels.values()) == 3


class TestPage:
    def test_it_renders_charts_and_the_numbers_beside_them(self, staff_client, traffic):
        page = staff_client.get(URL).content.decode()
        assert page.count('<svg class="clarion-chart"') == 10  # five charts per window
        assert "<title>Deliveries per channel, last 24 hours</title>" in page
        assert '<tr data-channel="fcm"><th scope="row">fcm</th><td>8</td>' in page
        assert "25.0%" in page and "30.0%" in page  # fcm failure rate, 24 h and 7 days
        assert "UNREGISTERED: token gone" in page
        assert "550 ms / 955 ms" in page  # realtime queued → sent, p50 / p95
        assert "cdn" not in page.lower() and "<script" not in page.split('id="content-main"')[1]

    def test_connected_users_come_from_presence(self, staff_client, settings):
        import time

        import redis

        from realtime.presence import KEY_PREFIX

        client = redis.Redis.from_url(settings.REDIS_URL)
        for user_id in (101, 102, 103):
            client.zadd(f"{KEY_PREFIX}{user_id}", {"node-a": time.time() + 60})
        client.zadd(f"{KEY_PREFIX}104", {"node-a": time.time() - 1})  # expired: offline
        assert dashboard.connected_users_now() == 3
        page = staff_client.get(URL).content.decode().replace("\n", "").replace("  ", "")
        assert 'Connected users now</span><span class="clarion-tile-value">3</span>' in page

    def test_a_presence_outage_shows_n_a(self, staff_client, monkeypatch):
        from realtime import presence

        monkeypatch.setattr(
            presence, "_presence", presence.RedisPresence("redis://127.0.0.1:1/0")
        )  # closed port
        assert dashboard.connected_users_now() is None
        page = staff_client.get(URL).content.decode()
        assert '<span class="clarion-tile-value">n/a</span>' in page.replace("\n", "").replace("  ", "")

    def test_it_needs_the_dashboard_view_permission(self, viewer_client, sender_client):
        assert viewer_client.get(URL).status_code == 200
        assert sender_client.get(URL).status_code == 403

    def test_it_costs_the_same_queries_for_few_and_many_rows(self, staff_client, make_user):
        now = timezone.now()
        user = make_user("bulk")
        spec = ("fcm", "sent", RECENT, 1.0, None, "")
        add_deliveries([user] * 10, [spec] * 10, now)

        def queries() -> int:
            with CaptureQueriesContext(connection) as captured:
                assert staff_client.get(URL).status_code == 200
            return len(captured)

        few = queries()
        notification = Notification.objects.get()
        Delivery.objects.bulk_create(
            [
                Delivery(notification=notification, user=user, channel="fcm", status="failed")
                for _ in range(990)
            ]
        )
        assert queries() == few
