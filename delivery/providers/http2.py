"""A small HTTP/2 client for the push providers: one connection per origin, many streams in flight.

Built on h2's public API (the sans-I/O protocol) and an asyncio.Protocol, with no per-request
task, pool or stream object above h2: a batch of requests is framed in one go, written to the
socket in one write, and each answer settles a future. That is what makes a provider's CPU per
message small; a general client (httpcore, httpx) spends several times more per request.
Runs on a provider's BackgroundLoop. `https://` negotiates h2 by ALPN; `http://` speaks HTTP/2
with prior knowledge (cleartext, for local fakes). A server that turns out not to speak HTTP/2
(ALPN chose something else, or it answered the preface with something that is not HTTP/2) fails
its requests with Http2NotSpokenError, so a caller with an HTTP/1.1 path can use that instead.
A caller may pass its own `open_connection` (e.g. notifyproject.outbound's guarded one).
See docs/providers.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import re
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hpack

# Our own cap on streams in flight per connection, below whatever the server allows: Apple
# advertises 1,000 once a provider token is accepted (and 1 before); more buys nothing.
MAX_STREAMS_PER_CONNECTION = 1000
_SETTINGS_FRAME_TYPE = b"\x04"  # RFC 9113 §6.5; the 4th byte of a frame (after its 24-bit length)
# What makes urlsplit read a URL otherwise than "scheme://authority/path": a query, a fragment,
# spaces it strips, a scheme in capitals (it lowers them).
_SPLIT_ANYWAY = re.compile(r"[?# ]|^[^:]*[A-Z]")
# Validation would check every header of every request; ours are built by our own code.
_CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
)


class _PlainLiteralEncoder(hpack.Encoder):
    """HPACK without Huffman coding, remembering what it encoded while the table stays the same.

    Headers that repeat go as table indexes either way; what is left literal is per request (a
    device's path, an apns-id), and hpack's pure-Python Huffman coding of it cost more CPU than
    the rest of the request's framing to save about 30 bytes (an APNs request's header block:
    ~110 µs with Huffman and the table churning, ~30 µs without either). Until the table changes
    (an entry added, or a size update), a header found whole in it encodes to the same index,
    and a never-indexed header's name to the same prefix: both are reused instead of searching
    the table again for each request of a batch.
    """

    MAX_REMEMBERED = 256  # far above what a 4 KiB table holds; a bound, not a tuning knob

    def __init__(self) -> None:
        super().__init__()
        self._indexed: dict[tuple, bytes] = {}  # header -> its indexed field
        self._never_indexed: dict[bytes, bytes] = {}  # name -> a never-indexed literal's prefix

    def encode(self, headers, huffman=True) -> bytes:
        if self.header_table.resized or isinstance(headers, dict):
            self._forget()
            return super().encode(headers, huffman=False)
        indexed = self._indexed
        block = []
        for header in headers:
            encoded = indexed.get(header)
            if encoded is None:
                encoded = self._encode_one(header)
            block.append(encoded)
        return b"".join(block)

    def _encode_one(self, header) -> bytes:
        name, value = header[0], header[1]
        name = name if isinstance(name, bytes) else str(name).encode()
        value = value if isinstance(value, bytes) else str(value).encode()
        if isinstance(header, hpack.HeaderTuple):
            sensitive = not header.indexable
        else:
            sensitive = len(header) > 2 and bool(header[2])
        if sensitive:
            prefix = self._never_indexed.get(name)
            if prefix is not None:
                return prefix + _literal_length(len(value)) + value
        encoded = self.add((name, value), sensitive, huffman=False)
        if len(self._indexed) + len(self._never_indexed) >= self.MAX_REMEMBERED:
            self._forget()
        if encoded[0] & 0x80:  # RFC 7541 §6.1, an indexed field: the table is unchanged
            self._indexed[header] = encoded
        elif sensitive:  # §6.2.3, never indexed: the prefix (name), then the value's length and bytes
            literal = len(_literal_length(len(value))) + len(value)
            self._never_indexed[name] = encoded[: len(encoded) - literal]
        else:  # added to the table (§6.2.1): every remembered index has moved
            self._forget()
        return encoded

    def _forget(self) -> None:
        self._indexed.clear()
        self._never_indexed.clear()


def _literal_length(length: int) -> bytes:
    """A string literal's length, not Huffman-coded: RFC 7541 §5.1's integer with a 7-bit prefix."""
    if length < 0x7F:
        return bytes((length,))
    out, length = bytearray((0x7F,)), length - 0x7F
    while length >= 0x80:
        out.append((length & 0x7F) | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out)


class _H2Connection(h2.connection.H2Connection):
    """h2's connection, told the number of open streams by its owner (`owned_streams`).

    h2 counts them by walking every stream it holds, for each new stream: quadratic in the
    streams a batch puts in flight (an eighth of the worker's CPU in a 250-request FCM batch).
    The owner's streams started and not yet ended or reset are the same number. h2's walk,
    which also forgets closed streams, then runs once per batch (`forget_closed`).
    """

    owned_streams: dict | None = None

    @property
    def open_outbound_streams(self) -> int:
        if self.owned_streams is None:
            return super().open_outbound_streams
        return len(self.owned_streams)

    def forget_closed(self) -> None:
        super().open_outbound_streams  # noqa: B018 - h2's count, for its side effect


class Http2Error(ConnectionError):
    """The connection failed, closed, or the server reset the stream; the request may be retried."""


class Http2NotSpokenError(Http2Error):
    """The server does not speak HTTP/2: ALPN chose another protocol, or the preface got no HTTP/2 answer."""


@dataclass(slots=True)
class Http2Response:
    status: int
    headers: dict[bytes, bytes]  # names lower case, as HTTP/2 sends them
    body: bytes


@dataclass(slots=True, eq=False)
class _Stream:
    headers: list[tuple[bytes, bytes]]
    body: bytes
    future: asyncio.Future
    stream_id: int = 0
    sent: int = 0  # bytes of body framed so far
    received: int = 0  # bytes of the answer's body received (kept only up to the client's cap)
    status: int = 0
    response_headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection; every method runs on the event loop."""

    def __init__(self, max_streams: int, max_body_bytes: int | None = None) -> None:
        self.h2 = _H2Connection(config=_CONFIG)
        if type(getattr(self.h2, "encoder", None)) is hpack.Encoder:  # h2's own, replaced before use
            self.h2.encoder = _PlainLiteralEncoder()
        self.max_body_bytes = max_body_bytes
        self._answered = False  # whether any bytes came back yet
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.settings_received = asyncio.get_running_loop().create_future()
        self._max_streams = max_streams
        self._limit: int | None = None
        self._open: dict[int, _Stream] = {}
        self.h2.owned_streams = self._open
        self._queued: collections.deque[_Stream] = collections.deque()
        self._blocked: set[int] = set()  # streams waiting for flow-control window to send body

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.h2.initiate_connection()
        transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        first, self._answered = not self._answered, True
        if first and len(data) >= 4 and data[3:4] != _SETTINGS_FRAME_TYPE:
            # The server's first frame must be SETTINGS; this is e.g. "HTTP/1.1 400" to our preface.
            self._fail_all(Http2NotSpokenError("the server does not answer in HTTP/2"))
            self.transport.close()
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail_all(Http2Error(f"HTTP/2 protocol error: {exc!r}"))
            self.transport.close()
            return
        for event in events:
            self._on_event(event)
        self._start_queued()
        self._flush()
        if self.closed and not self._open and self.transport is not None:
            self.transport.close()  # GOAWAY or no stream ids left, and nothing in flight

    def connection_lost(self, exc) -> None:
        self._fail_all(Http2Error(f"connection lost: {exc!r}" if exc else "connection closed by the server"))

    # -- requests ----------------------------------------------------------------------------
    def submit(self, headers: list[tuple[bytes, bytes]], body: bytes) -> asyncio.Future:
        """Queue one request; call flush() after a batch of them."""
        future = asyncio.get_running_loop().create_future()
        stream = _Stream(headers, body, future)
        if self.closed:
            future.set_exception(Http2Error("connection closed"))
        elif len(self._open) < self._stream_limit() and not self._queued:
            self._start(stream)
        else:
            self._queued.append(stream)
        return future

    def cancel(self, future: asyncio.Future) -> None:
        """Give up on a request (timed out): reset its stream or drop it from the queue."""
        for stream_id, stream in list(self._open.items()):
            if stream.future is future:
                del self._open[stream_id]
                self._blocked.discard(stream_id)
                if not self.closed:
                    with contextlib.suppress(h2.exceptions.ProtocolError):  # already closed there
                        self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                return
        self._queued = collections.deque(s for s in self._queued if s.future is not future)

    def flush(self) -> None:
        self.h2.forget_closed()
        self._start_queued()
        self._flush()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            try:
                self.h2.close_connection()
                self._flush()
            finally:
                self.transport.close()

    # -- internals ---------------------------------------------------------------------------
    def _stream_limit(self) -> int:
        """Kept until the server's settings change: h2's settings lookup costs per request."""
        if self._limit is None:
            self._limit = min(self.h2.remote_settings.max_concurrent_streams, self._max_streams)
        return self._limit

    def _start(self, stream: _Stream) -> None:
        try:
            stream_id = self.h2.get_next_available_stream_id()
            self.h2.send_headers(stream_id, stream.headers, end_stream=not stream.body)
        except h2.exceptions.ProtocolError as exc:  # e.g. stream ids used up: the next send reconnects
            self.closed = True  # open streams finish, then data_received closes the transport
            error = Http2Error(f"cannot open a stream: {exc!r}")
            for waiting in [stream, *self._queued]:
                self._settle(waiting, error)
            self._queued.clear()
            return
        stream.stream_id = stream_id
        self._open[stream_id] = stream
        if stream.body:
            self._send_body(stream)

    def _start_queued(self) -> None:
        limit = self._stream_limit()
        while self._queued and len(self._open) < limit and not self.closed:
            self._start(self._queued.popleft())

    def _send_body(self, stream: _Stream) -> None:
        body, stream_id = stream.body, stream.stream_id
        while stream.sent < len(body):
            window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if window <= 0:
                self._blocked.add(stream_id)
                return
            chunk = body[stream.sent : stream.sent + window]
            stream.sent += len(chunk)
            self.h2.send_data(stream_id, chunk, end_stream=stream.sent >= len(body))
        self._blocked.discard(stream_id)

    def _on_event(self, event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self._open.get(event.stream_id)
            if stream is not None:
                stream.response_headers = dict(event.headers)
                stream.status = int(stream.response_headers.get(b":status", b"0"))
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self._open.get(event.stream_id)
            if stream is not None:
                if self.max_body_bytes is None:
                    stream.chunks.append(event.data)
                elif stream.received < self.max_body_bytes:
                    stream.chunks.append(event.data[: self.max_body_bytes - stream.received])
                stream.received += len(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._open.pop(event.stream_id, None)
            if event.stream_id in self._blocked:  # answered before its body was sent: stop sending it
                self._blocked.discard(event.stream_id)
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.h2.reset_stream(event.stream_id, h2.errors.ErrorCodes.NO_ERROR)
            if stream is not None and not stream.future.done():
                response = Http2Response(stream.status, stream.response_headers, b"".join(stream.chunks))
                stream.future.set_result(response)
        elif isinstance(event, h2.events.StreamReset):
            stream = self._open.pop(event.stream_id, None)
            self._blocked.discard(event.stream_id)
            if stream is not None and not stream.future.done():
                stream.future.set_exception(Http2Error(f"stream reset by the server ({event.error_code!r})"))
        elif isinstance(event, h2.events.WindowUpdated):
            for stream_id in list(self._blocked) if event.stream_id == 0 else [event.stream_id]:
                if stream_id in self._blocked and stream_id in self._open:
                    self._send_body(self._open[stream_id])
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._limit = None
            if not self.settings_received.done():
                self.settings_received.set_result(None)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed = True  # GOAWAY: streams above last_stream_id were never processed
            error = Http2Error(f"the server closed the connection (GOAWAY {event.error_code!r})")
            last = event.last_stream_id or 0
            for stream_id in [s for s in self._open if s > last]:
                self._settle(self._open.pop(stream_id), error)
            while self._queued:
                self._settle(self._queued.popleft(), error)

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail_all(self, error: Exception) -> None:
        self.closed = True
        if not self.settings_received.done():
            self.settings_received.set_exception(error)
            self.settings_received.exception()  # retrieved: no "never retrieved" warning
        streams = [*self._open.values(), *self._queued]
        self._open.clear()
        self._queued.clear()
        for stream in streams:
            self._settle(stream, error)

    @staticmethod
    def _settle(stream: _Stream, error: Exception) -> None:
        if not stream.future.done():
            stream.future.set_exception(error)


@dataclass(frozen=True, slots=True)
class Http2Request:
    url: str
    headers: list[tuple[bytes, bytes]]  # regular headers, lower-case names
    body: bytes = b""


def _request_target(url: str) -> tuple[tuple[str, str, int], tuple[bytes, bytes], bytes]:
    """(scheme, host, port), the `:authority` header and the `:path` of a URL, as urlsplit reads it.

    A URL without query, fragment or characters urlsplit drops is cut at its first slash after
    the authority (the part urlsplit reads is judged once per authority); any other is split.
    """
    start = url.find("://") + 3
    slash = url.find("/", start)
    if start > 2 and slash > 0 and url.isascii() and url.isprintable() and not _SPLIT_ANYWAY.search(url):
        origin, authority = _origin(url[:slash])
        return origin, authority, url[slash:].encode()
    parts = urlsplit(url)
    origin, authority = _origin(f"{parts.scheme}://{parts.netloc}")
    return origin, authority, (parts.path + (f"?{parts.query}" if parts.query else "")).encode()


@functools.lru_cache(maxsize=1024)
def _origin(scheme_netloc: str) -> tuple[tuple[str, str, int], tuple[bytes, bytes]]:
    parts = urlsplit(scheme_netloc)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.scheme, parts.hostname or "", port), (b":authority", parts.netloc.encode())


class Http2Client:
    """HTTP/2 connections of one provider in one process, one per origin; use only on its loop."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
        max_streams: int = MAX_STREAMS_PER_CONNECTION,
        *,
        open_connection=None,
        alpn_protocols: tuple[str, ...] = ("h2",),
        max_body_bytes: int | None = None,
    ) -> None:
        """`open_connection`: a coroutine function like loop.create_connection (default: that);
        `alpn_protocols`: offered by TLS, h2 first (add "http/1.1" to learn that a server prefers it);
        `max_body_bytes`: keep at most this much of each answer's body (the rest is read and dropped).
        """
        self._ssl = ssl_context
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(list(alpn_protocols))
        self._open_connection = open_connection
        self._max_body_bytes = max_body_bytes
        self._connect_timeout = connect_timeout
        self._max_streams = max_streams
        self._connections: dict[tuple[str, str, int], _Connection] = {}
        self._connecting: dict[tuple[str, str, int], asyncio.Future] = {}
        self.connections_made = 0

    async def send_all(self, requests: list[Http2Request], timeout: float) -> list[Http2Response | Exception]:
        """POST every request, all in flight at once; each gets its answer or the exception it met.

        A request unanswered `timeout` seconds after the batch was written gets a TimeoutError.
        """
        prefix: dict[tuple[str, str, int], list[tuple[bytes, bytes]]] = {}
        by_origin: dict[tuple[str, str, int], list[int]] = {}
        paths: list[bytes] = []
        for index, request in enumerate(requests):
            origin, authority, path = _request_target(request.url)
            by_origin.setdefault(origin, []).append(index)
            if origin not in prefix:
                prefix[origin] = [(b":method", b"POST"), (b":scheme", origin[0].encode()), authority]
            paths.append(path)
        results: list[Http2Response | Exception | None] = [None] * len(requests)
        waiting: dict[asyncio.Future, tuple[int, _Connection]] = {}
        for origin, indexes in by_origin.items():
            try:
                connection = await self._connection(origin)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                error = exc
                if not isinstance(exc, TimeoutError | Http2Error):
                    error = Http2Error(repr(exc))
                    error.__cause__ = exc  # e.g. outbound.RefusedAddressError, for the caller to recognise
                for index in indexes:
                    results[index] = error
                continue
            head = prefix[origin]
            # A path per device (APNs, Web Push) would evict the headers that do repeat from
            # the HPACK table, so each is sent unindexed; one path for the batch (FCM) is indexed.
            per_request = len({paths[i] for i in indexes}) > 1
            for index in indexes:
                request = requests[index]
                path = (b":path", paths[index])
                headers = [
                    *head,
                    hpack.NeverIndexedHeaderTuple(*path) if per_request else path,
                    *request.headers,
                ]
                waiting[connection.submit(headers, request.body)] = (index, connection)
            connection.flush()
        if waiting:
            done, pending = await asyncio.wait(waiting, timeout=timeout)
            for future in done:
                exc = future.exception()
                results[waiting[future][0]] = exc if exc is not None else future.result()
            for future in pending:
                index, connection = waiting[future]
                connection.cancel(future)
                future.cancel()
                results[index] = TimeoutError(f"no answer within {timeout} s")
            for connection in {connection for _, connection in waiting.values()}:
                connection.flush()
        return results

    async def _connection(self, origin: tuple[str, str, int]) -> _Connection:
        connection = self._connections.get(origin)
        if connection is not None and not connection.closed:
            return connection
        connecting = self._connecting.get(origin)
        if connecting is None:
            connecting = self._connecting[origin] = asyncio.ensure_future(self._connect(origin))
            connecting.add_done_callback(lambda _: self._connecting.pop(origin, None))
        return await asyncio.shield(connecting)

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl if scheme == "https" else None
        connection = None
        open_connection = self._open_connection or loop.create_connection
        try:
            async with asyncio.timeout(self._connect_timeout):
                _transport, connection = await open_connection(
                    lambda: _Connection(self._max_streams, self._max_body_bytes),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                )
                if tls is not None:
                    protocol = connection.transport.get_extra_info("ssl_object").selected_alpn_protocol()
                    if protocol != "h2":
                        raise Http2NotSpokenError(f"{host}:{port} does not speak HTTP/2 (ALPN {protocol!r})")
                await connection.settings_received  # the server's stream limit, before the first request
        except BaseException:
            if connection is not None and connection.transport is not None:
                connection.transport.close()
            raise
        self._connections[origin] = connection
        self.connections_made += 1
        return connection

    async def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
