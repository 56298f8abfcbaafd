from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "delivery.webhooks"
    label = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from delivery.webhooks import events  # noqa: F401 - connects to devices' signals
