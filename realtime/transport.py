"""Flow control for WebSockets under daphne: know when a client stops reading.

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
