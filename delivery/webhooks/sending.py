"""Sending the outbox: claim due events, POST them concurrently, record every attempt.

A claim is one UPDATE ... WHERE status='pending', so a duplicated or redelivered task finds
nothing to send. The POSTs run outside any transaction; their outcomes are written in one.
A failed attempt (non-2xx, or no answer within CLARION_WEBHOOK_TIMEOUT_SECS) goes back to
`pending` with `next_attempt_at` (capped exponential back-off with jitter) for as long as
the event is younger than RETRY_WINDOW; the database holds the wait, the sweeper and short
countdowns pick it up. An address the outbound policy refuses (notifyproject/outbound.py:
the URL under the current policy, or the address connected to) fails the event at once:
trying again cannot help. An endpoint whose every attempt failed for DISABLE_AFTER is disabled.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from delivery.webhooks.bulk import insert_rows, update_rows
from delivery.webhooks.client import Answer, Post, webhook_client
from delivery.webhooks.events import EVENTS_PER_TASK
from delivery.webhooks.models import EventStatus, Webhook, WebhookAttempt, WebhookEvent
from delivery.webhooks.signing import signed_headers
from notifyproject import outbound
from notifyproject.task_queue import MAX_COUNTDOWN_SECS, backoff_secs, ids_enqueue

logger = logging.getLogger(__name__)

# Standard Webhooks asks for retries over about a day; every failed event is retried for at
# least this long, and the last attempt comes after it.
RETRY_WINDOW = timedelta(hours=24)
RETRY_CAP_SECS = 2 * 3600  # the longest wait between two attempts
# An endpoint that answered nothing but failures for this long is disabled (and says so in
# the admin); any 2xx resets the clock. Longer than RETRY_WINDOW, so one bad day is survived.
DISABLE_AFTER = timedelta(days=5)
ATTEMPT_COLUMNS = {
    "event_id": "bigint",
    "webhook_id": "bigint",
    "attempt": "integer",
    "status_code": "integer",
    "error": "text",
    "duration_ms": "integer",
    "created_at": "timestamptz",
}
# Column → SQL type, for the one UPDATE that records retries and give-ups.
UNFINISHED_COLUMNS = {
    "status": "text",
    "next_attempt_at": "timestamptz",
    "enqueued_at": "timestamptz",
    "last_status_code": "integer",
    "last_error": "text",
    "updated_at": "timestamptz",
    "claim": "uuid",
}


def retry_delay_secs(attempts: int) -> float:
    """Jittered wait after `attempts` tries: between half and all of min(cap, base * 2**(attempts-1))."""
    return backoff_secs(attempts, settings.CLARION_WEBHOOK_RETRY_BASE_SECS, RETRY_CAP_SECS)


def webhook_events_send(event_ids: list[int]) -> None:
    now = timezone.now()
    claim = uuid.uuid4()
    count = WebhookEvent.objects.filter(
        pk__in=event_ids, status=EventStatus.PENDING, next_attempt_at__lte=now
    ).update(status=EventStatus.SENDING, claim=claim, attempts=F("attempts") + 1, updated_at=now)
    claimed = list(
        WebhookEvent.objects.filter(claim=claim, status=EventStatus.SENDING).select_related("webhook")
    )
    if count > len(claimed):  # their webhook was deleted while the change that recorded them committed
        WebhookEvent.objects.filter(claim=claim).exclude(pk__in=[event.pk for event in claimed]).delete()
    if not claimed:
        return
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE_URLS
    refusals = {w.pk: _why_not(w, allow_private) for w in {event.webhook for event in claimed}}
    answers = webhook_client().post_all(
        [_post(event) for event in claimed if not refusals[event.webhook_id]],
        allow_private=allow_private,
        timeout_secs=settings.CLARION_WEBHOOK_TIMEOUT_SECS,
    )
    answers += [
        Answer(e.pk, None, refusals[e.webhook_id], 0, retry=False) for e in claimed if refusals[e.webhook_id]
    ]
    events_record(claimed, answers, claim)


def _why_not(webhook: Webhook, allow_private: bool) -> str:
    """Why nothing may be sent to this webhook now, or "": disabled, or its URL is refused under
    the current policy (WEBHOOK_ALLOW_PRIVATE_URLS may have been turned off since it was registered)."""
    if not webhook.active:
        return "WEBHOOK_DISABLED: the webhook was disabled"
    try:
        outbound.clean_url(webhook.url, allow_private=allow_private)
    except outbound.UnsafeURLError as exc:
        return f"{exc.code}: {exc}"
    return ""


def _post(event: WebhookEvent) -> Post:
    body = event.body.encode()
    headers = signed_headers(event.webhook.secret, event.message_id, int(time.time()), body)
    return Post(event.pk, event.webhook.url, headers, body)


def events_record(claimed: list[WebhookEvent], answers: list[Answer], claim: uuid.UUID) -> None:
    """Write every attempt, each event's outcome and each endpoint's health, in one transaction."""
    now = timezone.now()
    by_id = {event.pk: event for event in claimed}
    succeeded: dict[int, list[int]] = defaultdict(list)  # status code → event ids
    retries: list[WebhookEvent] = []
    given_up: list[WebhookEvent] = []
    healthy: set[int] = set()
    failing: set[int] = set()
    attempts: list[tuple] = []
    for answer in answers:
        event = by_id[answer.event_id]
        attempts.append(
            (
                event.pk,
                event.webhook_id,
                event.attempts,
                answer.status_code,
                answer.error,
                answer.duration_ms,
                now,
            )
        )
        event.last_status_code, event.last_error, event.updated_at = answer.status_code, answer.error, now
        if answer.succeeded:
            succeeded[answer.status_code].append(event.pk)
            healthy.add(event.webhook_id)
            continue
        if not answer.error.startswith("WEBHOOK_DISABLED"):
            failing.add(event.webhook_id)
        if answer.retry and event.webhook.active and now - event.created_at < RETRY_WINDOW:
            event.status = EventStatus.PENDING
            delay = retry_delay_secs(event.attempts)
            event.next_attempt_at = now + timedelta(seconds=delay)
            # A countdown task is enqueued for a short wait; the sweeper enqueues a long one when due.
            event.enqueued_at = event.next_attempt_at if delay <= MAX_COUNTDOWN_SECS else None
            retries.append(event)
        else:
            event.status = EventStatus.FAILED
            given_up.append(event)
    failing -= healthy

    with transaction.atomic():
        insert_rows(WebhookAttempt, ATTEMPT_COLUMNS, attempts)
        ours = WebhookEvent.objects.filter(claim=claim, status=EventStatus.SENDING)
        for status_code, ids in succeeded.items():
            ours.filter(pk__in=ids).update(
                status=EventStatus.SUCCEEDED,
                last_status_code=status_code,
                last_error="",
                claim=None,
                updated_at=now,
            )
        unfinished = retries + given_up
        if unfinished:
            update_rows(
                WebhookEvent,
                UNFINISHED_COLUMNS,
                [
                    (
                        e.pk,
                        e.status,
                        e.next_attempt_at,
                        e.enqueued_at,
                        e.last_status_code,
                        e.last_error,
                        now,
                        None,
                    )
                    for e in unfinished
                ],
                where="{table}.claim = %s AND {table}.status = 'sending'",
                where_params=[claim.hex if connection.vendor == "sqlite" else claim],
            )
        if healthy:
            Webhook.objects.filter(pk__in=healthy).update(failing_since=None, last_success_at=now)
        if failing:
            Webhook.objects.filter(pk__in=failing).update(failing_since=Coalesce(F("failing_since"), now))
            webhooks_disable_failing(failing, now)
    retries_schedule(retries, now)


def webhooks_disable_failing(webhook_ids: set[int], now: datetime) -> int:
    """Disable endpoints that have failed every attempt for DISABLE_AFTER; their pending events fail."""
    doomed = list(
        Webhook.objects.filter(
            pk__in=webhook_ids, active=True, failing_since__lte=now - DISABLE_AFTER
        ).values_list("pk", flat=True)
    )
    if not doomed:
        return 0
    days = DISABLE_AFTER.days
    Webhook.objects.filter(pk__in=doomed).update(
        active=False,
        disabled_at=now,
        disabled_reason=f"every attempt failed for {days} days; enable it again in the admin once it answers",
    )
    WebhookEvent.objects.filter(webhook_id__in=doomed, status=EventStatus.PENDING).update(
        status=EventStatus.FAILED, last_error="WEBHOOK_DISABLED: the webhook was disabled", updated_at=now
    )
    for webhook_id in doomed:
        logger.warning("webhook %s disabled: every attempt failed for %s days", webhook_id, days)
    return len(doomed)


def retries_schedule(retries: list[WebhookEvent], now: datetime) -> None:
    """Short waits go to the broker as countdowns; the sweeper finds the rest when due."""
    from delivery.webhooks.tasks import webhook_events_send as send_task

    by_second: dict[int, list[int]] = defaultdict(list)
    for event in retries:
        delay = (event.next_attempt_at - now).total_seconds()
        if delay <= MAX_COUNTDOWN_SECS:
            by_second[int(delay) + 1].append(event.pk)
    for countdown, ids in by_second.items():
        ids_enqueue(send_task, ids, EVENTS_PER_TASK, countdown=countdown)
