"""Admin pages beyond the model lists: compose, live previews, notification actions, the dashboard.

Thin like the API views: parse the request, check the permission, call a service or
selector, render. Each is mounted by a ModelAdmin's get_urls through admin_site.admin_view
(staff login, CSRF); sending additionally needs `delivery.send_notification`.
"""

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_GET, require_POST

from delivery.audiences import audience_count, audience_summary, usernames_parse
from delivery.models import Audience, Notification, NotificationStatus
from delivery.resend import NotResendableError, notification_resend_failed
from delivery.selectors import recipients_count, unknown_targets
from delivery.services import NotCancellableError, notification_cancel
from notifyproject.console import charts, dashboard
from notifyproject.console.compose import (
    ComposeAction,
    ComposeForm,
    SendTo,
    compose_send,
    device_ids_parse,
    notification_dry_run,
)

SEND_PERMISSION = "delivery.send_notification"


def require_send_permission(request) -> None:
    if not request.user.has_perm(SEND_PERMISSION):
        raise PermissionDenied("You need the “Can send notifications” permission.")


def compose(request, model_admin):
    """Compose, dry-run, test-to-me and send; a send redirects to the new notification's page."""
    require_send_permission(request)
    dry_run = None
    if request.method == "POST":
        action = _compose_action(request.POST)
        form = ComposeForm(request.POST, action=action, test_username=request.user.get_username())
        if form.is_valid():
            if action == ComposeAction.DRY_RUN:
                dry_run = notification_dry_run(form.notification_request)
            else:
                with transaction.atomic():
                    notification, created = compose_send(user=request.user, form=form)
                _message_sent(request, notification, created, action)
                if action == ComposeAction.SEND:
                    return HttpResponseRedirect(
                        reverse("admin:delivery_notification_change", args=[notification.pk])
                    )
                # After a test, the same filled-in form (same idempotency key) for the real send.
    else:
        form = ComposeForm(initial=_initial_from_query(request.GET))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": "Compose a notification",
        "form": form,
        "dry_run": dry_run,
        "preview_url": reverse("admin:delivery_notification_compose_preview"),
        "audiences": {a.pk: audience_summary(a) for a in Audience.objects.select_related("group")},
    }
    return TemplateResponse(request, "admin/delivery/notification/compose.html", context)


def _compose_action(post) -> str:
    if "_test" in post:
        return ComposeAction.TEST
    if "_dry_run" in post:
        return ComposeAction.DRY_RUN
    return ComposeAction.SEND


def _initial_from_query(query) -> dict:
    """Prefill from links such as "send to this audience" (?send_to=audience&audience=3)."""
    return {
        name: query[name] for name in ("send_to", "users", "topic", "devices", "audience") if name in query
    }


def _message_sent(request, notification: Notification, created: bool, action: str) -> None:
    link = reverse("admin:delivery_notification_change", args=[notification.pk])
    if not created:
        messages.warning(
            request,
            format_html(
                'This form was already sent as <a href="{}">notification #{}</a>; nothing was sent again.',
                link,
                notification.pk,
            ),
        )
    elif action == ComposeAction.TEST:
        messages.success(
            request,
            format_html(
                'Test <a href="{}">notification #{}</a> queued for you ({}).',
                link,
                notification.pk,
                request.user.get_username(),
            ),
        )
    else:
        when = "scheduled" if notification.status == NotificationStatus.SCHEDULED else "queued"
        messages.success(
            request, f"Notification #{notification.pk} {when} for {notification.recipients} recipient(s)."
        )


@require_GET
def compose_preview(request, model_admin):
    """How many users the chosen target reaches right now (the compose page's live count)."""
    require_send_permission(request)
    send_to = request.GET.get("send_to", SendTo.USERS)
    if send_to == SendTo.AUDIENCE:
        audience = Audience.objects.filter(pk=_int(request.GET.get("audience"))).first()
        if audience is None:
            return JsonResponse({"recipients": None, "message": "Choose an audience."})
        count = audience_count(audience)
        return JsonResponse({"recipients": count, "message": audience_summary(audience)})
    if send_to == SendTo.USERS:
        target = {"users": usernames_parse(request.GET.get("users", ""))}
    elif send_to == SendTo.TOPIC:
        target = {"topic": request.GET.get("topic", "").strip()}
    elif send_to == SendTo.DEVICES:
        try:
            target = {"devices": device_ids_parse(request.GET.get("devices", ""))}
        except forms.ValidationError as exc:
            return JsonResponse({"recipients": None, "message": " ".join(exc.messages)})
    else:
        target = {"broadcast": True}
    unknown = unknown_targets(target)
    missing = len(unknown["users"]) + len(unknown["devices"])
    return JsonResponse(
        {
            "recipients": recipients_count(target, unknown),
            "message": f"{missing} unknown" if missing else "",
        }
    )


