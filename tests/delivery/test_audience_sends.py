"""Sends to a saved audience: the fan-out walks the audience's conditions, batch by batch."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from delivery import sweeper
from delivery.audiences import audience_users
from delivery.models import Audience, Delivery, InboxMessage, Notification
from delivery.services import AudienceWithTargetError, NotificationRequest, notification_send
from devices.models import UserPreferences
from tests.delivery.factories import audience_population, sender, users

pytestmark = pytest.mark.django_db


def send_to(audience: Audience, **fields) -> Notification:
    fields.setdefault("title", "Hello")
    notification, _ = notification_send(
        sender=sender(), request=NotificationRequest(target={}, audience=audience, **fields)
    )
    return notification


def reached(notification: Notification) -> list[str]:
    return sorted(
        InboxMessage.objects.filter(notification=notification).values_list("user__username", flat=True)
    )


@pytest.fixture
def editors(make_user):
    return audience_population(make_user)


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({"usernames": "ann, dan\ngone, nobody"}, ["ann", "dan"]),
        ({"topic": "news"}, ["ann", "ben"]),  # cat muted it
        ({"platform": "fcm"}, ["ann"]),  # dan's phone is inactive
        ({"seen_within_days": 30}, ["ann"]),
        ({"staff": "staff"}, ["ben"]),
        ({"staff": "non_staff"}, ["ann", "cat", "dan"]),
        ({"group": "editors"}, ["ann", "dan"]),
        ({"topic": "news", "group": "editors"}, ["ann"]),
        ({"platform": "apns", "seen_within_days": 60}, ["ben"]),
    ],
)
def test_the_fan_out_reaches_exactly_who_the_conditions_match(
    editors, fan_out, settings, conditions, expected
):
    settings.CLARION_FANOUT_BATCH = 1  # every recipient in a batch of its own: the keyset walk
    if conditions.get("group"):
        conditions = {**conditions, "group": editors}
    audience = Audience.objects.create(name="a", **conditions)
    notification = send_to(audience)
    assert notification.recipients == len(expected)
    fan_out(notification.pk)
    matching = sorted(audience_users(audience).values_list("username", flat=True))
    assert reached(notification) == expected == matching
    assert Notification.objects.get(pk=notification.pk).status == "dispatched"


def test_a_fan_out_run_twice_reaches_nobody_twice(editors, fan_out):
    notification = send_to(Audience.objects.create(name="news", topic="news"))
    fan_out(notification.pk)
    fan_out(notification.pk)
    assert reached(notification) == ["ann", "ben"]


def test_quiet_hours_hold_an_audience_sends_push(editors, fan_out, recorder, eager_tasks):
    ann = editors.user_set.get(username="ann")
    now = timezone.now()
    UserPreferences.objects.create(
        user=ann,
        quiet_start=(now - timedelta(hours=1)).time().replace(second=0, microsecond=0),
        quiet_end=(now + timedelta(hours=1)).time().replace(second=0, microsecond=0),
        timezone="UTC",
    )
    notification = send_to(Audience.objects.create(name="android", platform="fcm"), route="push")
    fan_out(notification.pk)
    held = Delivery.objects.get(notification=notification)
    assert held.status == "queued" and held.next_attempt_at > now + timedelta(minutes=55)
    assert recorder.sent() == []


def test_an_audience_left_without_conditions_reaches_nobody_not_everyone(editors, fan_out):
    audience = Audience.objects.create(name="editors", group=editors)
    editors.delete()  # the audience's only condition goes with it (SET_NULL)
    audience.refresh_from_db()
    assert not audience_users(audience).exists()
    notification = send_to(audience)
    fan_out(notification.pk)
    assert notification.recipients == 0 and reached(notification) == []


def test_an_audience_send_names_no_other_recipients(editors):
    audience = Audience.objects.create(name="news", topic="news")
    with pytest.raises(AudienceWithTargetError):
        notification_send(
            sender=sender(),
            request=NotificationRequest(target={"users": ["ann"]}, audience=audience, title="x"),
        )
    assert not Notification.objects.exists()


def test_an_audience_larger_than_a_batch_is_walked_to_the_end(fan_out, settings):
    settings.CLARION_FANOUT_BATCH = 7
    group = Group.objects.create(name="many")
    members = users(50, "m")
    users(30, "outsider")
    group.user_set.add(*members)
    notification = send_to(Audience.objects.create(name="many", group=group))
    assert notification.recipients == 50
    fan_out(notification.pk)
    assert InboxMessage.objects.filter(notification=notification).count() == 50
    assert Notification.objects.get(pk=notification.pk).fanout_cursor == members[-1].pk


class TestScheduled:
    def test_a_scheduled_send_takes_the_audience_as_it_is_when_due(
        self, editors, eager_tasks, django_capture_on_commit_callbacks
    ):
        audience = Audience.objects.create(name="news", topic="news")
        notification = send_to(audience, send_at=timezone.now() + timedelta(hours=1))
        assert notification.status == "scheduled"
        audience.topic = ""
        audience.group = editors  # edited before the send is due
        audience.save()
        with django_capture_on_commit_callbacks(execute=True):
            sweeper.release_due_scheduled(timezone.now() + timedelta(hours=2))
        notification.refresh_from_db()
        assert notification.audience_conditions["group"] == editors.pk and notification.status == "dispatched"
        assert reached(notification) == ["ann", "dan"]

    def test_a_deleted_audience_keeps_the_conditions_it_was_scheduled_with(
        self, editors, eager_tasks, django_capture_on_commit_callbacks
    ):
        audience = Audience.objects.create(name="news", topic="news")
        notification = send_to(audience, send_at=timezone.now() + timedelta(hours=1))
        audience.delete()
        with django_capture_on_commit_callbacks(execute=True):
            sweeper.release_due_scheduled(timezone.now() + timedelta(hours=2))
        notification.refresh_from_db()
        assert notification.audience is None and reached(notification) == ["ann", "ben"]
