"""Input PostgreSQL, orjson or Python cannot hold is a 4xx in the error shape, with nothing written.

NUL in any JSON string (PostgreSQL refuses it: it was a 503), nesting thousands deep
(RecursionError), integers past 64 bits, send_at near year 9999 (OverflowError), hand-made
pagination cursors, and NUL in a URL (tokens in query strings, admin filters).
"""

import base64
import json

import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed

from delivery.models import Delivery, InboxMessage, Notification
from devices.models import Device, MutedTopic, TopicSubscription
from tests.conftest import assert_error
from tests.support.asgi import asgi_request

pytestmark = pytest.mark.django_db

NOTIFICATIONS = "/api/v1/notifications/"


def nothing_sent() -> bool:
    return not (Notification.objects.exists() or Delivery.objects.exists() or InboxMessage.objects.exists())


def post_raw(client, path: str, raw: str):
    return client.post(path, raw, content_type="application/json")


@pytest.fixture
def sender(api_key_client, alice):
    return api_key_client("send", "read")


class TestNulInJson:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"to": {"users": ["alice"]}, "data": {"thread\x00": "1"}}, "data"),
            ({"to": {"users": ["alice"]}, "data": {"thread": "4\x002"}}, "data.thread"),
            ({"to": {"users": ["alice"]}, "data": {"list": ["a", {"b": "\x00"}]}}, "data.list.1.b"),
            ({"to": {"users": ["alice"]}, "title": "a\x00b"}, "title"),
            ({"to": {"users": ["alice"]}, "body": "a\x00b"}, "body"),
            ({"to": {"users": ["al\x00ice"]}, "title": "x"}, "to.users.0"),
            ({"to": {"topic": "news\x00"}, "title": "x"}, "to.topic"),
            ({"to": {"users": ["alice"]}, "title": "x", "collapse_key": "k\x00"}, "collapse_key"),
        ],
    )
    def test_a_send_with_nul_is_400_naming_the_field(self, sender, body, field):
        error = assert_error(post_raw(sender, NOTIFICATIONS, json.dumps(body)), 400, "validation_error")
        assert field in error["fields"], error
        assert nothing_sent()

    @pytest.mark.parametrize(
        "body",
        [
            {"platform": "fcm", "token": "fcm-token-1", "name": "Pixel\x00"},
            {"platform": "fcm", "token": "fcm\x00token"},
            {"platform": "apns", "token": "ab" * 32, "environment": "sandbox\x00"},
        ],
    )
    def test_a_device_with_nul_is_400(self, alice_client, body):
        assert_error(post_raw(alice_client, "/api/v1/devices/", json.dumps(body)), 400)
        assert not Device.objects.exists()

    def test_preferences_with_nul_are_400(self, alice_client):
        for body in (
            {"quiet_hours": None, "muted_topics": ["news\x00"]},
            {
                "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Ber\x00lin"},
                "muted_topics": [],
            },
        ):
            assert_error(
                alice_client.put(
                    "/api/v1/me/preferences/", json.dumps(body), content_type="application/json"
                ),
                400,
            )
        assert not MutedTopic.objects.exists()

    def test_a_client_token_or_sign_in_for_a_nul_username_is_400(self, sender, anon):
        assert_error(post_raw(sender, "/api/v1/client-tokens/", json.dumps({"user": "bob\x00"})), 400)
        body = json.dumps({"username": "bob\x00", "password": "x"})
        assert_error(post_raw(anon, "/api/v1/auth/token/", body), 400)

    def test_a_topic_name_with_nul_is_400(self, alice_client):
        assert_error(alice_client.put("/api/v1/topics/news%00/subscription/"), 400)
        assert not TopicSubscription.objects.exists()

    def test_an_idempotency_key_with_nul_is_400(self, sender):
        body = json.dumps({"to": {"users": ["alice"]}, "title": "x"})
        response = sender.post(
            NOTIFICATIONS, body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k\x00"
        )
        assert "Idempotency-Key" in assert_error(response, 400, "validation_error")["fields"]
        assert nothing_sent()


