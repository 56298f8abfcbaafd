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
from typing import NamedTuple

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from delivery.fanout_sql import id_array
from delivery.models import Channel, Delivery, DeliveryStatus, Notification, NotificationStatus
from delivery.providers import Outcome, PushMessage, PushOptions, PushTarget, SendResult, get_provider
from delivery.webhooks.events import deliveries_changed
from devices.models import DEFAULT_APP, Device
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
    notifications = Notification.objects.in_bulk({row.notification_id for row in claimed})
    groups: dict[tuple[int, str, str], list[Claimed]] = defaultdict(list)
    finished: list[tuple] = []
    for row in claimed:
        reason = _why_not_send(row, notifications[row.notification_id], now)
        if reason:
            finished.append((row.pk, *reason, None, None))
        else:
            groups[(row.notification_id, row.channel, row.app)].append(row)

    results: list[SendResult] = []
    apps = apps_by_slug({app for _, _, app in groups})
    for (notification_id, channel, app), group in groups.items():
        provider, unavailable = _provider_for(channel, app, apps)
        if provider is None:
            finished.extend((row.pk, DeliveryStatus.SKIPPED, unavailable, None, None) for row in group)
            continue
        message = push_message(notifications[notification_id])
        targets = [
            PushTarget(row.pk, row.device_id, row.token, row.environment, row.p256dh, row.auth)
            for row in group
        ]
        started = time.monotonic()
        try:
            results.extend(provider.send(message, targets))
        except Exception as exc:
            # A provider bug must not lose the batch: log it and let the retry policy decide.
            logger.exception("%s provider raised; the batch will be retried", channel)
            error = f"provider error: {type(exc).__name__}"
            results.extend(SendResult(t.delivery_id, Outcome.RETRY, error=error) for t in targets)
        metrics.observe("clarion_provider_latency_seconds", time.monotonic() - started, channel=channel)
    _record(results, {row.pk: row for row in claimed}, finished, timezone.now())


class Claimed(NamedTuple):
    """A claimed delivery and its device, as a send needs them (a tuple: no model instances)."""

    pk: int
    notification_id: int
    channel: str
    attempts: int
    device_id: int | None
    app: str | None
    token: str | None
    environment: str | None
    p256dh: str | None
    auth: str | None
    active: bool | None
    deactivated_reason: str | None


_CLAIMED_COLUMNS = (
    "pk",
    "notification_id",
    "channel",
    "attempts",
    "device_id",
    "device__app",
    "device__token",
    "device__environment",
    "device__p256dh",
    "device__auth",
    "device__active",
    "device__deactivated_reason",
)


def _claim(delivery_ids: list[int], now: datetime) -> list[Claimed]:
    """Claim the due, queued ones among `delivery_ids`; read back only what a send uses.

    Tuples, not Delivery and Device instances: building two models (and parsing their eight
    timestamps) per row cost more CPU than the provider's own work per message. On PostgreSQL
    the claim and the read are one statement, the ids one array literal (the ORM's `pk__in`
    prepares and binds each id on its own).
    """
    claim = uuid.uuid4()
    if connection.vendor == "postgresql":
        return _claim_postgresql(delivery_ids, claim, now)
    Delivery.objects.filter(pk__in=delivery_ids, status=DeliveryStatus.QUEUED).exclude(
        channel=Channel.REALTIME
    ).filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)).update(
        status=DeliveryStatus.SENDING, claim=claim, attempts=F("attempts") + 1, updated_at=now
    )
    rows = Delivery.objects.filter(claim=claim, status=DeliveryStatus.SENDING).values_list(*_CLAIMED_COLUMNS)
    return list(map(Claimed._make, rows))


