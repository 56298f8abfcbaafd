"""Rate limits answer 429 with Retry-After, per API key and per user, counted in Redis."""

import pytest

from tests.conftest import assert_error, webpush_keys

pytestmark = pytest.mark.django_db


def test_send_rate_is_per_api_key(api_key_client, alice, settings):
    settings.CLARION_SEND_RATE = "2/min"
    body = {"to": {"users": ["alice"]}, "title": "x"}
    busy, other = api_key_client("send"), api_key_client("send")
    assert [busy.post("/api/v1/notifications/", body, format="json").status_code for _ in range(2)] == [
        202,
        202,
    ]
    limited = busy.post("/api/v1/notifications/", body, format="json")
    error = assert_error(limited, 429, "throttled")
    assert 1 <= int(limited["Retry-After"]) <= 61
    assert "seconds" in error["message"]
    assert other.post("/api/v1/notifications/", body, format="json").status_code == 202


def test_registration_rate_is_per_user(alice_client, bob_client, settings):
    settings.CLARION_REGISTRATION_RATE = "3/hour"
    codes = [
        alice_client.post(
            "/api/v1/devices/", {"platform": "fcm", "token": f"t{i}"}, format="json"
        ).status_code
        for i in range(4)
    ]
    assert codes == [201, 201, 201, 429]
    assert alice_client.get("/api/v1/devices/").status_code == 200  # reading is not limited
    sub = {"endpoint": "https://push.example.net/x", "keys": webpush_keys()}
    assert (
        bob_client.post(
            "/api/v1/devices/", {"platform": "webpush", "subscription": sub}, format="json"
        ).status_code
        == 201
    )


def test_password_sign_in_is_limited(make_user, anon, settings):
    settings.CLARION_LOGIN_RATE = "2/min"
    make_user("carol", password="right-password-123")
    body = {"username": "carol", "password": "wrong"}
    codes = [anon.post("/api/v1/auth/token/", body, format="json").status_code for _ in range(3)]
    assert codes == [401, 401, 429]


def test_limits_fail_open_when_their_counters_are_unreachable(api_key_client, alice, settings):
    """A Redis outage must not turn every send into an error; limiting resumes when it is back."""
    settings.CLARION_SEND_RATE = "1/min"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }  # nothing listens on port 1
    client = api_key_client("send")
    body = {"to": {"users": ["alice"]}, "title": "x"}
    assert [client.post("/api/v1/notifications/", body, format="json").status_code for _ in range(2)] == [
        202,
        202,
    ]


@pytest.fixture
def private_redis():
    """A redis-server of the web process's own, so the server's connection count is its alone."""
    from tests.support.servers import PrivateRedis

    server = PrivateRedis().start()
    yield server
    server.cleanup()


@pytest.mark.django_db(transaction=True)
def test_rate_limit_counters_reuse_the_processes_redis_connections(
    start_web, api_key_client, alice, private_redis
):
    """Django keeps a cache object per request context under ASGI; without a shared pool each
    request opened its own TCP connection to Redis for its rate-limit counter."""
    import httpx
    import redis

    web = start_web(REDIS_URL=private_redis.url)
    key = api_key_client("send").key
    client = redis.Redis(port=private_redis.port)

    def connections_so_far() -> int:
        return client.info("stats")["total_connections_received"]

    with httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
        http.post("/api/v1/notifications/", json={"to": {"users": ["alice"]}, "title": "warm"})
        before = connections_so_far()
        for number in range(30):
            response = http.post(
                "/api/v1/notifications/", json={"to": {"users": ["alice"]}, "title": f"{number}"}
            )
            assert response.status_code == 202, response.text
        opened = connections_so_far() - before
    client.close()
    assert opened < 10, f"{opened} new Redis connections for 30 sends"
