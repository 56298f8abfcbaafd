"""Beat's scheduler: django-celery-beat's, made to ride out database outages.

DatabaseScheduler reads the database in its constructor and on ticks; a failure there kills
beat (and with it every scheduled send, retry and recovery sweep) until someone restarts it.
Here an outage only pauses beat, which carries on when the database is back.
"""

import logging
import time

from django.db import DatabaseError, close_old_connections
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)

# Capped back-off while the database is away; the cap bounds how late beat notices it is back.
OUTAGE_RETRY_FIRST_SECS = 0.5
OUTAGE_RETRY_CAP_SECS = 5.0


class ResilientDatabaseScheduler(DatabaseScheduler):
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
