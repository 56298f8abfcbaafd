"""Publishing to users' realtime connections, after commit: one payload per node per batch.

Presence says which nodes (web processes) hold each user's connections; the batch is grouped
by node and each node gets ONE Redis PUBLISH carrying every frame for its users, each frame
serialised once here. Embedded, the node lives in this process and gets the frames directly.
Pub/sub is at-most-once: a lost payload is repaired by the cursor (gap-fill on the next frame,
replay on reconnect). See docs/realtime.md.
"""

import logging

import orjson
import redis
from django.conf import settings

from realtime.node import channel_for, local_nodes
from realtime.presence import get_presence
from realtime.streams import notification_frame, read_frame

logger = logging.getLogger(__name__)


def publish_messages(messages: list[tuple[int, dict]]) -> None:
    """Send each (user_id, message) to that user's live connections; at-most-once."""
    if messages:
        frames = [(user_id, message["cursor"], notification_frame(message)) for user_id, message in messages]
        _publish(frames, [])


def publish_read(user_id: int, notification_id: int) -> None:
    """Tell the user's other clients that this message was read, so they clear it."""
    _publish([], [(user_id, read_frame(notification_id))])


def _publish(frames: list[tuple[int, int, str]], reads: list[tuple[int, str]]) -> None:
    if not settings.REDIS_URL:
        for node in local_nodes():
            node.loop.call_soon_threadsafe(node.dispatch, frames, reads)
        return
    presence = get_presence()
    user_ids = list(dict.fromkeys([user_id for user_id, *_ in frames] + [user_id for user_id, _ in reads]))
    try:
        nodes = presence.nodes_for_users(user_ids)
        if not nodes:
            return
        nodes_of: dict[int, list[str]] = {}
        for node_id, node_users in nodes.items():
            for user_id in node_users:
                nodes_of.setdefault(user_id, []).append(node_id)
        payloads = {node_id: {"m": [], "r": []} for node_id in nodes}
        for frame in frames:
            for node_id in nodes_of.get(frame[0], ()):
                payloads[node_id]["m"].append(frame)
        for read in reads:
            for node_id in nodes_of.get(read[0], ()):
                payloads[node_id]["r"].append(read)
        with presence.sync_client.pipeline(transaction=False) as pipe:
            for node_id, payload in payloads.items():
                pipe.publish(channel_for(node_id), orjson.dumps(payload))
            pipe.execute()
    except redis.RedisError:
        # At-most-once by design: clients get these from the database on their next frame
        # or reconnect. The caller's transaction has committed; failing it would help no one.
        logger.warning("realtime publish of %s frames failed", len(frames) + len(reads), exc_info=True)
