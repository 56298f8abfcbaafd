"""GET /healthz: whether the database, the channel layer and the broker answer."""

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


def healthz(request):
    checks = {
        "database": _check_database(),
        "channel_layer": _check_channel_layer(),
        "broker": _check_broker(),
    }
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(checks, status=200 if healthy else 503)
