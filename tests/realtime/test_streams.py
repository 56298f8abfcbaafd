"""Reading a user's stream from the database: what polls, SSE and WebSocket replays answer."""

from datetime import timedelta

import pytest
from django.utils import timezone

from delivery.models import Delivery, InboxMessage, Notification
from delivery.selectors import message_payload
from delivery.streams_api import live_messages_after, live_messages_after_many, stream_positions
from delivery.webhooks.events import active_webhooks, forget_active_webhooks
from tests.delivery.factories import send, users

pytestmark = pytest.mark.django_db


def test_live_messages_after_answers_as_the_inbox_does_reading_only_what_clients_see(
    django_capture_on_commit_callbacks, django_assert_num_queries
):
    (alice,) = users(1, "alice")
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(3):
            send({"users": [alice.username]}, title=f"n{n}", body="b", data={"k": [n]}, url="https://x.test/")
    rows = InboxMessage.objects.filter(user=alice).select_related("notification").order_by("seq")
    expected = [message_payload(row.notification, row.seq) for row in rows]
    assert len(expected) == 3

    # The page, then marking its realtime deliveries sent: no query per message for a deferred field.
    forget_active_webhooks()
    active_webhooks()  # read at most once a second per process (delivery/webhooks/events.py), not per page
    with django_assert_num_queries(2) as captured:
        assert live_messages_after(alice.pk, expected[0]["cursor"]) == expected[1:]
    page_sql = captured.captured_queries[0]["sql"]
    # Only what the payload needs is read: not the notification's target and unknown-targets JSON.
    assert '"delivery_notification"."title"' in page_sql
    assert '"delivery_notification"."target"' not in page_sql
    assert '"delivery_notification"."unknown"' not in page_sql


def test_stream_positions_name_each_users_last_cursor_and_leave_out_users_without_a_stream(
    django_capture_on_commit_callbacks, django_assert_num_queries
):
    alice, bob, carol = users(3, "pos")
    with django_capture_on_commit_callbacks(execute=True):
        send({"users": [alice.username, bob.username]}, title="one")
        send({"users": [alice.username]}, title="two")
    with django_assert_num_queries(1) as captured:
        positions = stream_positions([alice.pk, bob.pk, carol.pk, 10**9])
    assert positions == {alice.pk: 2, bob.pk: 1}
    # One array parameter however many users a node holds, not a placeholder each.
    assert "ANY" in captured.captured_queries[0]["sql"]


def test_a_batch_of_replays_reads_each_key_as_its_own_query_would(
    django_capture_on_commit_callbacks, django_assert_num_queries
):
    # Given three users' streams, one message to alice and bob past its ttl and one of bob's
    # out of the realtime stream (a push-only inbox row)
    alice, bob, carol = users(3, "replay")
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(5):
            send({"users": [alice.username, bob.username]}, title=f"both {n}", data={"n": n})
        send({"users": [carol.username]}, title="carol's")
    expired = InboxMessage.objects.get(user=alice, seq=3).notification
    Notification.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    InboxMessage.objects.filter(user=bob, seq=2).update(live=False)
    keys = [
        (alice.pk, 0, None),
        (alice.pk, 3, None),  # a second socket of alice's, further on
        (bob.pk, 1, 4),  # a gap-fill up to a cursor
        (carol.pk, 1, None),  # nothing after its cursor
        (10**9, 0, None),  # no stream at all
    ]
    expected = {key: live_messages_after(key[0], key[1], until=key[2]) for key in keys}
    assert [len(expected[key]) for key in keys] == [4, 2, 1, 0, 0]
    # each inbox row with its realtime delivery waiting for the user (as the fan-out writes it)
    Delivery.objects.bulk_create(
        Delivery(notification_id=row.notification_id, user_id=row.user_id, channel="realtime")
        for row in InboxMessage.objects.all()
    )

    # When they are read in one batch: one read and one delivery update for all
    forget_active_webhooks()
    active_webhooks()
    with django_assert_num_queries(2):
        found = live_messages_after_many(keys)

    # Then each key gets the page its own query gives, and what was replayed is marked sent
    assert found == expected
    sent = set(
        Delivery.objects.filter(channel="realtime", status="sent").values_list("user_id", "notification_id")
    )
    assert sent == {
        (user_id, message["id"]) for (user_id, _, _), page in expected.items() for message in page
    }
