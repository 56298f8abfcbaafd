"""Shared fixtures: users, tokens, API keys and API clients."""

import base64
import itertools

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from notifyproject.identities.api_keys import api_key_create
from notifyproject.identities.client_tokens import end_user_token_create

_usernames = itertools.count(1)


@pytest.fixture(autouse=True)
def _clean_redis_state(settings):
    """Throttle counters and presence live in Redis; each test starts without them.

    Only our keys are deleted: flushing the database would also drop Celery's queue
    bindings under a running worker.
    """
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    for pattern in ("*throttle*", "clarion:presence:*"):
        keys = list(client.scan_iter(pattern, count=1000))
        if keys:
            client.delete(*keys)
    client.close()
    yield


@pytest.fixture
def recorder(settings):
    """Push providers replaced (by settings, as a deployment would) with the recording one."""
    from delivery.providers import reset_providers
    from tests.support.recording import RECORDING_PROVIDERS, Recorder

    settings.CLARION_PROVIDERS = RECORDING_PROVIDERS
    reset_providers()
    yield Recorder()
    reset_providers()


@pytest.fixture
def eager_tasks():
    """Run Celery tasks inline, for domain tests that do not need a real worker."""
    from notifyproject.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def _purge_broker(url: str) -> None:
    import redis

    from tests.support.broker import QUEUE

    client = redis.Redis.from_url(url)
    client.delete(QUEUE, "unacked", "unacked_index")
    client.close()


class _Processes:
    """Starts real processes of one kind for a test, and stops them all after it."""

    def __init__(self, kind):
        self.kind, self.started = kind, []

    def __call__(self, **env):
        process = self.kind(**env).start()
        self.started.append(process)
        process.wait_ready()
        return process

    def stop_all(self):
        for process in self.started:
            process.stop()


@pytest.fixture
def start_worker(transactional_db, settings):
    """Start real `celery worker -B` processes against the test database."""
    from tests.support.processes import Worker

    _purge_broker(settings.REDIS_URL)
    processes = _Processes(Worker)
    yield processes
    processes.stop_all()


@pytest.fixture
def broker_queue(settings):
    """The tasks waiting in the real broker (no worker reads it), as (name, args) oldest first."""
    from tests.support.broker import queued_tasks

    _purge_broker(settings.REDIS_URL)
    yield lambda: queued_tasks(settings.REDIS_URL)
    _purge_broker(settings.REDIS_URL)


@pytest.fixture
def start_web(transactional_db):
    """Start real daphne processes serving Clarion against the test database."""
    from tests.support.processes import WebServer

    processes = _Processes(WebServer)
    yield processes
    processes.stop_all()


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def webpush_keys() -> dict:
    """A browser-like subscription key pair: a P-256 public point and a 16-byte secret."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    point = private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {"p256dh": b64url(point), "auth": b64url(b"0123456789abcdef")}


@pytest.fixture
def make_user(db):
    def make(username: str | None = None, **extra):
        username = username or f"user{next(_usernames)}"
        return get_user_model().objects.create_user(username=username, **extra)

    return make


@pytest.fixture
def client_for():
    """An APIClient authenticated as an end user with a fresh token."""

    def make(user) -> APIClient:
        token, _expires = end_user_token_create(user=user, ttl=None)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        client.token = token
        return client

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def alice_client(client_for, alice):
    return client_for(alice)


@pytest.fixture
def bob_client(client_for, bob):
    return client_for(bob)


@pytest.fixture
def api_key_client(db):
    """An APIClient with an API key of the given scopes."""

    def make(*scopes: str) -> APIClient:
        _api_key, key = api_key_create(name="backend", scopes=list(scopes))
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        client.key = key
        return client

    return make


@pytest.fixture
def anon():
    return APIClient()


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The response is `status` in the contract's error shape; returns the error object."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture
def fan_out(django_capture_on_commit_callbacks):
    """Fan a notification out in-process, running what would run after each batch commits."""
    from delivery import fanout

    def run(notification_id: int) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            fanout.notification_fan_out(notification_id)

    return run
