"""Test data builders for sending."""

import itertools

from django.contrib.auth import get_user_model

from delivery.services import NotificationRequest, Sender, api_key_create, notification_send
from devices.models import Device

_tokens = itertools.count(1)


def sender() -> Sender:
    api_key, _ = api_key_create(name="tests", scopes=["send", "read"])
    return Sender.for_api_key(api_key)


def send(target: dict, *, by: Sender | None = None, idempotency_key: str | None = None, **fields):
    fields.setdefault("title", "Hello")
    notification, _ = notification_send(
        sender=by or sender(),
        request=NotificationRequest(target=target, **fields),
        idempotency_key=idempotency_key,
    )
    return notification


def device(user, platform: str = "fcm", **fields) -> Device:
    token = fields.pop("token", None) or (("ab" * 32) if platform == "apns" else f"tok-{next(_tokens)}")
    from django.utils import timezone

    return Device.objects.create(
        user=user, platform=platform, token=token, last_seen_at=timezone.now(), **fields
    )


def users(count: int, prefix: str = "u"):
    User = get_user_model()  # noqa: N806
    return User.objects.bulk_create([User(username=f"{prefix}{i}") for i in range(count)])


def audience_population(make_user):
    """ann, ben (staff), cat, dan and inactive "gone": topic "news" (cat muted it), devices (ann's
    fcm, ben's apns seen 40 days ago, dan's inactive fcm); returns the group "editors" (ann, dan)."""
    from datetime import timedelta

    from django.contrib.auth.models import Group
    from django.utils import timezone

    from devices.models import MutedTopic, TopicSubscription

    ann, ben, cat, dan = (make_user(n) for n in ("ann", "ben", "cat", "dan"))
    make_user("gone", is_active=False)
    ben.is_staff = True
    ben.save()
    for user in (ann, ben, cat):
        TopicSubscription.objects.create(user=user, topic="news")
    MutedTopic.objects.create(user=cat, topic="news")
    device(ann, "fcm")
    old_phone = device(ben, "apns")
    Device.objects.filter(pk=old_phone.pk).update(last_seen_at=timezone.now() - timedelta(days=40))
    device(dan, "fcm", active=False)
    editors = Group.objects.create(name="editors")
    editors.user_set.add(ann, dan)
    return editors
