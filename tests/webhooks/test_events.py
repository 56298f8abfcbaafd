"""Events from each status change, signed and posted to a real loopback receiver (in-process worker).

Tasks run eagerly and after-commit hooks run where the transaction commits, so one test sees
the whole path: status change → outbox row → task → signed POST → recorded attempt.
"""

import json
from datetime import timedelta

import pytest
import standardwebhooks
from django.db import transaction
from django.utils import timezone

from delivery import sending, sweeper
from delivery.models import Delivery
from delivery.services import Sender, inbox_ack
from delivery.webhooks import signals
from delivery.webhooks.models import EventStatus, WebhookEvent
from notifyproject.identities.api_keys import api_key_create
from tests.delivery.factories import device, send

pytestmark = pytest.mark.django_db


def verified(received, secret) -> dict:
    """The body, after the independent Standard Webhooks implementation checked its signature."""
    return standardwebhooks.Webhook(secret).verify(received.body, received.headers)


@pytest.fixture
def after_commit(django_capture_on_commit_callbacks):
    """Run a block and then what its transactions' on-commit hooks would run (tasks run eagerly)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def push_to(recorder, eager_tasks, fan_out):
    """Send one push notification to `user`'s phone (token programmable) and run it to the end."""

    def push(user, token=None, by=None):
        phone = device(user, token=token)
        notification = send({"users": [user.username]}, route="push", by=by)
        fan_out(notification.pk)
        return notification, Delivery.objects.get(notification=notification, device=phone)

    return push


class TestSignedDeliveries:
    def test_delivery_sent_verifies_with_standard_webhooks_and_carries_the_delivery_log_row(
        self, alice, receiver, make_webhook, private_urls_allowed, push_to, api_key_client
    ):
        webhook = make_webhook(receiver.url, events=["delivery.sent"])
        notification, delivery = push_to(alice)
        (received,) = receiver.wait_for(1)
        body = verified(received, webhook.secret)
        assert body["type"] == "delivery.sent"
        assert set(body) == {"type", "timestamp", "data"}
        reader = api_key_client("read")
        logged = reader.get(f"/api/v1/notifications/{notification.pk}/deliveries/").json()["results"]
        assert body["data"] == {**logged[0], "notification": notification.pk}
        assert received.headers["webhook-id"].startswith("msg_")
        assert received.headers["content-type"] == "application/json"
        event = WebhookEvent.objects.get()
        assert (event.status, event.attempts, event.message_id) == (
            EventStatus.SUCCEEDED,
            1,
            received.headers["webhook-id"],
        )
        assert json.loads(event.body) == body

    def test_a_wrong_secret_does_not_verify(
        self, alice, receiver, make_webhook, private_urls_allowed, push_to
    ):
        make_webhook(receiver.url)
        push_to(alice)
        (received,) = receiver.wait_for(1)
        other = make_webhook("https://hooks.example.com/x").secret
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            verified(received, other)

    def test_only_subscribed_events_are_posted(
        self, alice, receiver, make_webhook, private_urls_allowed, push_to
    ):
        make_webhook(receiver.url, events=["delivery.failed"])
        push_to(alice)  # sent, not failed
        assert WebhookEvent.objects.count() == 0 and receiver.requests == []


