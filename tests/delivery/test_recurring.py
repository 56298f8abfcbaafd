"""Recurring notifications defined in the admin and fired by a real beat process."""

import json

import pytest
from django.db.models import ProtectedError
from django_celery_beat.models import PeriodicTask

from delivery.models import Audience, Notification, RecurringNotification
from tests.support.processes import wait_until

ADD_URL = "/admin/delivery/recurringnotification/add/"


def form(**overrides):
    data = {
        "name": "daily digest",
        "enabled": "on",
        "interval_seconds": "",
        "crontab": "",
        "title": "Digest",
        "body": "Your daily digest",
        "data": "{}",
        "url": "",
        "target_users": "",
        "target_topic": "",
        "route": "auto",
        "priority": "normal",
        "ttl": "3600",
    }
    data.update(overrides)
    return data


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("ops", is_staff=True, is_superuser=True))
    return client


@pytest.mark.django_db
class TestAdminForm:
    def test_an_interval_schedule_becomes_a_beat_task(self, staff_client):
        response = staff_client.post(ADD_URL, form(interval_seconds="60", broadcast="on"))
        assert response.status_code == 302, response.content[:2000]
        recurring = RecurringNotification.objects.get()
        task = PeriodicTask.objects.get(pk=recurring.periodic_task_id)
        assert task.task == "delivery.tasks.recurring_notification_send"
        assert json.loads(task.args) == [recurring.pk]
        assert task.interval.every == 60 and task.enabled

    def test_a_cron_schedule_becomes_a_crontab(self, staff_client):
        staff_client.post(ADD_URL, form(crontab="0 9 * * 1", target_topic="news"))
        task = RecurringNotification.objects.get().periodic_task
        assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("0", "9", "1")

    @pytest.mark.parametrize(
        "fields",
        [
            {"broadcast": "on"},  # no schedule
            {"broadcast": "on", "interval_seconds": "60", "crontab": "* * * * *"},  # both
            {"broadcast": "on", "crontab": "61 * * * *"},
            {"broadcast": "on", "crontab": "every day"},
            {"interval_seconds": "60"},  # no audience
        ],
    )
    def test_bad_definitions_are_refused_and_write_nothing(self, staff_client, fields):
        response = staff_client.post(ADD_URL, form(**fields))
        assert response.status_code == 200  # the form again, with errors
        assert b"errornote" in response.content
        assert (
            not RecurringNotification.objects.exists()
            and not PeriodicTask.objects.filter(task="delivery.tasks.recurring_notification_send").exists()
        )

    def test_a_saved_audience_is_the_whole_audience_and_cannot_be_deleted_from_under_it(self, staff_client):
        audience = Audience.objects.create(name="news readers", topic="news")
        refused = staff_client.post(
            ADD_URL, form(interval_seconds="60", audience=audience.pk, target_topic="news")
        )
        assert refused.status_code == 200 and b"leave users, topic and broadcast empty" in refused.content
        response = staff_client.post(ADD_URL, form(interval_seconds="60", audience=audience.pk))
        assert response.status_code == 302, response.content[:2000]
        assert RecurringNotification.objects.get().audience == audience
        listing = staff_client.get("/admin/delivery/recurringnotification/").content.decode()
        assert "audience “news readers”" in listing
        with pytest.raises(ProtectedError):
            audience.delete()

    def test_disabling_pauses_the_beat_task_and_deleting_removes_it(self, staff_client):
        staff_client.post(ADD_URL, form(interval_seconds="60", broadcast="on"))
        recurring = RecurringNotification.objects.get()
        change = f"/admin/delivery/recurringnotification/{recurring.pk}/change/"
        staff_client.post(change, form(interval_seconds="60", broadcast="on", enabled=""))
        assert PeriodicTask.objects.get(pk=recurring.periodic_task_id).enabled is False
        staff_client.post(f"/admin/delivery/recurringnotification/{recurring.pk}/delete/", {"post": "yes"})
        assert not PeriodicTask.objects.filter(pk=recurring.periodic_task_id).exists()


@pytest.mark.django_db(transaction=True)
def test_a_recurring_notification_fires_on_schedule_with_real_beat(staff_client, start_worker, alice):
    start_worker()
    staff_client.post(ADD_URL, form(interval_seconds="1", target_users="alice", title="tick"))
    recurring = RecurringNotification.objects.get()
    label = f"recurring:{recurring.pk}"
    wait_until(
        lambda: Notification.objects.filter(sender_label=label).count() >= 2,
        timeout=30,
        message="two occurrences",
    )
    first, second = Notification.objects.filter(sender_label=label).order_by("created_at")[:2]
    # At least half an interval apart (a repeated beat tick is not a second occurrence), less
    # the moment between an occurrence's claim and its row's created_at.
    assert 0.4 <= (second.created_at - first.created_at).total_seconds() <= 3
    assert first.title == "tick" and first.recipients == 1


@pytest.mark.django_db
def test_a_repeated_beat_tick_is_not_a_second_occurrence(staff_client, alice):
    """django-celery-beat can run a changed schedule's entry twice in a row."""
    from datetime import timedelta

    from delivery.services import recurring_notification_fire

    staff_client.post(ADD_URL, form(interval_seconds="60", target_users="alice", title="tick"))
    recurring = RecurringNotification.objects.get()
    assert recurring_notification_fire(recurring.pk) is not None
    assert recurring_notification_fire(recurring.pk) is None  # the same tick again
    assert Notification.objects.filter(sender_label=f"recurring:{recurring.pk}").count() == 1

    last_sent_at = RecurringNotification.objects.get().last_sent_at
    RecurringNotification.objects.update(last_sent_at=last_sent_at - timedelta(seconds=31))
    assert recurring_notification_fire(recurring.pk) is not None  # half an interval later: the next
    assert Notification.objects.filter(sender_label=f"recurring:{recurring.pk}").count() == 2