def _claim_postgresql(delivery_ids: list[int], claim: uuid.UUID, now: datetime) -> list[Claimed]:
    """The claim above as one UPDATE … RETURNING joined to the devices (the same conditions).

    `COLLATE "C"` (the same equality for these ASCII values) keeps the status test from
    matching the predicate of a partial index on queued rows (now the sweeper's
    `delivery_push_enqueued`): during a broadcast the statistics still count few queued rows,
    and the planner then read that whole index, every queued delivery, for each task's 250
    ids, instead of looking the ids up in the primary key.
    """
    deliveries = connection.ops.quote_name(Delivery._meta.db_table)
    devices = connection.ops.quote_name(Device._meta.db_table)
    sql = (
        f"WITH c AS (UPDATE {deliveries} SET status = %s, claim = %s, attempts = attempts + 1,"
        ' updated_at = %s WHERE id = ANY(CAST(%s AS bigint[])) AND status = %s COLLATE "C"'
        " AND channel <> %s"
        " AND (next_attempt_at IS NULL OR next_attempt_at <= %s)"
        " RETURNING id, notification_id, channel, attempts, device_id)"
        " SELECT c.id, c.notification_id, c.channel, c.attempts, c.device_id, d.app, d.token,"
        " d.environment, d.p256dh, d.auth, d.active, d.deactivated_reason"
        f" FROM c LEFT JOIN {devices} d ON d.id = c.device_id ORDER BY c.id"
    )
    params = [
        DeliveryStatus.SENDING,
        claim,
        now,
        id_array(delivery_ids),
        DeliveryStatus.QUEUED,
        Channel.REALTIME,
        now,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(map(Claimed._make, cursor.fetchall()))


def _why_not_send(row: Claimed, notification: Notification, now: datetime) -> tuple[str, str] | None:
    if notification.status == NotificationStatus.CANCELLED:
        return DeliveryStatus.CANCELLED, "cancelled by the sender"
    if notification.expires_at <= now:
        return DeliveryStatus.EXPIRED, "ttl passed before it could be sent"
    if row.device_id is None:
        return DeliveryStatus.SKIPPED, "the device was deleted"
    if not row.active:
        return DeliveryStatus.SKIPPED, f"the device is inactive: {row.deactivated_reason}"
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


# Rows per outcome UPDATE off PostgreSQL: bounded parameters (5 per row) for SQLite's 32,766 limit.
OUTCOME_ROWS_PER_STATEMENT = 1000


def _record(
    results: list[SendResult], by_id: dict[int, Claimed], finished: list[tuple], now: datetime
) -> None:
    """Write every outcome (`finished`: rows decided without a send), then schedule the retries.

    An outcome is (delivery id, status, error, provider message id or None, next attempt or None).
    """
    dead_devices: dict[int, str] = {}
    causes: dict[int, int] = {}
    retries: list[tuple[float, int]] = []
    max_attempts = settings.CLARION_MAX_ATTEMPTS
    for result in results:
        row = by_id[result.delivery_id]
        outcome = result.outcome
        if outcome is Outcome.SENT:
            finished.append((row.pk, DeliveryStatus.SENT, "", result.provider_message_id[:255], None))
        elif outcome is Outcome.TOKEN_DEAD:
            finished.append((row.pk, DeliveryStatus.FAILED, result.error, None, None))
            dead_devices[row.device_id] = result.error
            causes[row.device_id] = row.notification_id
        elif outcome is Outcome.SKIPPED:
            finished.append((row.pk, DeliveryStatus.SKIPPED, result.error, None, None))
        elif outcome is Outcome.RETRY and row.attempts < max_attempts:
            delay = retry_delay_secs(row.attempts, result.retry_after_secs)
            finished.append(
                (row.pk, DeliveryStatus.QUEUED, result.error, None, now + timedelta(seconds=delay))
            )
            retries.append((delay, row.pk))
        elif outcome is Outcome.RETRY:
            error = f"gave up after {row.attempts} attempts: {result.error}"
            finished.append((row.pk, DeliveryStatus.FAILED, error, None, None))
        else:
            finished.append((row.pk, DeliveryStatus.FAILED, result.error, None, None))

    outcomes: dict[tuple, int] = defaultdict(int)
    retried: dict[tuple, int] = defaultdict(int)
    for pk, status, *_ in finished:
        if status == DeliveryStatus.QUEUED:  # a retry is counted as such, not as an outcome
            retried[(by_id[pk].channel,)] += 1
        else:
            outcomes[(by_id[pk].channel, status)] += 1
    metrics.count_many("clarion_deliveries_total", outcomes, ("channel", "status"))
    metrics.count_many("clarion_retries_total", retried, ("channel",))
    # Outcomes, dead devices and their webhook events commit together (or not at all).
    with transaction.atomic():
        recorded = _write_outcomes(finished, now)
        deliveries_changed(recorded)
        if dead_devices:
            devices_deactivate(dead_devices, causes=causes)
    _schedule_retries(retries)


def _write_outcomes(finished: list[tuple], now: datetime) -> list[int]:
    """Record every row's outcome in one UPDATE … FROM a relation of the outcomes; the ids written.

    On PostgreSQL the outcomes travel as one JSON array parameter (orjson writes it; psycopg's
    own array and per-placeholder binding cost more than the rest of the recording).
    Elsewhere (SQLite ≥ 3.35: UPDATE FROM … RETURNING) a VALUES list, in chunks of bounded
    parameters. Only rows still `sending` are written (an ack during the call wins); the ids
    returned say which rows changed, for their webhook events.
    """
    table = connection.ops.quote_name(Delivery._meta.db_table)
    postgresql = connection.vendor == "postgresql"
    stamp = "CAST(%s AS timestamptz)" if postgresql else "%s"
    update = (
        f"UPDATE {table} SET status = v.status, error = v.error,"
        f" provider_message_id = COALESCE(v.pmid, {table}.provider_message_id),"
        f" sent_at = CASE WHEN v.status = 'sent' THEN {stamp} ELSE {table}.sent_at END,"
        f" next_attempt_at = COALESCE(v.next_attempt_at, {table}.next_attempt_at),"
        f" enqueued_at = COALESCE(v.next_attempt_at, {table}.enqueued_at),"
        f" claim = NULL, updated_at = {stamp} FROM v WHERE {table}.id = v.id"
        # Only rows still ours: an ack (delivered, cancelled) during the call wins.
        f" AND {table}.status = 'sending' RETURNING {table}.id"
    )
    columns = "v(id, status, error, pmid, next_attempt_at)"
    if postgresql:
        rows = (
            "SELECT CAST(e->>0 AS bigint), e->>1, e->>2, e->>3, CAST(e->>4 AS timestamptz)"
            " FROM json_array_elements(CAST(%s AS json)) AS e"
        )
        statements = [(f"WITH {columns} AS ({rows}) {update}", [orjson.dumps(finished).decode(), now, now])]
    else:
        statements = []
        adapt = connection.ops.adapt_datetimefield_value
        for start in range(0, len(finished), OUTCOME_ROWS_PER_STATEMENT):
            chunk = finished[start : start + OUTCOME_ROWS_PER_STATEMENT]
            params = []
            for pk, status, error, pmid, next_attempt_at in chunk:
                params += [pk, status, error, pmid, adapt(next_attempt_at) if next_attempt_at else None]
            values = ", ".join(["(CAST(%s AS bigint), %s, %s, %s, %s)"] * len(chunk))
            statements.append(
                (f"WITH {columns} AS (VALUES {values}) {update}", [*params, adapt(now), adapt(now)])
            )
    written: list[int] = []
    with connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)
            written += [row[0] for row in cursor.fetchall()]
    return written


def _schedule_retries(retries: list[tuple[float, int]]) -> None:
    from delivery.tasks import deliveries_send as deliveries_send_task

    by_second: dict[int, list[int]] = defaultdict(list)
    for delay, pk in retries:
        if delay <= MAX_COUNTDOWN_SECS:
            by_second[int(delay) + 1].append(pk)
    for countdown, ids in by_second.items():
        ids_enqueue(deliveries_send_task, ids, countdown=countdown)
