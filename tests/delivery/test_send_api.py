"""POST /api/v1/notifications/ and the status, deliveries and cancel endpoints."""

from datetime import timedelta

import pytest
from django.utils import timezone

from delivery.models import Delivery, Notification, NotificationStatus
from tests.conftest import assert_error
from tests.delivery.factories import device, send

pytestmark = pytest.mark.django_db
URL = "/api/v1/notifications/"


@pytest.fixture
def sender_client(api_key_client):
    return api_key_client("send", "read")


class TestSend:
    def test_accepted_with_resolved_recipients_and_unknowns_reported(self, sender_client, alice, bob):
        response = sender_client.post(
            URL,
            {"to": {"users": ["alice", "bob", "nobody"], "devices": [999999]}, "title": "Hi"},
            format="json",
        )
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == "queued" and body["recipients"] == 2
        assert body["unknown"] == {"users": ["nobody"], "devices": [999999]}
        assert {"id", "status", "recipients", "created_at"} <= set(body)

    def test_future_send_at_is_scheduled_and_past_means_now(self, sender_client, alice):
        future = (timezone.now() + timedelta(hours=1)).isoformat()
        past = (timezone.now() - timedelta(hours=1)).isoformat()
        assert (
            sender_client.post(
                URL, {"to": {"users": ["alice"]}, "title": "x", "send_at": future}, format="json"
            ).json()["status"]
            == "scheduled"
        )
        assert (
            sender_client.post(
                URL, {"to": {"users": ["alice"]}, "title": "x", "send_at": past}, format="json"
            ).json()["status"]
            == "queued"
        )

    def test_named_users_count_once_each_and_only_when_active(self, sender_client, alice, bob):
        bob.is_active = False
        bob.save(update_fields=["is_active"])
        response = sender_client.post(
            URL, {"to": {"users": ["alice", "alice", "bob", "nobody"]}, "title": "Hi"}, format="json"
        )
        assert response.status_code == 202
        assert response.json()["recipients"] == 1
        assert response.json()["unknown"]["users"] == ["bob", "nobody"]

    def test_topic_and_broadcast_count_recipients(self, sender_client, alice, bob, alice_client):
        alice_client.put("/api/v1/topics/news/subscription/")
        assert (
            sender_client.post(URL, {"to": {"topic": "news"}, "title": "x"}, format="json").json()[
                "recipients"
            ]
            == 1
        )
        assert (
            sender_client.post(URL, {"to": {"broadcast": True}, "title": "x"}, format="json").json()[
                "recipients"
            ]
            == 2
        )

    def test_muted_topic_excludes_the_user(self, sender_client, alice_client, bob_client):
        for client in (alice_client, bob_client):
            client.put("/api/v1/topics/news/subscription/")
        alice_client.put(
            "/api/v1/me/preferences/", {"quiet_hours": None, "muted_topics": ["news"]}, format="json"
        )
        assert (
            sender_client.post(URL, {"to": {"topic": "news"}, "title": "x"}, format="json").json()[
                "recipients"
            ]
            == 1
        )

    def test_idempotency_key_returns_the_first_notification(self, sender_client, alice):
        body = {"to": {"users": ["alice"]}, "title": "once"}
        first = sender_client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
        again = sender_client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
        assert (first.status_code, again.status_code) == (202, 200)
        assert first.json()["id"] == again.json()["id"]
        assert Notification.objects.count() == 1

    def test_idempotency_keys_are_per_sender(self, api_key_client, alice):
        body = {"to": {"users": ["alice"]}, "title": "x"}
        one = api_key_client("send").post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k")
        two = api_key_client("send").post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k")
        assert one.json()["id"] != two.json()["id"]

    def test_idempotency_key_expires_after_24_hours(self, sender_client, alice):
        body = {"to": {"users": ["alice"]}, "title": "x"}
        first = sender_client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k").json()
        Notification.objects.filter(pk=first["id"]).update(created_at=timezone.now() - timedelta(hours=25))
        again = sender_client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k")
        assert again.status_code == 202 and again.json()["id"] != first["id"]

    def test_staff_session_may_send(self, make_user, client, alice):
        client.force_login(make_user("ops", is_staff=True))
        response = client.post(
            URL, {"to": {"users": ["alice"]}, "title": "x"}, content_type="application/json"
        )
        assert response.status_code == 202

    def test_who_may_not_send(self, api_key_client, alice_client, anon, alice):
        body = {"to": {"users": ["alice"]}, "title": "x"}
        assert_error(api_key_client("read").post(URL, body, format="json"), 403)
        assert_error(alice_client.post(URL, body, format="json"), 403)
        assert_error(anon.post(URL, body, format="json"), 401)
        assert Notification.objects.count() == 0


