"""Quiet hours and muted topics: when and whether push may reach a user."""

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import transaction

from devices.models import MutedTopic, UserPreferences


def quiet_hours_end(prefs: UserPreferences | None, now: datetime) -> datetime | None:
    """When the user's quiet hours end, if `now` is inside them; else None."""
    if prefs is None or prefs.quiet_start is None or prefs.quiet_end is None:
        return None
    try:
        zone = ZoneInfo(prefs.timezone or "UTC")
    except ZoneInfoNotFoundError:
        zone = ZoneInfo("UTC")
    local = now.astimezone(zone)
    start, end, clock = prefs.quiet_start, prefs.quiet_end, local.time()
    if start == end:
        return None
    overnight = start > end  # e.g. 22:00-07:00
    inside = (clock >= start or clock < end) if overnight else (start <= clock < end)
    if not inside:
        return None
    end_day = local.date() + timedelta(days=1) if overnight and clock >= start else local.date()
    return datetime.combine(end_day, end, tzinfo=zone)


def quiet_hours_ends(user_ids: list[int], now: datetime) -> dict[int, datetime]:
    """user id → end of quiet hours, for the users among these who are in them now."""
    ends = {}
    for prefs in UserPreferences.objects.filter(user_id__in=user_ids).exclude(quiet_start=None):
        end = quiet_hours_end(prefs, now)
        if end is not None:
            ends[prefs.user_id] = end
    return ends


def preferences_get(user) -> dict:
    prefs = UserPreferences.objects.filter(user=user).first()
    quiet = None
    if prefs and prefs.quiet_start is not None and prefs.quiet_end is not None:
        quiet = {
            "start": prefs.quiet_start.strftime("%H:%M"),
            "end": prefs.quiet_end.strftime("%H:%M"),
            "timezone": prefs.timezone,
        }
    muted = sorted(MutedTopic.objects.filter(user=user).values_list("topic", flat=True))
    return {"quiet_hours": quiet, "muted_topics": muted}


def preferences_set(
    user, *, quiet_start: time | None, quiet_end: time | None, timezone: str, muted_topics: list[str]
):
    with transaction.atomic():
        UserPreferences.objects.update_or_create(
            user=user,
            defaults={"quiet_start": quiet_start, "quiet_end": quiet_end, "timezone": timezone or "UTC"},
        )
        MutedTopic.objects.filter(user=user).exclude(topic__in=muted_topics).delete()
        MutedTopic.objects.bulk_create(
            [MutedTopic(user=user, topic=topic) for topic in set(muted_topics)], ignore_conflicts=True
        )
