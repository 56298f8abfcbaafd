"""Test data builders for sending."""

import itertools

from django.contrib.auth import get_user_model

from delivery.services import NotificationRequest, Sender, notification_send
from devices.models import Device
from notifyproject.identities.api_keys import api_key_create

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
