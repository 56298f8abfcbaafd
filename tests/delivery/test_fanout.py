"""Fan-out and routing: who gets which deliveries, in which order, and when."""

import tracemalloc
from datetime import time, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from delivery import fanout
from delivery.models import Delivery, InboxMessage, Notification, NotificationStatus, UserStream
from devices.models import MutedTopic, TopicSubscription, UserPreferences
from realtime.presence import get_presence
from tests.delivery.factories import device, send, users

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=["set-based", "orm"])
def row_writer(request, settings):
    """Every test here runs on both row writers: set-based SQL (PostgreSQL) and the ORM (SQLite's)."""
    settings.CLARION_FANOUT_BULK = request.param == "set-based"
    return request.param


def online(user):
    async_to_sync(get_presence().touch)(user.pk, f"conn-{user.pk}")


def deliveries_of(notification):
    return {
        (d.user.username, d.channel, d.status)
        for d in Delivery.objects.filter(notification=notification).select_related("user")
    }


class TestRouting:
    def test_auto_without_a_connection_goes_straight_to_push(self, alice, recorder, eager_tasks, fan_out):
        phone = device(alice)
        notification = send({"users": ["alice"]})
        fan_out(notification.pk)
        assert deliveries_of(notification) == {("alice", "fcm", "sent")}
        assert [s["device_id"] for s in recorder.sent()] == [phone.pk]

    def test_auto_with_a_connection_goes_realtime_and_holds_push_back(
        self, alice, recorder, eager_tasks, settings, fan_out
    ):
        device(alice)
        online(alice)
        notification = send({"users": ["alice"]})
        fan_out(notification.pk)
        assert deliveries_of(notification) == {("alice", "realtime", "sent"), ("alice", "fcm", "queued")}
        held = Delivery.objects.get(channel="fcm")
        assert held.next_attempt_at >= timezone.now() + timedelta(
            seconds=settings.CLARION_ACK_TIMEOUT_SECS - 1
        )
        assert recorder.sent() == []

    def test_ack_cancels_the_held_push(self, alice, recorder, eager_tasks, fan_out):
        from delivery.services import inbox_ack

        device(alice)
        online(alice)
        notification = send({"users": ["alice"]})
        fan_out(notification.pk)
        assert inbox_ack(user=alice, notification_id=notification.pk)
        assert deliveries_of(notification) == {
            ("alice", "realtime", "delivered"),
            ("alice", "fcm", "cancelled"),
        }

    def test_route_all_uses_every_channel(self, alice, recorder, eager_tasks, fan_out):
        device(alice, "fcm")
        device(alice, "apns")
        online(alice)
        notification = send({"users": ["alice"]}, route="all")
        fan_out(notification.pk)
        assert deliveries_of(notification) == {
            ("alice", "realtime", "sent"),
            ("alice", "fcm", "sent"),
            ("alice", "apns", "sent"),
        }

    def test_route_realtime_never_pushes(self, alice, bob, recorder, eager_tasks, fan_out):
        device(alice)
        online(alice)
        notification = send({"users": ["alice", "bob"]}, route="realtime")
        fan_out(notification.pk)
        # bob is offline: his realtime delivery waits in his stream for his next connection.
        assert deliveries_of(notification) == {("alice", "realtime", "sent"), ("bob", "realtime", "queued")}
        assert recorder.sent() == []

    def test_route_push_skips_realtime_even_when_connected(self, alice, recorder, eager_tasks, fan_out):
        device(alice)
        online(alice)
        notification = send({"users": ["alice"]}, route="push")
        fan_out(notification.pk)
        assert deliveries_of(notification) == {("alice", "fcm", "sent")}
        assert InboxMessage.objects.get().live is False

    def test_targeting_devices_reaches_only_those_devices(self, alice, recorder, eager_tasks, fan_out):
        wanted, _other = device(alice), device(alice)
        notification = send({"devices": [wanted.pk]})
        fan_out(notification.pk)
        assert [s["device_id"] for s in recorder.sent()] == [wanted.pk]

    def test_inactive_devices_are_not_sent_to(self, alice, recorder, eager_tasks, fan_out):
        device(alice, active=False)
        notification = send({"users": ["alice"]}, route="push")
        fan_out(notification.pk)
        assert recorder.sent() == [] and not Delivery.objects.exists()

    def test_unconfigured_provider_is_skipped_with_the_reason(self, alice, eager_tasks, fan_out):
        device(alice)
        notification = send({"users": ["alice"]}, route="push")
        fan_out(notification.pk)
        delivery = Delivery.objects.get()
        assert delivery.status == "skipped"
        assert "fcm" in delivery.error


