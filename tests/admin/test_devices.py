"""Devices in the admin: filters, deactivate/reactivate, send a test, rebinding history."""

from datetime import timedelta

import pytest
from django.utils import timezone

from delivery.models import Delivery, Notification
from devices.models import Device, DeviceOwnershipChange
from tests.admin.conftest import logged_in
from tests.delivery.factories import device
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/devices/device/"


def send_test_url(phone) -> str:
    return f"/admin/devices/device/{phone.pk}/send-test/"


class TestSendATest:
    def test_the_button_queues_a_push_only_notification_to_that_device(
        self, staff_client, superuser, alice, django_capture_on_commit_callbacks
    ):
        phone, other = device(alice), device(alice)
        with django_capture_on_commit_callbacks() as callbacks:
            response = staff_client.post(send_test_url(phone), follow=True)
        notification = Notification.objects.get()
        assert b"queued for 1 device" in response.content
        assert notification.target == {"devices": [phone.pk]}
        assert (notification.route, notification.priority, notification.sender_user) == (
            "push",
            "high",
            superuser,
        )
        assert callbacks and not Delivery.objects.exists()  # sent by the worker, after the commit
        assert other.pk not in notification.target["devices"]

    def test_the_list_action_sends_one_test_to_the_selected_devices(self, staff_client, alice, bob):
        phones = [device(alice), device(bob, "apns")]
        response = staff_client.post(
            LIST_URL, {"action": "send_test", "_selected_action": [p.pk for p in phones]}, follow=True
        )
        assert b"queued for 2 device" in response.content
        assert sorted(Notification.objects.get().target["devices"]) == sorted(p.pk for p in phones)

    def test_an_inactive_device_is_warned_about(self, staff_client, alice):
        phone = device(alice, active=False)
        response = staff_client.post(send_test_url(phone), follow=True)
        assert b"inactive" in response.content

    def test_without_the_send_permission_it_is_refused(self, viewer_client, alice):
        phone = device(alice)
        assert viewer_client.post(send_test_url(phone)).status_code == 403
        page = viewer_client.get(f"/admin/devices/device/{phone.pk}/change/")
        assert page.status_code == 200 and b"send-test/" not in page.content
        viewer_client.post(LIST_URL, {"action": "send_test", "_selected_action": [phone.pk]})
        assert not Notification.objects.exists()


class TestListAndPage:
    def test_filters_by_platform_active_and_last_seen(self, staff_client, alice):
        now = timezone.now()
        fresh = device(alice, "fcm")
        stale = device(alice, "apns")
        ancient = device(alice, "webpush", token="https://push.example.net/x")
        Device.objects.filter(pk=stale.pk).update(last_seen_at=now - timedelta(days=45))
        Device.objects.filter(pk=ancient.pk).update(active=False, last_seen_at=now - timedelta(days=120))

        def listed(**params):
            return {d.pk for d in staff_client.get(LIST_URL, params).context["cl"].result_list}

        assert listed(platform__exact="apns") == {stale.pk}
        assert listed(active__exact="0") == {ancient.pk}
        assert listed(last_seen="7d") == {fresh.pk}
        assert listed(last_seen="stale30") == {stale.pk, ancient.pk}
        assert listed(last_seen="stale90") == {ancient.pk}

    def test_deactivate_and_reactivate(self, staff_client, alice):
        phone = device(alice)
        staff_client.post(LIST_URL, {"action": "deactivate", "_selected_action": [phone.pk]})
        phone.refresh_from_db()
        assert (phone.active, phone.deactivated_reason) == (False, "deactivated in the admin")
        staff_client.post(LIST_URL, {"action": "reactivate", "_selected_action": [phone.pk]})
        phone.refresh_from_db()
        assert (phone.active, phone.deactivated_reason) == (True, "")

    def test_the_page_shows_the_rebinding_history_and_links_the_delivery_log(self, staff_client, alice, bob):
        phone = device(bob)
        DeviceOwnershipChange.objects.create(device=phone, previous_user=alice, new_user=bob)
        page = staff_client.get(f"/admin/devices/device/{phone.pk}/change/").content.decode()
        assert "Rebinding history" in page and "alice" in page
        assert f"/admin/delivery/delivery/?device={phone.pk}" in page


@pytest.mark.django_db(transaction=True)
def test_a_device_test_reaches_that_device_and_nothing_else(start_worker, make_user, recorder):
    """Through real processes: the button's notification is fanned out and pushed by a worker."""
    staff = make_user("ops", is_staff=True, is_superuser=True)
    alice = make_user("alice")
    phone, other = device(alice), device(alice)
    start_worker()
    logged_in(staff).post(send_test_url(phone))
    wait_until(lambda: recorder.sent(), message="the test push")
    assert [(s["device_id"], s["title"]) for s in recorder.sent()] == [(phone.pk, "Test notification")]
    wait_until(
        lambda: (
            list(Delivery.objects.values_list("device_id", "channel", "status"))
            == [(phone.pk, "fcm", "sent")]
        ),
        message="the delivery recorded",
    )
    assert other.pk not in [s["device_id"] for s in recorder.sent()]
