"""An optional field sent as null means the same as leaving it out (notifyproject.api.InputSerializer)."""

import pytest

from delivery.models import Notification
from delivery.services import DEFAULT_TTL_SECS
from devices.models import Device
from tests.conftest import assert_error, webpush_keys

pytestmark = pytest.mark.django_db

OPTIONAL_SEND_FIELDS = ("body", "data", "url", "icon", "priority", "ttl", "collapse_key", "send_at", "route")


@pytest.fixture
def sender_client(api_key_client):
    return api_key_client("send", "read")


def _stored(notification_id: int) -> dict:
    fields = ("title", "body", "data", "url", "icon", "priority", "ttl", "collapse_key", "send_at", "route")
    return Notification.objects.values(*fields).get(pk=notification_id)


def test_every_optional_send_field_as_null_is_the_same_as_absent(sender_client, alice):
    absent = sender_client.post(
        "/api/v1/notifications/", {"to": {"users": ["alice"]}, "title": "Hi"}, format="json"
    )
    body = {
        "to": {"users": ["alice"], "devices": None, "topic": None, "broadcast": None},
        "title": "Hi",
        **dict.fromkeys(OPTIONAL_SEND_FIELDS),
    }
    nulls = sender_client.post("/api/v1/notifications/", body, format="json")
    assert (absent.status_code, nulls.status_code) == (202, 202), nulls.json()
    assert nulls.json()["status"] == "queued" and nulls.json()["recipients"] == 1
    assert _stored(nulls.json()["id"]) == _stored(absent.json()["id"])
    assert _stored(nulls.json()["id"])["ttl"] == DEFAULT_TTL_SECS


def test_title_as_null_with_a_body_is_accepted(sender_client, alice):
    response = sender_client.post(
        "/api/v1/notifications/", {"to": {"users": ["alice"]}, "title": None, "body": "b"}, format="json"
    )
    assert response.status_code == 202, response.json()
    assert _stored(response.json()["id"])["title"] == ""


def test_required_fields_still_refuse_null(sender_client, alice):
    error = assert_error(
        sender_client.post("/api/v1/notifications/", {"to": None, "title": "x"}, format="json"),
        400,
        "validation_error",
    )
    assert "to" in error["fields"]
    only_nulls = {"to": {"users": ["alice"]}, "title": None, "body": None, "data": None}
    error = assert_error(
        sender_client.post("/api/v1/notifications/", only_nulls, format="json"), 400, "validation_error"
    )
    assert Notification.objects.count() == 0


def test_device_registration_takes_null_for_optional_fields(alice_client):
    fcm = {"platform": "fcm", "token": "tok-1", "name": None, "environment": None, "subscription": None}
    assert alice_client.post("/api/v1/devices/", fcm, format="json").status_code == 201
    apns = {"platform": "apns", "token": "ab" * 32, "name": None, "environment": None}
    assert alice_client.post("/api/v1/devices/", apns, format="json").status_code == 201
    webpush = {
        "platform": "webpush",
        "token": None,
        "name": None,
        "subscription": {
            "endpoint": "https://push.example.net/send/1",
            "keys": webpush_keys(),
            "expirationTime": None,
        },
    }
    assert alice_client.post("/api/v1/devices/", webpush, format="json").status_code == 201
    assert sorted(Device.objects.values_list("platform", "name", "environment")) == [
        ("apns", "", "production"),
        ("fcm", "", ""),
        ("webpush", "", ""),
    ]


def test_a_null_token_is_still_a_missing_token(alice_client):
    error = assert_error(
        alice_client.post("/api/v1/devices/", {"platform": "fcm", "token": None}, format="json"),
        400,
        "validation_error",
    )
    assert "token" in error["fields"]


def test_preferences_take_null_for_optional_fields(alice_client):
    url = "/api/v1/me/preferences/"
    body = {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": None}, "muted_topics": None}
    assert alice_client.put(url, body, format="json").json() == {
        "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "UTC"},
        "muted_topics": [],
    }


def test_client_token_ttl_null_is_the_default(api_key_client):
    response = api_key_client("send").post(
        "/api/v1/client-tokens/", {"user": "carol", "ttl": None}, format="json"
    )
    assert response.status_code == 201, response.json()


def test_the_schema_says_optional_request_fields_are_nullable(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    components = schema["components"]["schemas"]
    create = components["NotificationCreateRequest"]["properties"]
    for name in ("title", *OPTIONAL_SEND_FIELDS):
        assert create[name].get("nullable") is True, (name, create[name])
    assert "nullable" not in create["to"]
    target = components["TargetRequest"]["properties"]
    assert all(target[name].get("nullable") for name in ("users", "devices", "topic", "broadcast"))
    registration = components["DeviceRegistrationRequest"]["properties"]
    assert all(registration[name].get("nullable") for name in ("token", "name", "environment"))
