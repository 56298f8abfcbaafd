"""Push sends: claim due deliveries, send through each platform's provider, record outcomes.

A claim is one UPDATE ... WHERE status='queued', so a duplicated or redelivered task finds
nothing left to send. Provider calls happen outside any transaction. Retries go back to
`queued` with `next_attempt_at` (capped exponential back-off with full jitter, or the
provider's Retry-After when longer), so the database, not the broker, holds long waits.
"""

import logging
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from delivery.models import Channel, Delivery, DeliveryStatus, Notification, NotificationStatus
from delivery.providers import Outcome, PushMessage, PushOptions, PushTarget, SendResult, get_provider
from delivery.webhooks.events import deliveries_changed
from devices.models import DEFAULT_APP
from devices.selectors import apps_by_slug
from devices.services import devices_deactivate
from notifyproject import metrics
from notifyproject.task_queue import MAX_COUNTDOWN_SECS, backoff_secs, ids_enqueue

logger = logging.getLogger(__name__)


def retry_delay_secs(attempts: int, retry_after_secs: float | None = None) -> float:
    """Jittered back-off after `attempts` tries, never sooner than the provider asked."""
    delay = backoff_secs(attempts, settings.CLARION_RETRY_BASE_SECS, settings.CLARION_RETRY_CAP_SECS)
    return max(delay, retry_after_secs or 0.0)


def deliveries_send(delivery_ids: list[int]) -> None:
    now = timezone.now()
    claimed = _claim(delivery_ids, now)
    if not claimed:
        return
    groups: dict[tuple[int, str, str], list[Delivery]] = defaultdict(list)
    finished: list[Delivery] = []
    for delivery in claimed:
        reason = _why_not_send(delivery, now)
        if reason:
            status, error = reason
            finished.append(_finish(delivery, status, error))
        else:
            groups[(delivery.notification_id, delivery.channel, delivery.device.app)].append(delivery)

    results: list[SendResult] = []
    by_id = {d.pk: d for d in claimed}
    apps = apps_by_slug({app for _, _, app in groups})
    for (_notification_id, channel, app), group in groups.items():
        provider, unavailable = _provider_for(channel, app, apps)
        if provider is None:
            finished.extend(_finish(d, DeliveryStatus.SKIPPED, unavailable) for d in group)
            continue
        message = push_message(group[0].notification)
        targets = [_target(d) for d in group]
        started = time.monotonic()
        try:
            results.extend(provider.send(message, targets))
        except Exception as exc:
            # A provider bug must not lose the batch: log it and let the retry policy decide.
            logger.exception("%s provider raised; the batch will be retried", channel)
            error = f"provider error: {type(exc).__name__}"
            results.extend(SendResult(t.delivery_id, Outcome.RETRY, error=error) for t in targets)
        metrics.observe("clarion_provider_latency_seconds", time.monotonic() - started, channel=channel)
    _record(results, by_id, finished, timezone.now())


def _claim(delivery_ids: list[int], now: datetime) -> list[Delivery]:
    claim = uuid.uuid4()
    Delivery.objects.filter(pk__in=delivery_ids, status=DeliveryStatus.QUEUED).exclude(
        channel=Channel.REALTIME
    ).filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)).update(
        status=DeliveryStatus.SENDING, claim=claim, attempts=F("attempts") + 1, updated_at=now
    )
    claimed = list(
        Delivery.objects.filter(claim=claim, status=DeliveryStatus.SENDING).select_related("device")
    )
    # One Notification per notification, not per row: a task's 100 deliveries mostly share one,
    # and select_related built (and JSON-decoded) it 100 times.
    notifications = Notification.objects.in_bulk({d.notification_id for d in claimed})
    for delivery in claimed:
        delivery.notification = notifications[delivery.notification_id]
    return claimed


def _why_not_send(delivery: Delivery, now: datetime) -> tuple[str, str] | None:
    notification = delivery.notification
    if notification.status == NotificationStatus.CANCELLED:
        return DeliveryStatus.CANCELLED, "cancelled by the sender"
    if notification.expires_at <= now:
        return DeliveryStatus.EXPIRED, "ttl passed before it could be sent"
    if delivery.device is None:
        return DeliveryStatus.SKIPPED, "the device was deleted"
    if not delivery.device.active:
        return DeliveryStatus.SKIPPED, f"the device is inactive: {delivery.device.deactivated_reason}"
    return None


