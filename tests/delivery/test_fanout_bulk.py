"""Set-based fan-out writes (delivery/fanout_sql.py): the same rows as the ORM path, all or nothing."""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from django.utils import timezone

from delivery import fanout
from delivery.models import Delivery, InboxMessage, Notification, UserStream
from devices.models import App, UserPreferences
from realtime.presence import get_presence
from tests.delivery.factories import device, send, users


def online(user):
    async_to_sync(get_presence().touch)(user.pk, f"conn-{user.pk}")


def in_quiet_hours(user):
    now = timezone.now()
    UserPreferences.objects.create(
        user=user,
        quiet_start=(now - timedelta(hours=1)).time().replace(second=0, microsecond=0),
        quiet_end=(now + timedelta(hours=1)).time().replace(second=0, microsecond=0),
        timezone="UTC",
    )


@pytest.fixture
def audience():
    """Every case a batch distinguishes: online or not, quiet hours, several devices, an inactive
    one, another app's, no device, and a user reached only through one of their devices."""
    App.objects.create(slug="rider")
    live_quiet, two_phones, device_only, no_device, inactive, other_app = users(6, "m")
    online(live_quiet)
    online(no_device)
    in_quiet_hours(live_quiet)
    device(live_quiet)
    device(two_phones)
    device(two_phones, "apns")
    targeted = device(device_only)
    device(device_only)  # not targeted: never sent to
    device(inactive, active=False)
    device(other_app, app="rider")
    return {
        "users": [u.username for u in (live_quiet, two_phones, no_device, inactive, other_app)],
        "devices": [targeted.pk],
    }


def rows_of(notification):
    """A notification's rows with what varies between two equal sends taken out: cursors as the
    users' positions, not-before moments as minutes after the send (-1: now)."""
    inbox = {
        m.user.username: (m.live, m.seq - UserStream.objects.get(user=m.user).last_seq)
        for m in InboxMessage.objects.filter(notification=notification).select_related("user")
    }
    deliveries = sorted(
        (
            d.user.username,
            d.device_id or 0,
            d.channel,
            d.status,
            -1
            if d.next_attempt_at is None
            else round((d.next_attempt_at - notification.created_at).total_seconds() / 60),
        )
        for d in Delivery.objects.filter(notification=notification).select_related("user")
    )
    return inbox, deliveries


@pytest.mark.django_db
@pytest.mark.parametrize("route", ["auto", "all", "realtime", "push"])
@pytest.mark.parametrize("priority", ["normal", "high"])
@pytest.mark.parametrize("app", ["", "rider"])
def test_set_based_rows_are_the_orm_rows(audience, route, priority, app, settings, recorder, fan_out):
    written = {}
    for path in ("orm", "set-based"):
        settings.CLARION_FANOUT_BULK = path == "set-based"
        notification = send(audience, route=route, priority=priority, app=app)
        fan_out(notification.pk)
        written[path] = rows_of(notification)
        Notification.objects.filter(pk=notification.pk).delete()
    assert written["set-based"] == written["orm"]
    assert written["orm"][0] and (written["orm"][1] or route == "realtime")


@pytest.mark.django_db
def test_a_batch_writes_its_rows_in_a_constant_number_of_statements(settings, django_assert_max_num_queries):
    """No statement per recipient: the rows of 1 and of 300 recipients cost the same round trips."""
    settings.CLARION_FANOUT_BULK = True
    for user in users(300, "c"):
        device(user)
    notification = send({"broadcast": True}, route="push")
    with django_assert_max_num_queries(12):
        assert fanout._fan_out_next_batch(notification.pk)  # the small first batch (200)
    with django_assert_max_num_queries(12):
        fanout.notification_fan_out(notification.pk)  # the rest, in one full batch
    assert InboxMessage.objects.filter(notification=notification).count() == 300
    assert Delivery.objects.filter(notification=notification).count() == 300


@pytest.mark.django_db(transaction=True)
def test_a_fan_out_rolled_back_around_it_writes_and_sends_nothing(alice, bob, recorder, settings):
    """Inside a caller's transaction that fails, the batch's rows and cursors go with it, and no
    send task or realtime publish leaves (they wait for a commit that never comes)."""
    from notifyproject.celery import app

    settings.CLARION_FANOUT_BULK = True
    app.conf.task_always_eager = True  # were a send enqueued, it would run here and be recorded
    try:
        device(alice)
        device(bob)
        online(alice)
        notification = send(
            {"users": ["alice", "bob"]}, route="all", send_at=timezone.now() + timedelta(hours=1)
        )
        Notification.objects.filter(pk=notification.pk).update(status="queued")
        with pytest.raises(RuntimeError), transaction.atomic():
            fanout.notification_fan_out(notification.pk)
            assert Delivery.objects.filter(notification=notification).count() == 4
            raise RuntimeError("the caller's transaction fails")
    finally:
        app.conf.task_always_eager = False
    assert InboxMessage.objects.count() == 0 and Delivery.objects.count() == 0
    assert not UserStream.objects.filter(last_seq__gt=0).exists()
    assert Notification.objects.get(pk=notification.pk).status == "queued"
    assert recorder.sent() == []
