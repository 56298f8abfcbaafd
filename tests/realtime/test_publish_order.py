"""A small publish goes out from the caller's thread only when nothing handed over earlier waits."""

import asyncio

import orjson
import pytest
import redis
from django.conf import settings

from realtime.node_registry import channel_for
from realtime.presence import get_presence
from realtime.publish import _publisher, flush_publishes, publish_messages

pytestmark = pytest.mark.django_db(transaction=True)
NODE = "publish-order-test"
RECEIVE_TIMEOUT_SECS = 10


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


@pytest.mark.skipif(not settings.REDIS_URL, reason="the publisher thread exists with Redis only")
def test_a_small_publish_never_overtakes_one_handed_over_before_it(alice):
    asyncio.run(get_presence().refresh(NODE, [alice.pk]))
    subscription = redis.Redis.from_url(settings.REDIS_URL).pubsub()
    subscription.subscribe(channel_for(NODE))
    subscription.get_message(timeout=RECEIVE_TIMEOUT_SECS)  # the subscribe confirmation
    publisher = _publisher()
    try:
        with publisher.publishing:  # the publisher thread is busy: this one is handed over
            publish_messages([(alice.pk, message(1))])
            assert publisher.in_hand == 1
        publish_messages([(alice.pk, message(2))])  # inline only once the first is out
        assert flush_publishes()

        assert cursors_received(subscription, 2) == [1, 2]
        publish_messages([(alice.pk, message(3))])  # idle now: published inline, at once
        assert publisher.in_hand == 0
        assert cursors_received(subscription, 1) == [3]
    finally:
        subscription.close()
        asyncio.run(get_presence().remove(NODE, alice.pk))
