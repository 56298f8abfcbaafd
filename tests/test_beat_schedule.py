"""Beat's schedule as django-celery-beat stores it (notifyproject/beat.py): an interval of a
fraction of a second is kept as it is, not cut to whole seconds."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from notifyproject.beat import ExactIntervalEntry
from notifyproject.celery import app

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("seconds", [0.5, 0.25, 1.5])
def test_an_interval_of_a_fraction_of_a_second_is_stored_and_kept(seconds):
    ExactIntervalEntry.from_entry("sweep", app=app, task="delivery.tasks.due_work_sweep", schedule=seconds)
    entry = ExactIntervalEntry(PeriodicTask.objects.get(name="sweep"), app=app)  # as beat reads it back
    assert entry.schedule.run_every == timedelta(seconds=seconds)
    entry.last_run_at = timezone.now()
    due, next_check = entry.is_due()
    assert not due  # a stored interval of 0 s is always due: beat would send in a tight loop
    assert next_check == pytest.approx(seconds, abs=0.05)


def test_whole_seconds_are_stored_as_django_celery_beat_stores_them():
    ExactIntervalEntry.from_entry(
        "hourly", app=app, task="delivery.tasks.data_retention_sweep", schedule=3600.0
    )
    interval = PeriodicTask.objects.get(name="hourly").interval
    assert (interval.every, interval.period) == (3600, "seconds")
