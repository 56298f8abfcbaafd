"""Reads for the admin dashboard: sends, deliveries, failures and latency over a time window.

Every query is bounded by the widest window on an indexed column (`delivery_created`,
`notification_recent`) and aggregated in SQL: one scan counts deliveries per (channel,
status) and per time bucket for both windows, one counts sends, one per window finds the
top errors, and one computes latency. Latency percentiles use PostgreSQL's percentile_cont
over the most recent LATENCY_SAMPLE_ROWS deliveries (so a busy week costs no more than a
quiet one); SQLite, the embedded default, computes the same interpolation in Python.
"""

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from django.db import connection
from django.db.models import Count, Q
from django.db.models.functions import Substr
from django.utils import timezone

from delivery.models import Channel, Delivery, DeliveryStatus, Notification
from realtime.api import connected_users_count

logger = logging.getLogger(__name__)

# Latency is a distribution, not a census: the newest 50,000 sent deliveries of a window give
# stable p50/p95 while keeping the sort behind percentile_cont small.
LATENCY_SAMPLE_ROWS = 50_000
TOP_ERRORS = 10
# Errors are grouped by their first characters: provider messages often end in ids or tokens.
ERROR_GROUP_CHARS = 120
CHANNELS = [choice.value for choice in Channel]
# Outcomes that count towards a failure rate; queued, cancelled, expired and skipped are not tries.
ATTEMPTED = (DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    span: timedelta
    bucket: str  # "hour" or "day"

    def buckets(self, now: datetime) -> list[datetime]:
        """Bucket starts, oldest first, the last one holding `now`."""
        if self.bucket == "hour":
            last, step = now.replace(minute=0, second=0, microsecond=0), timedelta(hours=1)
        else:
            last, step = now.replace(hour=0, minute=0, second=0, microsecond=0), timedelta(days=1)
        count = int(self.span / step)
        return [last - step * i for i in range(count - 1, -1, -1)]


WINDOWS = (
    Window("24h", "Last 24 hours", timedelta(hours=24), "hour"),
    Window("7d", "Last 7 days", timedelta(days=7), "day"),
)


@dataclass
class ChannelStats:
    channel: str
    total: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    sent_p50: float | None = None
    sent_p95: float | None = None
    delivered_p50: float | None = None
    delivered_p95: float | None = None
    latency_sample: int = 0

    @property
    def failed(self) -> int:
        return self.by_status.get(DeliveryStatus.FAILED, 0)

    @property
    def attempted(self) -> int:
        return sum(self.by_status.get(status, 0) for status in ATTEMPTED)

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.attempted if self.attempted else None


@dataclass
class WindowStats:
    window: Window
    since: datetime
    buckets: list[datetime]
    sends: dict[datetime, int]
    deliveries: dict[datetime, dict[str, int]]  # bucket → channel → count
    channels: dict[str, ChannelStats]
    top_errors: list[tuple[str, str, int]]  # (channel, error, count)

    @property
    def total_sends(self) -> int:
        return sum(self.sends.values())

    @property
    def total_deliveries(self) -> int:
        return sum(stats.total for stats in self.channels.values())


def dashboard_stats(now: datetime | None = None) -> list[WindowStats]:
    """Both windows from one scan of deliveries and one of notifications (plus errors and latency)."""
    now = now or timezone.now()
    buckets = {window.key: window.buckets(now) for window in WINDOWS}
    deliveries = _bucket_counts(Delivery.objects.all(), buckets, ("channel", "status"))
    sends = _bucket_counts(Notification.objects.all(), buckets, ())
    latency = latency_percentiles({window.key: buckets[window.key][0] for window in WINDOWS})
    stats = []
    for window in WINDOWS:
        since = buckets[window.key][0]
        per_bucket = {bucket: dict.fromkeys(CHANNELS, 0) for bucket in buckets[window.key]}
        channels = {channel: ChannelStats(channel) for channel in CHANNELS}
        for (channel, status), counts in deliveries.items():
            channel_stats = channels.setdefault(channel, ChannelStats(channel))
            status = DeliveryStatus.QUEUED if status == DeliveryStatus.SENDING else status
            for bucket, n in zip(buckets[window.key], counts[window.key], strict=True):
                per_bucket[bucket][channel] = per_bucket[bucket].get(channel, 0) + n
                channel_stats.total += n
                channel_stats.by_status[status] = channel_stats.by_status.get(status, 0) + n
        for channel, (sent_p50, sent_p95, delivered_p50, delivered_p95, n) in latency[window.key].items():
            channel_stats = channels.setdefault(channel, ChannelStats(channel))
            channel_stats.sent_p50, channel_stats.sent_p95 = sent_p50, sent_p95
            channel_stats.delivered_p50, channel_stats.delivered_p95 = delivered_p50, delivered_p95
            channel_stats.latency_sample = n
        send_counts = sends.get((), {}).get(window.key, [0] * len(buckets[window.key]))
        stats.append(
            WindowStats(
                window=window,
                since=since,
                buckets=buckets[window.key],
                sends=dict(zip(buckets[window.key], send_counts, strict=True)),
                deliveries=per_bucket,
                channels=channels,
                top_errors=top_errors(since),
            )
        )
    return stats


def _bucket_counts(queryset, buckets: dict[str, list[datetime]], group_by: tuple[str, ...]) -> dict:
    """{group: {window key: [count per bucket]}} in one query.

    One COUNT … FILTER (WHERE created_at in the bucket) per bucket, grouped by a few
    low-cardinality columns: PostgreSQL estimates that grouping well and hash-aggregates in
    one pass, where GROUP BY date_trunc(…) is misestimated into a sort spilling to disk.
    """
    since = min(starts[0] for starts in buckets.values())
    aggregates = {}
    for key, starts in buckets.items():
        ends = [*starts[1:], None]
        for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
            in_bucket = (
                Q(created_at__gte=start) if end is None else Q(created_at__gte=start, created_at__lt=end)
            )
            aggregates[f"{key}_{i}"] = Count("id", filter=in_bucket)
    rows = queryset.filter(created_at__gte=since)
    rows = (
        rows.values(*group_by).annotate(**aggregates).order_by()
        if group_by
        else [rows.aggregate(**aggregates)]
    )
    counts = {}
    for row in rows:
        group = tuple(row[name] for name in group_by)
        counts[group] = {
            key: [row[f"{key}_{i}"] for i in range(len(starts))] for key, starts in buckets.items()
        }
    return counts


def top_errors(since: datetime) -> list[tuple[str, str, int]]:
    """The most frequent (channel, error) of failed deliveries since `since`, most frequent first."""
    return list(
        Delivery.objects.filter(created_at__gte=since, status=DeliveryStatus.FAILED)
        .annotate(error_group=Substr("error", 1, ERROR_GROUP_CHARS))
        .values_list("channel", "error_group")
        .annotate(n=Count("id"))
        .order_by("-n", "channel", "error_group")[:TOP_ERRORS]
    )


LatencyRow = tuple[float | None, float | None, float | None, float | None, int]


def latency_percentiles(windows: dict[str, datetime]) -> dict[str, dict[str, LatencyRow]]:
    """Per window and channel: p50/p95 seconds from queued (created) to sent and to delivered, and
    the sample size. One sample serves every window: the newest rows of the widest window,
    restricted to a narrower window, are that window's newest rows."""
    if connection.vendor == "postgresql":
        return _latency_postgresql(windows)
    return _latency_in_python(windows)


def _latency_postgresql(windows: dict[str, datetime]) -> dict[str, dict[str, LatencyRow]]:
    table = connection.ops.quote_name(Delivery._meta.db_table)
    columns = []
    params: list = []
    for since in windows.values():
        inside = "FILTER (WHERE created_at >= %s)"
        columns += [
            f"percentile_cont(0.5) WITHIN GROUP (ORDER BY sent_secs) {inside}",
            f"percentile_cont(0.95) WITHIN GROUP (ORDER BY sent_secs) {inside}",
            f"percentile_cont(0.5) WITHIN GROUP (ORDER BY delivered_secs) {inside}",
            f"percentile_cont(0.95) WITHIN GROUP (ORDER BY delivered_secs) {inside}",
            f"count(*) {inside}",
        ]
        params += [since] * 5
    sql = f"""
        SELECT channel, {", ".join(columns)}
        FROM (
            SELECT channel, created_at,
                   EXTRACT(EPOCH FROM (sent_at - created_at)) AS sent_secs,
                   EXTRACT(EPOCH FROM (delivered_at - created_at)) AS delivered_secs
            FROM {table}
            WHERE created_at >= %s AND (sent_at IS NOT NULL OR delivered_at IS NOT NULL)
            ORDER BY created_at DESC
            LIMIT %s
        ) AS recent
        GROUP BY channel
    """  # the only interpolations are our table name and fixed SQL
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, min(windows.values()), LATENCY_SAMPLE_ROWS])
        rows = cursor.fetchall()
    result: dict[str, dict[str, LatencyRow]] = {key: {} for key in windows}
    for channel, *values in rows:
        for i, key in enumerate(windows):
            p1, p2, p3, p4, n = values[i * 5 : i * 5 + 5]
            if n:
                result[key][channel] = (_float(p1), _float(p2), _float(p3), _float(p4), n)
    return result


