"""Long-polling and server-sent events against a live daphne, Redis, PostgreSQL and a worker."""

import concurrent.futures
import time

import httpx
import pytest

from delivery.models import InboxMessage, Notification
from tests.conftest import assert_error
from tests.delivery.factories import send
from tests.realtime.conftest import wait_offline, wait_online
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class Response:
    """Enough of a response for assert_error."""

    def __init__(self, response: httpx.Response):
        self.status_code, self.content, self._response = response.status_code, response.content, response

    def __getitem__(self, name):
        return self._response.headers[name]

    def json(self):
        return self._response.json()


def poll(web, token, **params):
    params = {"token": token, **params}
    return httpx.get(f"{web.url}/api/v1/poll/", params=params, timeout=90)


def in_cursor_order(user) -> list[int]:
    """The user's notification ids in stream order (the worker may fan out several at once)."""
    rows = InboxMessage.objects.filter(user=user).order_by("seq")
    return list(rows.values_list("notification_id", flat=True))


def dispatched(count: int):
    wait_until(lambda: Notification.objects.filter(status="dispatched").count() >= count, message="dispatch")


def test_a_poll_answers_as_soon_as_a_message_exists(start_web, start_worker, alice, bob, token_for):
    web = start_web()
    start_worker()
    alice_token, bob_token = token_for(alice), token_for(bob)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        alices = pool.submit(poll, web, alice_token, timeout=30)
        bobs = pool.submit(poll, web, bob_token, timeout=3)
        wait_online(alice, bob)  # both polls are waiting
        started = time.monotonic()
        notification = send({"users": ["alice"]}, title="wake up")
        page = alices.result(timeout=30).json()
        assert time.monotonic() - started < 10  # woken by the message, not by the 30 s timeout
        assert [m["id"] for m in page["results"]] == [notification.pk]
        assert page["cursor"] == page["results"][0]["cursor"] == 1
        assert set(page["results"][0]) == {
            "id",
            "cursor",
            "title",
            "body",
            "data",
            "url",
            "icon",
            "created_at",
            "read_at",
        }
        assert bobs.result(timeout=30).json() == {
            "results": [],
            "cursor": 0,
            "read": [],
            "read_cursor": 0,
        }  # never Alice's


def test_a_poll_with_nothing_new_answers_empty_after_its_timeout(start_web, alice, token_for):
    web = start_web()
    started = time.monotonic()
    response = poll(web, token_for(alice), timeout=1, after=0)
    assert response.status_code == 200
    assert response.json() == {"results": [], "cursor": 0, "read": [], "read_cursor": 0}
    assert 0.9 <= time.monotonic() - started < 10


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def test_waiting_polls_hold_no_thread_each(start_web, make_user, token_for):
    """Long-polls are served beside Django's handler, which parks a thread per request."""
    web = start_web()
    users = [make_user() for _ in range(24)]
    tokens = [token_for(user) for user in users]
    poll(web, tokens[0], timeout=0)  # first request: lazy imports, the database pool
    idle = _threads(web.proc.pid)
    with concurrent.futures.ThreadPoolExecutor(len(tokens)) as pool:
        waiting = [pool.submit(poll, web, token, timeout=4) for token in tokens]
        wait_online(*users)  # every poll is registered and waiting
        most = _threads(web.proc.pid)
        while not all(future.done() for future in waiting):
            most = max(most, _threads(web.proc.pid))
            concurrent.futures.wait(waiting, timeout=0.05)
        answers = [future.result() for future in waiting]
    assert all(answer.status_code == 200 and answer.json()["results"] == [] for answer in answers)
    assert most - idle < len(users) // 3, f"{most - idle} more threads for {len(users)} waiting polls"


def test_a_poll_returns_the_backlog_at_once_and_resumes_from_its_cursor(
    start_web, start_worker, alice, token_for
):
    web = start_web()
    start_worker()
    token = token_for(alice)
    send({"users": ["alice"]}, title="one", route="all")
    send({"users": ["alice"]}, title="two", route="all")
    dispatched(2)
    first, second = in_cursor_order(alice)
    page = poll(web, token, after=0, timeout=30).json()
    assert [m["id"] for m in page["results"]] == [first, second]
    assert poll(web, token, after=page["cursor"], timeout=0).json() == {
        "results": [],
        "cursor": page["cursor"],
        "read": [],
        "read_cursor": 0,
    }
    assert poll(web, token, after=1, timeout=0).json()["results"][0]["id"] == second


