"""Django signals for code in the same deployment: the webhook events, sent after commit.

Each is sent once per event with `event` (its name), `timestamp` (an aware datetime) and
`data` (the same dict a webhook receives as "data"). Senders: `delivery.models.Delivery`
for `delivery.*`, `delivery.models.Notification` for `notification.read`,
`devices.models.Device` for `device.deactivated`. See docs/python-api.md.
"""

from django.apps import apps
from django.dispatch import Signal

from delivery.webhooks.models import EventType

delivery_sent = Signal()
delivery_delivered = Signal()
delivery_failed = Signal()
delivery_expired = Signal()
delivery_skipped = Signal()
notification_read = Signal()
device_deactivated = Signal()

BY_EVENT: dict[str, Signal] = {
    EventType.DELIVERY_SENT: delivery_sent,
    EventType.DELIVERY_DELIVERED: delivery_delivered,
    EventType.DELIVERY_FAILED: delivery_failed,
    EventType.DELIVERY_EXPIRED: delivery_expired,
    EventType.DELIVERY_SKIPPED: delivery_skipped,
    EventType.NOTIFICATION_READ: notification_read,
    EventType.DEVICE_DEACTIVATED: device_deactivated,
}

# Who each signal is sent by, so that receivers connected with `sender=` are found too.
SENDER_OF = {event: "delivery.Delivery" for event in BY_EVENT if event.startswith("delivery.")}
SENDER_OF[EventType.NOTIFICATION_READ] = "delivery.Notification"
SENDER_OF[EventType.DEVICE_DEACTIVATED] = "devices.Device"


def has_receivers(event: str) -> bool:
    signal = BY_EVENT[event]
    # No receiver at all (the usual case) is known from Django's list of them without resolving
    # the sender's model and its receiver cache; if that list is not where it was, ask as before.
    receivers = getattr(signal, "receivers", None)
    if isinstance(receivers, list) and not receivers:
        return False
    return signal.has_listeners(apps.get_model(SENDER_OF[event]))
