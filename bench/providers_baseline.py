"""The peers bench/providers.py compares against, as Celery tasks on a worker of their own.

* django-push-notifications 3.3 (FCM): `GCMDevice.objects.filter(...).send_message()` in one
  task (its bulk path: firebase-admin `send_each()` per 1,000 devices), and
  `GCMDevice.send_message()` in one task per device (the fcm-django / dpn Celery recipe).
* django-webpush 0.3.6: `send_notification_to_group()`, i.e. `pywebpush.webpush()` per
  subscription, one task per group of 100 subscriptions.
* APNs, one task per token: the W9 baseline (one Delivery row saved per task) calling
  Clarion's own ApnsProvider for that one token. dpn's APNs path (aioapns 3.x, a new client,
  connection and JWT per call) cannot be pointed at a fake without patching aioapns, and would
  only be slower; this stand-in keeps one HTTP/2 connection per process.

The worker runs with DJANGO_SETTINGS_MODULE=bench.providers_baseline_settings. Only the
endpoint is changed on firebase-admin's default app (no public option for it: point_messaging_at);
its pool and retry settings stay the SDK's.
"""

import threading

from celery import shared_task

GOOGLE_FCM_ENDPOINT = "https://fcm.googleapis.com"
_firebase_lock = threading.Lock()


def point_messaging_at(service, endpoint: str) -> None:
    """Make firebase-admin's messaging service send to `endpoint` instead of fcm.googleapis.com.

    There is no public option: firebase-admin 7.7.0 (pinned in requirements.txt) copies
    `_MessagingService.FCM_URL` into the per-app `_fcm_url`, which we rewrite. An SDK upgrade
    that changes this fails here instead of silently sending to Google.
    """
    url = getattr(service, "_fcm_url", None)
    if not isinstance(url, str) or not url.startswith(f"{GOOGLE_FCM_ENDPOINT}/v1/projects/"):
        raise RuntimeError("this firebase-admin has no per-app _fcm_url to override")
    service._fcm_url = endpoint.rstrip("/") + url[len(GOOGLE_FCM_ENDPOINT) :]


def _default_firebase_app():
    """The default firebase-admin app dpn sends with, pointed at FCM_ENDPOINT (once per process)."""
    import firebase_admin
    from django.conf import settings
    from firebase_admin import credentials, messaging

    with _firebase_lock:
        try:
            return firebase_admin.get_app()
        except ValueError:
            app = firebase_admin.initialize_app(credentials.Certificate(settings.FCM_CREDENTIALS))
            point_messaging_at(messaging._get_messaging_service(app), settings.FCM_ENDPOINT)
            # Off-loopback background lookup of google-auth; nothing to do with sending.
            app.credential.get_credential()._is_regional_access_boundary_lookup_required = lambda: False
            return app


@shared_task(name="bench.dpn_fcm_bulk")
def dpn_fcm_bulk(title: str, body: str, data: dict, first: int | None = None) -> int:
    """django-push-notifications' documented bulk send to every active FCM device (or the `first`)."""
    from push_notifications.models import GCMDevice

    _default_firebase_app()
    devices = GCMDevice.objects.filter(active=True)
    if first:
        devices = devices.filter(pk__in=list(devices.order_by("pk").values_list("pk", flat=True)[:first]))
    response = devices.send_message(body, title=title, extra=dict(data))
    return response.success_count


@shared_task(name="bench.dpn_fcm_one")
def dpn_fcm_one(device_id: int, title: str, body: str, data: dict) -> None:
    """One task per device: GCMDevice.send_message (dpn deactivates the device on UNREGISTERED)."""
    from push_notifications.models import GCMDevice

    _default_firebase_app()
    GCMDevice.objects.get(pk=device_id).send_message(body, title=title, extra=dict(data))


@shared_task(name="bench.webpush_group")
def webpush_group(group_name: str, payload: str, ttl: int) -> None:
    """django-webpush: pywebpush.webpush() for each subscription of the group."""
    from webpush.utils import send_notification_to_group

    send_notification_to_group(group_name, payload, ttl)


@shared_task(name="bench.apns_one", bind=True, max_retries=5)
def apns_one(self, notification_id: int, device_id: int) -> None:
    """One task per token, one saved row (W9's baseline), sent with Clarion's APNs client."""
    from django.utils import timezone

    from delivery.models import Delivery, Notification
    from delivery.providers import Outcome, PushTarget, get_provider
    from delivery.sending import push_message
    from devices.models import Device

    device = Device.objects.get(pk=device_id)
    notification = Notification.objects.get(pk=notification_id)
    delivery, _ = Delivery.objects.get_or_create(
        notification=notification,
        device=device,
        defaults={"user_id": device.user_id, "channel": device.platform, "status": "sending"},
    )
    provider, reason = get_provider("apns")
    [result] = provider.send(push_message(notification), [PushTarget(delivery.pk, device.pk, device.token)])
    delivery.attempts += 1
    if result.outcome == Outcome.SENT:
        delivery.status, delivery.sent_at = "sent", timezone.now()
        delivery.provider_message_id = result.provider_message_id
    elif result.outcome == Outcome.TOKEN_DEAD:
        delivery.status, delivery.error = "failed", result.error
        Device.objects.filter(pk=device.pk).update(active=False, deactivated_reason=result.error)
    elif result.outcome == Outcome.RETRY and self.request.retries < self.max_retries:
        delivery.save()
        raise self.retry(countdown=max(result.retry_after_secs or 0, 2**self.request.retries))
    else:
        delivery.status, delivery.error = "failed", result.error
    delivery.save()