class TestEachStatusChange:
    ALL = [
        "delivery.sent",
        "delivery.delivered",
        "delivery.failed",
        "delivery.expired",
        "delivery.skipped",
        "notification.read",
        "device.deactivated",
    ]

    def types(self, receiver, count, secret):
        return sorted(verified(r, secret)["type"] for r in receiver.wait_for(count))

    def test_dead_token_is_delivery_failed_and_device_deactivated(
        self, alice, receiver, make_webhook, private_urls_allowed, push_to, recorder
    ):
        webhook = make_webhook(receiver.url, events=self.ALL)
        recorder.program("gone", "dead")
        _, delivery = push_to(alice, token="gone")
        assert self.types(receiver, 2, webhook.secret) == ["delivery.failed", "device.deactivated"]
        by_type = {
            verified(r, webhook.secret)["type"]: verified(r, webhook.secret) for r in receiver.requests
        }
        assert by_type["device.deactivated"]["data"] == {
            "device": delivery.device_id,
            "user": "alice",
            "platform": "fcm",
            "reason": "UNREGISTERED: token gone",
        }
        assert by_type["delivery.failed"]["data"]["error"] == "UNREGISTERED: token gone"

    def test_ack_is_delivered_and_notification_read_once(
        self, alice, receiver, make_webhook, private_urls_allowed, push_to, after_commit
    ):
        webhook = make_webhook(receiver.url, events=self.ALL)
        notification, _ = push_to(alice)
        receiver.wait_for(1)  # delivery.sent
        with after_commit():
            assert inbox_ack(user=alice, notification_id=notification.pk)
        with after_commit():
            assert inbox_ack(user=alice, notification_id=notification.pk)  # again: nothing new
        types = self.types(receiver, 3, webhook.secret)
        assert types == ["delivery.delivered", "delivery.sent", "notification.read"]
        read = next(verified(r, webhook.secret) for r in receiver.requests if b"notification.read" in r.body)
        assert read["data"] == {"notification": notification.pk, "user": "alice"}
        assert WebhookEvent.objects.count() == 3

    def test_inactive_device_is_skipped_and_ttl_passed_is_expired(
        self,
        alice,
        bob,
        receiver,
        make_webhook,
        private_urls_allowed,
        recorder,
        eager_tasks,
        fan_out,
        after_commit,
    ):
        webhook = make_webhook(receiver.url, events=self.ALL)
        phone = device(alice)
        held = send({"users": ["alice"]}, route="push", send_at=None)
        with after_commit():
            Delivery.objects.create(notification=held, user=alice, device=phone, channel="fcm")
        phone.active = False
        phone.save()
        with after_commit():
            sending.deliveries_send(list(Delivery.objects.values_list("pk", flat=True)))
        late = send({"users": ["bob"]}, route="push")
        Delivery.objects.create(notification=late, user=bob, device=device(bob), channel="fcm")
        late.__class__.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        with after_commit():
            assert sweeper.expire_overdue(timezone.now()) == 1
        assert self.types(receiver, 2, webhook.secret) == ["delivery.expired", "delivery.skipped"]

    def test_a_realtime_message_handed_to_a_poll_is_delivery_sent(
        self,
        alice,
        receiver,
        make_webhook,
        private_urls_allowed,
        recorder,
        eager_tasks,
        fan_out,
        after_commit,
    ):
        from delivery.streams_api import live_messages_after

        webhook = make_webhook(receiver.url, events=["delivery.sent"])
        notification = send({"users": ["alice"]}, route="realtime")
        fan_out(notification.pk)  # alice is offline: her realtime delivery waits for her
        assert Delivery.objects.get().status == "queued" and receiver.requests == []
        with after_commit():
            assert [m["id"] for m in live_messages_after(alice.pk, 0)] == [notification.pk]
        (received,) = receiver.wait_for(1)
        data = verified(received, webhook.secret)["data"]
        assert (data["channel"], data["status"], data["user"]) == ("realtime", "sent", "alice")


class TestRevokedKeys:
    def test_a_revoked_keys_webhook_hears_nothing_more(
        self, alice, receiver, make_webhook, private_urls_allowed, push_to
    ):
        webhook = make_webhook(receiver.url)
        webhook.api_key.revoked = True
        webhook.api_key.save()
        push_to(alice)
        assert WebhookEvent.objects.count() == 0 and receiver.requests == []


class TestRollback:
    def test_a_rolled_back_send_posts_nothing(
        self, alice, receiver, make_webhook, private_urls_allowed, recorder, eager_tasks, after_commit
    ):
        make_webhook(receiver.url, events=["delivery.sent"])
        notification = send({"users": ["alice"]}, route="push")
        delivery = Delivery.objects.create(
            notification=notification, user=alice, device=device(alice), channel="fcm"
        )
        with after_commit(), pytest.raises(RuntimeError), transaction.atomic():
            sending.deliveries_send([delivery.pk])
            raise RuntimeError("the transaction around the send fails")
        assert WebhookEvent.objects.count() == 0 and receiver.requests == []
        with after_commit():
            sending.deliveries_send([delivery.pk])  # the same send, committed this time
        (received,) = receiver.wait_for(1)
        assert json.loads(received.body)["data"]["id"] == delivery.pk

    def test_a_rolled_back_change_records_and_posts_nothing(
        self, alice, receiver, make_webhook, private_urls_allowed, push_to, after_commit
    ):
        make_webhook(receiver.url, events=["delivery.delivered", "notification.read"])
        first, _ = push_to(alice)
        second, _ = push_to(alice)
        heard = []
        signals.notification_read.connect(lambda **kw: heard.append(kw["data"]), weak=False, dispatch_uid="t")
        try:
            with after_commit(), pytest.raises(RuntimeError), transaction.atomic():
                inbox_ack(user=alice, notification_id=first.pk)
                raise RuntimeError("the caller's transaction fails")
            assert WebhookEvent.objects.count() == 0 and heard == []
            with after_commit():
                inbox_ack(user=alice, notification_id=second.pk)
        finally:
            signals.notification_read.disconnect(dispatch_uid="t")
        received = receiver.wait_for(2)
        assert {json.loads(r.body)["data"]["notification"] for r in received} == {second.pk}
        assert heard == [{"notification": second.pk, "user": "alice"}]


