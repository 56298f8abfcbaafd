"""Redis restarts (losing everything: no persistence) under live traffic: nothing lost, nothing twice."""

import json
import threading

import httpx
import pytest
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from notifyproject.identities.api_keys import api_key_create
from realtime.presence import PRESENCE_REFRESH_SECS
from tests.support.processes import wait_until
from tests.support.servers import PrivateRedis

pytestmark = pytest.mark.django_db(transaction=True)
RECONNECT_PAUSE_SECS = 0.2


class ResumingClient(threading.Thread):
    """A WebSocket client that reconnects with after=<cursor>, as clarion.js does."""

    def __init__(self, url: str, token: str):
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.cursor = 0
        self.received: list[int] = []
        self.cursors: list[int] = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                with connect(
                    f"{self.url}/ws/v1/notifications/?token={self.token}&after={self.cursor}", open_timeout=5
                ) as ws:
                    while not self.stopping.is_set():
                        try:
                            frame = json.loads(ws.recv(timeout=0.5))
                        except TimeoutError:
                            continue
                        if frame.get("type") == "notification":
                            self.received.append(frame["id"])
                            self.cursors.append(frame["cursor"])
                            self.cursor = frame["cursor"]
            except (OSError, WebSocketException):
                self.stopping.wait(RECONNECT_PAUSE_SECS)


@pytest.fixture
def private_redis():
    server = PrivateRedis().start()
    yield server
    server.cleanup()


def test_redis_restart_loses_nothing_and_sends_nothing_twice(
    private_redis, start_web, start_worker, alice, client_for
):
    env = {"REDIS_URL": private_redis.url, "CLARION_STALE_WORK_SECS": 2}
    web = start_web(**env)
    start_worker(**env)
    _key, key = api_key_create(name="faults", scopes=["send"])
    api = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {key}"}, timeout=15)
    client = ResumingClient(web.ws_url, client_for(alice).token)
    client.start()
    sent: list[int] = []

    def send(title):
        response = api.post(
            "/api/v1/notifications/", json={"to": {"users": ["alice"]}, "title": title, "route": "realtime"}
        )
        assert response.status_code == 202, response.text
        sent.append(response.json()["id"])

    try:
        for i in range(5):
            send(f"before {i}")
        wait_until(lambda: len(client.received) == 5, timeout=30, message="the first five")

        private_redis.stop()
        for i in range(5):
            send(f"while Redis is down {i}")  # accepted: the rows commit; enqueueing fails fast
        private_redis.start()

        # Presence was lost with Redis; nodes write it back within one refresh period.
        wait_until(
            lambda: httpx.get(f"{web.url}/healthz", timeout=10).status_code == 200,
            timeout=30,
            message="healthz after the restart",
        )
        for i in range(5):
            send(f"after {i}")
        wait_until(
            lambda: sorted(client.received) == sorted(sent),
            timeout=PRESENCE_REFRESH_SECS * 3 + 30,
            interval=0.2,
            message="every notification on the socket",
        )
    finally:
        client.stopping.set()
        client.join(10)

    assert len(client.received) == len(set(client.received)) == 15  # none twice
    # In cursor order: the order fan-outs committed (those re-dispatched after the outage come later).
    assert client.cursors == sorted(set(client.cursors))
