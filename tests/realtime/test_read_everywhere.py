"""A message read on one client (ack) reaches every realtime transport as `read`, through real daphne."""

import concurrent.futures
import json
import time

import httpx
import pytest
from websockets.sync.client import connect

from delivery.models import Notification
from tests.conftest import assert_error
from tests.delivery.factories import send
from tests.realtime.conftest import recv_json, recv_type, wait_online
from tests.realtime.test_poll_and_sse import Response, poll
from tests.realtime.test_websocket import close_code
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def ack(web, token: str, notification_id: int) -> None:
    response = httpx.post(
        f"{web.url}/api/v1/inbox/{notification_id}/ack/",
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    )
    assert response.status_code == 204, response.text


def open_socket(web, token: str, **params):
    query = "&".join(f"{name}={value}" for name, value in {"token": token, **params}.items())
    return connect(f"{web.ws_url}/ws/v1/notifications/?{query}", open_timeout=10)


def next_event(lines) -> dict:
    """The next event (comments skipped) from one stream's line iterator."""
    event = {}
    for line in lines:
        if line == "" and "data" in event:
            return event
        if line and not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")
    raise AssertionError("the stream ended early")


def dispatched(*notifications):
    ids = [n.pk for n in notifications]
    wait_until(
        lambda: Notification.objects.filter(pk__in=ids, status="dispatched").count() == len(ids),
        message="dispatch",
    )


def test_a_waiting_long_poll_is_answered_with_a_read_made_on_another_client(
    start_web, start_worker, alice, token_for
):
    web = start_web()
    start_worker()
    phone, tab = token_for(alice), token_for(alice)
    notification = send({"users": ["alice"]}, title="read me elsewhere", route="all")
    dispatched(notification)
    first = poll(web, tab, after=0, timeout=0).json()
    assert [m["id"] for m in first["results"]] == [notification.pk]
    assert (first["read"], first["read_cursor"]) == ([], 0)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            poll, web, tab, after=first["cursor"], read_after=first["read_cursor"], timeout=30
        )
        wait_online(alice)
        started = time.monotonic()
        ack(web, phone, notification.pk)
        page = waiting.result(timeout=40).json()
    assert time.monotonic() - started < 10  # woken by the read, not by the 30 s timeout
    assert page == {"results": [], "cursor": first["cursor"], "read": [notification.pk], "read_cursor": 1}


def test_reads_made_between_two_polls_come_with_the_next_one(start_web, start_worker, alice, token_for):
    web = start_web()
    start_worker()
    phone, tab = token_for(alice), token_for(alice)
    one, two = (send({"users": ["alice"]}, title=t, route="all") for t in ("one", "two"))
    dispatched(one, two)
    page = poll(web, tab, after=0, timeout=0).json()
    assert len(page["results"]) == 2 and page["read_cursor"] == 0

    # No poll is waiting while these happen.
    ack(web, phone, two.pk)
    ack(web, phone, one.pk)
    ack(web, phone, two.pk)  # read once: a second ack is no second read

    started = time.monotonic()
    after_gap = poll(web, tab, after=page["cursor"], read_after=page["read_cursor"], timeout=30).json()
    assert time.monotonic() - started < 10  # answered at once: the reads were waiting for it
    assert (after_gap["results"], after_gap["read"], after_gap["read_cursor"]) == ([], [two.pk, one.pk], 2)
    assert poll(web, tab, after=page["cursor"], read_after=1, timeout=0).json()["read"] == [one.pk]
    caught_up = poll(web, tab, after=page["cursor"], read_after=2, timeout=0).json()
    assert (caught_up["read"], caught_up["read_cursor"]) == ([], 2)
    # Without read_after a poll starts from now, as without after.
    fresh = poll(web, tab, after=page["cursor"], timeout=0).json()
    assert (fresh["read"], fresh["read_cursor"]) == ([], 2)
    # Replayed messages say they were read.
    replay = poll(web, tab, after=0, timeout=0).json()["results"]
    assert all(message["read_at"] for message in replay)


def test_a_bad_read_after_is_a_400_naming_the_field(start_web, alice, token_for):
    web = start_web()
    error = assert_error(Response(poll(web, token_for(alice), read_after="-1")), 400, "validation_error")
    assert "read_after" in error["fields"]


def test_sse_streams_a_read_made_on_another_client(start_web, start_worker, alice, token_for):
    web = start_web()
    start_worker()
    phone, tab = token_for(alice), token_for(alice)
    notification = send({"users": ["alice"]}, title="read me", route="all")
    dispatched(notification)
    with httpx.stream(
        "GET", f"{web.url}/api/v1/events/", params={"token": tab, "after": 0}, timeout=30
    ) as stream:
        lines = stream.iter_lines()
        assert next_event(lines)["event"] == "notification"
        ack(web, phone, notification.pk)
        read = next_event(lines)
    assert read["event"] == "read"
    assert json.loads(read["data"]) == {"type": "read", "id": notification.pk, "read_cursor": 1}


def test_a_websocket_reconnecting_with_read_after_gets_the_reads_it_missed(
    start_web, start_worker, alice, token_for
):
    web = start_web()
    start_worker()
    phone, tab = token_for(alice), token_for(alice)
    one, two = (send({"users": ["alice"]}, title=t, route="all") for t in ("one", "two"))
    dispatched(one, two)
    with open_socket(web, tab, after=0) as ws:
        assert [recv_type(ws, "notification")["id"] for _ in range(2)] == [one.pk, two.pk]
        ack(web, phone, one.pk)
        assert recv_type(ws, "read") == {"type": "read", "id": one.pk, "read_cursor": 1}
    ack(web, phone, two.pk)  # while the tab is away

    with open_socket(web, tab, after=2, read_after=1) as ws:
        assert recv_type(ws, "read") == {"type": "read", "id": two.pk, "read_cursor": 2}
    with open_socket(web, tab, after=2, read_after=2) as ws:  # up to date: nothing to replay
        ws.send(json.dumps({"type": "ping"}))
        assert recv_json(ws) == {"type": "pong"}
    with open_socket(web, tab, read_after="x") as ws:
        assert recv_json(ws)["code"] == "bad_cursor"
        assert close_code(ws) == 4400