def push_message(notification: Notification) -> PushMessage:
    return PushMessage(
        notification_id=notification.pk,
        title=notification.title,
        body=notification.body,
        data=notification.data,
        url=notification.url,
        icon=notification.icon,
        priority=notification.priority,
        expires_at=notification.expires_at,
        collapse_key=notification.collapse_key,
        options=PushOptions.from_dict(notification.push),
        overrides=notification.overrides,
    )


# A withdrawal that cannot reach the device within a day finds the notification long dismissed.
WITHDRAW_TTL_SECS = 24 * 3600


def push_withdraw(delivery_ids: list[int]) -> list[int]:
    """Ask each device these (sent) push deliveries reached to remove the notification: it was read.

    Best effort and outside the delivery log: no Delivery row, no status change. Dead tokens are
    deactivated as on any send. Returns the ids worth another try (transient provider errors).
    """
    deliveries = list(
        Delivery.objects.filter(pk__in=delivery_ids, device__active=True)
        .exclude(channel=Channel.REALTIME)
        .select_related("device")
    )
    groups: dict[tuple[int, str, str], list[Delivery]] = defaultdict(list)
    for delivery in deliveries:
        groups[(delivery.notification_id, delivery.channel, delivery.device.app)].append(delivery)
    expires_at = timezone.now() + timedelta(seconds=WITHDRAW_TTL_SECS)
    retry: list[int] = []
    dead: dict[int, str] = {}
    outcomes: dict[tuple, int] = defaultdict(int)
    apps = apps_by_slug({app for _, _, app in groups})
    for (notification_id, channel, app), group in groups.items():
        provider, _unavailable = _provider_for(channel, app, apps)
        if provider is None:
            continue
        message = withdraw_message(notification_id, expires_at)
        by_id = {delivery.pk: delivery for delivery in group}
        try:
            results = provider.send(message, [_target(delivery) for delivery in group])
        except Exception:
            logger.exception("%s provider raised on a withdrawal; it will be retried", channel)
            results = [SendResult(pk, Outcome.RETRY) for pk in by_id]
        for result in results:
            outcomes[(channel, result.outcome.value)] += 1
            if result.outcome == Outcome.RETRY:
                retry.append(result.delivery_id)
            elif result.outcome == Outcome.TOKEN_DEAD:
                dead[by_id[result.delivery_id].device_id] = result.error
            elif result.outcome == Outcome.FAILED:
                logger.warning("withdrawal of delivery %s failed: %s", result.delivery_id, result.error)
    metrics.count_many("clarion_push_withdrawals_total", outcomes, ("channel", "outcome"))
    if dead:
        devices_deactivate(dead)
    return retry


def _provider_for(channel: str, app: str, apps: dict) -> tuple:
    """(provider, "") for a device of `app` (a slug; `apps` the stored ones by slug), else (None, why).

    A device is sent with its own app's credentials only.
    """
    if app == DEFAULT_APP:
        return get_provider(channel)
    if app in apps:
        return get_provider(channel, apps[app])
    return None, f"the device's app {app!r} does not exist"


def withdraw_message(notification_id: int, expires_at: datetime) -> PushMessage:
    return PushMessage(
        notification_id=notification_id,
        title="",
        body="",
        data={},
        url="",
        icon="",
        priority="normal",
        expires_at=expires_at,
        collapse_key="",
        withdraw=True,
    )


def _target(delivery: Delivery) -> PushTarget:
    device = delivery.device
    return PushTarget(
        delivery_id=delivery.pk,
        device_id=device.pk,
        token=device.token,
        environment=device.environment,
        p256dh=device.p256dh,
        auth=device.auth,
    )


def _finish(delivery: Delivery, status: str, error: str = "") -> Delivery:
    delivery.status = status
    delivery.error = error
    delivery.claim = None
    return delivery


