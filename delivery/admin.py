"""The admin for product teams: compose and follow notifications, the delivery log, audiences,
API keys, recurring sends and a dashboard (docs/admin.md).

ModelAdmins here only declare lists and route to delivery/admin_views.py; sends, resends and
cancels go through the same services as the API, and none of them sends inside the request.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import ShowFacets
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.timezone import localtime
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryApiKey

from delivery import admin_views, recurring
from delivery.admin_lists import DateTimeRangeFilter, EstimatedCountPaginator, IdFilter, TextContainsFilter
from delivery.audiences import audience_count, audience_has_conditions, audience_summary
from delivery.models import (
    ApiKey,
    ApiScope,
    Audience,
    Channel,
    Delivery,
    DeliveryDashboard,
    DeliveryStatus,
    Notification,
    NotificationStatus,
    RecurringNotification,
)
from delivery.resend import NotResendableError, deliveries_resend, notification_resend_failed
from delivery.services import NotCancellableError, notification_cancel
from devices.models import DEFAULT_APP, App, Device, Platform, token_digest
from devices.selectors import app_exists

User = get_user_model()
# A tooltip longer than this is no longer read; the delivery's own page shows the whole error.
ERROR_TOOLTIP_CHARS = 2000

# Clarion uses its own key model (scopes, last use); hide the library's unused one.
admin.site.unregister(LibraryApiKey)


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple, required=True
    )
    app = forms.CharField(
        required=False,
        max_length=40,
        help_text="An app's slug binds the key: it sends only to that app's devices and reads only its "
        "own sends. Empty: instance-wide.",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "scopes", "app", "expiry_date", "revoked"]

    def clean_scopes(self) -> list[str]:
        return sorted(set(self.cleaned_data["scopes"]))  # stored as api_key_create stores them

    def clean_app(self) -> str:
        app = self.cleaned_data.get("app") or ""
        if app and not app_exists(app):
            raise forms.ValidationError(f"No app named {app!r}.")
        return app


class AppListFilter(admin.SimpleListFilter):
    """By app: the default one and every stored app (a slug column, no join)."""

    title = "app"
    parameter_name = "app"
    field = "app"

    def lookups(self, request, model_admin):
        return [
            (DEFAULT_APP, DEFAULT_APP),
            *((slug, slug) for slug in App.objects.values_list("slug", flat=True)),
        ]

    def queryset(self, request, queryset):
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


class DeviceAppListFilter(AppListFilter):
    """A delivery's app is its device's."""

    field = "device__app"


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    """Create (the key is shown once, by the base class), scope, revoke; never shows a hash."""

    form = ApiKeyForm
    list_display = (
        "name",
        "prefix",
        "scope_list",
        "app",
        "created",
        "last_used_at",
        "expiry_date",
        "revoked",
    )
    list_filter = ("revoked", AppListFilter, "created", "last_used_at")
    search_fields = ("name", "prefix")
    actions = ["revoke"]

    @admin.display(description="Scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), "last_used_at")

    @admin.action(description="Revoke the selected keys (cannot be undone)")
    def revoke(self, request, queryset):
        revoked = queryset.filter(revoked=False).update(revoked=True)
        self.message_user(request, f"Revoked {revoked} key(s).")


class RecurringNotificationForm(forms.ModelForm):
    url = forms.URLField(max_length=2048, required=False, assume_scheme="https")

    class Meta:
        model = RecurringNotification
        fields = [
            "name",
            "enabled",
            "interval_seconds",
            "crontab",
            "title",
            "body",
            "data",
            "url",
            "target_users",
            "target_topic",
            "broadcast",
            "audience",
            "route",
            "priority",
            "ttl",
        ]

    def clean(self):
        cleaned = super().clean()
        named = (
            cleaned.get("target_users", "").strip() or cleaned.get("target_topic") or cleaned.get("broadcast")
        )
        if not (named or cleaned.get("audience")):
            raise forms.ValidationError("Choose an audience: users, a topic, broadcast, or a saved audience.")
        if named and cleaned.get("audience"):
            raise forms.ValidationError(
                "A saved audience is the whole audience: leave users, topic and broadcast empty."
            )
        recurring.validate_schedule(cleaned.get("interval_seconds"), cleaned.get("crontab", ""))
        return cleaned


@admin.register(RecurringNotification)
class RecurringNotificationAdmin(admin.ModelAdmin):
    """Sends on a schedule through beat; the schedule is kept in django-celery-beat for you."""

    form = RecurringNotificationForm
    list_display = ("name", "enabled", "schedule", "reaches", "route", "last_sent_at")
    list_select_related = ("audience",)
    list_filter = ("enabled", "route")
    search_fields = ("name", "title")
    readonly_fields = ("last_sent_at",)
    fieldsets = (
        (None, {"fields": ("name", "enabled")}),
        (
            "Schedule",
            {"fields": ("interval_seconds", "crontab"), "description": "An interval or a cron line (UTC)."},
        ),
        ("Message", {"fields": ("title", "body", "data", "url")}),
        (
            "Audience",
            {
                "fields": ("target_users", "target_topic", "broadcast", "audience"),
                "description": "Users, a topic, broadcast, or a saved audience (any size; each "
                "occurrence reaches the audience as it is when it fires).",
            },
        ),
        ("Delivery", {"fields": ("route", "priority", "ttl", "last_sent_at")}),
    )

    @admin.display(description="Schedule")
    def schedule(self, obj) -> str:
        return f"every {obj.interval_seconds} s" if obj.interval_seconds else f"cron {obj.crontab} (UTC)"

    @admin.display(description="Audience")
    def reaches(self, obj) -> str:
        if obj.audience_id:
            return f"audience “{obj.audience}”"
        if obj.broadcast:
            return "everyone"
        return f"topic {obj.target_topic}" if obj.target_topic else "listed users"

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        recurring.recurring_save(obj)

    def delete_model(self, request, obj):
        recurring.recurring_delete(obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            recurring.recurring_delete(obj)


class SendPermissionMixin:
    """`has_send_permission`, so actions can declare permissions=["send"]."""

    def has_send_permission(self, request) -> bool:
        return request.user.has_perm(admin_views.SEND_PERMISSION)


# --- Notifications --------------------------------------------------------------------


def sender_display(notification: Notification) -> str:
    if notification.sender_key_id:
        return f"API key “{notification.sender_key.name}”"
    if notification.sender_user_id:
        return f"staff {notification.sender_user.get_username()}"
    kind, _, ident = notification.sender_label.partition(":")
    if kind == "recurring":
        return f"recurring notification #{ident}"
    return notification.sender_label or "unknown"


def deliveries_by_status_and_channel(notification_ids: list[int]) -> dict[int, dict[tuple[str, str], int]]:
    """notification id → (channel, status) → count, in one GROUP BY (the notification_status index)."""
    counts: dict[int, dict[tuple[str, str], int]] = {pk: {} for pk in notification_ids}
    rows = (
        Delivery.objects.filter(notification_id__in=notification_ids)
        .values_list("notification_id", "channel", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for notification_id, channel, status, n in rows:
        status = DeliveryStatus.QUEUED if status == DeliveryStatus.SENDING else status
        key = (channel, status)
        counts[notification_id][key] = counts[notification_id].get(key, 0) + n
    return counts


STATUS_ORDER = [s for s in DeliveryStatus.values if s != DeliveryStatus.SENDING]


def status_totals(counts: dict[tuple[str, str], int]) -> dict[str, int]:
    totals = dict.fromkeys(STATUS_ORDER, 0)
    for (_channel, status), n in counts.items():
        totals[status] = totals.get(status, 0) + n
    return totals


class NotificationChangeList(ChangeList):
    """Attaches the page's delivery counts to each row with one query for the whole page."""

    def get_results(self, request):
        super().get_results(request)
        self.result_list = list(self.result_list)
        counts = deliveries_by_status_and_channel([n.pk for n in self.result_list])
        for notification in self.result_list:
            notification.delivery_counts = counts.get(notification.pk, {})


