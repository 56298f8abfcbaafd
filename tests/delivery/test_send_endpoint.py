"""A common send is answered without a Django request, and answered as the view answers it.

Each request goes through the project's ASGI application (where delivery/send_endpoint.py
answers the common send) and through Django's handler alone (the view), and the answers are
compared: status, body and headers. Django's `request_started` tells which one served it.
"""

import json

import pytest
from django.core.signals import request_started

from delivery.models import Notification
from notifyproject.asgi import django_asgi_app
from notifyproject.identities.api_keys import api_key_create
from notifyproject.identities.client_tokens import end_user_token_create
from tests.conftest import assert_error
from tests.support.asgi import asgi_request

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/api/v1/notifications/"
# The row fields a send decides; ids and times differ between two sends.
ROW_FIELDS = (
    "sender_label",
    "title",
    "body",
    "data",
    "priority",
    "ttl",
    "collapse_key",
    "route",
    "target",
    "unknown",
    "recipients",
    "status",
    "app",
    "push",
    "overrides",
)


class Answer:
    def __init__(self, status: int, headers: dict, body: bytes, served_by_django: bool):
        self.status_code, self.headers, self.content = status, headers, body
        self.served_by_django = served_by_django

    def __getitem__(self, name):
        return self.headers[name.lower()]

    def json(self):
        return json.loads(self.content)


def post(body=None, *, key: str | None, django_only=False, headers=None, raw: bytes | None = None, query=b""):
    """POST the send through the whole application, or through Django's handler alone.
    `headers` replace the defaults of the same name (one line each; None leaves it out)."""
    started = []

    def seen(**_kwargs):
        started.append(True)

    sent = {"host": "127.0.0.1", "content-type": "application/json"}
    if key is not None:
        sent["authorization"] = f"Bearer {key}"
    payload = raw if raw is not None else json.dumps(body).encode()
    sent["content-length"] = str(len(payload))
    sent.update({name.lower(): value for name, value in (headers or {}).items()})
    sent = {name: value for name, value in sent.items() if value is not None}  # None: left out
    request_started.connect(seen)
    try:
        status, answer_headers, content, _read = asgi_request(
            PATH,
            method="POST",
            query_string=query,
            headers=[(name.encode(), value.encode("latin1")) for name, value in sent.items()],
            body_messages=[{"type": "http.request", "body": payload, "more_body": False}],
            app=django_asgi_app if django_only else None,
        )
    finally:
        request_started.disconnect(seen)
    return Answer(status, answer_headers, content, served_by_django=bool(started))


def framing_removed(headers: dict) -> dict:
    return {name: value for name, value in headers.items() if name != "content-length"}


@pytest.fixture
def send_key():
    return api_key_create(name="backend", scopes=["send", "read"])[1]


def test_a_common_send_is_answered_without_django_as_the_view_answers_it(send_key, alice, bob):
    body = {"to": {"users": ["alice", "bob", "nobody"]}, "title": "Lunch?", "data": {"thread": "7"}}
    # When the same send goes to the application and to Django's handler alone
    direct = post(body, key=send_key)
    viewed = post(body, key=send_key, django_only=True)
    # Then the application answered it without a Django request, and the view with one
    assert not direct.served_by_django
    assert viewed.served_by_django
    # And both are the same 202: the same fields, the same headers
    assert direct.status_code == viewed.status_code == 202
    direct_body, viewed_body = direct.json(), viewed.json()
    assert direct_body["id"] != viewed_body["id"]
    for name in ("id", "created_at"):
        direct_body.pop(name), viewed_body.pop(name)
    assert (
        direct_body
        == viewed_body
        == {
            "status": "queued",
            "recipients": 2,
            "unknown": {"users": ["nobody"], "devices": []},
            "app": "",
        }
    )
    assert framing_removed(direct.headers) == framing_removed(viewed.headers)
    assert direct.headers["content-length"] == str(len(direct.content))
    # And the two notifications stored are the same send
    rows = Notification.objects.order_by("pk").values(*ROW_FIELDS)
    assert len(rows) == 2 and rows[0] == rows[1]


def test_an_idempotent_replay_is_the_same_answer_on_either_path(send_key, alice):
    body = {"to": {"users": ["alice"]}, "title": "once"}
    key_header = {"Idempotency-Key": "  order-1  "}
    first = post(body, key=send_key, headers=key_header)
    again = post(body, key=send_key, headers=key_header)
    viewed = post(body, key=send_key, headers=key_header, django_only=True)
    assert not first.served_by_django and not again.served_by_django
    assert first.status_code == 202
    assert again.status_code == viewed.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert again.json() == viewed.json()
    assert framing_removed(again.headers) == framing_removed(viewed.headers)
    assert Notification.objects.get().idempotency_key == "order-1"


