"""Push sends: outcomes, retries, dead tokens, duplicate tasks, expiry and the sweeper."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from delivery import sending, sweeper
from delivery.models import Delivery, Notification, NotificationStatus
from tests.delivery.factories import device, send

pytestmark = pytest.mark.django_db


def push_delivery(user, fan_out, **fields):
    phone = device(user, token=fields.pop("token", None))
    notification = send({"users": [user.username]}, route="push", **fields)
    fan_out(notification.pk)
    return Delivery.objects.get(notification=notification, device=phone)


def make_due(delivery):
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


class TestOutcomes:
    def test_sent_records_the_provider_message_id(self, alice, recorder, eager_tasks, fan_out):
        delivery = push_delivery(alice, fan_out)
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == ("sent", 1)
        assert delivery.provider_message_id == f"rec-{delivery.pk}"
        assert delivery.sent_at is not None

    def test_dead_token_deactivates_the_device_and_is_never_sent_to_again(
        self, alice, recorder, eager_tasks, fan_out
    ):
        recorder.program("dead-token", "dead")
        delivery = push_delivery(alice, fan_out, token="dead-token")
        delivery.refresh_from_db()
        assert delivery.status == "failed" and "UNREGISTERED" in delivery.error
        assert alice.devices.get().active is False
        assert "UNREGISTERED" in alice.devices.get().deactivated_reason
        fan_out(send({"users": ["alice"]}, route="push").pk)
        assert Delivery.objects.count() == 1  # no delivery to the dead device

    def test_permanent_failure_is_not_retried(self, alice, recorder, eager_tasks, fan_out):
        recorder.program("bad", "fail")
        delivery = push_delivery(alice, fan_out, token="bad")
        delivery.refresh_from_db()
        assert delivery.status == "failed" and delivery.next_attempt_at is None

    def test_retry_after_is_honoured(self, alice, recorder, eager_tasks, fan_out):
        recorder.program("busy", "retry:30")
        before = timezone.now()
        delivery = push_delivery(alice, fan_out, token="busy")
        delivery.refresh_from_db()
        assert delivery.status == "queued" and delivery.attempts == 1
        assert delivery.next_attempt_at >= before + timedelta(seconds=30)
        # Not due yet: a send task that runs early claims nothing.
        sending.deliveries_send([delivery.pk])
        assert recorder.retry_attempts() == [delivery.pk]

    def test_transient_errors_back_off_then_fail_after_the_attempt_limit(
        self, alice, recorder, eager_tasks, fan_out, settings
    ):
        settings.CLARION_MAX_ATTEMPTS = 3
        recorder.program("flaky", "retry")
        delivery = push_delivery(alice, fan_out, token="flaky")
        delays = []
        for _ in range(2):
            delivery.refresh_from_db()
            assert delivery.status == "queued"
            delays.append((delivery.next_attempt_at - delivery.updated_at).total_seconds())
            make_due(delivery)
            sending.deliveries_send([delivery.pk])
        delivery.refresh_from_db()
        assert delivery.status == "failed" and delivery.attempts == 3
        assert delivery.error.startswith("gave up after 3 attempts: UNAVAILABLE")
        base = settings.CLARION_RETRY_BASE_SECS
        assert base / 2 <= delays[0] <= base and base <= delays[1] <= 2 * base  # capped exponential, jittered

    def test_expired_before_sending_is_expired_not_sent(self, alice, recorder, eager_tasks, fan_out):
        recorder.program("busy", "retry:1")
        delivery = push_delivery(alice, fan_out, token="busy", ttl=60)
        Notification.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        recorder.program("busy", "")
        make_due(delivery)
        sending.deliveries_send([delivery.pk])
        delivery.refresh_from_db()
        assert delivery.status == "expired"
        assert recorder.sent() == []


@pytest.mark.django_db(transaction=True)
def test_duplicated_send_tasks_send_once(alice, recorder, settings):
    """Two workers running the same task at once: the claim lets exactly one send."""
    settings.CLARION_INLINE_FANOUT_MAX = 0  # the fan-out is done by hand below
    recorder.program("slow", "slow:50")
    phone = device(alice, token="slow")
    notification = send({"users": ["alice"]}, route="push")
    from delivery.fanout import _write_batch

    delivery_ids = []
    from django.db import transaction

    with transaction.atomic():
        plan = _write_batch(Notification.objects.get(pk=notification.pk), [alice.pk], timezone.now())
        delivery_ids = plan.push_now
    barrier = threading.Barrier(2)

    def run():
        barrier.wait()
        sending.deliveries_send(delivery_ids)
        connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [s["device_id"] for s in recorder.sent()] == [phone.pk]
    assert Delivery.objects.get().status == "sent"


class TestSweeper:
    def test_due_scheduled_notifications_are_released(
        self, alice, eager_tasks, django_capture_on_commit_callbacks
    ):
        notification = send({"users": ["alice"]}, send_at=timezone.now() + timedelta(hours=1))
        assert sweeper.sweep()["released"] == 0
        Notification.objects.update(send_at=timezone.now() - timedelta(seconds=1))
        with django_capture_on_commit_callbacks(execute=True):
            assert sweeper.sweep()["released"] == 1
        notification.refresh_from_db()
        assert notification.status == NotificationStatus.DISPATCHED

    def test_cancelled_scheduled_notification_is_never_released(self, alice, eager_tasks):
        from delivery.services import notification_cancel

        notification = send({"users": ["alice"]}, send_at=timezone.now() + timedelta(seconds=1))
        notification_cancel(notification.pk)
        Notification.objects.update(send_at=timezone.now() - timedelta(seconds=1))
        assert sweeper.sweep()["released"] == 0

    def test_stalled_fan_out_is_dispatched_again(
        self, alice, settings, eager_tasks, django_capture_on_commit_callbacks
    ):
        notification = send({"users": ["alice"]})  # its dispatch task was lost (never ran)
        Notification.objects.update(
            updated_at=timezone.now() - timedelta(seconds=settings.CLARION_STALE_WORK_SECS + 1)
        )
        with django_capture_on_commit_callbacks(execute=True):
            assert sweeper.sweep()["redispatched"] == 1
        notification.refresh_from_db()
        assert notification.status == NotificationStatus.DISPATCHED

    def test_due_and_lost_push_deliveries_are_enqueued_again(
        self, alice, recorder, eager_tasks, fan_out, settings
    ):
        recorder.program("busy", "retry:1")
        delivery = push_delivery(alice, fan_out, token="busy")
        recorder.program("busy", "")
        Delivery.objects.filter(pk=delivery.pk).update(
            next_attempt_at=timezone.now(),
            enqueued_at=timezone.now() - timedelta(seconds=settings.CLARION_STALE_WORK_SECS + 1),
        )
        assert sweeper.sweep()["enqueued"] == 1
        delivery.refresh_from_db()
        assert delivery.status == "sent" and delivery.attempts == 2

    def test_every_stale_push_delivery_is_enqueued_once_and_no_other(
        self, alice, recorder, eager_tasks, settings, monkeypatch
    ):
        """Each kind of stale task is found across sweeps that each take fewer than all of them
        (never enqueued since a re-queue first, then the longest stale); deliveries not due,
        enqueued recently, or realtime are not."""
        monkeypatch.setattr(sweeper, "SWEEP_LIMIT", 3)
        now = timezone.now()
        stale = now - timedelta(seconds=settings.CLARION_STALE_WORK_SECS + 1)
        notification = send({"users": ["alice"]}, route="push")
        later = now + timedelta(hours=1)
        rows = {
            # stale: re-queued from `sending` (never enqueued since), lost fan-out tasks, a lost retry
            "requeued": dict(next_attempt_at=now, enqueued_at=None),
            "requeued too": dict(next_attempt_at=None, enqueued_at=None),
            "lost task, oldest": dict(next_attempt_at=None, enqueued_at=stale - timedelta(hours=1)),
            "lost task": dict(next_attempt_at=None, enqueued_at=stale),
            "lost task too": dict(next_attempt_at=None, enqueued_at=stale - timedelta(seconds=1)),
            "lost retry": dict(next_attempt_at=stale, enqueued_at=stale),
            # not to enqueue: enqueued recently, not due yet, realtime
            "fresh": dict(next_attempt_at=None, enqueued_at=now),
            "retry waiting": dict(next_attempt_at=later, enqueued_at=later),
            "held, stale stamp": dict(next_attempt_at=later, enqueued_at=stale),
        }
        ids = {
            name: Delivery.objects.create(
                notification=notification, user=alice, device=device(alice), channel="fcm", **fields
            ).pk
            for name, fields in rows.items()
        }
        realtime = Delivery.objects.create(notification=notification, user=alice, channel="realtime")
        Delivery.objects.filter(pk=realtime.pk).update(enqueued_at=None, next_attempt_at=None)

        def sent():
            return set(Delivery.objects.filter(status="sent").values_list("pk", flat=True))

        assert sweeper.enqueue_due_deliveries(timezone.now()) == 3
        assert sent() == {ids["requeued"], ids["requeued too"], ids["lost task, oldest"]}
        assert [sweeper.enqueue_due_deliveries(timezone.now()) for _ in range(2)] == [3, 0]
        assert sent() == {ids[name] for name in list(rows)[:6]}
        assert sorted(s["delivery_id"] for s in recorder.sent()) == sorted(sent())  # each once
        assert Delivery.objects.get(pk=realtime.pk).status == "queued"

    def test_stuck_sending_is_requeued(self, alice, recorder, eager_tasks, fan_out, settings):
        delivery = push_delivery(alice, fan_out)
        Delivery.objects.filter(pk=delivery.pk).update(
            status="sending",
            updated_at=timezone.now() - timedelta(seconds=settings.CLARION_SENDING_STALE_SECS + 1),
        )
        assert sweeper.sweep()["requeued_sending"] == 1
        delivery.refresh_from_db()
        assert delivery.status == "sent"

    def test_undelivered_past_ttl_becomes_expired(self, alice, recorder, eager_tasks, fan_out):
        notification = send({"users": ["alice"]}, route="realtime", ttl=60)
        fan_out(notification.pk)
        Notification.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        assert sweeper.sweep()["expired"] == 1
        assert Delivery.objects.get().status == "expired"


def test_a_redelivered_send_task_after_success_sends_nothing(alice, recorder, eager_tasks, fan_out):
    """acks_late redelivers a task whose worker died after sending; the claim makes it a no-op."""
    delivery = push_delivery(alice, fan_out)
    sending.deliveries_send([delivery.pk])
    sending.deliveries_send([delivery.pk])
    assert len(recorder.sent()) == 1
    delivery.refresh_from_db()
    assert delivery.attempts == 1


class AckingProvider:
    """A provider during whose call the user reads the message in the app (a real ack)."""

    platform = "acking"

    def not_configured_reason(self) -> str:
        return ""

    def send(self, message, targets):
        from delivery.providers import Outcome, SendResult
        from delivery.services import inbox_ack

        for target in targets:
            delivery = Delivery.objects.select_related("user").get(pk=target.delivery_id)
            inbox_ack(user=delivery.user, notification_id=message.notification_id)
        return [SendResult(t.delivery_id, Outcome.SENT, provider_message_id="p") for t in targets]


def test_an_ack_during_the_provider_call_is_not_overwritten(alice, eager_tasks, fan_out, settings):
    settings.CLARION_PROVIDERS = {"fcm": "tests.delivery.test_sending.AckingProvider"}
    device(alice)
    fan_out(send({"users": ["alice"]}, route="push").pk)
    assert Delivery.objects.get().status == "delivered"
