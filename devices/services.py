"""Writes for devices and topics; views and the admin call these, never the ORM directly."""

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from devices import signals
from devices.models import DEFAULT_APP, Device, DeviceOwnershipChange, TopicSubscription, token_digest


@dataclass(frozen=True)
class PushAddress:
    """A validated push address, as parsed from a registration."""

    platform: str
    token: str
    environment: str = ""
    p256dh: str = ""
    auth: str = ""


def device_register(
    *, user, address: PushAddress, name: str = "", app: str = DEFAULT_APP
) -> tuple[Device, bool]:
    """Register an address for `user` in `app`; one address has one owner per app, so it may move.

    Returns (device, created). Re-registration refreshes `last_seen_at`, reactivates a
    device deactivated by a provider, and records an ownership move.
    """
    digest = token_digest(address.token)
    for _attempt in range(2):  # a concurrent first registration may win the insert race
        try:
            with transaction.atomic():
                device = (
                    Device.objects.select_for_update()
                    .filter(app=app, platform=address.platform, token_digest=digest)
                    .first()
                )
                if device is None:
                    device = Device.objects.create(
                        user=user,
                        app=app,
                        platform=address.platform,
                        token=address.token,
                        name=name,
                        environment=address.environment,
                        p256dh=address.p256dh,
                        auth=address.auth,
                        last_seen_at=timezone.now(),
                    )
                    return device, True
                if device.user_id != user.pk:
                    DeviceOwnershipChange.objects.create(
                        device=device, previous_user_id=device.user_id, new_user=user
                    )
                    device.user = user
                device.name = name or device.name
                device.environment = address.environment
                device.p256dh = address.p256dh
                device.auth = address.auth
                device.active = True
                device.deactivated_reason = ""
                device.last_seen_at = timezone.now()
                device.save()
                return device, False
        except IntegrityError:
            continue
    raise IntegrityError("device registration lost the insert race twice")


def device_delete(*, user, device_id: int) -> bool:
    """Delete one of `user`'s devices; False when it is not theirs (or does not exist)."""
    deleted, _ = Device.objects.filter(pk=device_id, user=user).delete()
    return bool(deleted)


def devices_deactivate(reasons: dict[int, str], *, causes: dict[int, int] | None = None) -> None:
    """Deactivate devices a provider reported dead (device id → the provider's reason).

    `causes` (device id → the notification whose send found it dead) scopes the
    `device.deactivated` event to that notification's sender; the event goes out for the
    devices this call deactivated, with the deactivation, after commit (webhooks hear of them
    through `signals.devices_deactivated`, so devices imports nothing of delivery).
    """
    by_reason: dict[str, list[int]] = {}
    for device_id, reason in reasons.items():
        by_reason.setdefault(reason[:200], []).append(device_id)
    with transaction.atomic():
        deactivated: list[int] = []
        for reason, device_ids in by_reason.items():
            active = Device.objects.filter(pk__in=device_ids, active=True)
            ids = list(active.select_for_update().values_list("pk", flat=True))
            Device.objects.filter(pk__in=ids).update(active=False, deactivated_reason=reason)
            deactivated += ids
        signals.devices_deactivated.send(sender=Device, device_ids=deactivated, causes=causes)


def topic_subscribe(*, user, topic: str) -> None:
    TopicSubscription.objects.get_or_create(user=user, topic=topic)


def topic_unsubscribe(*, user, topic: str) -> None:
    TopicSubscription.objects.filter(user=user, topic=topic).delete()