class TestAudience:
    def test_topic_reaches_subscribers_except_those_who_muted_it(
        self, alice, bob, make_user, recorder, eager_tasks, fan_out
    ):
        carol = make_user("carol")
        for user in (alice, bob):
            TopicSubscription.objects.create(user=user, topic="news")
        MutedTopic.objects.create(user=bob, topic="news")
        for user in (alice, bob, carol):
            device(user)
        notification = send({"topic": "news"})
        fan_out(notification.pk)
        assert {s["token"] for s in recorder.sent()} == {alice.devices.get().token}
        assert set(InboxMessage.objects.values_list("user__username", flat=True)) == {"alice"}

    def test_muted_topic_blocks_realtime_too(self, alice, recorder, eager_tasks, fan_out):
        TopicSubscription.objects.create(user=alice, topic="news")
        MutedTopic.objects.create(user=alice, topic="news")
        online(alice)
        notification = send({"topic": "news"}, route="all")
        fan_out(notification.pk)
        assert not InboxMessage.objects.exists() and not Delivery.objects.exists()

    def test_broadcast_reaches_every_active_user_once(self, alice, bob, make_user, eager_tasks, fan_out):
        make_user("gone", is_active=False)
        TopicSubscription.objects.create(user=alice, topic="news")
        notification = send({"broadcast": True, "users": ["alice"], "topic": "news"})
        fan_out(notification.pk)
        assert sorted(InboxMessage.objects.values_list("user__username", flat=True)) == ["alice", "bob"]
        assert Notification.objects.get().status == NotificationStatus.DISPATCHED


class TestCursor:
    def test_each_user_cursor_only_grows(self, alice, bob, eager_tasks, fan_out):
        for _ in range(3):
            fan_out(send({"users": ["alice", "bob"]}).pk)
        fan_out(send({"users": ["alice"]}).pk)
        assert list(InboxMessage.objects.filter(user=alice).order_by("id").values_list("seq", flat=True)) == [
            1,
            2,
            3,
            4,
        ]
        assert list(InboxMessage.objects.filter(user=bob).order_by("id").values_list("seq", flat=True)) == [
            1,
            2,
            3,
        ]
        assert UserStream.objects.get(user=alice).last_seq == 4

    def test_fan_out_runs_once_even_if_dispatched_twice(self, alice, recorder, eager_tasks, fan_out):
        device(alice)
        notification = send({"users": ["alice"]})
        fan_out(notification.pk)
        fan_out(notification.pk)
        assert InboxMessage.objects.count() == 1 and len(recorder.sent()) == 1


