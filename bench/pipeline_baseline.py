"""The stock pattern W9 compares against: one Celery task per device, one save() per delivery.

This is how django-push-notifications / fcm-django deployments typically fan out with Celery.
"""

from celery import shared_task


@shared_task(name="bench.baseline_send_one")
def baseline_send_one(notification_id: int, device_id: int) -> None:
    from django.utils import timezone

    from bench.null_provider import NullProvider
    from delivery.models import Delivery, Notification
    from delivery.providers import PushTarget
    from delivery.sending import push_message
    from devices.models import Device

    device = Device.objects.get(pk=device_id)
    notification = Notification.objects.get(pk=notification_id)
    delivery = Delivery.objects.create(
        notification=notification,
        user_id=device.user_id,
        device=device,
        channel=device.platform,
        status="sending",
        attempts=1,
    )
    [result] = NullProvider().send(
        push_message(notification), [PushTarget(delivery.pk, device.pk, device.token)]
    )
    delivery.status = "sent"
    delivery.sent_at = timezone.now()
    delivery.provider_message_id = result.provider_message_id
    delivery.save()


@shared_task(name="bench.noop")
def noop() -> None:
    """Celery's own per-task cost, for calibration."""
