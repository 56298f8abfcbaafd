"""Open streams end when their token expires or is revoked (real daphne, short re-check interval)."""

import concurrent.futures
import time
from datetime import timedelta

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from knox.models import AuthToken
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from notifyproject.identities.client_tokens import end_user_token_create
from tests.realtime.conftest import open_socket, recv_json, wait_online
from tests.realtime.test_websocket import close_code
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
RECHECK_SECS = 0.3  # CLARION_TOKEN_RECHECK_SECS for the server; production re-checks every 30 s
ENDS_WITHIN_SECS = 15


def read_until_the_stream_ends(stream) -> None:
    """Consume an SSE body to its end; httpx raises ReadTimeout if the server keeps it open."""
    for _chunk in stream.iter_raw():
        pass


def events(web, token: str):
    return httpx.stream(
        "GET",
        f"{web.url}/api/v1/events/",
        headers={"Authorization": f"Token {token}"},
        timeout=httpx.Timeout(10, read=ENDS_WITHIN_SECS),
    )


def test_a_websocket_and_an_event_stream_end_when_their_token_expires(start_web, alice):
    web = start_web(CLARION_TOKEN_RECHECK_SECS=RECHECK_SECS)
    token, expires_at = end_user_token_create(user=alice, ttl=timedelta(seconds=4))
    with open_socket(web, token) as ws, events(web, token) as stream:
        assert stream.status_code == 200
        ws.send('{"type": "ping"}')
        assert recv_json(ws) == {"type": "pong"}  # alive while the token is

        assert close_code(ws, timeout=ENDS_WITHIN_SECS) == 4401
        assert timezone.now() >= expires_at  # not before the token expired
        read_until_the_stream_ends(stream)
    assert (
        httpx.get(f"{web.url}/api/v1/events/", headers={"Authorization": f"Token {token}"}).status_code == 401
    )


def delete_the_token(user):
    AuthToken.objects.filter(user=user).delete()


def deactivate_the_user(user):
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)


@pytest.mark.parametrize("revoke", [delete_the_token, deactivate_the_user])
def test_every_open_stream_ends_when_its_token_is_revoked(start_web, alice, revoke):
    web = start_web(CLARION_TOKEN_RECHECK_SECS=RECHECK_SECS)
    token, _ = end_user_token_create(user=alice, ttl=timedelta(days=1))
    subprotocols = ["clarion.v1", f"clarion.token.{token}"]
    poll_url = f"{web.url}/api/v1/poll/"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting_poll = pool.submit(
            httpx.get,
            poll_url,
            params={"timeout": 50},
            headers={"Authorization": f"Token {token}"},
            timeout=60,
        )
        wait_online(alice)  # the poll is waiting: nothing else of hers is open yet
        with (
            connect(f"{web.ws_url}/ws/v1/notifications/", subprotocols=subprotocols, open_timeout=10) as ws,
            events(web, token) as stream,
        ):
            assert ws.subprotocol == "clarion.v1"
            assert stream.status_code == 200
            ws.send('{"type": "ping"}')
            assert recv_json(ws) == {"type": "pong"}

            revoked_at = time.monotonic()
            revoke(alice)
            assert close_code(ws, timeout=ENDS_WITHIN_SECS) == 4401
            read_until_the_stream_ends(stream)
            assert waiting_poll.result(timeout=ENDS_WITHIN_SECS).status_code == 401
            assert time.monotonic() - revoked_at < ENDS_WITHIN_SECS


def reconnect_is_refused(web, token: str) -> bool:
    """One reconnect: True if the server closes it with 4401, False if it lets the socket live."""
    with open_socket(web, token) as ws:
        try:
            ws.send('{"type": "ping"}')
            frame = recv_json(ws)
        except ConnectionClosed as closed:
            return (closed.rcvd.code if closed.rcvd else None) == 4401
        assert frame == {"type": "pong"}
        return False


@pytest.mark.parametrize("revoke", [delete_the_token, deactivate_the_user])
def test_a_token_revoked_after_its_socket_closed_cannot_reconnect(start_web, alice, revoke):
    """A node remembers a closed socket's token so a reconnect skips the token query; the
    re-check rounds forget it once revoked, the same bound as an open socket's."""
    web = start_web(CLARION_TOKEN_RECHECK_SECS=RECHECK_SECS)
    token, _ = end_user_token_create(user=alice, ttl=timedelta(days=1))
    assert not reconnect_is_refused(web, token)  # open, then closed: remembered by the node
    revoked_at = time.monotonic()
    revoke(alice)
    wait_until(lambda: reconnect_is_refused(web, token), timeout=ENDS_WITHIN_SECS, message="refused")
    assert time.monotonic() - revoked_at < ENDS_WITHIN_SECS
    assert reconnect_is_refused(web, token)  # and stays refused


@pytest.mark.parametrize("revoke", [delete_the_token, deactivate_the_user])
def test_a_token_revoked_after_its_poll_answered_is_refused_at_a_later_poll(start_web, alice, revoke):
    """A node remembers an answered poll's token, so the client's next poll skips the token
    query; as for sockets, the re-check rounds forget it once revoked."""
    web = start_web(CLARION_TOKEN_RECHECK_SECS=RECHECK_SECS)
    token, _ = end_user_token_create(user=alice, ttl=timedelta(days=1))

    def refused() -> bool:
        answer = httpx.get(
            f"{web.url}/api/v1/poll/",
            params={"timeout": 0},
            headers={"Authorization": f"Token {token}"},
            timeout=30,
        )
        return answer.status_code == 401

    assert not refused()  # answered: its token is remembered by the node
    revoked_at = time.monotonic()
    revoke(alice)
    wait_until(refused, timeout=ENDS_WITHIN_SECS, message="refused")
    assert time.monotonic() - revoked_at < ENDS_WITHIN_SECS
    assert refused()  # and stays refused
