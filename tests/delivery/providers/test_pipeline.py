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

    def fail_once(self, phone):
        self.fake.fail_token(phone.token, "UNAVAILABLE", times=1)


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

    def fail_once(self, browser):
        self.fake.fail_subscription(browser.token, 503, times=1)


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
