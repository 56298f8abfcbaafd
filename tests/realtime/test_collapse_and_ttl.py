"""collapse_key and ttl hold on every channel: replay, long-poll, SSE and the inbox (live daphne)."""

import json
import time

import httpx
import pytest
from django.utils import timezone

from delivery import sweeper
from delivery.models import Delivery, InboxMessage, Notification
from tests.delivery.factories import send, sender
from tests.realtime.conftest import open_socket, recv_type
from tests.realtime.test_poll_and_sse import sse_events
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def seen_everywhere(web, token: str, count: int) -> dict[str, list[int]]:
    """The ids a reconnecting client gets from `after=0` on each transport, and the inbox lists."""
    with open_socket(web, token, after=0) as ws:
        replayed = [recv_type(ws, "notification")["id"] for _ in range(count)]
    page = httpx.get(f"{web.url}/api/v1/poll/", params={"token": token, "after": 0, "timeout": 0}, timeout=30)
    with httpx.stream(
        "GET", f"{web.url}/api/v1/events/", params={"token": token, "after": 0}, timeout=30
    ) as s:
        streamed = [json.loads(event["data"])["id"] for event in sse_events(s, count, time.monotonic() + 20)]
    inbox = httpx.get(f"{web.url}/api/v1/inbox/", headers={"Authorization": f"Token {token}"}, timeout=30)
    return {
        "replay": replayed,
        "poll": [message["id"] for message in page.json()["results"]],
        "sse": streamed,
        "inbox": [message["id"] for message in inbox.json()["results"]],
    }


def realtime_status(notification) -> str:
    return Delivery.objects.get(notification=notification, channel="realtime").status


def test_a_message_replaced_by_a_newer_one_with_its_collapse_key_is_gone_from_every_channel(
    start_web, alice, token_for
):
    web = start_web()
    token = token_for(alice)  # alice is offline: route realtime leaves both waiting for her
    score = sender()
    older = send({"users": ["alice"]}, by=score, route="realtime", collapse_key="score", title="1-0")
    elsewhere = send({"users": ["alice"]}, by=sender(), route="realtime", collapse_key="score", title="x")
    newer = send({"users": ["alice"]}, by=score, route="realtime", collapse_key="score", title="2-0")

    # The first frame of the replay would be the older one if it were still there.
    expected = [elsewhere.pk, newer.pk]  # another sender's key is its own: not collapsed
    assert seen_everywhere(web, token, 2) == {
        "replay": expected,
        "poll": expected,
        "sse": expected,
        "inbox": expected,
    }
    assert realtime_status(older) == "cancelled"
    assert not InboxMessage.objects.filter(notification=older).exists()


@pytest.mark.django_db
def test_a_replaced_message_fanned_out_after_the_newer_one_never_reaches_the_user(
    alice, eager_tasks, fan_out
):
    """Only concurrently accepted sends can fan out newest first; the older is then dropped."""
    score = sender()
    older = send({"users": ["alice"]}, by=score, route="realtime", collapse_key="score")
    newer = send({"users": ["alice"]}, by=score, route="realtime", collapse_key="score")
    # Fanned out newest first, as if the older had committed after the newer was dispatched.
    Notification.objects.filter(pk=older.pk).update(status="scheduled")
    fan_out(newer.pk)
    Notification.objects.filter(pk=older.pk).update(status="queued")
    fan_out(older.pk)
    assert list(InboxMessage.objects.values_list("notification_id", flat=True)) == [newer.pk]
    assert not Delivery.objects.filter(notification=older).exists()


def test_a_message_past_its_ttl_is_gone_from_every_channel_and_its_delivery_expires(
    start_web, alice, token_for
):
    web = start_web()
    token = token_for(alice)
    expiring = send({"users": ["alice"]}, route="realtime", ttl=3, title="soon stale")
    kept = send({"users": ["alice"]}, route="realtime", title="still good")
    assert realtime_status(expiring) == "queued"  # alice is offline
    wait_until(lambda: timezone.now() > expiring.expires_at, message="the ttl to pass")

    expected = [kept.pk]
    assert seen_everywhere(web, token, 1) == {
        "replay": expected,
        "poll": expected,
        "sse": expected,
        "inbox": expected,
    }
    sweeper.sweep()  # beat's sweep, as a worker runs it every second
    assert realtime_status(expiring) == "expired"
    assert realtime_status(kept) == "sent"  # the replay wrote it to the socket
