"""The WebSocket consumer: transport only. It authenticates, joins the user's group, replays
from the client's cursor, forwards live messages in cursor order without duplicates, and
passes acks to the domain. See docs/architecture.md (Realtime).
"""

import logging
import uuid

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from delivery.services import inbox_ack
from realtime.auth import authenticate_scope, query_param
from realtime.presence import get_presence
from realtime.publish import user_group
from realtime.streams import REPLAY_PAGE, live_messages_after, stream_position

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_BAD_REQUEST = 4400
MAX_CLIENT_FRAME_BYTES = 4096  # acks and pings are tiny; anything larger is abuse


class NotificationConsumer(AsyncWebsocketConsumer):
    user = None

    async def connect(self):
        self.user = await authenticate_scope(self.scope)
        await self.accept()
        if self.user is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        after = query_param(self.scope, "after")
        try:
            start = int(after) if after not in (None, "") else None
        except ValueError:
            await self._send({"type": "error", "code": "bad_cursor", "message": "after must be a cursor"})
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        if start is None:
            start = await database_sync_to_async(stream_position)(self.user.pk)
        self.cursor = start
        self.connection_id = uuid.uuid4().hex
        await self.channel_layer.group_add(user_group(self.user.pk), self.channel_name)
        await get_presence().touch(self.user.pk, self.connection_id)
        # Anything committed between reading the position and joining the group is replayed
        # here; anything published meanwhile arrives after and is dropped as already seen.
        await self._catch_up()

    async def disconnect(self, code):
        if self.user is None or not hasattr(self, "connection_id"):
            return
        await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)
        await get_presence().leave(self.user.pk, self.connection_id)

    async def receive(self, text_data=None, bytes_data=None):
        raw = text_data if text_data is not None else bytes_data
        if raw is None or len(raw) > MAX_CLIENT_FRAME_BYTES:
            await self._send(
                {"type": "error", "code": "frame_too_large", "message": "frames are at most 4 KB"}
            )
            return
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await self._send({"type": "error", "code": "invalid_json", "message": "frames are JSON objects"})
            return
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "ping":
            await get_presence().touch(self.user.pk, self.connection_id)
            await self._send({"type": "pong"})
        elif kind == "ack" and isinstance(frame.get("id"), int) and not isinstance(frame.get("id"), bool):
            await database_sync_to_async(inbox_ack)(user=self.user, notification_id=frame["id"])
        else:
            await self._send({"type": "error", "code": "unknown_type", "message": "expected ping or ack"})

    async def notification_message(self, event):
        """A live message from the user's group, forwarded in cursor order, once."""
        message = event["message"]
        cursor = message["cursor"]
        if cursor <= self.cursor:
            return
        if cursor > self.cursor + 1:
            # Earlier messages may have been published out of order, or not to us
            # (push-only ones are in the stream too): the database says which to send.
            await self._catch_up(until=cursor)
            if cursor <= self.cursor:
                return
        await self._send({"type": "notification", **message})
        self.cursor = cursor

    async def notification_read(self, event):
        await self._send({"type": "read", "id": event["id"]})

    async def _catch_up(self, until: int | None = None):
        while True:
            messages = await database_sync_to_async(live_messages_after)(
                self.user.pk, self.cursor, REPLAY_PAGE, until
            )
            for message in messages:
                await self._send({"type": "notification", **message})
                self.cursor = message["cursor"]
            if len(messages) < REPLAY_PAGE:
                break
        if until is not None:
            self.cursor = max(self.cursor, until - 1)

    async def _send(self, payload: dict):
        await self.send(text_data=orjson.dumps(payload).decode())
