"""The console's ModelAdmins, one module per domain, loaded by the admin's autodiscovery."""

from notifyproject.console import (  # noqa: F401
    delivery_admin,
    devices_admin,
    identities_admin,
    webhooks_admin,
)
