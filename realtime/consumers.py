"""The WebSocket consumer: transport only. It authenticates, registers the connection with
this process's node, replays from the client's cursor, writes live frames in cursor order
without duplicates (realtime/subscriber.py), and passes acks to the domain.
See docs/realtime.md (WebSocket).
"""

import logging
import time
from collections import deque

import orjson
from autobahn.exception import Disconnected
from django.db import DatabaseError

from delivery.streams_api import inbox_ack
from notifyproject.identities import credentials
from realtime.admission import retry_after_secs
from realtime.auth import authenticate_scope, query_param
from realtime.node import CLOSE_UNAUTHENTICATED, HEARTBEAT_TIMEOUT_SECS, get_node
from realtime.streams import db
from realtime.subscriber import CLOSE_SERVER_ERROR, Subscriber, spawn
from realtime.transport import open_socket, text_frame

logger = logging.getLogger(__name__)

CLOSE_BAD_REQUEST = 4400
CLOSE_FLOODING = 4429
# Acks and pings are tiny: past 4 KiB a frame gets an error; past 64 KiB the server closes
# the socket (1009) before reading it into memory.
MAX_CLIENT_FRAME_BYTES = 4096
MAX_CLIENT_MESSAGE_BYTES = 64 * 1024
# Client frames per connection: a burst of 400 (acking a full replay page twice over),
# then 40 per second sustained; a client past that is closed.
FRAME_BURST = 400
FRAMES_PER_SEC = 40
PONG_FRAME = '{"type":"pong"}'
# The pong as it goes on the wire, built once: a heartbeat's answer is most of an idle socket's cost.
PONG_PAYLOAD = PONG_FRAME.encode()
PONG_WIRE = text_frame(PONG_PAYLOAD)


def parse_cursor(raw: str | None) -> int | None:
    """A non-negative cursor, None when absent; ValueError when malformed."""
    if raw is None or raw == "":
        return None
    value = int(raw)
    if value < 0:
        raise ValueError("negative cursor")
    return value


class WebSocketSubscriber(Subscriber):
    kind = "websocket"

    def __init__(self, consumer, user, token=None):
        super().__init__(user, token)
        self.consumer = consumer
        self.socket = consumer.socket

    def write_now(self, frame: str, payload: bytes | None = None, wire: bytes | None = None) -> bool:
        """Straight to daphne's socket: what `send` ends in, minus four coroutines a frame.
        (`payload` and `wire`: the frame encoded and framed beforehand, as the pong is.)

        Same socket, same order (daphne's own send path is synchronous once awaited); Twisted
        calls the flow-control producer from inside this write when its buffer fills. Without
        the fast path (realtime/transport.py) the frame goes through `write`, the ASGI send.
        """
        socket = self.socket
        if socket is None:
            return False
        try:
            return socket.write_text(frame.encode() if payload is None else payload, wire)
        except Disconnected:
            self.detach()  # the socket went away between the state check and the write
            return True

    async def write(self, frame: str, cursor: int | None) -> None:
        try:
            await self.consumer.send(frame)
        except Disconnected:
            self.detach()  # closed under a replay (a storm's aborted sockets): not a server error

    def _close(self, code: int) -> None:
        self.consumer.close_later(code)