class TestJsonShape:
    def test_data_nested_thousands_deep_is_400(self, sender):
        for opener, closer in (('{"a": ', "}"), ("[", "]")):
            raw = (
                '{"to": {"users": ["alice"]}, "data": {"deep": ' + opener * 5000 + "1" + closer * 5000 + "}}"
            )
            assert_error(post_raw(sender, NOTIFICATIONS, raw), 400)
        assert nothing_sent()

    def test_data_nested_past_the_depth_limit_is_400_naming_where(self, sender):
        deep = "1"
        for _ in range(300):  # past orjson's 255 levels, within Python's recursion limit
            deep = '{"a": ' + deep + "}"
        raw = '{"to": {"users": ["alice"]}, "data": ' + deep + "}"
        error = assert_error(post_raw(sender, NOTIFICATIONS, raw), 400, "validation_error")
        assert any(field.startswith("data.a.a") for field in error["fields"]), error
        assert nothing_sent()

    @pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**100])
    def test_integers_beyond_64_bits_are_400(self, sender, number):
        raw = json.dumps({"to": {"users": ["alice"]}, "data": {"n": number}})
        error = assert_error(post_raw(sender, NOTIFICATIONS, raw), 400, "validation_error")
        assert "data.n" in error["fields"]
        raw = json.dumps({"to": {"devices": [number]}, "title": "x"})
        assert_error(post_raw(sender, NOTIFICATIONS, raw), 400, "validation_error")
        assert nothing_sent()

    def test_64_bit_integers_are_accepted(self, sender):
        raw = json.dumps({"to": {"users": ["alice"]}, "data": {"max": 2**63 - 1, "min": -(2**63)}})
        assert post_raw(sender, NOTIFICATIONS, raw).status_code == 202

    def test_non_finite_numbers_are_400(self, sender):
        for constant in ("NaN", "Infinity", "-Infinity"):
            raw = '{"to": {"users": ["alice"]}, "data": {"n": ' + constant + "}}"
            assert_error(post_raw(sender, NOTIFICATIONS, raw), 400, "parse_error")


class TestSendAt:
    @pytest.mark.parametrize(
        "send_at", ["9999-12-31T23:59:59Z", "9999-01-01T00:00:00Z", "3000-01-01T00:00:00Z"]
    )
    def test_a_send_at_far_in_the_future_is_400(self, sender, send_at):
        raw = json.dumps({"to": {"users": ["alice"]}, "title": "x", "send_at": send_at})
        error = assert_error(post_raw(sender, NOTIFICATIONS, raw), 400, "validation_error")
        assert "send_at" in error["fields"]
        assert nothing_sent()


def cursor(raw: str) -> str:
    return base64.b64encode(raw.encode()).decode()


class TestCursors:
    @pytest.mark.parametrize("raw", ["p=abc", "p=\x00", "p=-1", "p=99999999999999999999999", "p=1.5", "p=١"])
    def test_a_hand_made_cursor_on_devices_is_404(self, alice_client, raw):
        assert_error(alice_client.get("/api/v1/devices/", {"cursor": cursor(raw)}), 404, "not_found")

    def test_a_hand_made_cursor_on_deliveries_is_404(self, sender):
        notification = sender.post(NOTIFICATIONS, {"to": {"users": ["alice"]}, "title": "x"}, format="json")
        url = f"{NOTIFICATIONS}{notification.json()['id']}/deliveries/"
        for raw in ("p=abc", "p=\x00", "r=1&p=x"):
            assert_error(sender.get(url, {"cursor": cursor(raw)}), 404, "not_found")

    def test_a_cursor_the_api_gave_still_works(self, alice_client):
        for number in range(3):
            alice_client.post("/api/v1/devices/", {"platform": "fcm", "token": f"t{number}"}, format="json")
        first = alice_client.get("/api/v1/devices/", {"limit": 2}).json()
        second = alice_client.get(first["next"]).json()
        assert len(first["results"]) == 2 and len(second["results"]) == 1


