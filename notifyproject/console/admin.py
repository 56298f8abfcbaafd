"""The console's ModelAdmins, one module per domain, loaded by the admin's autodiscovery."""

from notifyproject.console import delivery_admin, devices_admin, webhooks_admin  # noqa: F401
