"""The node's repair of lost publishes reaches every kind of local connection."""

import asyncio
import time

import orjson
import pytest
import redis
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import AsyncClient

from realtime.auth import SessionsForCookieSockets
from realtime.node import get_node
from realtime.routing import websocket_urlpatterns
from tests.delivery.factories import send
from tests.realtime.test_views import close_pool_connections

pytestmark = pytest.mark.django_db(transaction=True)
WAIT_SECS = 10


async def wait_for(predicate, message: str):
    deadline = time.monotonic() + WAIT_SECS
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        await asyncio.sleep(0.01)


def forget_presence() -> None:
    """Presence briefly empty: the next fan-out routes no frame to this node (a lost publish)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter("clarion:presence:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def token(alice, client_for):
    return client_for(alice).token


async def test_a_repair_reaches_a_waiting_long_poll_and_the_sockets_beside_it(alice, token, fan_out):
    node = get_node()
    # Given: a long-poll waiting, then a WebSocket of the same user, on this process's node.
    poll = asyncio.ensure_future(AsyncClient().get("/api/v1/poll/", {"token": token, "timeout": WAIT_SECS}))
    await wait_for(lambda: len(node.subscribers.get(alice.pk, ())) == 1, "the poll waiting")
    socket = WebsocketCommunicator(
        SessionsForCookieSockets(URLRouter(websocket_urlpatterns)), "/ws/v1/notifications/"
    )
    socket.scope["subprotocols"] = ["clarion.v1", f"clarion.token.{token}"]
    connected, subprotocol = await socket.connect()
    assert connected and subprotocol == "clarion.v1"
    await wait_for(lambda: len(node.subscribers.get(alice.pk, ())) == 2, "the socket registered")

    # When: a message is committed but its publish is lost, and the node's repair runs.
    await sync_to_async(forget_presence)()
    notification = await sync_to_async(send)({"users": ["alice"]}, title="lost publish", route="realtime")
    await sync_to_async(fan_out)(notification.pk)
    await node.repair_missed()

    # Then: both get it from the database.
    answer = await asyncio.wait_for(poll, WAIT_SECS)
    assert [message["id"] for message in orjson.loads(answer.content)["results"]] == [notification.pk]
    frame = await socket.receive_json_from(timeout=WAIT_SECS)
    assert (frame["type"], frame["id"]) == ("notification", notification.pk)
    await socket.disconnect()
    await close_pool_connections()
