"""Beat's scheduler: django-celery-beat's, made to ride out database outages and to keep
intervals of a fraction of a second.

DatabaseScheduler reads the database in its constructor and on ticks; a failure there kills
beat (and with it every scheduled send, retry and recovery sweep) until someone restarts it.
Here an outage only pauses beat, which carries on when the database is back.
"""

import logging
import time
from datetime import timedelta

from celery import schedules
from django.db import DatabaseError, close_old_connections
from django_celery_beat.models import IntervalSchedule
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

logger = logging.getLogger(__name__)

# Capped back-off while the database is away; the cap bounds how late beat notices it is back.
OUTAGE_RETRY_FIRST_SECS = 0.5
OUTAGE_RETRY_CAP_SECS = 5.0


class ExactIntervalEntry(ModelEntry):
    """django-celery-beat stores an interval as whole seconds: a sweep every 0.5 s became one
    every 0 s, and beat sent it in a tight loop, hundreds a second, burying every other task
    in the broker's queue. An interval that is not whole seconds is stored in microseconds."""

    @classmethod
    def to_model_schedule(cls, schedule):
        schedule = schedules.maybe_schedule(schedule)
        if isinstance(schedule, schedules.schedule) and not schedule.run_every.total_seconds().is_integer():
            every = round(schedule.run_every / timedelta(microseconds=1))
            period = IntervalSchedule.MICROSECONDS
            interval = IntervalSchedule.objects.filter(every=every, period=period).first()
            return interval or IntervalSchedule.objects.create(every=every, period=period), "interval"
        return super().to_model_schedule(schedule)


class ResilientDatabaseScheduler(DatabaseScheduler):
    Entry = ExactIntervalEntry

    def setup_schedule(self):
        delay = OUTAGE_RETRY_FIRST_SECS
        while True:
            try:
                return super().setup_schedule()
            except DatabaseError as exc:
                logger.warning(
                    "beat waiting for the database (%s); retrying in %.1f s", type(exc).__name__, delay
                )
                close_old_connections()
                time.sleep(delay)
                delay = min(delay * 2, OUTAGE_RETRY_CAP_SECS)

    def tick(self, *args, **kwargs):
        try:
            return super().tick(*args, **kwargs)
        except DatabaseError as exc:
            logger.warning("beat tick skipped, database unavailable (%s)", type(exc).__name__)
            close_old_connections()
            self._schedule = None  # re-read the schedule once the database answers again
            return OUTAGE_RETRY_CAP_SECS
