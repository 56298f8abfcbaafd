from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """Installed so the admin's autodiscovery loads the console's ModelAdmins (console/admin.py)."""

    name = "notifyproject.console"
    label = "console"
    verbose_name = "Console"
