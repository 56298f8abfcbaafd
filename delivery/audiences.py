"""Audiences: saved filters over users, and the sends that target them.

A send to an audience records the audience and a snapshot of its conditions
(`Notification.audience_conditions`); the fan-out walks the users matching that snapshot in
id order, batch by batch, as it walks a topic or a broadcast, so an audience has no size cap.

When the snapshot is taken decides what an edit to the audience does to a send:
- a send now: its conditions as it is sent;
- a scheduled send: taken when it is scheduled and taken again when it comes due, so an edit
  made meanwhile is followed (as a topic's subscribers are counted at send time); if the
  audience was deleted meanwhile, the send keeps the conditions it was scheduled with;
- a recurring send: each occurrence takes the audience as it is when it fires.
Who matches the conditions (subscriptions, devices, groups) is read batch by batch during the
fan-out, like a topic's subscribers. Once a fan-out has started its conditions never change,
so a resumed fan-out walks the same set and reaches nobody twice.
"""

from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from delivery.models import Audience, AudienceStaff, Notification, NotificationStatus
from devices.models import Device, MutedTopic, TopicSubscription

User = get_user_model()


def usernames_parse(text: str) -> list[str]:
    """Usernames from a textarea: one per line or comma-separated, blanks and repeats dropped."""
    names = (name.strip() for name in text.replace(",", "\n").splitlines())
    return list(dict.fromkeys(name for name in names if name))


def audience_has_conditions(audience: Audience) -> bool:
    return bool(
        usernames_parse(audience.usernames)
        or audience.topic
        or audience.platform
        or audience.seen_within_days
        or audience.staff
        or audience.group_id
    )


def audience_conditions(audience: Audience, now: datetime | None = None) -> dict:
    """The audience's conditions as plain JSON, "seen within N days" fixed to a moment."""
    seen_since = None
    if audience.seen_within_days:
        seen_since = ((now or timezone.now()) - timedelta(days=audience.seen_within_days)).isoformat()
    return {
        "usernames": usernames_parse(audience.usernames),
        "topic": audience.topic,
        "platform": audience.platform,
        "seen_since": seen_since,
        "staff": audience.staff,
        "group": audience.group_id,
    }


def users_matching(conditions: dict) -> QuerySet:
    """Active users matching every condition of a snapshot, one row each (one query over users,
    with EXISTS sub-queries, so it can be walked in id order however many match).

    No condition at all (an audience whose only condition was a since-deleted group) matches
    nobody: only broadcast reaches everyone."""
    if not any(conditions.values()):
        return User.objects.none()
    users = User.objects.filter(is_active=True)
    if conditions.get("usernames"):
        users = users.filter(username__in=conditions["usernames"])
    topic = conditions.get("topic")
    if topic:
        users = users.filter(
            Exists(TopicSubscription.objects.filter(user=OuterRef("pk"), topic=topic))
        ).exclude(Exists(MutedTopic.objects.filter(user=OuterRef("pk"), topic=topic)))
    if conditions.get("platform") or conditions.get("seen_since"):
        devices = Device.objects.filter(user=OuterRef("pk"), active=True)
        if conditions.get("platform"):
            devices = devices.filter(platform=conditions["platform"])
        if conditions.get("seen_since"):
            devices = devices.filter(last_seen_at__gte=datetime.fromisoformat(conditions["seen_since"]))
        users = users.filter(Exists(devices))
    if conditions.get("staff") == AudienceStaff.STAFF:
        users = users.filter(is_staff=True)
    elif conditions.get("staff") == AudienceStaff.NON_STAFF:
        users = users.filter(is_staff=False)
    if conditions.get("group"):
        memberships = User.groups.through.objects.filter(user_id=OuterRef("pk"), group_id=conditions["group"])
        users = users.filter(Exists(memberships))
    return users


def audience_users(audience: Audience) -> QuerySet:
    """Active users matching every condition of the audience (saved or not) now."""
    return users_matching(audience_conditions(audience))


def audience_count(audience: Audience) -> int:
    return audience_users(audience).count()


def audience_recipient_ids_after(conditions: dict, after_user_id: int, limit: int) -> list[int]:
    """The fan-out's next batch for an audience send: matching user ids after the cursor, in order."""
    return list(
        users_matching(conditions)
        .filter(pk__gt=after_user_id)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def scheduled_audience_refresh(notification_id: int) -> None:
    """A scheduled audience send coming due takes its audience's conditions as they are now."""
    audience = Audience.objects.filter(
        notifications__pk=notification_id, notifications__status=NotificationStatus.SCHEDULED
    ).first()
    if audience is not None:
        Notification.objects.filter(pk=notification_id, status=NotificationStatus.SCHEDULED).update(
            audience_conditions=audience_conditions(audience)
        )


def audience_summary(audience: Audience) -> str:
    """Its conditions in words, for lists and the compose page."""
    parts = []
    names = usernames_parse(audience.usernames)
    if names:
        parts.append(f"{len(names)} named user{'s' if len(names) != 1 else ''}")
    if audience.topic:
        parts.append(f"subscribed to “{audience.topic}”")
    if audience.platform:
        parts.append(f"on {audience.get_platform_display()}")
    if audience.seen_within_days:
        parts.append(f"seen in the last {audience.seen_within_days} days")
    if audience.staff:
        parts.append(audience.get_staff_display().lower())
    if audience.group_id:
        parts.append(f"in group “{audience.group}”")
    return ", ".join(parts) or "no conditions"
