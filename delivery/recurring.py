"""Recurring notifications: our friendly model kept in step with django-celery-beat.

Product teams edit RecurringNotification (content, audience, an interval or a cron line);
this module owns the PeriodicTask behind it, so nobody edits task arguments as JSON.
"""

import json

from django.core.exceptions import ValidationError
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from delivery.models import RecurringNotification

TASK_NAME = "delivery.tasks.recurring_notification_send"
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


def parse_crontab(line: str) -> dict[str, str]:
    parts = line.split()
    if len(parts) != len(CRON_FIELDS):
        raise ValidationError("A cron schedule has five fields: minute hour day-of-month month day-of-week.")
    from celery.schedules import crontab

    try:
        crontab(**dict(zip(CRON_FIELDS, parts, strict=True)))
    except ValueError as exc:
        raise ValidationError(f"Invalid cron schedule: {exc}") from None
    return dict(zip(CRON_FIELDS, parts, strict=True))


def validate_schedule(interval_seconds: int | None, crontab_line: str) -> None:
    if bool(interval_seconds) == bool(crontab_line.strip()):
        raise ValidationError("Give either an interval in seconds or a cron schedule, not both.")
    if crontab_line.strip():
        parse_crontab(crontab_line)


def recurring_save(recurring: RecurringNotification) -> RecurringNotification:
    """Save the recurring notification and its beat schedule together."""
    validate_schedule(recurring.interval_seconds, recurring.crontab)
    with transaction.atomic():
        recurring.save()
        task = recurring.periodic_task or PeriodicTask(name=f"clarion-recurring-{recurring.pk}")
        task.task = TASK_NAME
        task.args = json.dumps([recurring.pk])
        task.enabled = recurring.enabled
        task.description = f"Recurring notification: {recurring.name}"
        if recurring.interval_seconds:
            task.interval, _ = IntervalSchedule.objects.get_or_create(
                every=recurring.interval_seconds, period=IntervalSchedule.SECONDS
            )
            task.crontab = None
        else:
            task.crontab, _ = CrontabSchedule.objects.get_or_create(
                timezone="UTC", **parse_crontab(recurring.crontab)
            )
            task.interval = None
        task.save()
        if recurring.periodic_task_id != task.pk:
            recurring.periodic_task = task
            recurring.save(update_fields=["periodic_task"])
    return recurring


def recurring_delete(recurring: RecurringNotification) -> None:
    with transaction.atomic():
        if recurring.periodic_task_id:
            PeriodicTask.objects.filter(pk=recurring.periodic_task_id).delete()
        recurring.delete()
