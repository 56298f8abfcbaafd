"""Operations: GET /healthz (do the database, channel layer and broker answer, and is this web
process's realtime node subscribed to its Redis channel?) and GET /metrics."""

import hmac

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is the answer here
        return f"error: {type(exc).__name__}"


def _check_channel_layer() -> str:
    layer = get_channel_layer()
    if layer is None:
        return "error: no channel layer configured"
    try:
        async_to_sync(layer.group_send)("clarion.healthz", {"type": "healthz"})
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"


def _check_broker() -> str:
    if settings.EMBEDDED:
        from notifyproject.embedded import embedded_worker_running

        if settings.CLARION_EMBEDDED_WORKER and not embedded_worker_running():
            return "error: embedded worker not running"
        return "ok"
    import redis

    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        client.close()
        return "ok"
    except redis.RedisError as exc:
        return f"error: {type(exc).__name__}"


def _check_realtime_node() -> str | None:
    """Realtime frames reach this process through its node's Redis subscription (realtime/node.py).

    None where no node runs (a process that is not an ASGI server, e.g. the test client);
    under daphne the ASGI application starts the node on the first request.
    """
    from realtime.node_registry import local_nodes

    states = [node.subscription_health() for node in local_nodes()]
    if not states:
        return None
    return next((state for state in states if state != "ok"), "ok")


def healthz(request):
    checks = {
        "database": _check_database(),
        "channel_layer": _check_channel_layer(),
        "broker": _check_broker(),
    }
    realtime_node = _check_realtime_node()
    if realtime_node is not None:
        checks["realtime_node"] = realtime_node
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(checks, status=200 if healthy else 503)


def _connected_users() -> float | None:
    from realtime.api import connected_users_count

    try:
        return float(connected_users_count())
    except Exception:  # noqa: BLE001 - a gauge must not break the scrape
        return None


def _realtime_fast_path_enabled() -> float | None:
    from realtime.transport import fast_path_enabled

    enabled = fast_path_enabled()
    return None if enabled is None else float(enabled)


def _broker_queue_length() -> float | None:
    if settings.EMBEDDED:
        return None
    import redis

    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2)
        return float(client.llen("celery"))
    except redis.RedisError:
        return None


def _oldest_due_delivery_secs() -> float | None:
    from django.db.models import Min, Q
    from django.db.models.functions import Coalesce
    from django.utils import timezone

    from delivery.models import Channel, Delivery, DeliveryStatus

    now = timezone.now()
    oldest = (
        Delivery.objects.filter(status=DeliveryStatus.QUEUED)
        .exclude(channel=Channel.REALTIME)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .aggregate(due=Min(Coalesce("next_attempt_at", "created_at")))["due"]
    )
    return (now - oldest).total_seconds() if oldest else 0.0


def metrics(request):
    """Prometheus text format; if CLARION_METRICS_TOKEN is set, it must come as a Bearer token."""
    from django.http import HttpResponse

    from notifyproject.metrics import render

    expected = settings.CLARION_METRICS_TOKEN
    if expected:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return HttpResponse("unauthorized\n", status=401, content_type="text/plain")
    body = render(
        {
            "clarion_connected_users": _connected_users(),
            "clarion_broker_queue_length": _broker_queue_length(),
            "clarion_oldest_due_delivery_seconds": _oldest_due_delivery_secs(),
            "clarion_realtime_fast_path_enabled": _realtime_fast_path_enabled(),
        }
    )
    return HttpResponse(body, content_type="text/plain; version=0.0.4; charset=utf-8")