def test_a_send_over_the_rate_limit_is_refused_as_the_view_refuses_it(settings, send_key, alice):
    settings.CLARION_SEND_RATE = "2/min"
    body = {"to": {"users": ["alice"]}, "title": "t"}
    accepted = [post(body, key=send_key) for _ in range(2)]
    refused = post(body, key=send_key)
    viewed = post(body, key=send_key, django_only=True)
    assert [answer.status_code for answer in accepted] == [202, 202]
    assert not refused.served_by_django
    for answer in (refused, viewed):
        assert_error(answer, 429, "throttled")
        assert 1 <= int(answer["Retry-After"]) <= 61
    assert refused.headers.keys() == viewed.headers.keys()
    assert Notification.objects.count() == 2


# Requests the direct path hands to Django: (what differs from a common send, the view's status).
HANDED_ON = {
    "an unknown key": (lambda: {"key": "ck_unknown"}, 401),
    "a key without the send scope": (lambda: {"key": other_key(["read"])}, 403),
    "an end user's token": (
        lambda: {"key": None, "headers": {"Authorization": f"Token {alice_token()}"}},
        403,
    ),
    "no credentials": (lambda: {"key": None}, 401),
    "a malformed Bearer header": (lambda: {"headers": {"Authorization": "Bearer a b"}}, 401),
    "an invalid body": (lambda: {"body": {"to": {"users": []}, "title": "t"}}, 400),
    "a body that is not JSON": (lambda: {"raw": b"{not json"}, 400),
    "a NUL in the body": (lambda: {"body": {"to": {"users": ["alice"]}, "title": "a\x00"}}, 400),
    "a body over the payload limit": (
        lambda: {"body": {"to": {"users": ["alice"]}, "body": "b" * 4000, "data": {"d": "d" * 200}}},
        413,
    ),
    "a send to a topic": (lambda: {"body": {"to": {"topic": "news"}, "title": "t"}}, 202),
    "a scheduled send": (
        lambda: {"body": {"to": {"users": ["alice"]}, "title": "t", "send_at": "2030-01-01T00:00:00Z"}},
        202,
    ),
    "an oversized Idempotency-Key": (lambda: {"headers": {"Idempotency-Key": "k" * 256}}, 400),
    "another content type": (lambda: {"headers": {"Content-Type": "text/plain"}}, 415),
    "an Accept the view cannot answer": (lambda: {"headers": {"Accept": "text/html"}}, 406),
    "an Accept with a parameter": (lambda: {"headers": {"Accept": "application/json; indent=4"}}, 202),
    "a query string": (lambda: {"query": b"format=json"}, 202),
    "a host outside ALLOWED_HOSTS": (lambda: {"headers": {"Host": "evil.example"}}, 400),
    "no Content-Length (Django reads no body)": (lambda: {"headers": {"Content-Length": None}}, 400),
    "a Content-Length of 0 (DRF reads no body)": (lambda: {"headers": {"Content-Length": "0"}}, 400),
}


def other_key(scopes):
    return api_key_create(name="other", scopes=scopes)[1]


def alice_token():
    from django.contrib.auth import get_user_model

    return end_user_token_create(user=get_user_model().objects.get(username="alice"), ttl=None)[0]


@pytest.mark.parametrize("case", HANDED_ON)
def test_what_the_direct_path_does_not_take_is_answered_by_the_view(case, send_key, alice):
    differs, status = HANDED_ON[case]
    request = {"key": send_key, "body": {"to": {"users": ["alice"]}, "title": "t"}, **differs()}
    answer = post(**request)
    assert answer.served_by_django, case
    assert answer.status_code == status, (case, answer.content)
    if status >= 400:
        assert_error(answer, status)


def test_a_send_the_push_services_would_refuse_as_too_large_is_a_413_as_from_the_view(send_key, alice):
    # Under the 4 KB of title, body and data, over it once a provider's own fields are added
    body = {"to": {"users": ["alice"]}, "body": "b" * 4050}
    direct = post(body, key=send_key)
    viewed = post(body, key=send_key, django_only=True)
    assert not direct.served_by_django
    assert_error(direct, 413, "payload_too_large")
    assert direct.json() == viewed.json()
    assert framing_removed(direct.headers) == framing_removed(viewed.headers)
    assert not Notification.objects.exists()
