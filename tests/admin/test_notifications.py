"""Notifications in the admin: list and detail with counts, resend failed, cancel, permissions, cost."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from delivery import resend
from delivery.models import Delivery, Notification
from delivery.services import Sender
from notifyproject.task_queue import IDS_PER_TASK
from tests.delivery.factories import device, send, sender
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/delivery/notification/"


def detail_url(notification) -> str:
    return f"/admin/delivery/notification/{notification.pk}/change/"


def deliveries(notification, users_and_devices, **fields) -> list[Delivery]:
    """Push deliveries of `notification`, one per (user, device)."""
    return Delivery.objects.bulk_create(
        [
            Delivery(notification=notification, user=user, device=phone, channel=phone.platform, **fields)
            for user, phone in users_and_devices
        ]
    )


def query_count(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return len(queries)


class TestListAndDetail:
    def test_the_list_shows_status_sender_and_counts_per_status_and_channel(
        self, staff_client, superuser, alice, delivery_rows
    ):
        by_key, _, _ = delivery_rows(8)  # fcm/apns alternating; sent, delivered, failed, queued in turn
        send({"users": ["alice"]}, by=Sender.for_user(superuser), title="from ops")
        page = staff_client.get(LIST_URL).content.decode()
        assert "API key “tests”" in page and "staff ops" in page
        assert "queued 2 · sent 2 · delivered 2 · failed 2" in page
        assert "apns 4 · fcm 4" in page
        assert by_key.title in page

    def test_the_detail_shows_counts_by_channel_and_status_and_one_page_of_the_log(
        self, staff_client, delivery_rows
    ):
        notification, rows, _ = delivery_rows(60)
        response = staff_client.get(detail_url(notification))
        assert response.status_code == 200
        context = response.context
        assert context["deliveries_total"] == 60
        assert dict(zip(context["count_statuses"], context["count_totals"], strict=True)) == {
            "queued": 15,
            "sent": 15,
            "delivered": 15,
            "failed": 15,
            "expired": 0,
            "cancelled": 0,
            "skipped": 0,
        }
        assert [channel for channel, _ in context["counts_table"]] == ["apns", "fcm"]
        newest_first = sorted(rows, key=lambda d: (d.created_at, d.pk), reverse=True)
        assert [d.pk for d in context["deliveries"]] == [d.pk for d in newest_first[:25]]
        second = staff_client.get(detail_url(notification), {"deliveries_page": 3}).context
        assert [d.pk for d in second["deliveries"]] == [d.pk for d in newest_first[50:]]
        assert not second["deliveries_has_next"]
        assert f"/admin/delivery/delivery/?notification={notification.pk}" in response.content.decode()

    def test_notifications_are_read_only_records(self, staff_client, delivery_rows):
        notification, _, _ = delivery_rows(2)
        page = staff_client.get(detail_url(notification)).content
        assert b'name="_save"' not in page
        assert staff_client.post(f"/admin/delivery/notification/{notification.pk}/delete/").status_code == 403

    def test_list_and_detail_cost_the_same_queries_for_10_and_1000_deliveries(
        self, staff_client, delivery_rows
    ):
        notification, _, _ = delivery_rows(10)
        small = (query_count(staff_client, LIST_URL), query_count(staff_client, detail_url(notification)))
        delivery_rows(990, notification=notification)
        for _ in range(20):
            delivery_rows(2, status="sent", channel="fcm")
        large = (query_count(staff_client, LIST_URL), query_count(staff_client, detail_url(notification)))
        assert small == large
        assert large[0] <= 8 and large[1] <= 10


@pytest.fixture
def failed_push(make_user):
    """A dispatched notification with 3 failed push deliveries, 1 failed realtime one and 1 sent."""
    people = [make_user(f"p{i}") for i in range(4)]
    phones = [device(person) for person in people]
    notification = send({"users": [p.username for p in people]}, title="retry me")
    Notification.objects.filter(pk=notification.pk).update(status="dispatched")
    failed = deliveries(
        notification,
        list(zip(people[:3], phones[:3], strict=True)),
        status="failed",
        attempts=5,
        error="boom",
    )
    realtime = Delivery.objects.create(
        notification=notification, user=people[0], channel="realtime", status="failed"
    )
    sent = deliveries(notification, [(people[3], phones[3])], status="sent", attempts=1)[0]
    return notification, failed, realtime, sent


class TestResendFailed:
    def test_it_requeues_now_keeps_attempts_and_enqueues_task_sized_chunks_on_commit(
        self, staff_client, make_user, broker_queue, django_capture_on_commit_callbacks
    ):
        people = [make_user(f"r{i}") for i in range(IDS_PER_TASK + 50)]
        notification = send({"users": [p.username for p in people]}, title="big")
        Notification.objects.filter(pk=notification.pk).update(status="dispatched")
        rows = deliveries(notification, [(p, device(p)) for p in people], status="failed", attempts=3)
        before = timezone.now()
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            staff_client.post(f"/admin/delivery/notification/{notification.pk}/resend-failed/")
            assert broker_queue() == []  # nothing leaves before the commit
        for callback in callbacks:
            callback()
        enqueued = broker_queue()
        assert {name for name, _args in enqueued} == {"delivery.tasks.deliveries_send"}
        assert [len(ids) for _name, (ids,) in enqueued] == [IDS_PER_TASK, 50]
        assert sorted(pk for _name, (ids,) in enqueued for pk in ids) == sorted(d.pk for d in rows)
        requeued = Delivery.objects.filter(notification=notification)
        assert {(d.status, d.attempts) for d in requeued} == {("queued", 3)}
        assert all(before <= d.next_attempt_at <= timezone.now() for d in requeued)

    @pytest.mark.parametrize("state", ["cancelled", "expired"])
    def test_nothing_is_resent_for_a_cancelled_or_expired_notification(
        self, staff_client, failed_push, state
    ):
        notification, failed, _, _ = failed_push
        if state == "cancelled":
            Notification.objects.filter(pk=notification.pk).update(status="cancelled")
        else:
            Notification.objects.filter(pk=notification.pk).update(
                expires_at=timezone.now() - timedelta(seconds=1)
            )
        response = staff_client.post(
            f"/admin/delivery/notification/{notification.pk}/resend-failed/", follow=True
        )
        assert b"Nothing resent" in response.content
        assert set(
            Delivery.objects.filter(pk__in=[d.pk for d in failed]).values_list("status", flat=True)
        ) == {"failed"}

    def test_the_list_action_resends_too(self, staff_client, failed_push, django_capture_on_commit_callbacks):
        notification, failed, _, _ = failed_push
        with django_capture_on_commit_callbacks() as callbacks:
            staff_client.post(LIST_URL, {"action": "resend_failed", "_selected_action": [notification.pk]})
        assert callbacks
        assert set(
            Delivery.objects.filter(pk__in=[d.pk for d in failed]).values_list("status", flat=True)
        ) == {"queued"}

    def test_the_service_ignores_everything_but_failed_push(self, failed_push):
        notification, failed, realtime, sent = failed_push
        assert resend.notification_resend_failed(notification.pk) == 3
        assert resend.notification_resend_failed(notification.pk) == 0  # nothing failed any more


class TestCancel:
    def test_a_queued_notification_is_cancelled_with_its_queued_deliveries(self, staff_client, alice):
        notification = send({"users": ["alice"]}, title="oops")
        queued = deliveries(notification, [(alice, device(alice))])[0]
        response = staff_client.post(f"/admin/delivery/notification/{notification.pk}/cancel/", follow=True)
        assert b"Cancelled notification" in response.content
        assert Notification.objects.get(pk=notification.pk).status == "cancelled"
        assert Delivery.objects.get(pk=queued.pk).status == "cancelled"

    def test_a_dispatched_notification_cannot_be_cancelled(self, staff_client, alice):
        notification = send({"users": ["alice"]}, title="gone")
        Notification.objects.filter(pk=notification.pk).update(status="dispatched")
        response = staff_client.post(f"/admin/delivery/notification/{notification.pk}/cancel/", follow=True)
        assert b"Too late to cancel" in response.content
        assert Notification.objects.get(pk=notification.pk).status == "dispatched"

    def test_the_list_action_cancels_what_it_can(self, staff_client, alice):
        queued = send({"users": ["alice"]}, title="a")
        dispatched = send({"users": ["alice"]}, title="b")
        Notification.objects.filter(pk=dispatched.pk).update(status="dispatched")
        response = staff_client.post(
            LIST_URL, {"action": "cancel", "_selected_action": [queued.pk, dispatched.pk]}, follow=True
        )
        assert b"Cancelled 1 notification" in response.content
        assert Notification.objects.get(pk=queued.pk).status == "cancelled"


class TestWithoutSendPermission:
    def test_resend_and_cancel_are_refused(self, viewer_client, failed_push):
        notification, failed, _, _ = failed_push
        Notification.objects.filter(pk=notification.pk).update(status="queued")
        assert (
            viewer_client.post(f"/admin/delivery/notification/{notification.pk}/resend-failed/").status_code
            == 403
        )
        assert (
            viewer_client.post(f"/admin/delivery/notification/{notification.pk}/cancel/").status_code == 403
        )
        for action in ("resend_failed", "cancel"):
            viewer_client.post(LIST_URL, {"action": action, "_selected_action": [notification.pk]})
        assert Notification.objects.get(pk=notification.pk).status == "queued"
        assert set(
            Delivery.objects.filter(pk__in=[d.pk for d in failed]).values_list("status", flat=True)
        ) == {"failed"}

    def test_the_buttons_are_not_offered(self, viewer_client, failed_push):
        notification, _, _, _ = failed_push
        page = viewer_client.get(detail_url(notification))
        assert page.status_code == 200
        assert b"resend-failed/" not in page.content and b"/cancel/" not in page.content

    def test_get_is_not_a_way_to_resend(self, staff_client, failed_push):
        notification, _, _, _ = failed_push
        assert (
            staff_client.get(f"/admin/delivery/notification/{notification.pk}/resend-failed/").status_code
            == 405
        )


def test_the_sender_label_names_a_recurring_sender(staff_client, alice):
    send({"users": ["alice"]}, by=Sender(label="recurring:7"), title="tick")
    send({"users": ["alice"]}, by=sender(), title="tock")
    page = staff_client.get(LIST_URL).content.decode()
    assert "recurring notification #7" in page


@pytest.mark.django_db(transaction=True)
def test_a_resend_from_the_admin_is_sent_by_the_worker(start_worker, make_user, recorder):
    """Through real processes: the admin re-queues, the commit enqueues, a worker sends."""
    staff = make_user("ops", is_staff=True, is_superuser=True)
    people = [make_user(f"p{i}") for i in range(3)]
    notification = send({"users": [p.username for p in people]}, title="retry me")
    Notification.objects.filter(pk=notification.pk).update(status="dispatched")
    failed = deliveries(
        notification, [(p, device(p)) for p in people], status="failed", attempts=5, error="boom"
    )
    start_worker()
    from tests.admin.conftest import logged_in

    response = logged_in(staff).post(f"/admin/delivery/notification/{notification.pk}/resend-failed/")
    assert response.status_code == 302
    wait_until(lambda: len(recorder.sent()) == 3, message="the three resent pushes")
    assert sorted(s["delivery_id"] for s in recorder.sent()) == sorted(d.pk for d in failed)
    wait_until(
        lambda: (
            set(Delivery.objects.filter(notification=notification).values_list("status", "attempts"))
            == {("sent", 6)}
        ),
        message="the deliveries recorded as sent, attempts kept plus this one",
    )
