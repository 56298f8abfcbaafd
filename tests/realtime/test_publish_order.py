"""A small publish goes out from the caller's thread only when no round is in flight."""

import asyncio
import time

import orjson
import pytest
import redis
from django.conf import settings

from realtime.node_registry import channel_for
from realtime.presence import get_presence
from realtime.publish import INLINE_MIN_IDLE_SECS, _publisher, flush_publishes, publish_messages
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
NODE = "publish-order-test"
RECEIVE_TIMEOUT_SECS = 10
POLL_SECS = 0.001


def message(cursor: int) -> dict:
    return {
        "id": cursor,
        "cursor": cursor,
        "title": f"m{cursor}",
        "body": "",
        "data": {},
        "url": "",
        "icon": "",
    }


def cursors_received(subscription, count: int) -> list[int]:
    cursors = []
    while len(cursors) < count:
        item = subscription.get_message(ignore_subscribe_messages=True, timeout=RECEIVE_TIMEOUT_SECS)
        assert item is not None, f"got {cursors}"
        cursors += [frame[1] for frame in orjson.loads(item["data"])["m"]]
    return cursors


def test_a_small_publish_goes_inline_only_when_nothing_is_in_flight_or_waiting(alice):
    assert settings.REDIS_URL, "the publisher exists with Redis only"
    asyncio.run(get_presence().refresh(NODE, [alice.pk]))
    subscription = redis.Redis.from_url(settings.REDIS_URL).pubsub()
    subscription.subscribe(channel_for(NODE))
    subscription.get_message(timeout=RECEIVE_TIMEOUT_SECS)  # the subscribe confirmation
    publisher = _publisher()
    assert flush_publishes()
    try:
        # Given a round in flight (as a caller's inline round is)
        wait_until(publisher.inline_round_begin, interval=POLL_SECS, message="an idle publisher")
        # When two sends come meanwhile, they wait, and go out together when it ends
        publish_messages([(alice.pk, message(1))])
        publish_messages([(alice.pk, message(2))])
        assert len(publisher.waiting) == 2
        publisher.inline_round_end()
        publish_messages([(alice.pk, message(3))])  # after 1 and 2, whichever way it goes
        assert flush_publishes()
        assert cursors_received(subscription, 3) == [1, 2, 3]

        # Then a publisher idle for a moment publishes from the caller's thread
        wait_until(
            lambda: time.monotonic() - publisher.idle_since >= INLINE_MIN_IDLE_SECS,
            interval=POLL_SECS,
            message="a quiet moment",
        )
        thread_rounds = publisher.thread_rounds
        publish_messages([(alice.pk, message(4))])
        assert not publisher.busy
        assert cursors_received(subscription, 1) == [4]
        assert publisher.thread_rounds == thread_rounds
    finally:
        subscription.close()
        asyncio.run(get_presence().remove(NODE, alice.pk))