class TestTimeRules:
    def test_quiet_hours_defer_normal_push_until_they_end(self, alice, recorder, eager_tasks, fan_out):
        device(alice)
        now = timezone.now()
        start = (now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
        end = (now + timedelta(hours=1)).time().replace(second=0, microsecond=0)
        UserPreferences.objects.create(user=alice, quiet_start=start, quiet_end=end, timezone="UTC")
        notification = send({"users": ["alice"]}, route="push")
        fan_out(notification.pk)
        held = Delivery.objects.get()
        assert held.status == "queued" and held.next_attempt_at > now + timedelta(minutes=55)
        assert recorder.sent() == []

    def test_high_priority_goes_through_quiet_hours(self, alice, recorder, eager_tasks, fan_out):
        device(alice)
        UserPreferences.objects.create(
            user=alice, quiet_start=time(0, 0), quiet_end=time(23, 59), timezone="UTC"
        )
        notification = send({"users": ["alice"]}, route="push", priority="high")
        fan_out(notification.pk)
        assert len(recorder.sent()) == 1

    def test_expired_notification_is_not_fanned_out(self, alice, recorder, eager_tasks, fan_out):
        device(alice)
        notification = send({"users": ["alice"]}, ttl=0)
        fan_out(notification.pk)
        assert Notification.objects.get().status == NotificationStatus.EXPIRED
        assert recorder.sent() == []

    def test_newer_notification_with_the_same_collapse_key_replaces_an_undelivered_one(
        self, alice, recorder, eager_tasks, fan_out
    ):
        device(alice)
        online(alice)  # auto holds push back, so the first one is still undelivered
        sender_ = __import__("tests.delivery.factories", fromlist=["sender"]).sender()
        first = send({"users": ["alice"]}, by=sender_, collapse_key="score")
        fan_out(first.pk)
        second = send({"users": ["alice"]}, by=sender_, collapse_key="score")
        fan_out(second.pk)
        replaced = Delivery.objects.get(notification=first, channel="fcm")
        assert replaced.status == "cancelled" and f"notification {second.pk}" in replaced.error
        assert Delivery.objects.get(notification=second, channel="fcm").status == "queued"


class TestScale:
    def test_queries_per_batch_do_not_grow_with_the_batch(self, settings, recorder, eager_tasks, fan_out):
        created = users(600)
        for user in created:
            device(user)

        def queries_for_batch(size):
            settings.CLARION_FANOUT_BATCH = size
            notification = send({"broadcast": True})
            with CaptureQueriesContext(connection) as ctx:
                fanout._fan_out_next_batch(notification.pk)
            Notification.objects.filter(pk=notification.pk).update(status=NotificationStatus.CANCELLED)
            return len(ctx.captured_queries)

        assert queries_for_batch(10) == queries_for_batch(500)

    def test_an_audience_smaller_than_a_batch_is_fanned_out_in_one_pass(self, alice, bob, eager_tasks):
        """The short batch is the last: it marks the notification dispatched itself, so a
        one-user send costs one fan-out transaction, not a second one that finds nobody."""
        notification = send({"users": ["alice", "bob"]})
        with CaptureQueriesContext(connection) as ctx:
            more = fanout._fan_out_next_batch(notification.pk)
        notification.refresh_from_db()
        assert more is False
        assert notification.status == NotificationStatus.DISPATCHED and notification.dispatched_at
        assert InboxMessage.objects.filter(notification=notification).count() == 2
        locks = [q for q in ctx.captured_queries if "FOR UPDATE" in q["sql"]]
        assert len(locks) == 1

    def test_fan_out_memory_stays_bounded_as_the_audience_grows(self, settings, eager_tasks, fan_out):
        settings.CLARION_FANOUT_BATCH = 200

        def peak_bytes(count, prefix):
            users(count, prefix)
            notification = send({"users": [], "broadcast": True})
            Notification.objects.filter(pk=notification.pk).update(fanout_cursor=0)
            tracemalloc.start()
            fan_out(notification.pk)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            return peak

        small = peak_bytes(1000, "s")
        large = peak_bytes(4000, "l")  # 5,000 users in all, 5x the first audience
        print(f"fan-out peak memory: {small / 1e6:.2f} MB for 1,000 users, {large / 1e6:.2f} MB for 5,000")
        assert large < small * 2


class TestAfterCommitFailures:
    @pytest.mark.django_db(transaction=True)
    def test_a_broker_outage_after_a_batch_commits_does_not_fail_the_fan_out(self, alice, monkeypatch):
        """The batch is committed; an enqueue that fails after it is logged (the sweeper enqueues
        later), never raised: Django logs a failing robust on_commit hook by its __qualname__,
        which a functools.partial lacks, so the hook must be a plain function or lambda."""
        from kombu.exceptions import OperationalError

        from delivery import tasks

        class BrokerDown:
            def delay(self, *args, **kwargs):
                raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

            apply_async = delay

        device(alice)
        # Scheduled, so accepting it dispatches nothing; then due, as the sweeper would release it.
        notification = send({"users": ["alice"]}, route="push", send_at=timezone.now() + timedelta(hours=1))
        Notification.objects.filter(pk=notification.pk).update(status=NotificationStatus.QUEUED)
        monkeypatch.setattr(tasks, "deliveries_send", BrokerDown())

        fanout.notification_fan_out(notification.pk)

        assert Notification.objects.get(pk=notification.pk).status == NotificationStatus.DISPATCHED
        assert Delivery.objects.get(notification=notification).status == "queued"  # left for the sweeper


def test_push_deliveries_are_written_grouped_by_app_and_platform(alice, bob, recorder, eager_tasks, fan_out):
    """Send tasks take consecutive slices; grouped rows make each slice one provider call, not several."""
    from devices.models import App

    App.objects.create(slug="rider")
    for user in (alice, bob):
        for app in ("rider", "default"):
            device(user, "apns", token=f"{user.pk:02x}{len(app):02x}" * 16, app=app)
            device(user, "fcm", app=app)
    notification = send({"users": ["alice", "bob"]}, route="push")
    fan_out(notification.pk)

    written = list(
        Delivery.objects.filter(notification=notification)
        .order_by("pk")
        .values_list("device__app", "channel")
    )
    assert written == sorted(written) and len(written) == 8
    assert {(entry["app"], entry["token"]) for entry in recorder.sent()} == {
        (app, token) for app, token in Delivery.objects.values_list("device__app", "device__token")
    }
