from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class ApiScope(models.TextChoices):
    SEND = "send", "Send (send, cancel, mint client tokens)"
    READ = "read", "Read (notifications and delivery logs)"


class ApiKey(AbstractAPIKey):
    """A product backend's key: only a sha512 hash is stored; the key is shown once."""

    scopes = models.JSONField(default=list, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes
