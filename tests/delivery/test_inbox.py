"""Inbox, acknowledgements and preferences endpoints."""

from datetime import datetime

import pytest
from django.utils import timezone

from delivery.models import Delivery, InboxMessage
from tests.conftest import assert_error
from tests.delivery.factories import device, send

pytestmark = pytest.mark.django_db


def test_inbox_pages_oldest_first_with_a_cursor(alice, alice_client, eager_tasks, fan_out):
    ids = []
    for i in range(3):
        notification = send(
            {"users": ["alice"]}, title=f"n{i}", body="b", data={"k": i}, url="https://a.example/x"
        )
        fan_out(notification.pk)
        ids.append(notification.pk)
    page = alice_client.get("/api/v1/inbox/?limit=2").json()
    assert [m["id"] for m in page["results"]] == ids[:2]
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
    rest = alice_client.get(f"/api/v1/inbox/?after={page['cursor']}").json()
    assert [m["id"] for m in rest["results"]] == ids[2:]
    empty = alice_client.get(f"/api/v1/inbox/?after={rest['cursor']}").json()
    assert empty == {"results": [], "cursor": rest["cursor"]}


def test_inbox_is_per_user(alice, bob_client, eager_tasks, fan_out):
    fan_out(send({"users": ["alice"]}).pk)
    assert bob_client.get("/api/v1/inbox/").json()["results"] == []


def test_ack_marks_the_users_deliveries_delivered(alice, alice_client, recorder, eager_tasks, fan_out):
    device(alice)
    notification = send({"users": ["alice"]}, route="push")
    fan_out(notification.pk)
    assert alice_client.post(f"/api/v1/inbox/{notification.pk}/ack/").status_code == 204
    assert Delivery.objects.get().status == "delivered"


def test_the_inbox_shows_when_each_message_was_first_read(alice, alice_client, eager_tasks, fan_out):
    read, unread = send({"users": ["alice"]}, title="read"), send({"users": ["alice"]}, title="unread")
    fan_out(read.pk)
    fan_out(unread.pk)
    assert [m["read_at"] for m in alice_client.get("/api/v1/inbox/").json()["results"]] == [None, None]

    assert alice_client.post(f"/api/v1/inbox/{read.pk}/ack/").status_code == 204
    first, second = alice_client.get("/api/v1/inbox/").json()["results"]
    assert first["id"] == read.pk and second["read_at"] is None
    read_at = datetime.fromisoformat(first["read_at"])
    assert abs((timezone.now() - read_at).total_seconds()) < 60
    # A second ack (another device) does not move it: read_at is the first read.
    assert alice_client.post(f"/api/v1/inbox/{read.pk}/ack/").status_code == 204
    assert alice_client.get("/api/v1/inbox/").json()["results"][0]["read_at"] == first["read_at"]
    assert InboxMessage.objects.get(notification=read).read_seq == 1


def test_ack_of_someone_elses_message_is_404(alice, bob_client, eager_tasks, fan_out):
    notification = send({"users": ["alice"]})
    fan_out(notification.pk)
    assert_error(bob_client.post(f"/api/v1/inbox/{notification.pk}/ack/"), 404)


@pytest.mark.parametrize("query", ["after=-1", "after=x", "limit=0", "limit=201"])
def test_bad_inbox_query_is_400(alice_client, query):
    assert_error(alice_client.get(f"/api/v1/inbox/?{query}"), 400, "validation_error")


def test_api_keys_have_no_inbox(api_key_client):
    assert_error(api_key_client("read").get("/api/v1/inbox/"), 403)


class TestPreferences:
    url = "/api/v1/me/preferences/"

    def test_defaults(self, alice_client):
        assert alice_client.get(self.url).json() == {"quiet_hours": None, "muted_topics": []}

    def test_put_and_get_round_trip(self, alice_client):
        body = {
            "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"},
            "muted_topics": ["news"],
        }
        assert alice_client.put(self.url, body, format="json").json() == body
        assert alice_client.get(self.url).json() == body
        cleared = alice_client.put(self.url, {"quiet_hours": None, "muted_topics": []}, format="json").json()
        assert cleared == {"quiet_hours": None, "muted_topics": []}

    @pytest.mark.parametrize(
        "body, field",
        [
            ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours.start"),
            (
                {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Olympus"}},
                "quiet_hours.timezone",
            ),
            ({"quiet_hours": "nightly"}, "quiet_hours"),
            ({"muted_topics": ["bad topic"]}, "muted_topics"),
            ({"muted_topics": "news"}, "muted_topics"),
        ],
    )
    def test_bad_preferences_are_400(self, alice_client, body, field):
        error = assert_error(alice_client.put(self.url, body, format="json"), 400, "validation_error")
        assert any(key == field or key.startswith(field + ".") for key in error["fields"]), error
        assert alice_client.get(self.url).json() == {"quiet_hours": None, "muted_topics": []}


@pytest.mark.django_db(transaction=True)
def test_concurrent_acks_and_fan_outs_give_each_message_one_read_position(alice, bob):
    """Acks (two clients, overlapping) race fan-outs to the same user: no deadlock, no error,
    and the read positions are 1..n, one per message, in the order the reads committed."""
    import concurrent.futures

    from django.db import connections

    from delivery.fanout import notification_fan_out
    from delivery.services import inbox_ack

    messages = []
    for i in range(20):
        notification = send({"users": ["alice", "bob"]}, title=f"m{i}", route="all")
        notification_fan_out(notification.pk)
        messages.append(notification.pk)

    def acks(ids) -> list[bool]:
        try:
            return [inbox_ack(user=alice, notification_id=notification_id) for notification_id in ids]
        finally:
            connections.close_all()

    def fan_outs() -> None:
        try:
            for i in range(10):
                notification_fan_out(send({"users": ["alice", "bob"]}, title=f"new {i}", route="all").pk)
        finally:
            connections.close_all()

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        forward, backward = pool.submit(acks, messages), pool.submit(acks, list(reversed(messages)))
        fanned = pool.submit(fan_outs)
        assert forward.result(timeout=120) == backward.result(timeout=120) == [True] * 20
        fanned.result(timeout=120)
    read = InboxMessage.objects.filter(user=alice, read_at__isnull=False)
    assert sorted(read.values_list("notification_id", flat=True)) == messages
    assert sorted(read.values_list("read_seq", flat=True)) == list(range(1, 21))
    assert alice.userstream.last_read_seq == 20
