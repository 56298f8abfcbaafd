from django.apps import AppConfig


class IdentitiesConfig(AppConfig):
    name = "notifyproject.identities"
    label = "identities"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Identities"
