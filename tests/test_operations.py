"""/healthz and /metrics."""

import subprocess

import httpx
import pytest
import redis
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from delivery.fanout import notification_fan_out
from delivery.models import Channel, Route
from delivery.providers import Outcome
from notifyproject import metrics
from tests.delivery.factories import device, send
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db


def _reset_metrics():
    metrics.flush()  # earlier tests' counts, still pending in this process, go before the reset
    redis.Redis.from_url(settings.REDIS_URL).delete(metrics.HASH_KEY)


def _samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} as Prometheus's own parser reads the exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


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
    _reset_metrics()
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


def test_metrics_after_real_traffic_parse_with_prometheus_and_count_exactly(
    start_web, start_worker, alice, api_key_client, recorder
):
    """Sends through a real daphne and Celery worker; /metrics read with prometheus_client's parser."""
    _reset_metrics()
    device(alice, token="ok")
    device(alice, token="busy")
    device(alice, "webpush", token="https://push.example.net/refused", p256dh="p", auth="a")
    recorder.program("busy", "retry:3600")
    recorder.program("https://push.example.net/refused", "fail")
    web = start_web()
    start_worker()
    key = api_key_client("send").key
    for title in ("one", "two", "three"):
        response = httpx.post(
            f"{web.url}/api/v1/notifications/",
            json={"to": {"users": ["alice"]}, "title": title, "route": "push"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert response.status_code == 202, response.text

    def scraped():
        response = httpx.get(f"{web.url}/metrics", timeout=10)
        assert response.status_code == 200
        samples = _samples(response.text)
        done = (
            _value(samples, "clarion_deliveries_total", channel="fcm", status="sent") == 3
            and _value(samples, "clarion_deliveries_total", channel="webpush", status="failed") == 3
            and _value(samples, "clarion_retries_total", channel="fcm") == 3
            and _value(samples, "clarion_provider_latency_seconds_count", channel="fcm") == 3
        )
        return (response.text, samples) if done else None

    text, samples = wait_until(scraped, timeout=30, interval=0.5, message="the worker's counts in /metrics")
    assert _value(samples, "clarion_notifications_total", route="push") == 3
    # Series nothing has touched are there, at 0.
    assert _value(samples, "clarion_notifications_total", route="auto") == 0
    assert _value(samples, "clarion_deliveries_total", channel="apns", status="sent") == 0
    assert _value(samples, "clarion_retries_total", channel="webpush") == 0
    assert _value(samples, "clarion_realtime_publish_dropped_total") == 0
    assert _value(samples, "clarion_provider_latency_seconds_count", channel="apns") == 0

    # Histogram: cumulative buckets in ascending le, +Inf equal to _count, then _sum and _count.
    fcm = [
        line
        for line in text.splitlines()
        if line.startswith("clarion_provider_latency_seconds_") and 'channel="fcm"' in line
    ]
    bounds = [line.split('le="')[1].split('"')[0] for line in fcm if "_bucket" in line]
    assert bounds == [str(b) for b in metrics.LATENCY_BUCKETS_SECS] + ["+Inf"]
    assert fcm[-2].startswith("clarion_provider_latency_seconds_sum") and fcm[-1].startswith(
        "clarion_provider_latency_seconds_count"
    )
    counts = [_value(samples, "clarion_provider_latency_seconds_bucket", channel="fcm", le=b) for b in bounds]
    assert counts == sorted(counts) and counts[-1] == 3
    assert _value(samples, "clarion_provider_latency_seconds_sum", channel="fcm") > 0
    # Prometheus's own linter (Debian's prometheus package; .ci/run installs it) finds nothing.
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, ""), lint


def test_large_counts_are_printed_exactly(client):
    _reset_metrics()
    metrics.count("clarion_realtime_published_total", 1_234_574)
    metrics.count("clarion_deliveries_total", 2**40 + 1, channel="fcm", status="sent")
    text = client.get("/metrics").content.decode()
    assert "clarion_realtime_published_total 1234574\n" in text
    samples = _samples(text)
    assert _value(samples, "clarion_realtime_published_total") == 1_234_574
    assert _value(samples, "clarion_deliveries_total", channel="fcm", status="sent") == 2**40 + 1


def test_every_documented_series_is_exposed_at_zero_before_any_traffic(client):
    _reset_metrics()
    samples = _samples(client.get("/metrics").content.decode())
    for metric, label_sets in metrics.DOCUMENTED_SERIES.items():
        name = f"{metric}_count" if metrics.HELP[metric][0] == "histogram" else metric
        for labels in label_sets:
            assert _value(samples, name, **labels) == 0, (metric, labels)


def test_the_documented_label_values_match_the_models():
    assert set(metrics.ROUTES) == set(Route.values)
    assert set(metrics.PUSH_CHANNELS) == set(Channel.values) - {Channel.REALTIME}
    assert set(metrics.WITHDRAW_OUTCOMES) == {outcome.value for outcome in Outcome}


def test_histogram_buckets_are_cumulative_in_ascending_le_then_sum_and_count(client):
    _reset_metrics()
    for seconds in (0.003, 0.02, 0.3, 3.0, 30.0):
        metrics.observe("clarion_provider_latency_seconds", seconds, channel="apns")
    text = client.get("/metrics").content.decode()
    lines = [line for line in text.splitlines() if line.startswith("clarion_provider_latency_seconds_")]
    apns = [line for line in lines if 'channel="apns"' in line]
    assert [line.split(" ")[0] for line in apns] == [
        f'clarion_provider_latency_seconds_bucket{{channel="apns",le="{bound}"}}'
        for bound in (*metrics.LATENCY_BUCKETS_SECS, "+Inf")
    ] + [
        'clarion_provider_latency_seconds_sum{channel="apns"}',
        'clarion_provider_latency_seconds_count{channel="apns"}',
    ]
    assert [int(line.split(" ")[1]) for line in apns[:-2]] == [1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 5]
    samples = _samples(text)
    assert _value(samples, "clarion_provider_latency_seconds_sum", channel="apns") == pytest.approx(33.323)
    assert _value(samples, "clarion_provider_latency_seconds_count", channel="apns") == 5
