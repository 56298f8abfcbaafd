from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class ApiScope(models.TextChoices):
    SEND = "send", "Send (send, cancel, mint client tokens)"
    READ = "read", "Read (notifications and delivery logs)"


class ApiKey(AbstractAPIKey):
    """A product backend's key: only a sha512 hash is stored; the key is shown once."""

    scopes = models.JSONField(default=list, blank=True)
    # An app's slug: the key then sends only to that app's devices and reads and cancels only
    # what it sent. Empty: instance-wide.
    app = models.CharField(max_length=40, blank=True, default="", db_default="")
    last_used_at = models.DateTimeField(null=True, blank=True, verbose_name="last used")

    class Meta(AbstractAPIKey.Meta):
        db_table = "delivery_apikey"  # created by delivery's first migration; moved here in state only
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes
