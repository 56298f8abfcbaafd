"""WebSockets under daphne: frames straight to the socket, and flow control to know when a
client stops reading. Every private detail of daphne, autobahn and Twisted that Clarion
relies on lives in this module, and is checked once, on the first connection.

ASGI has no back-pressure for `websocket.send` under daphne: each frame goes straight into
Twisted's unbounded write buffer, so a client that stops reading would make the server's
memory grow without end. Twisted's producer API is the documented way to learn that a
socket's buffer is full (pauseProducing, above 64 KiB) and drained again (resumeProducing);
autobahn exposes it as `registerProducer` on the protocol. Daphne hands an application
`partial(server.handle_reply, protocol)` as its `send`, which is where we find the protocol.

If the protocol is not found (another ASGI server, or a daphne that hands `send` over
differently) or lacks anything below, the fast path is off for the process: frames go
through the ASGI `await send()`, a warning says why, and the gauge
`clarion_realtime_fast_path_enabled` is 0. requirements.txt pins the versions checked.

With the fast path on, the first connection also trims what autobahn does for every later
one (`share_protocol_options`): it copies its ~40 options from daphne's factory onto each
protocol instance and pretty-prints them for a debug line even when nothing logs at debug
(a tenth of a handshake's CPU and ~2 KB of every open socket, bench/handshake.py and W3).
Its module-level `pformat` is then formatted only while txaio logs at debug.
"""

import asyncio
import functools
import logging
import pprint
import struct
import time
import types
from dataclasses import dataclass

import txaio
from autobahn.websocket import protocol as autobahn_protocol
from twisted.internet import tcp

logger = logging.getLogger(__name__)

# Wrappers between daphne's send and a consumer (channels' session middleware adds one).
MAX_WRAPPER_DEPTH = 6

# What the fast path touches on daphne's protocol (autobahn's WebSocketServerProtocol, with
# daphne's `server` and `last_ping`) and on its Twisted TCP transport. The underscored ones are
# private: an upgrade may rename them, which the check turns into "fast path off".
PROTOCOL_ATTRIBUTES = (
    "transport",
    "registerProducer",
    "sendMessage",
    "state",
    "STATE_OPEN",
    "STATE_CONNECTING",
    "send_state",
    "SEND_STATE_GROUND",
    "send_queue",
    "_perMessageCompress",
    "maxMessagePayloadSize",
    "failByDrop",
    "sendHttpErrorResponse",
    "dropConnection",
    "last_ping",
    "server",
)
TRANSPORT_ATTRIBUTES = (
    "write",
    "writeSomeData",
    "unregisterProducer",
    "TLS",
    "disconnecting",
    "dataBuffer",
    "offset",
    "_tempDataLen",
)


# What taking an open socket off daphne's `connections` (ParkedSockets) relies on, beyond
# the above: how daphne tracks, times out and closes a connection (daphne/server.py and
# ws_protocol.py). Missing any, sockets keep a standing future in daphne's list instead.
PARK_SERVER_ATTRIBUTES = ("connections", "protocol_disconnected", "ping_interval", "websocket_timeout")
PARK_PROTOCOL_ATTRIBUTES = ("check_timeouts", "handle_reply", "socket_opened", "onClose")
# What `receive_small_frames` reads of autobahn's parser state (set once the socket is open);
# missing any, parked sockets' frames all go through autobahn's parser.
SMALL_FRAME_ATTRIBUTES = ("dataReceived", "data", "current_frame", "inside_message")
# Client frames up to this payload (the 7-bit length encoding) are read here when one arrives
# alone: a ping is 15 bytes, an ack some 30.
SMALL_FRAME_MAX_PAYLOAD = 125
# daphne's Server.timeout_checker runs every 2 s; the sweep over parked sockets keeps its timing,
# so daphne's pings (--ping-interval) and its socket lifetime (--websocket_timeout) hold as before.
TIMEOUT_SWEEP_SECS = 2


@dataclass(frozen=True)
class FastPathCheck:
    enabled: bool
    reason: str = ""  # why it is off


_check: FastPathCheck | None = None  # this process's verdict, from its first connection
_missed_protocol_logged = False
_park_check: FastPathCheck | None = None  # may open sockets leave daphne's list? (first takeover)
_small_frames_check: FastPathCheck | None = None  # may parked sockets read small frames? (same)
_parked: dict = {}  # daphne server → its ParkedSockets


def fast_path_enabled() -> bool | None:
    """Whether this process writes frames on the fast path; None before its first WebSocket."""
    return None if _check is None else _check.enabled


def check_fast_path(protocol) -> FastPathCheck:
    """Does `protocol` (what daphne_protocol found, or None) have everything the fast path uses?"""
    if protocol is None:
        return FastPathCheck(False, "daphne's protocol was not found behind the ASGI send")
    missing = [f"protocol.{name}" for name in PROTOCOL_ATTRIBUTES if not hasattr(protocol, name)]
    if not hasattr(getattr(protocol, "server", None), "ping_interval"):
        missing.append("protocol.server.ping_interval")
    transport = getattr(protocol, "transport", None)
    if not isinstance(transport, tcp.Connection):
        missing.append("protocol.transport as a twisted.internet.tcp.Connection")
    else:
        missing += [f"transport.{name}" for name in TRANSPORT_ATTRIBUTES if not hasattr(transport, name)]
    if missing:
        return FastPathCheck(False, "missing " + ", ".join(missing))
    return FastPathCheck(True)


def open_socket(send) -> "DaphneSocket | None":
    """This connection's socket for the fast path, or None: use the ASGI `send`."""
    global _check, _missed_protocol_logged
    protocol = daphne_protocol(send)
    if _check is None:
        _check = check_fast_path(protocol)
        if _check.enabled:
            logger.info("realtime fast path on: frames are written to daphne's sockets directly")
            share_protocol_options(protocol)
        else:
            logger.warning(
                "realtime fast path OFF, frames go through ASGI send without flow control: %s", _check.reason
            )
    if not _check.enabled:
        return None
    if protocol is None:
        if not _missed_protocol_logged:  # e.g. a new wrapper around send on some route
            _missed_protocol_logged = True
            logger.warning(
                "realtime fast path: daphne's protocol not found for a connection; using ASGI send"
            )
        return None
    return DaphneSocket(protocol)


def check_parking(protocol) -> FastPathCheck:
    """Can `protocol` (open, on the fast path) be taken off its daphne server's `connections`?"""
    server = getattr(protocol, "server", None)
    missing = [f"server.{name}" for name in PARK_SERVER_ATTRIBUTES if not hasattr(server, name)]
    missing += [f"protocol.{name}" for name in PARK_PROTOCOL_ATTRIBUTES if not hasattr(protocol, name)]
    if not missing and not isinstance(server.connections, dict):
        missing.append("server.connections as a dict")
    if missing:
        return FastPathCheck(False, "missing " + ", ".join(missing))
    return FastPathCheck(True)


def _parking_enabled(protocol) -> bool:
    global _park_check
    if _park_check is None:
        _park_check = check_parking(protocol)
        if not _park_check.enabled:
            logger.warning(
                "realtime: open sockets stay on daphne's connection list (swept every second): %s",
                _park_check.reason,
            )
    return _park_check.enabled


def _small_frames_enabled(protocol) -> bool:
    global _small_frames_check
    if _small_frames_check is None:
        missing = [f"protocol.{name}" for name in SMALL_FRAME_ATTRIBUTES if not hasattr(protocol, name)]
        _small_frames_check = FastPathCheck(not missing, "missing " + ", ".join(missing) if missing else "")
        if missing:
            logger.warning(
                "realtime: client frames all go through autobahn's parser: %s", _small_frames_check.reason
            )
    return _small_frames_check.enabled


def small_client_text(data: bytes) -> bytes | None:
    """The payload if `data` is exactly one whole masked text frame of at most 125 bytes of
    valid UTF-8, as a client sends it (RFC 6455 5.2, 5.3); None for anything else."""
    if len(data) < 6 or data[0] != 0x81:  # FIN, no RSV bits (no compression), opcode 1: text
        return None
    length = data[1] ^ 0x80  # the mask bit must be set: a client's frames are masked
    if length > SMALL_FRAME_MAX_PAYLOAD or len(data) != 6 + length:
        return None
    mask = data[2:6] * ((length >> 2) + 1)
    payload = (int.from_bytes(data[6:], "big") ^ int.from_bytes(mask[:length], "big")).to_bytes(length, "big")
    try:
        payload.decode()
    except UnicodeDecodeError:
        return None  # autobahn closes with 1007
    return payload


def receive_small_frames(protocol, inbox, data: bytes) -> None:
    """A parked protocol's `dataReceived`: a small text frame arriving alone, as a heartbeat
    does, goes straight to the consumer (`inbox.text_received`, the payload's bytes); anything
    else, or anything while autobahn holds part of a frame, goes through autobahn's parser.

    For a 15-byte ping autobahn builds a frame header, a masker and a UTF-8 validator (two
    cffi calls each), runs ten callbacks and a debug log call that formats its arguments: most
    of the Python time of a heartbeat in the W3 profile. What it would do with such a frame
    is what this does: unmask, check UTF-8, deliver one message. Its traffic counters, which
    Clarion does not read, do not count these frames. daphne's `onMessage` would then build
    an ASGI message dict and decode the text for `put_nowait`; of what it does, only its
    note of the client's last frame (`last_ping`, which times its own pings) is kept here.
    """
    if (
        protocol.state == protocol.STATE_OPEN
        and not protocol.data
        and protocol.current_frame is None
        and not protocol.inside_message
    ):
        payload = small_client_text(data)
        if payload is not None:
            protocol.last_ping = time.time()
            inbox.text_received(payload)
            return
    type(protocol).dataReceived(protocol, data)


class ParkedSockets:
    """daphne's server as the open sockets taken off its `connections` see it (their
    `protocol.server`), and the one sweep that runs daphne's timeout checks on them.

    daphne walks `connections` every second (`application_checker`: reap finished applications)
    and every two (`timeout_checker`: `protocol.check_timeouts()`). With 10,000 idle sockets
    those walks were over half the idle server's CPU, for sockets with no application to reap
    (the consumer took over receiving) and, mostly, no ping due (their clients heartbeat). Off
    the list, a socket costs daphne nothing per second. This sweep, every 2 s as daphne's,
    calls daphne's own `check_timeouts` where it has work: on sockets whose clients have not
    heartbeated, so that dead peers are still pinged every --ping-interval and dropped by
    autobahn after --ping-timeout, and on sockets past --websocket_timeout. A client that
    heartbeats is the node's to watch (closed with 4408 after two silent intervals), and no
    daphne ping was due for it anyway (`defer_ping`), so its socket leaves `unheartbeating`
    and the sweep does not visit it. Sockets are kept in the order they were parked, which is
    the order they opened to within a handshake, so the lifetime check stops at the first
    young one. Everything else the protocol asks of its server (logging, options) is
    daphne's server's; `protocol_disconnected` (from `onClose`) forgets the socket here.
    """

    def __init__(self, server, loop: asyncio.AbstractEventLoop):
        self.server = server
        self.protocols: dict = {}  # protocol → None, in the order parked
        self.unheartbeating: set = set()  # those whose clients have not pinged: daphne pings them
        self._loop = loop
        loop.call_later(TIMEOUT_SWEEP_SECS, self.sweep)

    def __getattr__(self, name):
        return getattr(self.server, name)

    def protocol_disconnected(self, protocol) -> None:
        self.protocols.pop(protocol, None)
        self.unheartbeating.discard(protocol)

    def park(self, protocol, inbox) -> bool:
        """Take an open socket off daphne's list, its small frames read for `inbox`
        (`receive_small_frames`); False (nothing changed) if daphne no longer lists it."""
        details = self.server.connections.pop(protocol, None)
        if details is None:
            return False
        self.protocols[protocol] = None
        self.unheartbeating.add(protocol)
        protocol.server = self
        if _small_frames_enabled(protocol):
            protocol.dataReceived = functools.partial(receive_small_frames, protocol, inbox)
        return True

    def sweep(self) -> None:
        try:
            now = time.time()
            ping_due = now - self.server.ping_interval  # daphne pings after ping_interval of silence
            due = [protocol for protocol in self.unheartbeating if protocol.last_ping < ping_due]
            lifetime = self.server.websocket_timeout
            if lifetime >= 0:
                for protocol in self.protocols:
                    if protocol.socket_opened >= now - lifetime:
                        break
                    due.append(protocol)
            for protocol in due:
                protocol.check_timeouts()
        except Exception:
            logger.exception("realtime: the timeout sweep over open sockets failed")
        finally:
            self._loop.call_later(TIMEOUT_SWEEP_SECS, self.sweep)


def _parked_sockets(server) -> ParkedSockets:
    parked = _parked.get(server)
    if parked is None:
        parked = _parked[server] = ParkedSockets(server, asyncio.get_running_loop())
    return parked


def _pformat_when_debugging(value) -> str:
    """autobahn's pformat, for its debug lines: empty unless txaio logs at debug (or trace)."""
    return pprint.pformat(value) if txaio.get_global_log_level() in ("debug", "trace") else ""


def share_protocol_options(protocol) -> bool:
    """Later protocols of this one's factory read autobahn's options from their class, and
    autobahn's debug listing of them is formatted only when logged. Same values, same log."""
    factory = getattr(protocol, "factory", None)
    protocol_class = type(protocol)
    names = getattr(protocol_class, "CONFIG_ATTRS", None)
    if factory is None or getattr(factory, "protocol", None) is not protocol_class or names is None:
        return False
    options = {name: getattr(factory, name) for name in names if hasattr(factory, name)}
    for name, value in options.items():
        if isinstance(value, types.FunctionType):  # e.g. perMessageCompressionAccept: not a method
            options[name] = staticmethod(value)
    factory.protocol = type(protocol_class.__name__, (protocol_class,), options)
    if autobahn_protocol.pformat is pprint.pformat:
        autobahn_protocol.pformat = _pformat_when_debugging
    return True


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


class DaphneSocket:
    """One daphne WebSocket whose protocol passed `check_fast_path`."""

    __slots__ = ("protocol", "standing")

    def __init__(self, protocol):
        self.protocol = protocol
        self.standing = None  # the future daphne watches once receiving is taken over, unless parked

    def limit_client_messages(self, max_message_bytes: int) -> None:
        """autobahn closes with 1009 (message too big) past this, before buffering the message."""
        self.protocol.maxMessagePayloadSize = max_message_bytes
        self.protocol.failByDrop = False  # send the close code rather than cutting the connection

    def refuse_handshake(self, status: int, reason: str, headers: list[tuple[str, str]]) -> bool:
        """Answer the handshake in progress with this HTTP status and headers, and close.

        daphne's own refusal (a `websocket.close` before `websocket.accept`) is always a 403
        without headers; a 503 needs Retry-After. The handshake's deferred is let go first, as
        daphne's refusal does, so nothing answers the request twice. False if it is not pending.
        """
        protocol = self.protocol
        if protocol.state != protocol.STATE_CONNECTING or not hasattr(protocol, "handshake_deferred"):
            return False
        del protocol.handshake_deferred
        protocol.sendHttpErrorResponse(status, reason, [*headers, ("Content-Length", "0")])
        protocol.wasClean = True  # a refusal we meant: autobahn logs it at debug, not as a warning
        protocol.dropConnection(abort=False)
        return True

    def take_over_receiving(self, inbox) -> bool:
        """Have daphne hand this open socket's messages to `inbox.put_nowait`, so the application
        task may end; call `receiving_ended` once `inbox` has the disconnect. False: not taken over.
        Once parked, a small text frame arriving alone comes to `inbox.text_received` instead,
        as its payload's bytes (`receive_small_frames`).

        daphne puts every frame and the disconnect into an asyncio.Queue per connection
        (`protocol.application_queue`) that the application task awaits, and watches that task
        in `server.connections`. An idle socket's task, its coroutine chain and its queue (four
        deques) were ~8 KB of the ~23 KB an idle socket cost (W3, tracemalloc), and every ping
        went through the queue and a task wake-up. Here the queue is replaced by `inbox`
        (what it held is passed on first, in order), and the socket leaves daphne's
        `connections` for ParkedSockets, which daphne's per-second sweeps do not walk; write
        to it with `send` from then on. Where parking is not possible, daphne watches a bare
        future in place of the task instead: it reaps the connection once `receiving_ended`
        sets it, and cancels it at shutdown, as it would the task.
        """
        protocol = self.protocol
        server = protocol.server
        connections = getattr(server, "connections", None)  # absent: keep the task
        details = connections.get(protocol) if isinstance(connections, dict) else None
        queue = getattr(protocol, "application_queue", None)
        if (
            protocol.state != protocol.STATE_OPEN
            or details is None
            or details.get("disconnected")
            or "application_instance" not in details
            or not isinstance(queue, asyncio.Queue)
        ):
            return False
        if _parking_enabled(protocol):
            _parked_sockets(server).park(protocol, inbox)  # details leave with it: nothing to reap
        else:
            self.standing = asyncio.get_running_loop().create_future()
            details["application_instance"] = self.standing
        protocol.application_queue = inbox
        protocol.clean_headers = ()  # the request headers daphne copied for the scope; read at the handshake
        while not queue.empty():
            inbox.put_nowait(queue.get_nowait())
        return True

    def receiving_ended(self) -> None:
        """The inbox had the disconnect: daphne may reap the connection (parked: already forgotten)."""
        standing, self.standing = self.standing, None
        if standing is not None and not standing.done():
            standing.set_result(None)

    def send(self, message: dict) -> bool:
        """An ASGI `websocket.send`/`websocket.close` for a parked socket, as daphne's
        `Server.handle_reply` would (dropped once disconnected); False if not parked: use `send`."""
        protocol = self.protocol
        parked = protocol.server
        if not isinstance(parked, ParkedSockets):
            return False
        if protocol in parked.protocols:
            protocol.handle_reply(message)
        return True

    def attach_flow_control(self, subscriber) -> bool:
        """Pause `subscriber` while the socket's send buffer is full, resume when it drains."""
        protocol = self.protocol
        if protocol.transport is None:
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

    def defer_ping(self, secs: float) -> None:
        """Hold daphne's own ping on this socket off for `secs`: its client heartbeats itself.

        Daphne pings a socket `--ping-interval` (20 s) after the last frame it received or ping
        it sent, to keep it alive and find dead peers. A client that pings every 25 s ± 20 %
        does both (the node closes it after two silent intervals), so daphne's pings only
        doubled the idle traffic: a fifth of the server's CPU with 10,000 idle sockets (W3
        profile, docs/benchmarks.md). Sockets whose clients do not ping keep daphne's pings. A
        parked socket instead leaves the sweep for good (ParkedSockets).
        """
        protocol = self.protocol
        server = protocol.server
        if type(server) is ParkedSockets:
            server.unheartbeating.discard(protocol)  # not swept: the node watches it from now on
            return
        # daphne pings at last_ping + ping_interval
        protocol.last_ping = time.time() + secs - server.ping_interval

    def write_text(self, payload: bytes, frame: bytes | None = None) -> bool:
        """Write one text message at once (`frame`: its `text_frame`, when built beforehand, as
        a pong's is); False if the socket is not open.

        autobahn's sendMessage ends in one frame handed to Twisted's transport, which buffers
        it, registers the socket for writability (two epoll_ctl calls and selector bookkeeping
        per frame) and writes it on the next loop turn: with autobahn's per-message bookkeeping,
        70 % of the node's dispatch time in a W1 profile (bench/realtime_throughput.py), where
        every socket gets its own frame. Here the frame is built once and, when Twisted holds
        nothing unsent for this socket, handed to the kernel directly; what the kernel does not
        take goes into Twisted's buffer as before, so order and flow control are unchanged.
        Raises autobahn's Disconnected if the socket went away under autobahn's own send.
        """
        protocol = self.protocol
        if protocol.state != protocol.STATE_OPEN:
            return False
        if (
            protocol.send_state != protocol.SEND_STATE_GROUND
            or protocol.send_queue
            or protocol._perMessageCompress
        ):
            protocol.sendMessage(payload)  # states autobahn tracks itself; our server never enters them
            return True
        if frame is None:
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