class TestSignals:
    def test_sent_with_the_webhook_data(self, alice, push_to):
        heard = []

        def on_sent(sender, event, timestamp, data, **kwargs):
            heard.append((sender.__name__, event, data["status"], data["user"]))

        signals.delivery_sent.connect(on_sent, weak=False, dispatch_uid="t")
        try:
            push_to(alice)
        finally:
            signals.delivery_sent.disconnect(dispatch_uid="t")
        assert heard == [("Delivery", "delivery.sent", "sent", "alice")]

    def test_a_receiver_connected_for_its_sender_hears_it_too(self, alice, push_to):
        from delivery.models import Delivery as DeliveryModel

        heard = []
        signals.delivery_sent.connect(
            lambda **kw: heard.append(kw["data"]["id"]), sender=DeliveryModel, weak=False, dispatch_uid="t"
        )
        try:
            _, delivery = push_to(alice)
        finally:
            signals.delivery_sent.disconnect(sender=DeliveryModel, dispatch_uid="t")
        assert heard == [delivery.pk]

    def test_only_once_the_transaction_commits(self, alice, push_to, django_capture_on_commit_callbacks):
        notification, _ = push_to(alice)
        heard = []
        signals.notification_read.connect(lambda **kw: heard.append(kw["data"]), weak=False, dispatch_uid="t")
        try:
            with django_capture_on_commit_callbacks() as callbacks:
                inbox_ack(user=alice, notification_id=notification.pk)
            assert heard == []
            for callback in callbacks:
                callback()
        finally:
            signals.notification_read.disconnect(dispatch_uid="t")
        assert heard == [{"notification": notification.pk, "user": "alice"}]


class TestOwnership:
    def test_a_bound_keys_webhook_hears_only_its_sends_an_unbound_one_all(
        self, alice, receiver, second_receiver, make_webhook, private_urls_allowed, push_to
    ):
        key_a, _ = api_key_create(name="a", scopes=["send"])
        key_b, _ = api_key_create(name="b", scopes=["send"])
        # What registering with a key bound to an app records: only that key's notifications.
        scoped = make_webhook(receiver.url, api_key=key_a, all_notifications=False)
        everything = make_webhook(second_receiver.url, api_key=key_b)
        by_a, _ = push_to(alice, by=Sender.for_api_key(key_a))
        by_b, _ = push_to(alice, by=Sender.for_api_key(key_b))
        second_receiver.wait_for(2)
        assert {verified(r, everything.secret)["data"]["notification"] for r in second_receiver.requests} == {
            by_a.pk,
            by_b.pk,
        }
        assert [verified(r, scoped.secret)["data"]["notification"] for r in receiver.requests] == [by_a.pk]


def test_the_receiver_example_in_the_docs_verifies_a_real_delivery(
    alice, receiver, make_webhook, private_urls_allowed, push_to
):
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
    example = (
        docs.read_text().split("### A receiver in a few lines")[1].split("```python\n")[1].split("```")[0]
    )
    webhook = make_webhook(receiver.url)
    push_to(alice)
    (received,) = receiver.wait_for(1)
    namespace: dict = {}
    exec(example.replace('SECRET = "whsec_..."', f'SECRET = "{webhook.secret}"'), namespace)
    assert namespace["verify"](received.headers, received.body)["type"] == "delivery.sent"
    with pytest.raises(ValueError, match="bad signature"):
        namespace["verify"](received.headers, received.body + b" ")


def test_a_webhook_deleted_by_another_process_gets_nothing_and_fails_no_change(make_webhook, after_commit):
    from django.db import connection

    from delivery.models import Delivery
    from delivery.webhooks.events import Event, Listeners, Subscription, record

    webhook = make_webhook("https://hooks.example.com/x")
    # What this process still believes (its list is up to a second old) ...
    listeners = Listeners((Subscription(webhook.pk, frozenset({"delivery.sent"}), None, True),), frozenset())
    with connection.cursor() as cursor:  # ... while another process deleted the webhook.
        cursor.execute("DELETE FROM webhooks_webhook WHERE id = %s", [webhook.pk])
    with after_commit(), transaction.atomic():
        record([Event("delivery.sent", None, {"id": 1}, Delivery)], listeners)
    assert WebhookEvent.objects.count() == 0
