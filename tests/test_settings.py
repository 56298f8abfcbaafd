"""Configuration from the environment, checked in fresh interpreters."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import django, json; from django.conf import settings; django.setup();"
    "print(json.dumps({'engine': settings.DATABASES['default']['ENGINE'],"
    "'layer': settings.CHANNEL_LAYERS['default']['BACKEND'],"
    "'broker': settings.CELERY_BROKER_URL, 'embedded': settings.CLARION_EMBEDDED_WORKER,"
    "'cache': settings.CACHES['default']['BACKEND']}))"
)


def run_settings(**env) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL", "CLARION_EMBEDDED_WORKER"}
    }
    clean["DJANGO_SETTINGS_MODULE"] = "notifyproject.settings"
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )


def test_refuses_to_start_without_secret_key_when_debug_is_off():
    result = run_settings()
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_embedded_default_uses_sqlite_memory_layer_and_in_process_worker():
    result = run_settings(DEBUG="1")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["engine"] == "django.db.backends.sqlite3"
    assert config["layer"] == "channels.layers.InMemoryChannelLayer"
    assert config["broker"] == "memory://localhost/"
    assert config["embedded"] is True


def test_database_and_redis_urls_switch_to_postgres_and_redis():
    result = run_settings(
        SECRET_KEY="x" * 50,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/clarion",
        REDIS_URL="redis://127.0.0.1:6379/3",
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["engine"] == "django.db.backends.postgresql"
    assert config["layer"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert config["broker"] == "redis://127.0.0.1:6379/3"
    assert config["embedded"] is False
    assert config["cache"] == "django.core.cache.backends.redis.RedisCache"


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf"])
def test_a_sweep_interval_that_is_not_a_positive_number_of_seconds_is_refused(value):
    result = run_settings(DEBUG="1", CLARION_SWEEP_INTERVAL=value)
    assert result.returncode != 0
    assert f"CLARION_SWEEP_INTERVAL must be a positive number of seconds, got {value!r}" in result.stderr