class TestNulInTheUrl:
    """Refused in front of every endpoint (notifyproject.request_guards), so through the ASGI app."""

    @pytest.mark.parametrize(
        ("path", "query"),
        [
            ("/api/v1/poll/", b"token=ct_a%00b&timeout=0"),
            ("/api/v1/events/", b"token=ct_a%00b"),
            ("/api/v1/devices/", b"cursor=%00"),
            ("/api/v1/inbox/", b"after=1%00"),
            ("/admin/delivery/delivery/", b"status=a%00"),
            ("/admin/delivery/notification/", b"q=a%00"),
            ("/admin/delivery/notification/compose/preview/", b"send_to=topic&topic=n%00"),
            ("/api/v1/topics/news\x00/subscription/", b""),
        ],
    )
    def test_is_a_400_in_the_error_shape(self, path, query):
        status, headers, body, _read = asgi_request(path, query_string=query)
        assert status == 400, body
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == "bad_request"


class TestAdminCompose:
    COMPOSE_URL = "/admin/delivery/notification/compose/"

    @pytest.fixture
    def staff(self, make_user, alice):
        from django.test import Client

        client = Client()
        client.force_login(make_user("ops", is_staff=True, is_superuser=True))
        return client

    @pytest.mark.parametrize(
        "data",
        [
            '{"thread\\u0000": 1}',
            '{"thread": "\\u0000"}',
            '{"n": 18446744073709551616}',
            '{"a": ' * 3000 + "1" + "}" * 3000,
        ],
    )
    def test_data_the_api_would_refuse_is_a_form_error(self, staff, data):
        from tests.admin.test_compose import compose_form

        response = staff.post(self.COMPOSE_URL, compose_form(users="alice", data=data))
        assert response.status_code == 200
        assert response.context["form"].errors, "the form should show an error"
        assert nothing_sent()

    def test_text_fields_with_nul_are_form_errors(self, staff):
        from tests.admin.test_compose import compose_form

        response = staff.post(self.COMPOSE_URL, compose_form(users="alice", title="a\x00b", topic="n\x00"))
        assert response.status_code == 200 and response.context["form"].errors
        assert nothing_sent()


@pytest.mark.django_db(transaction=True)
def test_a_websocket_handshake_with_nul_in_its_token_is_refused_not_a_500(start_web):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    web = start_web()
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{web.ws_url}/ws/v1/notifications/?token=ct_a%00b", open_timeout=10)
    assert refused.value.response.status_code == 403
    assert not any("Traceback" in line for line in web.output)


@pytest.mark.django_db(transaction=True)
def test_a_session_cookie_with_an_escaped_nul_is_no_session_not_a_server_error(start_web):
    """Django decodes octal escapes in a quoted cookie value, so `"...\\000..."` put a NUL into
    the session lookup on every page, API call and socket."""
    import httpx
    from websockets.sync.client import connect

    web = start_web()
    cookie = f'{settings.SESSION_COOKIE_NAME}="abcdefgh\\000ijklmnop"'
    with httpx.Client(base_url=web.url, headers={"Cookie": cookie}, timeout=10) as http:
        assert http.get("/").status_code == 200
        assert http.get("/admin/").status_code == 302  # to the login page
        for path in ("/api/v1/devices/", "/api/v1/poll/?timeout=0"):
            response = http.get(path)
            assert response.status_code == 401, (path, response.text)
            assert response.json()["error"]["code"] == "not_authenticated"
    url = f"{web.ws_url}/ws/v1/notifications/"
    with connect(url, additional_headers={"Cookie": cookie}) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd.code == 4401
