"""WebSockets under daphne: frames straight to the socket, and flow control to know when a
client stops reading.

ASGI has no back-pressure for `websocket.send` under daphne: each frame goes straight into
Twisted's unbounded write buffer, so a client that stops reading would make the server's
memory grow without end. Twisted's producer API is the documented way to learn that a
socket's buffer is full (pauseProducing, above 64 KiB) and drained again (resumeProducing);
autobahn exposes it as `registerProducer` on the protocol. Daphne hands an application
`partial(server.handle_reply, protocol)` as its `send`, which is where we find the protocol.
Under another server the protocol is not found and `await send()` itself back-pressures.
"""

import functools
import logging
import struct
import time

from twisted.internet import tcp

logger = logging.getLogger(__name__)

# Wrappers between daphne's send and a consumer (channels' session middleware adds one).
MAX_WRAPPER_DEPTH = 6


def _is_protocol(candidate) -> bool:
    return hasattr(candidate, "registerProducer") and hasattr(candidate, "transport")


def daphne_protocol(send):
    """The daphne WebSocket protocol behind an ASGI `send` callable, or None."""
    candidate = send
    for _ in range(MAX_WRAPPER_DEPTH):
        if isinstance(candidate, functools.partial):
            for arg in candidate.args:
                if _is_protocol(arg):
                    return arg
            candidate = candidate.func
            continue
        inner = getattr(getattr(candidate, "__self__", None), "real_send", None)
        if inner is None:
            return None
        candidate = inner
    return None


class _Producer:
    """Twisted IPushProducer forwarding the socket's buffer state to a subscriber."""

    def __init__(self, subscriber):
        self.subscriber = subscriber

    def pauseProducing(self):  # noqa: N802 - Twisted's interface
        self.subscriber.pause()

    def resumeProducing(self):  # noqa: N802
        self.subscriber.resume()

    def stopProducing(self):  # noqa: N802
        self.subscriber.resume()


def limit_client_messages(protocol, max_message_bytes: int) -> None:
    """autobahn closes with 1009 (message too big) past this, before buffering the message."""
    protocol.maxMessagePayloadSize = max_message_bytes
    protocol.failByDrop = False  # send the close code rather than cutting the connection


def attach_flow_control(protocol, subscriber) -> bool:
    """Pause `subscriber` while its socket's send buffer is full, resume when it drains."""
    if protocol is None or getattr(protocol, "transport", None) is None:
        return False
    producer = _Producer(subscriber)
    try:
        protocol.registerProducer(producer, True)
    except RuntimeError:
        # Daphne upgrades an HTTP connection without unregistering twisted.web's HTTPChannel,
        # which registered itself as the socket's producer; that channel is finished with it.
        try:
            protocol.transport.unregisterProducer()
            protocol.registerProducer(producer, True)
        except RuntimeError:
            logger.warning("WebSocket flow control unavailable: the socket has another producer")
            return False
    return True


def defer_protocol_ping(protocol, secs: float) -> None:
    """Hold daphne's own ping on this socket off for `secs`: its client heartbeats itself.

    Daphne pings a socket `--ping-interval` (20 s) after the last frame it received or ping it
    sent, to keep it alive and find dead peers. A client that pings every 25 s ± 20 % does both
    (the node closes it after two silent intervals), so daphne's pings only doubled the idle
    traffic: a fifth of the server's CPU with 10,000 idle sockets (W3 profile,
    docs/benchmarks.md). Sockets whose clients do not ping keep daphne's pings. A no-op when
    `protocol` is None (not daphne).
    """
    server = getattr(protocol, "server", None)
    if server is not None and hasattr(protocol, "last_ping"):
        protocol.last_ping = time.time() + secs - server.ping_interval  # daphne pings at last_ping + interval


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked WebSocket text frame (RFC 6455 5.2): what a server sends."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 65536:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload


def send_text(protocol, payload: bytes) -> bool:
    """Write one text message on daphne's socket at once; False if the socket is not open.

    autobahn's sendMessage ends in one frame handed to Twisted's transport, which buffers it,
    registers the socket for writability (two epoll_ctl calls and selector bookkeeping per
    frame) and writes it on the next loop turn: with autobahn's per-message bookkeeping, 70 %
    of the node's dispatch time in a W1 profile (bench/realtime_throughput.py), where every
    socket gets its own frame. Here the frame is built once and, when Twisted holds nothing
    unsent for this socket, handed to the kernel directly; what the kernel does not take goes
    into Twisted's buffer as before, so order and flow control are unchanged.
    """
    if protocol.state != protocol.STATE_OPEN:
        return False
    if (
        protocol.send_state != protocol.SEND_STATE_GROUND
        or protocol.send_queue
        or protocol._perMessageCompress
    ):
        protocol.sendMessage(payload)  # states autobahn tracks itself; our server never enters them
        return True
    frame = text_frame(payload)
    transport = protocol.transport
    if (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and not transport.disconnecting
        and len(transport.dataBuffer) == transport.offset
        and not transport._tempDataLen
    ):
        sent = transport.writeSomeData(frame)  # socket.send: bytes taken, 0 if it would block
        if not isinstance(sent, int):
            return True  # connection lost: Twisted reports it on its next read of the socket
        if sent == len(frame):
            return True
        frame = frame[sent:]
    transport.write(frame)
    return True
