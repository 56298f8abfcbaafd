"""End to end in-process: send → fan-out → deliveries_send → real provider → fake FCM/APNs/Web Push."""

import itertools
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from delivery import sending
from delivery.models import Delivery, Notification
from tests.delivery.factories import device, send

pytestmark = pytest.mark.django_db

_serial = itertools.count(1)


class FcmPeer:
    """Registers devices the fake knows, programs its answers and reads what it received."""

    platform, dead_reason = "fcm", "UNREGISTERED"

    def __init__(self, fake):
        self.fake = fake

    def add_device(self, user):
        return device(user, "fcm", token=f"fcm-token-{next(_serial)}")

    def received(self) -> list[tuple[str, str]]:
        return [(m.message["notification"]["title"], m.name) for m in self.fake.messages]

    def kill(self, phone):
        self.fake.fail_token(phone.token, "UNREGISTERED")

    def withdrawals(self) -> list[tuple[str, int]]:
        """(device token, notification id) of each read message the devices got."""
        return [
            (m.message["token"], int(m.message["data"]["clarion_id"]))
            for m in self.fake.messages
            if m.message["data"].get("clarion_type") == "read"
        ]

    def fail_once(self, phone):
        self.fake.fail_token(phone.token, "UNAVAILABLE", times=1)

    def throttle_once(self, phone):
        self.fake.fail_token(phone.token, "QUOTA_EXCEEDED", times=1)


class ApnsPeer:
    platform, dead_reason = "apns", "Unregistered"

    def __init__(self, fake):
        self.fake = fake

    def add_device(self, user):
        return device(user, "apns", token=f"{next(_serial):064x}", environment="production")

    def received(self) -> list[tuple[str, str]]:
        return [(n.payload["aps"]["alert"]["title"], n.apns_id) for n in self.fake.notifications]

    def kill(self, phone):
        self.fake.fail_token(phone.token, "Unregistered")

    def withdrawals(self) -> list[tuple[str, int]]:
        return [
            (n.token, n.payload["id"]) for n in self.fake.notifications if n.payload.get("type") == "read"
        ]

    def fail_once(self, phone):
        self.fake.fail_token(phone.token, "ServiceUnavailable", times=1)


class WebPushPeer:
    platform, dead_reason = "webpush", "410 Gone"

    def __init__(self, fake, public_key):
        self.fake, self.public_key = fake, public_key

    def add_device(self, user):
        subscription = self.fake.subscribe(application_server_key=self.public_key)
        endpoint, keys = subscription["endpoint"], subscription["keys"]
        return device(user, "webpush", token=endpoint, p256dh=keys["p256dh"], auth=keys["auth"])

    def received(self) -> list[tuple[str, str]]:
        return [(json.loads(m.plaintext)["title"], "") for m in self.fake.messages]

    def kill(self, browser):
        self.fake.unsubscribe(browser.token)

    def withdrawals(self) -> list[tuple[str, int]]:
        return [
            (self.fake.subscription_id(m.subscription_id), json.loads(m.plaintext)["id"])
            for m in self.fake.messages
            if json.loads(m.plaintext).get("type") == "read"
        ]

    def token_of(self, browser) -> str:
        return self.fake.subscription_id(browser.token)

    def fail_once(self, browser):
        self.fake.fail_subscription(browser.token, 503, times=1)

    def throttle_once(self, browser):
        self.fake.fail_subscription(browser.token, 429, times=1)


@pytest.fixture(params=["fcm", "apns", "webpush"])
def peer(request):
    if request.param == "fcm":
        return FcmPeer(request.getfixturevalue("fake_fcm"))
    if request.param == "apns":
        return ApnsPeer(request.getfixturevalue("fake_apns"))
    fake = request.getfixturevalue("fake_push_service")
    return WebPushPeer(fake, request.getfixturevalue("vapid_keys")[1])


def test_a_notification_reaches_the_device_and_is_recorded_as_sent(peer, alice, eager_tasks, fan_out):
    phone = peer.add_device(alice)
    notification = send({"users": ["alice"]}, route="push", title="Lunch?", body="Bob asks", ttl=600)
    fan_out(notification.pk)

    delivery = Delivery.objects.get(notification=notification, device=phone)
    assert (delivery.status, delivery.channel, delivery.attempts) == ("sent", peer.platform, 1)
    (received,) = peer.received()
    assert received[0] == "Lunch?"
    assert delivery.provider_message_id and delivery.provider_message_id.endswith(received[1])


