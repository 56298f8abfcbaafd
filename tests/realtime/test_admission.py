"""Handshake admission (realtime/admission.py) on a live daphne: past its bound a node answers a
new handshake 503 with Retry-After at once, and every client that comes back gets in."""

import asyncio
import re
import threading

import httpx
import pytest
from django.db import connection, transaction
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import InvalidStatus

from notifyproject.identities.client_tokens import end_user_token_create
from realtime.admission import RETRY_AFTER_SECS
from tests.realtime.conftest import open_socket, recv_type
from tests.support.locks import lock_waits
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

REFUSED = "clarion_realtime_handshakes_refused_total"
CROWD = 100
MAX_ATTEMPTS = 500  # per client: each refusal is answered at once, so retries are quick


def refused_count(web, reason: str = "pending_handshakes") -> float:
    text = httpx.get(f"{web.url}/metrics", timeout=10).text
    found = re.search(rf'^{REFUSED}{{reason="{reason}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_past_the_bound_a_handshake_is_refused_503_with_retry_after(start_web, make_user, token_for):
    # Given a node that finishes one handshake at a time, and one handshake held in its token
    # lookup (the token table is locked)
    web = start_web(CLARION_WS_MAX_PENDING_HANDSHAKES=1, CLARION_WS_MAX_LOOP_LAG_MS=0)
    first_user, second_user = make_user(), make_user()
    first_token, second_token = token_for(first_user), token_for(second_user)
    opened = {}

    def first_handshake():
        with open_socket(web, first_token) as ws:
            ws.send('{"type": "ping"}')
            opened["pong"] = recv_type(ws, "pong")

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE knox_authtoken IN ACCESS EXCLUSIVE MODE")
        thread = threading.Thread(target=first_handshake)
        thread.start()
        wait_until(
            lambda: lock_waits("%knox_authtoken%"), message="the first handshake waiting for the token table"
        )

        # When a second client connects meanwhile
        with pytest.raises(InvalidStatus) as refused:
            open_socket(web, second_token)

    # Then it is refused at once, told when to come back, and counted
    response = refused.value.response
    assert response.status_code == 503
    assert RETRY_AFTER_SECS[0] <= int(response.headers["Retry-After"]) <= RETRY_AFTER_SECS[1]
    assert refused_count(web) >= 1
    # and once the node has caught up, the first handshake completes and the second gets in
    thread.join(30)
    assert opened["pong"] == {"type": "pong"}
    with open_socket(web, second_token) as ws:
        ws.send('{"type": "ping"}')
        assert recv_type(ws, "pong") == {"type": "pong"}


def test_a_crowd_past_the_bound_is_refused_in_part_and_all_get_in_by_retrying(start_web, make_user):
    # Given a node that admits two handshakes at a time
    web = start_web(CLARION_WS_MAX_PENDING_HANDSHAKES=2, CLARION_WS_MAX_LOOP_LAG_MS=0)
    tokens = [end_user_token_create(user=make_user(), ttl=None)[0] for _ in range(CROWD)]
    counted_before = refused_count(web)  # the counters live in Redis, shared with earlier servers

    # When a hundred clients connect at once, each retrying as soon as it is refused
    async def one(token: str) -> int:
        refusals = 0
        for _ in range(MAX_ATTEMPTS):
            try:
                ws = await async_connect(f"{web.ws_url}/ws/v1/notifications/?token={token}", open_timeout=30)
            except InvalidStatus as error:
                assert error.response.status_code == 503
                assert error.response.headers["Retry-After"]
                refusals += 1
                continue
            async with ws:
                await ws.send('{"type": "ping"}')
                assert await asyncio.wait_for(ws.recv(), 30) == '{"type":"pong"}'
            return refusals
        raise AssertionError(f"not admitted in {MAX_ATTEMPTS} attempts")

    async def crowd() -> list[int]:
        return await asyncio.gather(*(one(token) for token in tokens))

    refusals = asyncio.run(crowd())

    # Then some were refused, every one got in, and the node counted each refusal
    assert sum(refusals) > 0
    assert refused_count(web) - counted_before == sum(refusals)
