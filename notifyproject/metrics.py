"""Prometheus metrics shared by every process: counters and histograms live in one Redis hash.

Workers have no HTTP port and there may be many machines, so instead of per-process
registries every process adds to the same Redis hash and any web process renders it at
GET /metrics. Increments are summed in memory and written by one thread per process every
FLUSH_EVERY_SECS (one pipelined HINCRBYFLOAT round), so counting costs a send no round trip;
a scrape shows other processes' counts up to that late. Embedded, it is a dict.
Gauges (connected users, queue lag) are computed when scraped.
"""

import atexit
import logging
import math
import os
import re
import threading
import time
from collections import defaultdict

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

HASH_KEY = "clarion:metrics"
# Provider call latency buckets in seconds: APNs/FCM answer in tens of ms; 10 s is a timeout.
LATENCY_BUCKETS_SECS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HELP = {
    "clarion_notifications_total": ("counter", "Notifications accepted, by route."),
    "clarion_deliveries_total": ("counter", "Delivery outcomes recorded, by channel and status."),
    "clarion_retries_total": ("counter", "Push deliveries scheduled for another attempt, by channel."),
    "clarion_realtime_published_total": ("counter", "Messages published to realtime connections."),
    "clarion_realtime_publish_dropped_total": (
        "counter",
        "Realtime frames not published (Redis failed, publisher behind); clients replay them.",
    ),
    "clarion_realtime_handshakes_refused_total": (
        "counter",
        "WebSocket handshakes refused with 503 (node past its admission bounds), by reason.",
    ),
    "clarion_push_withdrawals_total": (
        "counter",
        "Pushes asking a device to remove a notification read elsewhere, by channel and outcome.",
    ),
    "clarion_provider_latency_seconds": ("histogram", "Duration of one provider send call, by channel."),
    "clarion_connected_users": ("gauge", "Users with at least one live realtime connection."),
    "clarion_broker_queue_length": ("gauge", "Tasks waiting in the Celery queue."),
    "clarion_oldest_due_delivery_seconds": ("gauge", "Age of the oldest push delivery due but not sent."),
    "clarion_realtime_fast_path_enabled": (
        "gauge",
        "1 if this web process writes WebSocket frames on daphne's sockets directly, 0 if through ASGI send.",
    ),
}

# The label values each counter and histogram is shown with from the start, at 0, so that a
# series exists before its first increment (rate() and absent() need it). They mirror
# delivery.models' Route, Channel and the outcomes delivery/sending.py records
# (tests/test_operations.py keeps them in step); this module loads before the models do.
ROUTES = ("auto", "all", "realtime", "push")
PUSH_CHANNELS = ("fcm", "apns", "webpush")
PUSH_OUTCOMES = ("sent", "failed", "expired", "cancelled", "skipped")
WITHDRAW_OUTCOMES = ("sent", "retry", "token_dead", "failed", "skipped")  # delivery.providers.Outcome
DOCUMENTED_SERIES: dict[str, list[dict]] = {
    "clarion_notifications_total": [{"route": route} for route in ROUTES],
    "clarion_deliveries_total": [{"channel": "realtime", "status": "sent"}]
    + [{"channel": channel, "status": status} for channel in PUSH_CHANNELS for status in PUSH_OUTCOMES],
    "clarion_retries_total": [{"channel": channel} for channel in PUSH_CHANNELS],
    "clarion_push_withdrawals_total": [
        {"channel": channel, "outcome": outcome} for channel in PUSH_CHANNELS for outcome in WITHDRAW_OUTCOMES
    ],
    "clarion_realtime_published_total": [{}],
    "clarion_realtime_publish_dropped_total": [{}],
    # realtime.admission's reasons
    "clarion_realtime_handshakes_refused_total": [{"reason": "pending_handshakes"}, {"reason": "loop_lag"}],
    "clarion_provider_latency_seconds": [{"channel": channel} for channel in PUSH_CHANNELS],
}