@admin.register(Notification)
class NotificationAdmin(SendPermissionMixin, admin.ModelAdmin):
    """Notifications are immutable records of a send: listed, inspected, resent or cancelled here,
    composed on their own page ("Add notification" leads there)."""

    class Media:
        css = {"all": ["clarion-admin/admin.css"]}

    list_display = (
        "id",
        "summary",
        "status",
        "app",
        "sender",
        "recipients",
        "deliveries",
        "created_at",
        "send_at",
    )
    list_display_links = ("id", "summary")
    list_filter = ("status", "route", "priority", AppListFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("=id", "title", "collapse_key")
    search_help_text = "Notification id, title (contains) or collapse key (contains)."
    list_select_related = ("sender_key", "sender_user")
    ordering = ("-created_at",)
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    actions = ["resend_failed", "cancel"]
    change_form_template = "admin/delivery/notification/change_form.html"
    deliveries_per_page = 25
    fieldsets = (
        (None, {"fields": ("status", "sender", "target_display", "recipients", "unknown")}),
        ("Message", {"fields": ("title", "body", "data", "url", "icon", "push", "overrides")}),
        (
            "Delivery",
            {
                "fields": (
                    "app",
                    "route",
                    "priority",
                    "ttl",
                    "collapse_key",
                    "send_at",
                    "expires_at",
                    "created_at",
                    "dispatched_at",
                    "idempotency_key",
                )
            },
        ),
    )
    readonly_fields = ("sender", "target_display")

    def get_changelist(self, request, **kwargs):
        return NotificationChangeList

    def has_add_permission(self, request) -> bool:
        return self.has_send_permission(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # a record of what was sent; the page is read-only

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # cascades to every delivery row; retention is the lifecycle sweep's job

    def add_view(self, request, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:delivery_notification_compose"))

    def get_urls(self):
        wrap = self.admin_site.admin_view

        def view(function):
            return wrap(lambda request, *args, **kwargs: function(request, self, *args, **kwargs))

        return [
            path("compose/", view(admin_views.compose), name="delivery_notification_compose"),
            path(
                "compose/preview/",
                view(admin_views.compose_preview),
                name="delivery_notification_compose_preview",
            ),
            path(
                "<int:object_id>/resend-failed/",
                view(admin_views.notification_resend),
                name="delivery_notification_resend_failed",
            ),
            path(
                "<int:object_id>/cancel/",
                view(admin_views.notification_cancel_view),
                name="delivery_notification_cancel",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="Notification")
    def summary(self, obj: Notification) -> str:
        return obj.title or obj.body[:60] or "(data only)"

    @admin.display(description="Sent by")
    def sender(self, obj: Notification) -> str:
        return sender_display(obj)

    @admin.display(description="Deliveries")
    def deliveries(self, obj: Notification) -> str:
        counts = getattr(obj, "delivery_counts", None)
        if counts is None:
            counts = deliveries_by_status_and_channel([obj.pk])[obj.pk]
        totals = {status: n for status, n in status_totals(counts).items() if n}
        by_channel: dict[str, int] = {}
        for (channel, _status), n in counts.items():
            by_channel[channel] = by_channel.get(channel, 0) + n
        if not totals:
            return "–"
        return format_html(
            "{}<br><small>{}</small>",
            format_html_join(" · ", "{} {}", totals.items()),
            format_html_join(" · ", "{} {}", sorted(by_channel.items())),
        )

    @admin.display(description="To")
    def target_display(self, obj: Notification) -> str:
        target = obj.target or {}
        parts = []
        users = target.get("users") or []
        if users:
            shown = ", ".join(users[:20])
            parts.append(f"users: {shown}" + (f" and {len(users) - 20:,} more" if len(users) > 20 else ""))
        if target.get("devices"):
            parts.append(f"devices: {', '.join(map(str, target['devices'][:20]))}")
        if target.get("topic"):
            parts.append(f"topic: {target['topic']}")
        if target.get("broadcast"):
            parts.append("everyone (broadcast)")
        if obj.audience_conditions is not None:
            name = f"“{obj.audience}”" if obj.audience_id else "(since deleted)"
            parts.append(f"saved audience {name}")
        return "; ".join(parts) or "–"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        notification = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if notification is not None:
            extra_context.update(self._detail_context(request, notification))
        return super().change_view(request, object_id, form_url, extra_context)

    def _detail_context(self, request, notification: Notification) -> dict:
        """Counts per channel and status, and one page of the delivery log (never all of it)."""
        counts = deliveries_by_status_and_channel([notification.pk])[notification.pk]
        channels = sorted({channel for channel, _ in counts})
        totals = status_totals(counts)
        total = sum(totals.values())
        log_url = reverse("admin:delivery_delivery_changelist")
        page = max(_int(request.GET.get("deliveries_page"), 1), 1)
        start = (page - 1) * self.deliveries_per_page
        rows = list(
            Delivery.objects.filter(notification=notification)
            .select_related("user")
            .order_by("-created_at", "-id")[start : start + self.deliveries_per_page]
        )
        return {
            "counts_table": [
                (
                    channel,
                    [
                        (
                            counts.get((channel, status), 0),
                            f"{log_url}?notification={notification.pk}&channel__exact={channel}"
                            f"&status__exact={status}",
                        )
                        for status in STATUS_ORDER
                    ],
                )
                for channel in channels
            ],
            "count_statuses": STATUS_ORDER,
            "count_totals": [totals[status] for status in STATUS_ORDER],
            "deliveries_total": total,
            "deliveries": rows,
            "deliveries_page": page,
            "deliveries_has_next": start + len(rows) < total,
            "deliveries_log_url": f"{log_url}?notification={notification.pk}",
            "can_send": self.has_send_permission(request),
            "can_cancel": notification.status in (NotificationStatus.SCHEDULED, NotificationStatus.QUEUED),
            "failed_push": sum(
                n
                for (channel, status), n in counts.items()
                if status == DeliveryStatus.FAILED and channel != Channel.REALTIME
            ),
        }

    @admin.action(
        description="Resend failed push deliveries of the selected notifications", permissions=["send"]
    )
    def resend_failed(self, request, queryset):
        requeued = 0
        for notification_id in queryset.values_list("pk", flat=True):
            try:
                requeued += notification_resend_failed(notification_id)
            except NotResendableError as exc:
                self.message_user(request, f"#{notification_id}: nothing resent, {exc}.", messages.WARNING)
        self.message_user(request, f"Re-queued {requeued} failed push deliveries.")

    @admin.action(description="Cancel the selected notifications (if not sent yet)", permissions=["send"])
    def cancel(self, request, queryset):
        cancelled = 0
        for notification_id in queryset.values_list("pk", flat=True):
            try:
                notification_cancel(notification_id)
                cancelled += 1
            except NotCancellableError as exc:
                self.message_user(
                    request, f"#{notification_id}: too late to cancel, {exc}.", messages.WARNING
                )
        self.message_user(request, f"Cancelled {cancelled} notification(s).")


def _int(raw, default: int) -> int:
    return int(raw) if raw and str(raw).isdigit() else default


# --- The delivery log -----------------------------------------------------------------


class NotificationFilter(IdFilter):
    title = "notification"
    field_name = "notification"


class DeviceFilter(IdFilter):
    title = "device"
    field_name = "device"


class CreatedFilter(DateTimeRangeFilter):
    title = "created (UTC)"
    field_name = "created_at"


class ErrorTextFilter(TextContainsFilter):
    title = "error text"
    field_name = "error"


class HasErrorFilter(admin.SimpleListFilter):
    title = "error"
    parameter_name = "has_error"

    def lookups(self, request, model_admin):
        return [("yes", "Has an error"), ("no", "No error")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(error="")
        if self.value() == "no":
            return queryset.filter(error="")
        return queryset


def compact_time(value) -> str:
    """A log timestamp in a narrow column: "Dec 5, 18:25:03" (the full date is on the row's page)."""
    return date_format(localtime(value), "M j, H:i:s") if value else "–"


@admin.register(Delivery)
class DeliveryAdmin(SendPermissionMixin, admin.ModelAdmin):
    """The delivery log: one row per user, channel and device of each notification.

    Built for millions of rows: estimated counts, no facets, one joined query per page, and
    searches that resolve a username or token to ids first (docs/admin.md has the figures).
    """

    class Media:
        css = {"all": ["clarion-admin/admin.css"]}

    list_display = (
        "id",
        "created",
        "notification_link",
        "user",
        "channel",
        "device_link",
        "status",
        "attempts",
        "error_plain",
        "sent",
        "delivered",
    )
    list_display_links = ("id",)
    list_filter = (
        NotificationFilter,
        DeviceFilter,
        "status",
        "channel",
        DeviceAppListFilter,
        CreatedFilter,
        HasErrorFilter,
        ErrorTextFilter,
    )
    # Searching is custom (get_search_results); the field only switches the search box on.
    search_fields = ("user__username",)
    search_help_text = "Exact username, device token or Web Push endpoint, or a delivery id."
    list_select_related = ("notification", "user", "device")
    ordering = ("-created_at",)
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    list_per_page = 100
    actions = ["resend_selected"]
    readonly_fields = ("notification_link", "device_link", "error_plain")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        user_ids = list(User.objects.filter(username=term).values_list("pk", flat=True))
        device_ids = list(
            Device.objects.filter(platform__in=Platform.values, token_digest=token_digest(term)).values_list(
                "pk", flat=True
            )
        )
        match = Q(user_id__in=user_ids) | Q(device_id__in=device_ids)
        if term.isdigit() and int(term) < 2**63:
            match |= Q(pk=int(term))
        return queryset.filter(match), False

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj: Delivery) -> str:
        return compact_time(obj.created_at)

    @admin.display(description="Sent", ordering="sent_at")
    def sent(self, obj: Delivery) -> str:
        return compact_time(obj.sent_at)

    @admin.display(description="Delivered", ordering="delivered_at")
    def delivered(self, obj: Delivery) -> str:
        return compact_time(obj.delivered_at)

    @admin.display(description="Notification", ordering="notification_id")
    def notification_link(self, obj: Delivery) -> str:
        url = reverse("admin:delivery_notification_change", args=[obj.notification_id])
        return format_html('<a href="{}">#{} {}</a>', url, obj.notification_id, obj.notification.title[:40])

    @admin.display(description="Device")
    def device_link(self, obj: Delivery) -> str:
        """The device, and its app when that is not the default one (no column of its own: width)."""
        if obj.device_id is None:
            return "–"
        app = "" if obj.device.app == DEFAULT_APP else f" · {obj.device.app}"
        return format_html(
            '<a href="{}">#{}</a>{}',
            reverse("admin:devices_device_change", args=[obj.device_id]),
            obj.device_id,
            app,
        )

    @admin.display(description="Error")
    def error_plain(self, obj: Delivery) -> str:
        """The whole error; the log's list shows three lines of it, and all of it on hover."""
        if not obj.error:
            return "–"
        return format_html(
            '<span class="clarion-error" title="{}">{}</span>', obj.error[:ERROR_TOOLTIP_CHARS], obj.error
        )

    @admin.action(description="Resend the selected failed push deliveries", permissions=["send"])
    def resend_selected(self, request, queryset):
        requeued = deliveries_resend(queryset)
        self.message_user(request, f"Re-queued {requeued} failed push deliveries.")


# --- Audiences ------------------------------------------------------------------------


class AudienceForm(forms.ModelForm):
    class Meta:
        model = Audience
        fields = [
            "name",
            "description",
            "usernames",
            "topic",
            "platform",
            "seen_within_days",
            "staff",
            "group",
        ]

    def clean(self):
        cleaned = super().clean()
        conditions = Audience(**{k: v for k, v in cleaned.items() if k != "name" and v not in (None, "")})
        if not audience_has_conditions(conditions):
            raise forms.ValidationError("Give at least one condition (to reach everyone, broadcast instead).")
        return cleaned


@admin.register(Audience)
class AudienceAdmin(admin.ModelAdmin):
    """Saved filters over users; the form shows how many users match as you edit it."""

    class Media:
        css = {"all": ["clarion-admin/admin.css"]}

    form = AudienceForm
    list_display = ("name", "conditions", "created_by", "updated_at", "send_link")
    search_fields = ("name", "description")
    list_select_related = ("group", "created_by")
    readonly_fields = ("matches_now",)
    fieldsets = (
        (None, {"fields": ("name", "description")}),
        (
            "Conditions (all must hold)",
            {
                "fields": (
                    "usernames",
                    "topic",
                    "platform",
                    "seen_within_days",
                    "staff",
                    "group",
                    "matches_now",
                )
            },
        ),
    )
    change_form_template = "admin/delivery/audience/change_form.html"

    def get_urls(self):
        preview = self.admin_site.admin_view(lambda request: admin_views.audience_preview(request, self))
        return [path("preview/", preview, name="delivery_audience_preview"), *super().get_urls()]

    @admin.display(description="Conditions")
    def conditions(self, obj: Audience) -> str:
        return audience_summary(obj)

    @admin.display(description="Matches now")
    def matches_now(self, obj: Audience | None) -> str:
        if obj is None or obj.pk is None:
            return "–"
        return f"{audience_count(obj):,} users"

    @admin.display(description="")
    def send_link(self, obj: Audience) -> str:
        url = reverse("admin:delivery_notification_compose")
        return format_html('<a href="{}?send_to=audience&amp;audience={}">Send to…</a>', url, obj.pk)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


# --- Dashboard ------------------------------------------------------------------------


@admin.register(DeliveryDashboard)
class DashboardAdmin(admin.ModelAdmin):
    """Not a list: the proxy model's page is the dashboard (view permission: "Can view dashboard")."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        view = self.admin_site.admin_view(self.changelist_view)
        return [path("", view, name="delivery_deliverydashboard_changelist")]

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return admin_views.dashboard_page(request, self)