class NotificationConsumer:
    """One WebSocket as a plain ASGI application (Channels' URLRouter routes to `as_asgi()`).

    Not a Channels consumer: this socket has no channel-layer subscription (the node fans
    frames out, realtime/node.py) and holds no database connection on the event loop, so
    Channels' per-message dispatch (a task per receive, a thread hop to close stale database
    connections) would be pure cost: W3 and W4 measured it per handshake and per idle socket
    (docs/benchmarks.md, "Connections: where the time goes").
    """

    __slots__ = (
        "scope",
        "base_send",
        "socket",
        "subscriber",
        "_tokens",
        "_refilled_at",
        "_backlog",
    )

    def __init__(self, scope, send):
        self.scope = scope
        self.base_send = send
        self.socket = None  # the fast path's handle on daphne's socket (realtime/transport.py)
        self.subscriber: WebSocketSubscriber | None = None
        self._tokens = float(FRAME_BURST)
        self._refilled_at = 0.0
        # Frames waiting behind an ack being recorded, once daphne hands frames to `put_nowait`.
        self._backlog: deque | None = None

    @classmethod
    def as_asgi(cls):
        async def app(scope, receive, send):
            await cls(scope, send).run(receive)

        return app

    async def run(self, receive) -> None:
        """The ASGI WebSocket protocol: connect, frames, disconnect (the scope is let go once open)."""
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                await self.receive(text if text is not None else message.get("bytes"))
            elif kind == "websocket.connect":
                await self.connect()
                self.scope = None
                if self._take_over_receiving():
                    return  # daphne now hands frames to put_nowait; this task and its queue go
            elif kind == "websocket.disconnect":
                self.disconnect()
                return

    async def connect(self) -> None:
        self.socket = open_socket(self.base_send)
        admission = get_node().admission
        if admission.refusal() is not None:
            await self._refuse()
            return
        try:
            await self._open()
        finally:
            admission.finished()

    async def _refuse(self) -> None:
        """503 with Retry-After (on the fast path; else daphne's 403), before any database work."""
        headers = [("Retry-After", str(retry_after_secs()))]
        if self.socket is None or not self.socket.refuse_handshake(503, "Service Unavailable", headers):
            await self.base_send({"type": "websocket.close"})

    async def _open(self) -> None:
        scope = self.scope
        if self.socket is not None:
            self.socket.limit_client_messages(MAX_CLIENT_MESSAGE_BYTES)
        user, token = await authenticate_scope(scope)
        # A browser offering subprotocols needs one chosen; ours, never the token entry.
        subprotocol = credentials.selected_subprotocol(scope)
        await self.base_send({"type": "websocket.accept", "subprotocol": subprotocol})
        if user is None:
            await self.close(CLOSE_UNAUTHENTICATED)
            return
        try:
            after = parse_cursor(query_param(scope, "after"))
            read_after = parse_cursor(query_param(scope, "read_after"))
        except ValueError:
            await self._error("bad_cursor", "after and read_after must be cursors (non-negative integers).")
            await self.close(CLOSE_BAD_REQUEST)
            return
        self.subscriber = WebSocketSubscriber(self, user, token)
        if self.socket is not None:
            self.socket.attach_flow_control(self.subscriber)
        self._refilled_at = time.monotonic()
        await self.subscriber.open(after, read_after)

    def disconnect(self) -> None:
        if self.subscriber is not None:
            self.subscriber.detach()

    def _take_over_receiving(self) -> bool:
        """Once open, receive frames from daphne directly (realtime/transport.py): an idle socket
        then keeps no application task, coroutine chain or asyncio.Queue (~8 KB each, W3), and a
        ping is answered from daphne's own callback, without a queue hand-off and a task wake-up."""
        subscriber = self.subscriber
        if self.socket is None or subscriber is None or subscriber.closed:
            return False
        return self.socket.take_over_receiving(self)

    def put_nowait(self, message) -> None:
        """daphne's `application_queue.put_nowait` once `_take_over_receiving` succeeded."""
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            self.text_received(text if text is not None else message.get("bytes"))
        elif kind == "websocket.disconnect":
            self.disconnect()
            self.socket.receiving_ended()

    def text_received(self, raw) -> None:
        """A client frame once receiving is taken over: from `put_nowait`, or as bytes straight
        from the transport for a small frame (a heartbeat) that arrived alone."""
        if self._backlog is not None:  # an ack is being recorded: later frames keep their turn
            self._backlog.append(raw)
            return
        action = self._receive_now(raw)
        if action is not None:
            self._backlog = deque([action])
            spawn(self._drain_backlog())

    async def _drain_backlog(self) -> None:
        try:
            while self._backlog:
                item = self._backlog.popleft()
                action = item if isinstance(item, tuple) else self._receive_now(item)
                if action is not None:
                    await self._act(action)
        except Exception:
            logger.exception("realtime frame handling failed")
            if self.subscriber is not None:
                self.subscriber.close(CLOSE_SERVER_ERROR)
        finally:
            self._backlog = None

    async def send(self, text_data: str) -> None:
        await self._send({"type": "websocket.send", "text": text_data})

    async def close(self, code: int) -> None:
        await self._send({"type": "websocket.close", "code": code})

    async def _send(self, message: dict) -> None:
        """Through daphne's socket once daphne no longer lists it (realtime/transport.py), else ASGI."""
        if self.socket is None or not self.socket.send(message):
            await self.base_send(message)

    def close_later(self, code: int) -> None:
        """Close from outside the connection's own task (the node, the writer)."""
        spawn(self.close(code))

    async def receive(self, raw) -> None:
        action = self._receive_now(raw)
        if action is not None:
            await self._act(action)

    def _receive_now(self, raw) -> tuple | None:
        """Handle a client frame as far as it goes without awaiting; what is left to await:
        ("ack", id) or ("send", frame) when the frame could not be written at once."""
        subscriber = self.subscriber
        if subscriber is None or subscriber.closed or raw is None:
            return None
        subscriber.last_seen = time.monotonic()
        if not self._take_token():
            subscriber.close(CLOSE_FLOODING)
            return None
        if len(raw) > MAX_CLIENT_FRAME_BYTES:
            return self._error_now("frame_too_large", f"Frames are at most {MAX_CLIENT_FRAME_BYTES} bytes.")
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._error_now("invalid_json", "Frames are JSON objects.")
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "ping":
            if not subscriber.heartbeat:
                subscriber.heartbeat = True
                if subscriber.node is not None:
                    subscriber.node.watch_heartbeat(subscriber)
            if self.socket is not None:
                self.socket.defer_ping(HEARTBEAT_TIMEOUT_SECS)
            # No ASGI send chain: most idle CPU is pongs.
            return None if subscriber.write_now(PONG_FRAME, PONG_PAYLOAD, PONG_WIRE) else ("send", PONG_FRAME)
        if kind == "ack":
            return ("ack", frame.get("id"))
        return self._error_now("unknown_type", 'Expected {"type": "ping"} or {"type": "ack", "id": <id>}.')

    async def _act(self, action: tuple) -> None:
        kind, value = action
        if kind == "ack":
            await self._ack(value)
        else:
            await self.send(value)

    def _error_now(self, code: str, message: str) -> tuple | None:
        frame = orjson.dumps({"type": "error", "code": code, "message": message}).decode()
        return None if self.subscriber.write_now(frame) else ("send", frame)

    async def _ack(self, notification_id) -> None:
        if not isinstance(notification_id, int) or isinstance(notification_id, bool) or notification_id < 1:
            await self._error("invalid_ack", "An ack needs the message's integer id.")
            return
        try:
            found = await db(inbox_ack)(user=self.subscriber.user, notification_id=notification_id)
        except DatabaseError:
            logger.warning("ack of %s failed", notification_id, exc_info=True)
            await self._error("unavailable", "The ack was not recorded; send it again.", id=notification_id)
            return
        if not found:
            await self._error("not_found", "No such message in your inbox.", id=notification_id)

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(FRAME_BURST, self._tokens + (now - self._refilled_at) * FRAMES_PER_SEC)
        self._refilled_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def _error(self, code: str, message: str, **extra) -> None:
        frame = {"type": "error", "code": code, "message": message, **extra}
        await self.send(orjson.dumps(frame).decode())