def _label_value(value) -> str:
    """Escaped as the text exposition format requires (backslash, double quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _field(name: str, labels: dict) -> str:
    inner = ",".join(f'{key}="{_label_value(value)}"' for key, value in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


class _MemoryStore:
    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[str, float] = defaultdict(float)

    def add(self, increments: dict[str, float]) -> None:
        with self._lock:
            for field, value in increments.items():
                self._values[field] += value

    def read(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)

    def take(self) -> dict[str, float]:
        with self._lock:
            values, self._values = self._values, defaultdict(float)
        return dict(values)


FLUSH_EVERY_SECS = 1.0


class _RedisStore:
    """This process's increments, summed in memory, added to the shared hash by a flusher thread."""

    def __init__(self, url: str):
        self.pid = os.getpid()
        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._pending = _MemoryStore()
        threading.Thread(target=self._flush_forever, name="clarion-metrics-flusher", daemon=True).start()

    def add(self, increments: dict[str, float]) -> None:
        self._pending.add(increments)

    def flush(self) -> None:
        increments = self._pending.take()
        if not increments:
            return
        try:
            # MULTI/EXEC: a scrape sees all of one flush or none of it, so a histogram's buckets,
            # _sum and _count always agree.
            with self._client.pipeline(transaction=True) as pipe:
                for field, value in increments.items():
                    pipe.hincrbyfloat(HASH_KEY, field, value)
                pipe.execute()
        except redis.RedisError:
            # Kept for the next flush: label sets are few, so what waits stays small.
            self._pending.add(increments)
            logger.warning("metrics not recorded yet: Redis unavailable")

    def read(self) -> dict[str, float]:
        self.flush()
        return {key.decode(): float(value) for key, value in self._client.hgetall(HASH_KEY).items()}

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_EVERY_SECS)
            self.flush()


_store = None
_store_lock = threading.Lock()


def store():
    global _store
    with _store_lock:
        # A forked child (prefork worker) starts its own: the parent's pending counts are the parent's.
        if _store is None or getattr(_store, "pid", os.getpid()) != os.getpid():
            _store = _RedisStore(settings.REDIS_URL) if settings.REDIS_URL else _MemoryStore()
        return _store


def flush() -> None:
    """Write this process's pending increments now (at exit, before a scrape, in tests)."""
    if isinstance(_store, _RedisStore) and _store.pid == os.getpid():
        _store.flush()


atexit.register(flush)


def count(name: str, value: float = 1, **labels) -> None:
    store().add({_field(name, labels): value})


def count_many(name: str, counts: dict[tuple, float], label_names: tuple[str, ...]) -> None:
    """Several label combinations of one counter in one round trip."""
    if counts:
        store().add({_field(name, dict(zip(label_names, key, strict=True))): n for key, n in counts.items()})


def observe(name: str, seconds: float, **labels) -> None:
    increments = {_field(f"{name}_count", labels): 1, _field(f"{name}_sum", labels): seconds}
    for bound in LATENCY_BUCKETS_SECS:
        if seconds <= bound:
            increments[_field(f"{name}_bucket", {**labels, "le": str(bound)})] = 1
    increments[_field(f"{name}_bucket", {**labels, "le": "+Inf"})] = 1
    store().add(increments)


def _family(field: str) -> str:
    name = field.split("{")[0]
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HELP:
            return name.removesuffix(suffix)
    return name


def _zeros() -> dict[str, float]:
    """Every documented series at 0 (a histogram: each bucket, _sum and _count)."""
    zeros = {}
    for metric, label_sets in DOCUMENTED_SERIES.items():
        for labels in label_sets:
            if HELP[metric][0] == "histogram":
                for bound in (*LATENCY_BUCKETS_SECS, "+Inf"):
                    zeros[_field(f"{metric}_bucket", {**labels, "le": str(bound)})] = 0.0
                zeros[_field(f"{metric}_sum", labels)] = 0.0
                zeros[_field(f"{metric}_count", labels)] = 0.0
            else:
                zeros[_field(metric, labels)] = 0.0
    return zeros


def format_value(value: float) -> str:
    """Exact: whole numbers in full (1234574, never 1.23457e+06), others as Python's shortest repr."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    return repr(value)


_LE = re.compile(r'(?:,)?le="([^"]*)"')


def _histogram_order(field: str) -> tuple:
    """Sort key for the exposition format: per label set, buckets by ascending le (+Inf last),
    then _sum, then _count."""
    name, _, labels = field.partition("{")
    match = _LE.search(labels)
    bound = float(match.group(1)) if match else 0.0
    others = _LE.sub("", labels).lstrip(",")
    rank = {"_bucket": 0, "_sum": 1, "_count": 2}[name[name.rindex("_") :]]
    return (others, rank, bound)


def render(gauges: dict[str, float | None]) -> str:
    """The Prometheus text exposition of every documented and stored series plus the given gauges."""
    values = _zeros()
    values.update(store().read())
    for name, value in gauges.items():
        if value is not None:
            values[name] = value
    by_family: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for field, value in values.items():
        by_family[_family(field)].append((field, value))
    lines = []
    for metric, (kind, text) in HELP.items():
        series = by_family.get(metric)
        if not series:
            continue
        series.sort(key=(lambda item: _histogram_order(item[0])) if kind == "histogram" else None)
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        lines += [f"{field} {format_value(value)}" for field, value in series]
    return "\n".join(lines) + "\n"
