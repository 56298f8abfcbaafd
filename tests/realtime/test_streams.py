"""Reading a user's stream from the database: what polls, SSE and WebSocket replays answer."""

import pytest

from delivery.models import InboxMessage
from delivery.selectors import message_payload
from delivery.streams_api import live_messages_after, stream_positions
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