def test_messages_published_between_two_polls_answer_the_next_one_in_cursor_order(
    start_web, alice, token_for
):
    """A poll client is between two requests for a moment: what is published to it then is kept
    by the node for its next poll, which answers from it only if it continues the poll's cursor."""
    web = start_web()
    token = token_for(alice)
    assert poll(web, token, timeout=0).json()["cursor"] == 0
    wait_online(alice)  # her poll ended here a moment ago: sends are published to this node
    first = send({"users": ["alice"]}, title="one", route="realtime")
    second = send({"users": ["alice"]}, title="two", route="realtime")
    page = poll(web, token, after=0, timeout=30).json()
    assert [m["id"] for m in page["results"]] == [first.pk, second.pk]
    assert page["cursor"] == 2

    third = send({"users": ["alice"]}, title="three", route="realtime")  # kept: cursor 3
    page = poll(web, token, after=1, timeout=30).json()  # 3 does not continue 1: 2 is read too
    assert [m["id"] for m in page["results"]] == [second.pk, third.pk]
    assert page["cursor"] == 3


def test_poll_refuses_bad_input_and_anonymous_callers_in_the_error_shape(start_web, alice, token_for):
    web = start_web()
    token = token_for(alice)
    error = assert_error(Response(poll(web, token, after="abc")), 400, "validation_error")
    assert "after" in error["fields"]
    error = assert_error(Response(poll(web, token, timeout="-1")), 400, "validation_error")
    assert "timeout" in error["fields"]
    assert_error(Response(poll(web, "ct_wrong")), 401, "not_authenticated")
    assert_error(Response(httpx.get(f"{web.url}/api/v1/poll/", timeout=10)), 401)
    header = httpx.get(f"{web.url}/api/v1/poll/?timeout=0", headers={"Authorization": f"Token {token}"})
    assert header.status_code == 200
    refused = Response(httpx.post(f"{web.url}/api/v1/poll/?token={token}"))
    assert refused.status_code in (403, 405)  # CSRF refuses it before the view can say 405
    assert_error(refused, refused.status_code)


def sse_events(response, count: int, deadline: float) -> list[dict]:
    """Parse `count` events (comments skipped) from a streaming response."""
    events, current = [], {}
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(events)} events before the deadline")
        if line == "":
            if "data" in current:
                events.append(current)
                current = {}
                if len(events) == count:
                    return events
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        current[name] = value[1:] if value.startswith(" ") else value
    raise AssertionError("the stream ended early")


