"""Audience sends end to end: composed in the admin, fanned out by a real Celery worker with beat."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from delivery.models import Audience, Delivery, InboxMessage, Notification, RecurringNotification, UserStream
from delivery.services import NotificationRequest, Sender, notification_send
from tests.delivery.factories import device, users
from tests.support.fanout_kill import fan_out_killed_mid_way
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

COMPOSE_URL = "/admin/delivery/notification/compose/"
RECURRING_ADD_URL = "/admin/delivery/recurringnotification/add/"


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("ops", is_staff=True, is_superuser=True))
    return client


def compose(client, audience: Audience, **fields):
    data = {
        "send_to": "audience",
        "audience": audience.pk,
        "title": "To the audience",
        "data": "{}",
        "route": "auto",
        "priority": "normal",
        "ttl": "3600",
        "idempotency_key": f"audience-{audience.pk}-{fields.get('send_at', 'now')}",
        "_send": "Send",
        **fields,
    }
    response = client.post(COMPOSE_URL, data)
    assert response.status_code == 302, response.content[:3000]
    return Notification.objects.filter(audience=audience).latest("pk")


def group_of(name: str, members) -> Group:
    group = Group.objects.create(name=name)
    memberships = [Group.user_set.through(group_id=group.pk, user_id=user.pk) for user in members]
    Group.user_set.through.objects.bulk_create(memberships)
    return group


def reached_ids(notification) -> list[int]:
    return list(InboxMessage.objects.filter(notification=notification).values_list("user_id", flat=True))


def test_an_audience_larger_than_the_old_cap_is_fully_reached_from_the_admin(
    staff_client, start_worker, recorder
):
    members = users(12_000, "aud")
    users(500, "outside")  # not members
    inactive = members[:10]
    get_user_model().objects.filter(pk__in=[u.pk for u in inactive]).update(is_active=False)
    for user in members[100:400]:  # some members have a phone
        device(user)
    audience = Audience.objects.create(name="big", group=group_of("big", members))
    start_worker()
    notification = compose(staff_client, audience)
    assert notification.recipients == 11_990
    wait_until(
        lambda: Notification.objects.get(pk=notification.pk).status == "dispatched",
        timeout=120,
        interval=0.5,
        message="fan-out done",
    )
    ids = reached_ids(notification)
    assert len(ids) == len(set(ids)) == 11_990
    assert set(ids) == {u.pk for u in members[10:]}
    wait_until(
        lambda: (
            Delivery.objects.filter(notification=notification, channel="fcm", status="sent").count() == 300
        ),
        timeout=120,
        interval=0.5,
        message="every push sent",
    )
    assert len(recorder.sent()) == 300


def test_a_scheduled_send_reaches_the_audience_as_it_is_when_due(staff_client, start_worker):
    _ann, ben, cat = users(3, "s")
    audience = Audience.objects.create(name="first", usernames="s0")
    start_worker()
    send_at = (timezone.now() + timedelta(seconds=4)).replace(microsecond=0)
    notification = compose(staff_client, audience, send_at=send_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert notification.status == "scheduled" and notification.recipients == 1
    audience.usernames = "s1, s2"  # edited before the send is due
    audience.save()
    wait_until(
        lambda: Notification.objects.get(pk=notification.pk).status == "dispatched",
        timeout=30,
        message="the scheduled send",
    )
    assert sorted(reached_ids(notification)) == [ben.pk, cat.pk]
    assert Notification.objects.get(pk=notification.pk).audience_conditions["usernames"] == ["s1", "s2"]


def test_a_recurring_send_reaches_the_audience_as_it_is_when_it_fires(staff_client, start_worker):
    first, second = users(2, "r")
    group = group_of("weekly", [first])
    audience = Audience.objects.create(name="weekly", group=group)
    start_worker()
    response = staff_client.post(
        RECURRING_ADD_URL,
        {
            "name": "digest",
            "enabled": "on",
            "interval_seconds": "1",
            "title": "Digest",
            "data": "{}",
            "audience": audience.pk,
            "route": "auto",
            "priority": "normal",
            "ttl": "3600",
        },
    )
    assert response.status_code == 302, response.content[:3000]
    recurring = RecurringNotification.objects.get()
    label = f"recurring:{recurring.pk}"
    wait_until(
        lambda: Notification.objects.filter(sender_label=label, status="dispatched").exists(),
        timeout=30,
        message="a first occurrence",
    )
    assert reached_ids(Notification.objects.filter(sender_label=label).earliest("pk")) == [first.pk]

    group.user_set.add(second)  # the audience grows between occurrences
    edited_at = timezone.now()

    def later_occurrence():
        return (
            Notification.objects.filter(sender_label=label, created_at__gt=edited_at, status="dispatched")
            .order_by("pk")
            .first()
        )

    wait_until(later_occurrence, timeout=30, message="an occurrence after the edit")
    occurrence = later_occurrence()
    assert occurrence.audience == audience and occurrence.target == {}
    assert sorted(reached_ids(occurrence)) == [first.pk, second.pk]
    RecurringNotification.objects.filter(pk=recurring.pk).update(enabled=False)


def test_worker_killed_mid_audience_fan_out_resumes_and_sends_nothing_twice(start_worker, recorder):
    """As tests/delivery/test_pipeline.py's kill test, with an audience instead of a broadcast."""
    everyone = users(1200, "k")
    members = everyone[::3]  # 400, with non-members between them
    for user in members:
        device(user)
    UserStream.objects.bulk_create([UserStream(user=user) for user in everyone])
    audience = Audience.objects.create(name="some", group=group_of("some", members))
    env = {"CLARION_FANOUT_BATCH": 50, "CLARION_STALE_WORK_SECS": 2, "CLARION_SENDING_STALE_SECS": 5}
    notification = fan_out_killed_mid_way(
        start_worker,
        env,
        blocker_user_id=members[220].pk,  # in the fifth batch of 50
        send=lambda: notification_send(
            sender=Sender(label="tests"),
            request=NotificationRequest(target={}, audience=audience, title="big"),
        )[0],
        written_before=200,
    )

    start_worker(**env)
    wait_until(
        lambda: Delivery.objects.filter(notification=notification, status="sent").count() == 400,
        timeout=60,
        message="every delivery sent after the restart",
    )
    assert sorted(reached_ids(notification)) == [u.pk for u in members]
    sent_ids = [s["delivery_id"] for s in recorder.sent()]
    assert len(sent_ids) == len(set(sent_ids)) == 400
    assert Notification.objects.get(pk=notification.pk).status == "dispatched"