def _record(
    results: list[SendResult], by_id: dict[int, Delivery], finished: list[Delivery], now: datetime
) -> None:
    dead_devices: dict[int, str] = {}
    retries: list[tuple[float, Delivery]] = []
    for result in results:
        delivery = by_id[result.delivery_id]
        if result.outcome == Outcome.SENT:
            _finish(delivery, DeliveryStatus.SENT)
            delivery.sent_at = now
            delivery.provider_message_id = result.provider_message_id[:255]
        elif result.outcome == Outcome.TOKEN_DEAD:
            _finish(delivery, DeliveryStatus.FAILED, result.error)
            dead_devices[delivery.device_id] = result.error
        elif result.outcome == Outcome.SKIPPED:
            _finish(delivery, DeliveryStatus.SKIPPED, result.error)
        elif result.outcome == Outcome.RETRY and delivery.attempts < settings.CLARION_MAX_ATTEMPTS:
            delay = retry_delay_secs(delivery.attempts, result.retry_after_secs)
            _finish(delivery, DeliveryStatus.QUEUED, result.error)
            delivery.next_attempt_at = delivery.enqueued_at = now + timedelta(seconds=delay)
            retries.append((delay, delivery))
        elif result.outcome == Outcome.RETRY:
            _finish(
                delivery, DeliveryStatus.FAILED, f"gave up after {delivery.attempts} attempts: {result.error}"
            )
        else:
            _finish(delivery, DeliveryStatus.FAILED, result.error)
        finished.append(delivery)

    outcomes: dict[tuple, int] = defaultdict(int)
    for delivery in finished:
        if delivery.status != DeliveryStatus.QUEUED:  # a retry is counted below, not as an outcome
            outcomes[(delivery.channel, delivery.status)] += 1
    metrics.count_many("clarion_deliveries_total", outcomes, ("channel", "status"))
    retried: dict[tuple, int] = defaultdict(int)
    for _, delivery in retries:
        retried[(delivery.channel,)] += 1
    metrics.count_many("clarion_retries_total", retried, ("channel",))
    # Outcomes, dead devices and their webhook events commit together (or not at all).
    with transaction.atomic():
        recorded = _write_outcomes(finished, now)
        deliveries_changed(recorded)
        if dead_devices:
            causes = {by_id[r.delivery_id].device_id: by_id[r.delivery_id].notification_id for r in results}
            devices_deactivate(dead_devices, causes=causes)
    _schedule_retries(retries)


# Rows per UPDATE statement: bounded parameters (7 per row) for SQLite's 32,766 limit.
OUTCOME_ROWS_PER_STATEMENT = 1000


def _write_outcomes(finished: list[Delivery], now: datetime) -> list[int]:
    """Record every row's outcome in one UPDATE … FROM (VALUES …) per chunk; the ids written.

    Django's bulk_update builds a CASE WHEN per row and field: it was most of the CPU of a
    send (bench/pipeline.py). Works on PostgreSQL and SQLite (≥ 3.35, UPDATE FROM … RETURNING).
    Only rows still `sending` are written (an ack during the call wins); the ids returned say
    which rows changed, for their webhook events.
    """
    table = connection.ops.quote_name(Delivery._meta.db_table)
    stamp = "CAST(%s AS timestamptz)" if connection.vendor == "postgresql" else "%s"
    row = f"(CAST(%s AS bigint), %s, %s, %s, {stamp}, {stamp}, {stamp})"

    def when(value):
        return connection.ops.adapt_datetimefield_value(value) if value is not None else None

    written: list[int] = []
    for start in range(0, len(finished), OUTCOME_ROWS_PER_STATEMENT):
        chunk = finished[start : start + OUTCOME_ROWS_PER_STATEMENT]
        params = []
        for d in chunk:
            params += [d.pk, d.status, d.error, d.provider_message_id]
            params += [when(d.sent_at), when(d.next_attempt_at), when(d.enqueued_at)]
        params.append(when(now))  # updated_at
        sql = (
            f"WITH v(id, status, error, pmid, sent_at, next_attempt_at, enqueued_at) AS "
            f"(VALUES {', '.join([row] * len(chunk))}) "
            f"UPDATE {table} SET status = v.status, error = v.error, provider_message_id = v.pmid, "
            f"sent_at = v.sent_at, next_attempt_at = v.next_attempt_at, enqueued_at = v.enqueued_at, "
            f"claim = NULL, updated_at = {stamp} FROM v WHERE {table}.id = v.id"
            # Only rows still ours: an ack (delivered, cancelled) during the call wins.
            f" AND {table}.status = 'sending'"
            f" RETURNING {table}.id"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            written += [row[0] for row in cursor.fetchall()]
    return written


def _schedule_retries(retries: list[tuple[float, Delivery]]) -> None:
    from delivery.tasks import deliveries_send as deliveries_send_task

    by_second: dict[int, list[int]] = defaultdict(list)
    for delay, delivery in retries:
        if delay <= MAX_COUNTDOWN_SECS:
            by_second[int(delay) + 1].append(delivery.pk)
    for countdown, ids in by_second.items():
        ids_enqueue(deliveries_send_task, ids, countdown=countdown)
