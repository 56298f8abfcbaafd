"""Publishing to users' realtime connections through the channel layer (after commit)."""

import asyncio

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


async def _send_all(events: list[tuple[int, dict]]) -> None:
    layer = get_channel_layer()
    await asyncio.gather(*(layer.group_send(user_group(user_id), event) for user_id, event in events))


def publish_messages(messages: list[tuple[int, dict]]) -> None:
    """Send each (user_id, message) to that user's live connections; at-most-once."""
    if messages:
        async_to_sync(_send_all)(
            [(user_id, {"type": "notification.message", "message": message}) for user_id, message in messages]
        )


def publish_read(user_id: int, notification_id: int) -> None:
    """Tell the user's other clients that this message was read, so they clear it."""
    async_to_sync(_send_all)([(user_id, {"type": "notification.read", "id": notification_id})])
