"""Nobody sees or acts on what is not theirs; scopes and sessions are enforced."""

import pytest
from rest_framework.test import APIClient

from tests.conftest import assert_error
from tests.delivery.factories import device, send

pytestmark = pytest.mark.django_db


@pytest.fixture
def alices_notification(alice, eager_tasks, fan_out, recorder):
    device(alice)
    notification = send({"users": ["alice"]}, title="for alice only", route="all")
    fan_out(notification.pk)
    return notification


def test_devices_are_private(alice_client, bob_client):
    device_id = alice_client.post(
        "/api/v1/devices/", {"platform": "fcm", "token": "a"}, format="json"
    ).json()["id"]
    assert bob_client.get("/api/v1/devices/").json()["results"] == []
    assert_error(bob_client.delete(f"/api/v1/devices/{device_id}/"), 404)


def test_inbox_and_ack_are_private(alices_notification, bob_client, alice_client):
    assert bob_client.get("/api/v1/inbox/").json()["results"] == []
    assert_error(bob_client.post(f"/api/v1/inbox/{alices_notification.pk}/ack/"), 404)
    assert [m["id"] for m in alice_client.get("/api/v1/inbox/").json()["results"]] == [alices_notification.pk]


def test_end_users_cannot_read_notifications_or_delivery_logs(alices_notification, alice_client, bob_client):
    for client in (alice_client, bob_client):
        assert_error(client.get(f"/api/v1/notifications/{alices_notification.pk}/"), 403)
        assert_error(client.get(f"/api/v1/notifications/{alices_notification.pk}/deliveries/"), 403)
        assert_error(client.post(f"/api/v1/notifications/{alices_notification.pk}/cancel/"), 403)


def test_api_key_scopes(alices_notification, api_key_client):
    url = f"/api/v1/notifications/{alices_notification.pk}"
    send_only, read_only = api_key_client("send"), api_key_client("read")
    assert_error(send_only.get(f"{url}/"), 403, "permission_denied")
    assert_error(send_only.get(f"{url}/deliveries/"), 403)
    assert_error(
        read_only.post("/api/v1/notifications/", {"to": {"broadcast": True}, "title": "x"}, format="json"),
        403,
    )
    assert_error(read_only.post(f"{url}/cancel/"), 403)
    assert_error(read_only.post("/api/v1/client-tokens/", {"user": "x"}, format="json"), 403)
    assert read_only.get(f"{url}/").status_code == 200


def test_admin_is_staff_only(client, make_user):
    client.force_login(make_user("plain", password="pw-plain-123"))
    response = client.get("/admin/delivery/delivery/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


class TestCsrf:
    """Session-authenticated writes need the CSRF token, as on any Django site."""

    @pytest.fixture
    def session_client(self, make_user):
        client = APIClient(enforce_csrf_checks=True)
        client.force_login(make_user("ops", is_staff=True))
        return client

    def test_session_write_without_csrf_token_is_403(self, session_client, alice):
        response = session_client.post(
            "/api/v1/notifications/", {"to": {"users": ["alice"]}, "title": "x"}, format="json"
        )
        error = assert_error(response, 403)
        assert "CSRF" in error["message"]

    def test_session_write_with_csrf_token_is_accepted(self, session_client, alice):
        session_client.get("/admin/")  # sets the csrftoken cookie
        token = session_client.cookies["csrftoken"].value
        response = session_client.post(
            "/api/v1/notifications/",
            {"to": {"users": ["alice"]}, "title": "x"},
            format="json",
            HTTP_X_CSRFTOKEN=token,
        )
        assert response.status_code == 202

    def test_token_auth_needs_no_csrf_token(self, alice_client):
        alice_client.handler.enforce_csrf_checks = True
        assert (
            alice_client.post(
                "/api/v1/devices/", {"platform": "fcm", "token": "t"}, format="json"
            ).status_code
            == 201
        )