def _int(raw) -> int | None:
    return int(raw) if raw and str(raw).isdigit() else None


@require_GET
def audience_preview(request, model_admin):
    """How many users an audience being edited matches right now (the audience form's live count)."""
    form_class = model_admin.get_form(request)
    form = form_class(request.GET)
    form.is_valid()  # partial input still previews: conditions that parsed are applied
    audience = Audience(
        **{
            name: form.cleaned_data.get(name)
            for name in ("usernames", "topic", "platform", "seen_within_days", "staff", "group")
            if form.cleaned_data.get(name) not in (None, "")
        }
    )
    return JsonResponse({"recipients": audience_count(audience), "message": audience_summary(audience)})


@require_POST
def notification_resend(request, model_admin, object_id: int):
    require_send_permission(request)
    notification = get_object_or_404(Notification, pk=object_id)
    try:
        requeued = notification_resend_failed(notification.pk)
    except NotResendableError as exc:
        messages.error(request, f"Nothing resent: {exc}.")
    else:
        messages.success(request, f"Re-queued {requeued} failed push deliveries of #{notification.pk}.")
    return HttpResponseRedirect(reverse("admin:delivery_notification_change", args=[notification.pk]))


@require_POST
def notification_cancel_view(request, model_admin, object_id: int):
    require_send_permission(request)
    notification = get_object_or_404(Notification, pk=object_id)
    try:
        notification_cancel(notification.pk)
    except NotCancellableError as exc:
        messages.error(request, f"Too late to cancel: the {exc}.")
    else:
        messages.success(request, f"Cancelled notification #{notification.pk}.")
    return HttpResponseRedirect(reverse("admin:delivery_notification_change", args=[notification.pk]))


def dashboard_page(request, model_admin):
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": "Dashboard",
        "windows": [_window_context(stats) for stats in dashboard.dashboard_stats()],
        "connected_users": dashboard.connected_users_now(),
        "sample_rows": dashboard.LATENCY_SAMPLE_ROWS,
    }
    return TemplateResponse(request, "admin/delivery/dashboard.html", context)


def _window_context(stats: dashboard.WindowStats) -> dict:
    """One window's charts, and the same numbers as table rows beside them."""
    label_format = "%H:00" if stats.window.bucket == "hour" else "%a %d %b"
    labels = [bucket.strftime(label_format) for bucket in stats.buckets]
    sends = [stats.sends[bucket] for bucket in stats.buckets]
    channels = list(dashboard.CHANNELS)
    series = {channel: [stats.deliveries[b].get(channel, 0) for b in stats.buckets] for channel in channels}
    channel_rows = [stats.channels[channel] for channel in channels]
    failure_bars = [
        (row.channel, row.failure_rate, f"{_percent(row.failure_rate)} ({row.failed}/{row.attempted})")
        for row in channel_rows
    ]
    sent_bars = [
        (row.channel, row.sent_p95, _latency_caption(row.sent_p50, row.sent_p95)) for row in channel_rows
    ]
    delivered_bars = [
        (row.channel, row.delivered_p95, _latency_caption(row.delivered_p50, row.delivered_p95))
        for row in channel_rows
    ]
    slowest = max((value for _, value, _ in sent_bars + delivered_bars if value is not None), default=None)
    window = stats.window.label.lower()
    return {
        "stats": stats,
        "channels": channels,
        "bucket_rows": [
            (label, sends[i], [series[channel][i] for channel in channels]) for i, label in enumerate(labels)
        ],
        "channel_rows": [
            {
                "stats": row,
                "failure_rate": _percent(row.failure_rate),
                "sent": _latency_caption(row.sent_p50, row.sent_p95),
                "delivered": _latency_caption(row.delivered_p50, row.delivered_p95),
            }
            for row in channel_rows
        ],
        "sends_svg": charts.stacked_bars_svg(
            labels, {"sends": sends}, title=f"Notifications sent, {window}", height=120
        ),
        "deliveries_svg": charts.stacked_bars_svg(labels, series, title=f"Deliveries per channel, {window}"),
        "failure_svg": charts.horizontal_bars_svg(
            failure_bars,
            title=f"Failure rate by channel, {window}",
            # Scaled to the worst channel (at least 10%), so a 2% rate is still visible.
            maximum=max([0.1] + [rate for _, rate, _ in failure_bars if rate is not None]),
            colour=charts.FAILURE_COLOUR,
        ),
        "sent_latency_svg": charts.horizontal_bars_svg(
            sent_bars, title=f"Queued to sent (p50 / p95), {window}", maximum=slowest
        ),
        "delivered_latency_svg": charts.horizontal_bars_svg(
            delivered_bars, title=f"Queued to delivered (p50 / p95), {window}", maximum=slowest
        ),
    }


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.1%}"


def format_seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _latency_caption(p50: float | None, p95: float | None) -> str:
    return f"{format_seconds(p50)} / {format_seconds(p95)}"
