"""GET /healthz checks the web process's node subscription, the path realtime frames take."""

import httpx
import pytest
import redis

from notifyproject.identities.api_keys import api_key_create
from tests.realtime.conftest import open_socket, recv_type
from tests.support.processes import wait_until
from tests.support.servers import PrivateRedis

pytestmark = pytest.mark.django_db(transaction=True)
RESUBSCRIBE_WAIT_SECS = 40  # the node retries with back-off capped at 10 s


@pytest.fixture
def private_redis():
    """Its own redis-server: this test restarts it and changes its ACL."""
    server = PrivateRedis().start()
    yield server
    server.cleanup()


def healthz(web) -> tuple[int, dict]:
    response = httpx.get(f"{web.url}/healthz", timeout=15)
    return response.status_code, response.json()


def test_healthz_is_503_while_the_node_is_not_subscribed(private_redis, start_web, alice, client_for):
    web = start_web(REDIS_URL=private_redis.url)
    assert healthz(web) == (
        200,
        {"database": "ok", "channel_layer": "ok", "broker": "ok", "realtime_node": "ok"},
    )
    admin = redis.Redis(port=private_redis.port)

    # Redis refuses the node's SUBSCRIBE while publishing, the broker and the channel layer work.
    admin.execute_command("ACL", "SETUSER", "default", "-subscribe")
    admin.client_kill_filter(_type="pubsub")
    status, body = wait_until(
        lambda: (answer := healthz(web))[0] == 503 and answer, timeout=30, message="healthz 503"
    )
    assert body["realtime_node"].startswith("error"), body
    assert body["database"] == body["channel_layer"] == body["broker"] == "ok", body

    admin.execute_command("ACL", "SETUSER", "default", "+subscribe")
    wait_until(lambda: healthz(web)[0] == 200, timeout=RESUBSCRIBE_WAIT_SECS, message="healthz back")

    # Redis restarted: down while it is gone, back once the node has subscribed again.
    private_redis.stop()
    status, body = healthz(web)
    assert status == 503 and body["realtime_node"].startswith("error"), body
    private_redis.start()
    wait_until(lambda: healthz(web)[0] == 200, timeout=RESUBSCRIBE_WAIT_SECS, message="healthz after restart")

    # And the subscription it reports carries frames.
    _key, key = api_key_create(name="healthz", scopes=["send"])
    with open_socket(web, client_for(alice).token) as ws:
        response = httpx.post(
            f"{web.url}/api/v1/notifications/",
            json={"to": {"users": ["alice"]}, "title": "after the restart", "route": "realtime"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=15,
        )
        assert response.status_code == 202, response.text
        assert recv_type(ws, "notification")["id"] == response.json()["id"]
