"""The delivery log: filters, search, counts that never scan the table, a bounded number of queries."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from delivery.models import Delivery
from notifyproject.console import lists as admin_lists
from tests.delivery.factories import device, send

pytestmark = pytest.mark.django_db

LOG_URL = "/admin/delivery/delivery/"


def listed(client, **params) -> set[int]:
    response = client.get(LOG_URL, params)
    assert response.status_code == 200, response.content[:500]
    return {delivery.pk for delivery in response.context["cl"].result_list}


@pytest.fixture
def log(make_user):
    """A small log with one row of each interesting kind."""
    alice, bob = make_user("alice"), make_user("bob")
    phone = device(alice, "fcm", token="fcm-token-alice")
    browser = device(bob, "webpush", token="https://push.example.net/send/abc123")
    first = send({"users": ["alice", "bob"]}, title="first")
    second = send({"users": ["alice"]}, title="second")
    now = timezone.now()
    rows = {
        "alice_fcm_sent": Delivery(
            notification=first,
            user=alice,
            device=phone,
            channel="fcm",
            status="sent",
            provider_message_id="projects/p/messages/1",
        ),
        "bob_webpush_failed": Delivery(
            notification=first,
            user=bob,
            device=browser,
            channel="webpush",
            status="failed",
            error="410 Gone: subscription expired",
        ),
        "alice_realtime_delivered": Delivery(
            notification=second, user=alice, channel="realtime", status="delivered"
        ),
        "alice_fcm_skipped": Delivery(
            notification=second,
            user=alice,
            device=phone,
            channel="fcm",
            status="skipped",
            error="FCM is not configured",
        ),
    }
    Delivery.objects.bulk_create(rows.values())
    # One row from last week.
    Delivery.objects.filter(pk=rows["alice_fcm_skipped"].pk).update(created_at=now - timedelta(days=7))
    ids = {name: row.pk for name, row in rows.items()}
    ids["first"], ids["second"], ids["phone"] = first.pk, second.pk, phone.pk
    return ids


class TestFilters:
    def test_by_status_and_channel(self, staff_client, log):
        assert listed(staff_client, status__exact="failed") == {log["bob_webpush_failed"]}
        assert listed(staff_client, channel__exact="fcm") == {log["alice_fcm_sent"], log["alice_fcm_skipped"]}
        assert listed(staff_client, channel__exact="fcm", status__exact="sent") == {log["alice_fcm_sent"]}

    def test_by_error(self, staff_client, log):
        with_error = {log["bob_webpush_failed"], log["alice_fcm_skipped"]}
        assert listed(staff_client, has_error="yes") == with_error
        assert listed(staff_client, has_error="no") == {
            log["alice_fcm_sent"],
            log["alice_realtime_delivered"],
        }
        assert listed(staff_client, error_contains="410 GONE") == {log["bob_webpush_failed"]}

    def test_by_date_range(self, staff_client, log):
        now = timezone.now()
        recent = {log["alice_fcm_sent"], log["bob_webpush_failed"], log["alice_realtime_delivered"]}
        assert (
            listed(staff_client, created_at_from=(now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
            == recent
        )
        week_ago = (now - timedelta(days=7)).date().isoformat()
        assert listed(staff_client, created_at_from=week_ago, created_at_to=week_ago) == {
            log["alice_fcm_skipped"]
        }
        assert staff_client.get(LOG_URL, {"created_at_from": "yesterday"}).status_code == 302  # ?e=1

    def test_by_notification_and_device_as_linked_from_their_pages(self, staff_client, log):
        assert listed(staff_client, notification=log["second"]) == {
            log["alice_realtime_delivered"],
            log["alice_fcm_skipped"],
        }
        assert listed(staff_client, device=log["phone"]) == {log["alice_fcm_sent"], log["alice_fcm_skipped"]}
        page = staff_client.get(LOG_URL, {"notification": log["second"]}).content.decode()
        assert f"#{log['second']} ✕" in page

    def test_filters_combine(self, staff_client, log):
        assert listed(staff_client, notification=log["first"], has_error="yes", channel__exact="webpush") == {
            log["bob_webpush_failed"]
        }


class TestSearch:
    def test_by_username_token_endpoint_or_id(self, staff_client, log):
        assert listed(staff_client, q="bob") == {log["bob_webpush_failed"]}
        assert listed(staff_client, q="fcm-token-alice") == {log["alice_fcm_sent"], log["alice_fcm_skipped"]}
        assert listed(staff_client, q="https://push.example.net/send/abc123") == {log["bob_webpush_failed"]}
        assert listed(staff_client, q=str(log["alice_realtime_delivered"])) == {
            log["alice_realtime_delivered"]
        }
        assert listed(staff_client, q="nobody") == set()

    def test_search_and_filters_together(self, staff_client, log):
        assert listed(staff_client, q="alice", channel__exact="realtime") == {log["alice_realtime_delivered"]}


class TestDisplay:
    def test_provider_message_id_and_error_are_shown_plainly(self, staff_client, log):
        page = staff_client.get(LOG_URL).content.decode()
        error = "410 Gone: subscription expired"
        assert f'<span class="clarion-error" title="{error}">{error}</span>' in page
        detail = staff_client.get(f"{LOG_URL}{log['alice_fcm_sent']}/change/").content.decode()
        assert "projects/p/messages/1" in detail  # on the delivery's page; the list has no room for it

    def test_the_log_is_read_only(self, staff_client, log):
        assert staff_client.get(f"{LOG_URL}add/").status_code == 403
        detail = staff_client.get(f"{LOG_URL}{log['bob_webpush_failed']}/change/")
        assert detail.status_code == 200 and b'name="_save"' not in detail.content
        assert b"410 Gone: subscription expired" in detail.content


class TestCounts:
    def test_a_filtered_count_stops_at_the_cap(self, staff_client, delivery_rows, monkeypatch):
        monkeypatch.setattr(admin_lists, "COUNT_CAP", 5)
        delivery_rows(12, status="sent")
        page = staff_client.get(LOG_URL, {"status__exact": "sent"}).content.decode()
        assert "more than 5 deliveries" in page

    def test_an_unfiltered_count_is_postgresqls_estimate(self, staff_client, delivery_rows, monkeypatch):
        monkeypatch.setattr(admin_lists, "ESTIMATE_MIN_ROWS", 10)
        delivery_rows(40)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE delivery_delivery")
        with CaptureQueriesContext(connection) as queries:
            page = staff_client.get(LOG_URL).content.decode()
        assert "about 40 deliveries" in page
        assert not [q for q in queries if "COUNT(" in q["sql"].upper() and "delivery_delivery" in q["sql"]]

    def test_a_small_table_is_counted_exactly(self, staff_client, delivery_rows):
        delivery_rows(7)
        page = staff_client.get(LOG_URL).content.decode()
        assert "7 deliveries" in page and "about" not in page.split("7 deliveries")[0][-20:]


def query_count(client, **params) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(LOG_URL, params)
    assert response.status_code == 200
    return len(queries)


FILTERS = [
    {},
    {"status__exact": "failed"},
    {"channel__exact": "fcm"},
    {"has_error": "yes"},
    {"error_contains": "gone"},
    {"created_at_from": "2020-01-01", "created_at_to": "2100-01-01"},
    {"q": "log-user"},
    {"status__exact": "sent", "channel__exact": "apns", "has_error": "no"},
]


def test_the_log_and_each_filter_cost_the_same_queries_for_10_and_1000_rows(staff_client, delivery_rows):
    notification, _, _ = delivery_rows(10)
    filters = [*FILTERS, {"notification": notification.pk}]
    small = [query_count(staff_client, **params) for params in filters]
    delivery_rows(990, notification=notification)
    large = [query_count(staff_client, **params) for params in filters]
    assert small == large
    assert max(large) <= 8, large


def test_resending_selected_failed_deliveries(staff_client, make_user, django_capture_on_commit_callbacks):
    alice = make_user("alice")
    notification = send({"users": ["alice"]}, title="x")
    failed = Delivery.objects.create(
        notification=notification,
        user=alice,
        device=device(alice),
        channel="fcm",
        status="failed",
        attempts=2,
    )
    with django_capture_on_commit_callbacks() as callbacks:
        staff_client.post(LOG_URL, {"action": "resend_selected", "_selected_action": [failed.pk]})
    failed.refresh_from_db()
    assert (failed.status, failed.attempts, len(callbacks)) == ("queued", 2, 1)