def test_sse_streams_live_messages_with_the_cursor_as_id(start_web, start_worker, alice, bob, token_for):
    web = start_web()
    start_worker()
    with httpx.stream(
        "GET", f"{web.url}/api/v1/events/", params={"token": token_for(alice)}, timeout=30
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        wait_online(alice)
        send({"users": ["bob"]}, title="not for alice")
        mine = send({"users": ["alice"]}, title="for alice")
        [event] = sse_events(stream, 1, time.monotonic() + 20)
    assert event["event"] == "notification"
    assert event["id"] == "1"
    assert '"title":"for alice"' in event["data"] and f'"id":{mine.pk}' in event["data"]


def test_sse_resumes_from_last_event_id_or_after(start_web, start_worker, alice, token_for):
    web = start_web()
    start_worker()
    token = token_for(alice)
    for number in range(3):
        send({"users": ["alice"]}, title=f"n{number}", route="all")
    dispatched(3)
    sent = in_cursor_order(alice)
    url = f"{web.url}/api/v1/events/"
    with httpx.stream(
        "GET", url, params={"token": token}, headers={"Last-Event-ID": "1"}, timeout=30
    ) as stream:
        events = sse_events(stream, 2, time.monotonic() + 20)
    assert [e["id"] for e in events] == ["2", "3"]
    assert [f'"id":{pk}' in e["data"] for e, pk in zip(events, sent[1:], strict=True)] == [True, True]
    with httpx.stream("GET", url, params={"token": token, "after": 2}, timeout=30) as stream:
        assert [e["id"] for e in sse_events(stream, 1, time.monotonic() + 20)] == ["3"]
    bad = httpx.get(url, params={"token": token}, headers={"Last-Event-ID": "x"}, timeout=10)
    assert_error(Response(bad), 400, "validation_error")
    assert_error(Response(httpx.get(url, timeout=10)), 401)


# -- the token poll path (realtime/longwait.py answers it without a Django request) ----------

SECURITY_HEADERS = (
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
    "cross-origin-opener-policy",
)


def _headers(response: httpx.Response) -> dict:
    """Headers but the framing (a length, or chunks) and the date."""
    framing = ("content-length", "transfer-encoding", "date")
    return {name: value for name, value in response.headers.items() if name not in framing}


def test_a_token_poll_is_refused_as_the_view_refuses_and_answers_with_the_same_headers(
    start_web, alice, token_for
):
    web = start_web()
    token = token_for(alice)
    url = f"{web.url}/api/v1/poll/"
    # Given a wrong token, a malformed Token header, and no credentials (the view's own answer)
    wrong = httpx.get(url, params={"token": "ct_wrong", "timeout": 0}, timeout=10)
    malformed = httpx.get(url, params={"timeout": 0}, headers={"Authorization": "Token"}, timeout=10)
    anonymous = httpx.get(url, params={"timeout": 0}, timeout=10)
    # Then all three are the same 401, in the error shape, with the same headers
    for response in (wrong, malformed, anonymous):
        assert_error(Response(response), 401, "not_authenticated")
        assert response.headers["www-authenticate"] == "Token"
    assert _headers(wrong) == _headers(malformed) == _headers(anonymous)
    # And a host outside ALLOWED_HOSTS is a 400 before the token is looked at
    foreign = httpx.get(
        url, params={"token": token, "timeout": 0}, headers={"Host": "evil.example"}, timeout=10
    )
    assert_error(Response(foreign), 400, "bad_request")
    # And an answer carries what Django's answers carry, plus CORS and no-store
    answer = httpx.get(url, params={"timeout": 0}, headers={"Authorization": f"Token {token}"}, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["access-control-allow-origin"] == "*"
    for name in SECURITY_HEADERS:
        assert answer.headers[name] == anonymous.headers[name]
    # And a bad parameter names its field, as before
    error = assert_error(Response(poll(web, token, after="-1", read_after="x")), 400, "validation_error")
    assert set(error["fields"]) == {"after", "read_after"}


def test_polling_in_a_loop_while_messages_are_sent_misses_and_repeats_nothing(start_web, alice, token_for):
    """Answers come from the waiter's frames, the frames kept between polls, or the database;
    whichever it is, the client sees every message once, in cursor order."""
    web = start_web()
    token = token_for(alice)
    assert poll(web, token, timeout=0).json()["cursor"] == 0
    wait_online(alice)
    sent, seen, cursor, pages = [], [], 0, []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sending = pool.submit(
            lambda: [
                sent.append(send({"users": ["alice"]}, title=f"n{n}", route="realtime").pk) for n in range(30)
            ]
        )
        deadline = time.monotonic() + 60
        while (not sending.done() or len(seen) < len(sent)) and time.monotonic() < deadline:
            page = poll(web, token, after=cursor, timeout=5).json()
            pages.append((cursor, page))
            assert [m["cursor"] for m in page["results"]] == list(range(cursor + 1, page["cursor"] + 1))
            seen += [m["id"] for m in page["results"]]
            cursor = page["cursor"]
        sending.result()
    assert seen == sent, pages
    assert sent == in_cursor_order(alice)
    # A cursor from the past answers from the database at once; one past the end is clamped
    assert [m["id"] for m in poll(web, token, after=27, timeout=0).json()["results"]] == sent[27:]
    assert poll(web, token, after=10_000, timeout=0).json()["cursor"] == 30


def test_a_poll_whose_client_left_stops_waiting(start_web, alice, token_for):
    """Its registration ends with the connection, not at its timeout, so presence lapses."""
    web = start_web()
    token = token_for(alice)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{web.url}/api/v1/poll/", params={"token": token, "timeout": 60}, timeout=2)
    wait_offline(alice, timeout=30)  # POLL_LINGER_SECS after the client left, well before 60 s