class TestSendBadInput:
    @pytest.mark.parametrize(
        "body, field",
        [
            ({"title": "x"}, "to"),
            ({"to": {}, "title": "x"}, "to"),
            ({"to": {"broadcast": False}, "title": "x"}, "to"),
            ({"to": {"users": "alice"}, "title": "x"}, "to.users"),
            ({"to": {"users": [1]}, "title": "x"}, "to.users"),
            ({"to": {"devices": ["x"]}, "title": "x"}, "to.devices"),
            ({"to": {"topic": "bad topic"}, "title": "x"}, "to.topic"),
            ({"to": {"users": ["a"]}}, "non_field_errors"),
            ({"to": {"users": ["a"]}, "title": "x", "ttl": -1}, "ttl"),
            ({"to": {"users": ["a"]}, "title": "x", "ttl": 28 * 86400 + 1}, "ttl"),
            ({"to": {"users": ["a"]}, "title": "x", "priority": "urgent"}, "priority"),
            ({"to": {"users": ["a"]}, "title": "x", "route": "carrier-pigeon"}, "route"),
            ({"to": {"users": ["a"]}, "title": "x", "send_at": "tomorrow"}, "send_at"),
            ({"to": {"users": ["a"]}, "title": "x", "url": "not a url"}, "url"),
            ({"to": {"users": ["a"]}, "title": "x", "data": ["list"]}, "data"),
            ({"to": {"users": ["a"]}, "title": "x", "collapse_key": "c" * 65}, "collapse_key"),
            ({"to": {"users": ["a"]}, "title": 5}, "title"),
        ],
    )
    def test_invalid_sends_are_400_and_write_nothing(self, sender_client, body, field):
        error = assert_error(sender_client.post(URL, body, format="json"), 400, "validation_error")
        assert any(key == field or key.startswith(field + ".") for key in error["fields"]), error
        assert Notification.objects.count() == 0

    def test_payload_over_4kb_is_413(self, sender_client, alice):
        body = {"to": {"users": ["alice"]}, "title": "x", "body": "b" * 3000, "data": {"k": "v" * 1200}}
        assert_error(sender_client.post(URL, body, format="json"), 413, "payload_too_large")
        assert Notification.objects.count() == 0

    def test_oversized_idempotency_key_is_400(self, sender_client, alice):
        response = sender_client.post(
            URL, {"to": {"users": ["alice"]}, "title": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 256
        )
        assert_error(response, 400)
        assert Notification.objects.count() == 0


class TestReadAndCancel:
    def test_detail_has_status_and_counts(self, api_key_client, alice):
        notification = send({"users": ["alice"]})
        response = api_key_client("read").get(f"{URL}{notification.pk}/")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "queued"
        assert body["counts"] == {
            "queued": 0,
            "sent": 0,
            "delivered": 0,
            "failed": 0,
            "expired": 0,
            "cancelled": 0,
            "skipped": 0,
        }

    def test_reading_needs_the_read_scope(self, api_key_client, alice):
        notification = send({"users": ["alice"]})
        assert_error(api_key_client("send").get(f"{URL}{notification.pk}/"), 403)
        assert_error(api_key_client("send").get(f"{URL}{notification.pk}/deliveries/"), 403)

    def test_unknown_notification_is_404(self, api_key_client):
        assert_error(api_key_client("read").get(f"{URL}424242/"), 404)
        assert_error(api_key_client("read").get(f"{URL}424242/deliveries/"), 404)
        assert_error(api_key_client("send").post(f"{URL}424242/cancel/"), 404)

    def test_deliveries_are_paginated(self, api_key_client, alice, recorder, eager_tasks, fan_out):
        from delivery.fanout import notification_fan_out

        for _ in range(3):
            device(alice)
        notification = send({"users": ["alice"]}, route="push")
        notification_fan_out(notification.pk)
        client = api_key_client("read")
        page = client.get(f"{URL}{notification.pk}/deliveries/?limit=2").json()
        assert len(page["results"]) == 2 and page["next"]
        rest = client.get(page["next"]).json()
        assert len(rest["results"]) == 1
        row = rest["results"][0]
        assert set(row) == {"id", "user", "device", "channel", "status", "attempts", "error", "updated_at"}
        assert row["user"] == "alice" and row["channel"] == "fcm"

    def test_cancel_a_scheduled_notification(self, api_key_client, alice):
        notification = send({"users": ["alice"]}, send_at=timezone.now() + timedelta(hours=1))
        response = api_key_client("send").post(f"{URL}{notification.pk}/cancel/")
        assert response.status_code == 200 and response.json()["status"] == "cancelled"

    def test_cancel_after_sending_is_409(self, api_key_client, alice):
        notification = send({"users": ["alice"]})
        Notification.objects.filter(pk=notification.pk).update(status=NotificationStatus.DISPATCHED)
        assert_error(api_key_client("send").post(f"{URL}{notification.pk}/cancel/"), 409, "conflict")

    def test_cancelled_queued_deliveries_are_not_sent(
        self, api_key_client, alice, recorder, eager_tasks, fan_out
    ):
        from delivery.sending import deliveries_send

        device(alice)
        notification = send({"users": ["alice"]}, route="push")
        api_key_client("send").post(f"{URL}{notification.pk}/cancel/")
        # A fan-out that raced the cancel (its task already queued) does nothing.
        from delivery.fanout import notification_fan_out

        notification_fan_out(notification.pk)
        deliveries_send(list(Delivery.objects.values_list("pk", flat=True)))
        assert recorder.sent() == []
