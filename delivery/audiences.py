"""Audiences: saved filters over users that the admin sends to.

`notification_send` understands users, devices, a topic or broadcast, and the fan-out walks
`recipients_queryset(target)`; neither knows audiences. So an audience is resolved to a
`{"users": [...]}` target when the notification is sent, capped at the API's limit of named
users (MAX_TARGETS). Larger audiences are refused with a message pointing at topics and
broadcast, rather than silently truncated. The resolved list is stored in the notification's
target, so what was sent stays auditable after the audience is edited.
"""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from delivery.models import Audience, AudienceStaff
from delivery.serializers import MAX_TARGETS
from devices.models import Device, MutedTopic, TopicSubscription

User = get_user_model()

AUDIENCE_MAX_USERS = MAX_TARGETS


class AudienceTooLargeError(ValueError):
    pass


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


def audience_users(audience: Audience) -> QuerySet:
    """Active users matching every condition of the audience (saved or not), one row each."""
    users = User.objects.filter(is_active=True)
    names = usernames_parse(audience.usernames)
    if names:
        users = users.filter(username__in=names)
    if audience.topic:
        users = users.filter(
            Exists(TopicSubscription.objects.filter(user=OuterRef("pk"), topic=audience.topic))
        ).exclude(Exists(MutedTopic.objects.filter(user=OuterRef("pk"), topic=audience.topic)))
    if audience.platform or audience.seen_within_days:
        devices = Device.objects.filter(user=OuterRef("pk"), active=True)
        if audience.platform:
            devices = devices.filter(platform=audience.platform)
        if audience.seen_within_days:
            devices = devices.filter(
                last_seen_at__gte=timezone.now() - timedelta(days=audience.seen_within_days)
            )
        users = users.filter(Exists(devices))
    if audience.staff == AudienceStaff.STAFF:
        users = users.filter(is_staff=True)
    elif audience.staff == AudienceStaff.NON_STAFF:
        users = users.filter(is_staff=False)
    if audience.group_id:
        memberships = User.groups.through.objects.filter(user_id=OuterRef("pk"), group_id=audience.group_id)
        users = users.filter(Exists(memberships))
    return users


def audience_count(audience: Audience) -> int:
    return audience_users(audience).count()


def audience_target(audience: Audience) -> dict:
    """The send target for this audience now: its usernames, or AudienceTooLargeError past the cap."""
    names = list(
        audience_users(audience).order_by("pk").values_list("username", flat=True)[: AUDIENCE_MAX_USERS + 1]
    )
    if len(names) > AUDIENCE_MAX_USERS:
        raise AudienceTooLargeError(
            f"The audience “{audience.name}” has more than {AUDIENCE_MAX_USERS:,} users, the most one "
            "send can name. Send to a topic or broadcast instead, or narrow the audience."
        )
    return {"users": names}


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
