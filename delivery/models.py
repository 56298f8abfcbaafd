from django.conf import settings
from django.db import models

from devices.models import Platform
from notifyproject.identities.models import ApiKey


class Route(models.TextChoices):
    AUTO = "auto", "Auto (realtime, else push)"
    ALL = "all", "All channels"
    REALTIME = "realtime", "Realtime only"
    PUSH = "push", "Push only"


class Priority(models.TextChoices):
    NORMAL = "normal", "Normal"
    HIGH = "high", "High"


class NotificationStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    QUEUED = "queued", "Queued"
    DISPATCHING = "dispatching", "Dispatching"
    DISPATCHED = "dispatched", "Dispatched"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"


class Channel(models.TextChoices):
    REALTIME = "realtime", "Realtime"
    FCM = "fcm", "FCM"
    APNS = "apns", "APNs"
    WEBPUSH = "webpush", "Web Push"


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"
    SKIPPED = "skipped", "Skipped"


FINAL_DELIVERY_STATUSES = (
    DeliveryStatus.SENT,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.FAILED,
    DeliveryStatus.EXPIRED,
    DeliveryStatus.CANCELLED,
    DeliveryStatus.SKIPPED,
)


class Notification(models.Model):
    """What a sender asked for; written before anything is sent (intent first)."""

    sender_key = models.ForeignKey(
        ApiKey,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="notifications",
        verbose_name="sender API key",
    )
    sender_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="sender (staff user)",
    )
    # "key:<id>" or "user:<id>": who the idempotency key belongs to, kept if the key is deleted.
    sender_label = models.CharField(max_length=64, verbose_name="sender")
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)

    title = models.CharField(max_length=1024, blank=True, default="")
    body = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict, blank=True, verbose_name="data (JSON)")
    url = models.URLField(max_length=2048, blank=True, default="", verbose_name="URL")
    icon = models.URLField(max_length=2048, blank=True, default="", verbose_name="icon URL")
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    ttl = models.PositiveIntegerField(
        help_text="Seconds the message stays deliverable.", verbose_name="TTL (seconds)"
    )
    expires_at = models.DateTimeField(verbose_name="expires")
    collapse_key = models.CharField(max_length=64, blank=True, default="")
    send_at = models.DateTimeField(null=True, blank=True, verbose_name="scheduled for")
    route = models.CharField(max_length=8, choices=Route.choices, default=Route.AUTO)
    # The rich push fields (badge, sound, image, ...; see delivery/providers/base.PushOptions)
    # and {"fcm"|"apns"|"webpush": {...}} merged last into each provider's own message.
    push = models.JSONField(default=dict, blank=True, db_default={})
    overrides = models.JSONField(default=dict, blank=True, db_default={})
    # Push goes only to this app's devices (an app's slug); empty: every app's. Realtime is unaffected.
    app = models.CharField(max_length=40, blank=True, default="", db_default="")

    # {"users": [...], "devices": [...], "topic": "...", "broadcast": bool}; {} for a saved audience
    target = models.JSONField(default=dict, verbose_name="audience")
    # A send to a saved audience (admin, recurring, Python API): the audience, and the
    # conditions the fan-out walks, as they were when the send started (delivery/audiences.py).
    audience = models.ForeignKey(
        "Audience",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="notifications",
        verbose_name="saved audience",
    )
    audience_conditions = models.JSONField(null=True, blank=True, verbose_name="audience conditions")
    unknown = models.JSONField(default=dict, blank=True, verbose_name="unknown users and devices")
    recipients = models.PositiveIntegerField(default=0)

    status = models.CharField(
        max_length=12, choices=NotificationStatus.choices, default=NotificationStatus.QUEUED
    )
    # Fan-out progress: the highest user id already written; a restarted fan-out resumes here.
    fanout_cursor = models.BigIntegerField(default=0, verbose_name="fan-out progress")
    # The same sender's earlier notification whose fan-out this one has caught up with: it
    # continues when that one writes its next batch (per-sender order, delivery/fanout.py).
    waiting_for = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    dispatched_at = models.DateTimeField(null=True, blank=True, verbose_name="fanned out")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sender_label", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="notification_idempotency",
            )
        ]
        indexes = [
            models.Index(fields=["status", "send_at"], name="notification_due"),
            models.Index(fields=["-created_at"], name="notification_recent"),
            models.Index(fields=["collapse_key", "sender_label"], name="notification_collapse"),
            # A fan-out batch finds its sender's earlier sends still fanning out (per-sender
            # order); partial, so it holds only the few notifications in flight.
            models.Index(
                fields=["sender_label", "fanout_cursor", "id"],
                condition=models.Q(status__in=["queued", "dispatching"]),
                name="notification_in_flight",
            ),
            models.Index(
                fields=["waiting_for"],
                condition=models.Q(waiting_for__isnull=False),
                name="notification_waiting",
            ),
        ]
        permissions = [
            ("send_notification", "Can send notifications (compose, test sends, resend, cancel)"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title or self.body[:40]}"


class UserStream(models.Model):
    """A user's message counter: the cursor that orders inbox, replay, poll and SSE."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE)
    last_seq = models.BigIntegerField(default=0, verbose_name="last cursor")
    # The user's read counter: each first read of a message takes the next one, so long-poll
    # clients can ask for "every read after N" (a separate count: cursors stay consecutive).
    last_read_seq = models.BigIntegerField(
        db_default=0
    )  # a database default: fan-out inserts rows in raw SQL


# The fan-out's rows (InboxMessage, Delivery) carry no database foreign-key constraints: each
# constraint is a lookup and a row lock on the referenced row (user, device, notification) per
# inserted row at commit, which cost a third of a broadcast's fan-out (docs/benchmarks.md,
# "Fan-out: where the time goes"). The ids are written by the fan-out from rows it has just
# read, and every delete goes through Django's collector, which cascades (and SET_NULLs the
# device) in Python as before; there was never an ON DELETE in the database.


class InboxMessage(models.Model):
    """One notification as one user's message, at that user's next cursor position."""

    # No index of its own: inbox_user_seq leads with it (every index is written per recipient).
    # No database constraints on either (see the note above).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="inbox",
        db_index=False,
        db_constraint=False,
    )
    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="messages", db_constraint=False
    )
    seq = models.BigIntegerField(verbose_name="cursor")
    # Whether realtime clients (WebSocket, poll, SSE) get it: not for route=push or device-only sends.
    live = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True, verbose_name="read")
    read_seq = models.BigIntegerField(null=True, blank=True)  # the user's last_read_seq when first read

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "seq"], name="inbox_user_seq"),
            models.UniqueConstraint(fields=["user", "notification"], name="inbox_user_notification"),
            models.UniqueConstraint(
                fields=["user", "read_seq"],
                condition=models.Q(read_seq__isnull=False),
                name="inbox_user_read_seq",
            ),
        ]


class Delivery(models.Model):
    """One attempt to reach one user on one channel (and device); the delivery log."""

    # Neither has an index of its own: delivery_notification_status and delivery_user_notification
    # lead with them (a fan-out writes every index of every row; the sends rewrite them twice).
    # No database constraints (see the note above InboxMessage).
    notification = models.ForeignKey(
        Notification,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,
        db_constraint=False,
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,
        db_constraint=False,
    )
    device = models.ForeignKey(
        "devices.Device",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deliveries",
        db_constraint=False,
    )
    channel = models.CharField(max_length=8, choices=Channel.choices)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    provider_message_id = models.CharField(
        max_length=255, blank=True, default="", verbose_name="provider message ID"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True, verbose_name="sent")
    delivered_at = models.DateTimeField(null=True, blank=True, verbose_name="delivered")
    # Not before this moment (retry back-off, quiet hours); null means now.
    next_attempt_at = models.DateTimeField(null=True, blank=True, verbose_name="next attempt")
    # When a send task was last enqueued for it; the sweeper re-enqueues stale ones.
    enqueued_at = models.DateTimeField(null=True, blank=True, verbose_name="enqueued")
    # Set by the send task that claimed it, so a duplicated task finds nothing to send.
    claim = models.UUIDField(null=True, blank=True, verbose_name="worker claim")

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["notification", "user"],
                condition=models.Q(channel="realtime"),
                name="delivery_one_realtime_per_user",
            ),
            models.UniqueConstraint(
                fields=["notification", "device"],
                condition=models.Q(device__isnull=False),
                name="delivery_one_per_device",
            ),
        ]
        indexes = [
            models.Index(fields=["notification", "status"], name="delivery_notification_status"),
            models.Index(fields=["user", "notification"], name="delivery_user_notification"),
            # Only claimed rows: a send task looks its claim up; unclaimed rows need no entry.
            models.Index(fields=["claim"], name="delivery_claim", condition=models.Q(claim__isnull=False)),
            # The sweeper's search for push deliveries whose send task is stale (sweeper.py).
            models.Index(
                fields=["enqueued_at"],
                condition=models.Q(status="queued") & ~models.Q(channel="realtime"),
                name="delivery_push_enqueued",
            ),
            models.Index(fields=["status", "channel", "-updated_at"], name="delivery_log"),
            models.Index(fields=["created_at"], name="delivery_created"),  # retention, dashboard
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.channel}, {self.status})"


class RecurringNotification(models.Model):
    """A notification sent on a schedule by beat; product teams define these in the admin."""

    name = models.CharField(max_length=200, unique=True)
    enabled = models.BooleanField(default=True)
    interval_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Every N seconds (leave empty to use a cron schedule).",
        verbose_name="every (seconds)",
    )
    crontab = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text="Cron schedule in UTC: minute hour day-of-month month day-of-week, e.g. '0 9 * * 1'.",
        verbose_name="cron schedule",
    )
    title = models.CharField(max_length=1024, blank=True, default="")
    body = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict, blank=True, verbose_name="data (JSON)")
    url = models.URLField(max_length=2048, blank=True, default="", verbose_name="URL")
    target_users = models.TextField(
        blank=True, default="", help_text="Usernames, one per line or comma-separated.", verbose_name="users"
    )
    target_topic = models.CharField(max_length=64, blank=True, default="", verbose_name="topic")
    broadcast = models.BooleanField(default=False)
    # Each occurrence reaches the audience as it is when it fires. Protected: deleting an
    # audience must not silently turn a recurring send into one to nobody.
    audience = models.ForeignKey(
        "Audience",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="recurring_notifications",
        verbose_name="saved audience",
    )
    route = models.CharField(max_length=8, choices=Route.choices, default=Route.AUTO)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    ttl = models.PositiveIntegerField(default=24 * 3600, verbose_name="TTL (seconds)")
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        null=True,
        blank=True,
        editable=False,
        on_delete=models.SET_NULL,
        verbose_name="beat task",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_sent_at = models.DateTimeField(null=True, blank=True, verbose_name="last sent")

    def __str__(self) -> str:
        return self.name


class AudienceStaff(models.TextChoices):
    ANY = "", "Staff or not"
    STAFF = "staff", "Staff only"
    NON_STAFF = "non_staff", "Non-staff only"


class Audience(models.Model):
    """A saved filter over users that product teams send to from the admin (see delivery/audiences.py).

    Conditions combine with AND; at least one is required (everyone is `broadcast`).
    """

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, default="")
    usernames = models.TextField(
        blank=True, default="", help_text="Only these users: usernames, one per line or comma-separated."
    )
    topic = models.CharField(
        max_length=64, blank=True, default="", help_text="Subscribed to this topic (and not muting it)."
    )
    platform = models.CharField(
        max_length=16,
        choices=Platform.choices,
        blank=True,
        default="",
        help_text="Has an active device on this platform.",
    )
    seen_within_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Has an active device (of that platform, if one is chosen) seen in the last N days.",
    )
    staff = models.CharField(max_length=16, choices=AudienceStaff.choices, blank=True, default="")
    group = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Member of this group.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DeliveryDashboard(Delivery):
    """The admin dashboard: a proxy so the page has a place and a view permission in the admin."""

    class Meta:
        proxy = True
        verbose_name = "dashboard"
        verbose_name_plural = "dashboard"
