import hashlib

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

# The app the environment's FCM_*, APNS_* and VAPID_* variables define; never stored as a row.
DEFAULT_APP = "default"
APP_SLUG_PATTERN = r"^[a-z0-9-]{1,40}$"


class Platform(models.TextChoices):
    FCM = "fcm", "FCM"
    APNS = "apns", "APNs"
    WEBPUSH = "webpush", "Web Push"


class ApnsEnvironment(models.TextChoices):
    PRODUCTION = "production", "Production"
    SANDBOX = "sandbox", "Sandbox"


class App(models.Model):
    """One product's push credentials (a rider app, a driver app, staging), besides `default`.

    Secrets (the FCM service account, the APNs .p8 key, the VAPID private key) are stored
    encrypted with CLARION_ENCRYPTION_KEYS (notifyproject/encryption.py); write them through
    delivery.push_apps (app_create, app_save), which encrypts. docs/apps.md.
    """

    slug = models.CharField(
        max_length=40,
        unique=True,
        validators=[RegexValidator(APP_SLUG_PATTERN, "1-40 lowercase letters, digits or hyphens.")],
    )
    name = models.CharField(max_length=200, blank=True, default="")
    fcm_credentials = models.TextField(blank=True, default="", help_text="Encrypted service-account JSON.")
    fcm_endpoint = models.URLField(blank=True, default="", help_text="Empty: the instance's FCM_ENDPOINT.")
    apns_key = models.TextField(blank=True, default="", help_text="Encrypted .p8 key (PEM).")
    apns_key_id = models.CharField(max_length=20, blank=True, default="")
    apns_team_id = models.CharField(max_length=20, blank=True, default="")
    apns_topic = models.CharField(max_length=255, blank=True, default="", help_text="The app's bundle id.")
    apns_endpoint = models.URLField(blank=True, default="", help_text="Empty: the instance's APNS_ENDPOINT.")
    apns_sandbox_endpoint = models.URLField(
        blank=True, default="", help_text="Empty: the instance's APNS_SANDBOX_ENDPOINT."
    )
    vapid_private_key = models.TextField(blank=True, default="", help_text="Encrypted VAPID private key.")
    vapid_public_key = models.CharField(max_length=100, blank=True, default="")
    vapid_subject = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    # Providers rebuild an app's clients when this moves (delivery/providers/__init__.py).
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name or self.slug


def token_digest(token: str) -> str:
    """Fixed-size key for uniqueness: tokens and endpoints are too long to index as-is."""
    return hashlib.sha256(token.encode()).hexdigest()


class Device(models.Model):
    """One push address of one user: an FCM token, an APNs token or a Web Push subscription."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="devices")
    # The app whose credentials send to it: DEFAULT_APP or an App's slug (a slug, not a key, so
    # the environment-defined default needs no row).
    app = models.CharField(max_length=40, default=DEFAULT_APP, db_default=DEFAULT_APP)
    platform = models.CharField(max_length=16, choices=Platform.choices)
    # FCM registration token, APNs hex token, or the Web Push endpoint URL.
    token = models.TextField(verbose_name="token or endpoint")
    token_digest = models.CharField(max_length=64, editable=False)
    name = models.CharField(max_length=100, blank=True, default="")
    environment = models.CharField(max_length=16, choices=ApnsEnvironment.choices, blank=True, default="")
    # Web Push subscription keys (base64url, as the browser gives them).
    p256dh = models.CharField(max_length=100, blank=True, default="", verbose_name="Web Push p256dh key")
    auth = models.CharField(max_length=40, blank=True, default="", verbose_name="Web Push auth secret")
    active = models.BooleanField(default=True)
    deactivated_reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(verbose_name="last seen")

    class Meta:
        constraints = [
            # One address has one owner within an app.
            models.UniqueConstraint(
                fields=["app", "platform", "token_digest"], name="device_unique_app_platform_token"
            )
        ]
        indexes = [
            models.Index(fields=["user", "active"], name="device_user_active"),
            models.Index(fields=["platform", "active"], name="device_platform_active"),
            models.Index(fields=["last_seen_at"], name="device_last_seen"),
        ]

    def __str__(self) -> str:
        return f"{self.get_platform_display()} device {self.pk} of {self.user_id}"

    def save(self, *args, **kwargs):
        self.token_digest = token_digest(self.token)
        super().save(*args, **kwargs)


class DeviceOwnershipChange(models.Model):
    """Audit trail of a token moving from one user to another on re-registration."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="ownership_changes")
    previous_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    new_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(auto_now_add=True, verbose_name="changed")

    class Meta:
        ordering = ["-changed_at"]


class TopicSubscription(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="topic_subscriptions"
    )
    topic = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "topic"], name="topic_subscription_unique")]
        indexes = [models.Index(fields=["topic", "user"], name="topic_subscription_topic")]

    def __str__(self) -> str:
        return f"{self.user_id} → {self.topic}"


class UserPreferences(models.Model):
    """Quiet hours: normal-priority push waits until they end (realtime still delivers)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="notification_preferences",
    )
    quiet_start = models.TimeField(null=True, blank=True, verbose_name="quiet hours start")
    quiet_end = models.TimeField(null=True, blank=True, verbose_name="quiet hours end")
    timezone = models.CharField(max_length=64, blank=True, default="UTC")


class MutedTopic(models.Model):
    """A topic that reaches this user on no channel."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="muted_topics")
    topic = models.CharField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "topic"], name="muted_topic_unique")]
        indexes = [models.Index(fields=["topic", "user"], name="muted_topic_topic")]
