"""What devices announces, so packages that react (webhooks) hook in without devices importing them."""

from django.dispatch import Signal

# Sent by `services.devices_deactivate` inside its transaction, with `device_ids` (the devices it
# just deactivated; possibly empty) and `causes` (device id -> notification id, or None).
devices_deactivated = Signal()
