"""/healthz and /metrics."""

import pytest

from delivery.fanout import notification_fan_out
from tests.delivery.factories import device, send

pytestmark = pytest.mark.django_db


def test_healthz_reports_each_part(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "channel_layer": "ok", "broker": "ok"}


def test_healthz_is_503_when_the_broker_is_unreachable(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"].startswith("error")
    assert response.json()["database"] == "ok"


def test_metrics_count_sends_deliveries_latency_and_retries(
    client, alice, recorder, eager_tasks, django_capture_on_commit_callbacks
):
    import redis

    from notifyproject import metrics

    metrics.flush()  # earlier tests' counts, still pending in this process, go before the reset
    redis.Redis.from_url(__import__("django.conf").conf.settings.REDIS_URL).delete("clarion:metrics")
    device(alice, token="ok")
    device(alice, token="busy")
    recorder.program("busy", "retry:5")
    with django_capture_on_commit_callbacks(execute=True):
        notification = send({"users": ["alice"]}, route="push")
    with django_capture_on_commit_callbacks(execute=True):
        notification_fan_out(notification.pk)
    text = client.get("/metrics").content.decode()
    assert 'clarion_notifications_total{route="push"} 1' in text
    assert 'clarion_deliveries_total{channel="fcm",status="sent"} 1' in text
    assert 'clarion_retries_total{channel="fcm"} 1' in text
    assert 'clarion_provider_latency_seconds_bucket{channel="fcm",le="+Inf"} 1' in text
    assert "# TYPE clarion_provider_latency_seconds histogram" in text
    assert "clarion_oldest_due_delivery_seconds 0" in text


def test_metrics_can_require_a_token(client, settings):
    settings.CLARION_METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


def test_counts_pending_in_a_process_reach_redis_when_it_exits():
    """Counting is in memory (flushed each second); a process that exits first still writes them."""
    import subprocess
    import sys

    import redis
    from django.conf import settings

    from tests.support.processes import ROOT, process_env

    client = redis.Redis.from_url(settings.REDIS_URL)
    field = 'clarion_deliveries_total{channel="test-exit",status="sent"}'
    client.hdel("clarion:metrics", field)
    script = (
        "import django; django.setup(); from notifyproject import metrics; "
        "metrics.count('clarion_deliveries_total', 3, channel='test-exit', status='sent')"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=process_env(), check=True, timeout=60)
    assert float(client.hget("clarion:metrics", field)) == 3
