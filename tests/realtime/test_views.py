"""The realtime app's plain HTTP endpoints: Web Push key, service worker, demo page, self-test."""

import asyncio
import threading
import time

import pytest
from django.db import connections
from django.test import AsyncClient, Client

from delivery.models import Notification
from tests.conftest import assert_error

pytestmark = pytest.mark.django_db


def test_webpush_key_is_404_in_the_error_shape_until_vapid_is_configured(anon, settings):
    settings.VAPID_PUBLIC_KEY = ""
    assert_error(anon.get("/api/v1/webpush/key/"), 404, "webpush_not_configured")
    settings.VAPID_PUBLIC_KEY = "BPublicKeyBase64Url"
    response = anon.get("/api/v1/webpush/key/")
    assert response.status_code == 200
    assert response.json() == {"public_key": "BPublicKeyBase64Url"}


def test_the_service_worker_is_served_at_the_root_scope(anon):
    response = Client().get("/sw.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    assert response["Service-Worker-Allowed"] == "/"
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b'addEventListener("push"' in body and b"notificationclick" in body


def test_the_js_client_is_a_static_file():
    response = Client().get("/static/clarion/clarion.js")
    assert response.status_code == 200
    assert b"Clarion.prototype.enableWebPush" in b"".join(response.streaming_content)


def test_the_demo_page_offers_sign_in_or_uses_the_admin_session(make_user):
    page = Client().get("/")
    assert page.status_code == 200
    assert b"clarion/clarion.js" in page.content and b'id="signin-form"' in page.content
    staff = make_user("carol", is_staff=True)
    client = Client()
    client.force_login(staff)
    page = client.get("/")
    assert b'data-session-user="carol"' in page.content


def test_a_user_sends_themselves_a_test_and_is_rate_limited(alice, alice_client, anon, api_key_client):
    response = alice_client.post("/api/v1/me/test-notification/", {"title": "Ping"}, format="json")
    assert response.status_code == 202, response.content
    notification = Notification.objects.get(pk=response.json()["id"])
    assert (notification.title, notification.target, notification.sender_label) == (
        "Ping",
        {"users": ["alice"]},
        f"user:{alice.pk}",
    )
    for _ in range(9):
        assert alice_client.post("/api/v1/me/test-notification/", {}, format="json").status_code == 202
    limited = alice_client.post("/api/v1/me/test-notification/", {}, format="json")
    assert_error(limited, 429)
    assert "Retry-After" in limited
    assert_error(anon.post("/api/v1/me/test-notification/", {}, format="json"), 401)
    assert_error(api_key_client("send").post("/api/v1/me/test-notification/", {}, format="json"), 403)
    bad = alice_client.post("/api/v1/me/test-notification/", {"route": "carrier-pigeon"}, format="json")
    # Throttled before validation: the limit counts attempts, so a fresh user checks the fields.
    assert bad.status_code == 429


def test_self_test_validates_its_fields(bob_client):
    error = assert_error(
        bob_client.post("/api/v1/me/test-notification/", {"route": "carrier-pigeon"}, format="json"),
        400,
        "validation_error",
    )
    assert "route" in error["fields"]


async def _read_stream(response, until: float) -> bytes:
    chunks = b""
    iterator = aiter(response.streaming_content)
    while time.monotonic() < until:
        try:
            chunk = await asyncio.wait_for(anext(iterator), until - time.monotonic())
        except (StopAsyncIteration, TimeoutError):
            break
        chunks += chunk
    return chunks


@pytest.fixture
def alice_token(alice, client_for):
    return client_for(alice).token


@pytest.mark.django_db(transaction=True)
async def test_sse_sends_heartbeat_comments_and_ends_an_idle_stream(settings, alice_token):
    settings.CLARION_SSE_HEARTBEAT_MIN_SECS = 0.05
    settings.CLARION_SSE_HEARTBEAT_MAX_SECS = 0.1
    settings.CLARION_SSE_IDLE_TIMEOUT_SECS = 0.6
    response = await AsyncClient().get("/api/v1/events/", {"token": alice_token})
    assert response.status_code == 200
    started = time.monotonic()
    body = await _read_stream(response, started + 10)
    assert time.monotonic() - started < 5, "the idle stream should have ended"
    assert body.startswith(b"retry: ")
    assert body.count(b": heartbeat\n\n") >= 2
    await close_pool_connections()


async def close_pool_connections() -> None:
    """Close the DB connections the view's queries opened in the loop's pool threads.

    One task per pool thread, held at a barrier so each thread runs exactly one; otherwise
    the connections outlive the test and keep the test database from being dropped.
    """
    loop = asyncio.get_running_loop()
    executor = loop._default_executor  # the pool db() runs queries in (thread_sensitive=False)
    if executor is None:
        return
    count = len(executor._threads)
    barrier = threading.Barrier(count, timeout=10)

    def close():
        barrier.wait()
        connections.close_all()

    await asyncio.gather(*(loop.run_in_executor(None, close) for _ in range(count)))