def _latency_in_python(windows: dict[str, datetime]) -> dict[str, dict[str, LatencyRow]]:
    rows = list(
        Delivery.objects.filter(created_at__gte=min(windows.values()))
        .exclude(sent_at__isnull=True, delivered_at__isnull=True)
        .order_by("-created_at")
        .values_list("channel", "created_at", "sent_at", "delivered_at")[:LATENCY_SAMPLE_ROWS]
    )
    result: dict[str, dict[str, LatencyRow]] = {}
    for key, since in windows.items():
        sent: dict[str, list[float]] = {}
        delivered: dict[str, list[float]] = {}
        counts: dict[str, int] = {}
        for channel, created_at, sent_at, delivered_at in rows:
            if created_at < since:
                continue
            counts[channel] = counts.get(channel, 0) + 1
            if sent_at:
                sent.setdefault(channel, []).append((sent_at - created_at).total_seconds())
            if delivered_at:
                delivered.setdefault(channel, []).append((delivered_at - created_at).total_seconds())
        result[key] = {
            channel: (
                percentile_cont(sent.get(channel, []), 0.5),
                percentile_cont(sent.get(channel, []), 0.95),
                percentile_cont(delivered.get(channel, []), 0.5),
                percentile_cont(delivered.get(channel, []), 0.95),
                n,
            )
            for channel, n in counts.items()
        }
    return result


def percentile_cont(values: list[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower, upper = math.floor(position), math.ceil(position)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def _float(value) -> float | None:
    return None if value is None else float(value)


def connected_users_now() -> int | None:
    """Users with a live realtime connection, or None while presence (Redis) does not answer."""
    try:
        return connected_users_count()
    except (redis.RedisError, OSError):
        logger.warning("presence did not answer; connected users shown as n/a", exc_info=True)
        return None
