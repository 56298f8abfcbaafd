"""Periodic housekeeping (the sweeper, retention) logs at DEBUG, so a log shows what happened.

Celery's beat, worker and tracer each log every task at INFO; the sweeper runs every second,
so three lines a second buried everything else (a first run's admin password among them).
This filter, on those three loggers, demotes the lines about tasks that beat schedules.
"""

import logging

from django.conf import settings


def _housekeeping_tasks() -> tuple[str, ...]:
    return tuple(entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values())


class HousekeepingAtDebug(logging.Filter):
    """Turns a Celery record about a periodic task into a DEBUG record (dropped unless DEBUG is on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        message = record.getMessage()
        if not any(task in message for task in _housekeeping_tasks()):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