def test_a_notification_whose_ttl_passed_is_expired_not_sent(peer, alice, eager_tasks, fan_out):
    phone = peer.add_device(alice)
    peer.fail_once(phone)
    notification = send({"users": ["alice"]}, route="push", title="Soon stale", ttl=60)
    fan_out(notification.pk)
    delivery = Delivery.objects.get(notification=notification)
    assert delivery.status == "queued"  # the provider said "try again later"

    Notification.objects.filter(pk=notification.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    sending.deliveries_send([delivery.pk])

    delivery.refresh_from_db()
    assert delivery.status == "expired"
    assert peer.received() == []


def test_a_dead_token_deactivates_the_device_and_is_not_sent_to_again(peer, alice, eager_tasks, fan_out):
    phone = peer.add_device(alice)
    peer.kill(phone)
    fan_out(send({"users": ["alice"]}, route="push").pk)

    delivery = Delivery.objects.get()
    assert delivery.status == "failed" and delivery.error.startswith(peer.dead_reason)
    phone.refresh_from_db()
    assert phone.active is False and phone.deactivated_reason.startswith(peer.dead_reason)

    fan_out(send({"users": ["alice"]}, route="push").pk)
    assert Delivery.objects.count() == 1
    assert peer.received() == []


@pytest.mark.parametrize("platform", ["fcm", "webpush"])  # APNs sends no Retry-After
def test_a_429_is_retried_at_the_providers_retry_after_and_then_sent(
    platform, request, monkeypatch, alice, eager_tasks, fan_out
):
    peer = (
        FcmPeer(request.getfixturevalue("fake_fcm"))
        if platform == "fcm"
        else WebPushPeer(
            request.getfixturevalue("fake_push_service"), request.getfixturevalue("vapid_keys")[1]
        )
    )
    retry_after = 120  # longer than the first back-off (seconds), so only Retry-After explains it
    monkeypatch.setattr(peer.fake, "retry_after_s", retry_after)
    phone = peer.add_device(alice)
    peer.throttle_once(phone)
    sent_at = timezone.now()
    fan_out(send({"users": ["alice"]}, route="push").pk)

    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("queued", 1)
    assert delivery.error.startswith(("QUOTA_EXCEEDED: ", "429 "))
    wait = (delivery.next_attempt_at - sent_at).total_seconds()
    assert retry_after <= wait <= retry_after + 30, wait

    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    sending.deliveries_send([delivery.pk])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    assert len(peer.received()) == 1


def test_a_read_notification_is_withdrawn_from_the_devices_it_was_pushed_to(
    peer, alice, bob, alice_client, eager_tasks, fan_out, django_capture_on_commit_callbacks
):
    phone, second = peer.add_device(alice), peer.add_device(alice)
    bobs = peer.add_device(bob)
    read, unread = (send({"users": ["alice", "bob"]}, route="push", title=t) for t in ("read", "unread"))
    fan_out(read.pk)
    fan_out(unread.pk)
    assert len(peer.received()) == 6 and peer.withdrawals() == []

    with django_capture_on_commit_callbacks(execute=True):
        assert alice_client.post(f"/api/v1/inbox/{read.pk}/ack/").status_code == 204

    token_of = getattr(peer, "token_of", lambda device: device.token)
    assert sorted(peer.withdrawals()) == sorted([(token_of(phone), read.pk), (token_of(second), read.pk)])
    assert token_of(bobs) not in {token for token, _ in peer.withdrawals()}
    # Read once: a second ack withdraws nothing again.
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_client.post(f"/api/v1/inbox/{read.pk}/ack/").status_code == 204
    assert len(peer.withdrawals()) == 2


def test_a_withdrawal_the_provider_could_not_take_is_retried_and_a_dead_token_deactivated(
    peer, alice, alice_client, eager_tasks, fan_out, django_capture_on_commit_callbacks
):
    busy, gone = peer.add_device(alice), peer.add_device(alice)
    notification = send({"users": ["alice"]}, route="push", title="read soon")
    fan_out(notification.pk)
    peer.fail_once(busy)
    peer.kill(gone)

    with django_capture_on_commit_callbacks(execute=True):
        assert alice_client.post(f"/api/v1/inbox/{notification.pk}/ack/").status_code == 204

    token_of = getattr(peer, "token_of", lambda device: device.token)
    assert peer.withdrawals() == [(token_of(busy), notification.pk)]  # the task's retry got through
    gone.refresh_from_db()
    assert gone.active is False and gone.deactivated_reason.startswith(peer.dead_reason)
