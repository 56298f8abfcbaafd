"""A small HTTP/2 client for the push providers: one connection per origin, many streams in flight.

RFC 9113's client side framed here (frames parsed and built with `struct`, header blocks through
hpack) on an asyncio.Protocol, with no per-request task, future, pool, or frame or stream object
beyond a small record: a batch of requests is framed in one go, written to the socket in one
write, and each answer is put in its place in the batch's results. That is what makes a
provider's CPU per message small: a general client (httpcore, httpx) spends several times more
per request, and h2's state machine and frame objects were half of what was left
(docs/benchmarks.md, "Web Push: where the time goes").
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
import functools
import re
import ssl
import struct
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import hpack

# Our own cap on streams in flight per connection, below whatever the server allows: Apple
# advertises 1,000 once a provider token is accepted (and 1 before); more buys nothing.
MAX_STREAMS_PER_CONNECTION = 1000
# What makes urlsplit read a URL otherwise than "scheme://authority/path": a query, a fragment,
# spaces it strips, a scheme in capitals (it lowers them).
_SPLIT_ANYWAY = re.compile(r"[?# ]|^[^:]*[A-Z]")
# RFC 9113 §3.4, §4.1 (a frame's header: 24-bit length, type, flags, 31-bit stream id), §6.
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_HEADER = struct.Struct(">HBBBL")  # the 24-bit length as 16 + 8 bits
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY = range(8)
_WINDOW_UPDATE, _CONTINUATION = 8, 9
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
_SETTINGS_HEADER_TABLE_SIZE, _SETTINGS_ENABLE_PUSH, _SETTINGS_MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
_SETTINGS_INITIAL_WINDOW_SIZE, _SETTINGS_MAX_FRAME_SIZE = 0x4, 0x5
_ERROR_NAMES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}
_NO_ERROR, _PROTOCOL_ERROR, _FLOW_CONTROL_ERROR, _FRAME_SIZE_ERROR, _CANCEL = 0x0, 0x1, 0x3, 0x6, 0x8
_COMPRESSION_ERROR = 0x9
_DEFAULT_WINDOW = 65_535  # §6.9.2, until SETTINGS say otherwise
_DEFAULT_MAX_FRAME = 16_384  # §4.2; we never ask for larger frames
_LARGEST_FRAME = 2**24 - 1
_MAX_STREAM_ID = 2**31 - 1  # also the largest window (§6.9.1)
# What the server may send us before we replenish: an answer's body per stream (push services
# answer with at most a small JSON error), many answers on the connection; topped up when half
# is used.
_STREAM_WINDOW = 1 << 20
_CONNECTION_WINDOW = 1 << 24


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


class Http2Error(ConnectionError):
    """The connection failed, closed, or the server reset the stream; the request may be retried."""


class Http2NotSpokenError(Http2Error):
    """The server does not speak HTTP/2: ALPN chose another protocol, or the preface got no HTTP/2 answer."""


@dataclass(slots=True)
class Http2Response:
    status: int
    headers: dict[bytes, bytes]  # names lower case, as HTTP/2 sends them
    body: bytes


class _Batch:
    """One send_all()'s answers, put in place by the connections as they arrive; `done` once all are.

    A future per request, and asyncio.wait() over them, cost a loop callback per answer.
    """

    __slots__ = ("results", "left", "done")

    def __init__(self, size: int) -> None:
        self.results: list[Http2Response | Exception | None] = [None] * size
        self.left = 1  # the requests in flight, plus one until every request is submitted
        self.done = asyncio.get_running_loop().create_future()

    def add(self) -> None:
        self.left += 1

    def settle(self, index: int, result: Http2Response | Exception) -> None:
        if self.results[index] is None:
            self.results[index] = result
            self.release()

    def release(self) -> None:
        self.left -= 1
        if not self.left and not self.done.done():
            self.done.set_result(None)


@dataclass(slots=True, eq=False)
class _Stream:
    headers: list[tuple[bytes, bytes]]
    body: bytes
    batch: _Batch
    index: int  # in the batch's results
    stream_id: int = 0
    sent: int = 0  # bytes of body framed so far
    window: int = 0  # bytes we may still send on it (flow control)
    received: int = 0  # bytes of the answer's body received (kept only up to the client's cap)
    unacknowledged: int = 0  # flow-controlled bytes received since our last WINDOW_UPDATE for it
    status: int = 0
    response_headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return _FRAME_HEADER.pack(length >> 8, length & 0xFF, kind, flags, stream_id) + payload


def _reset_frame(stream_id: int, code: int) -> bytes:
    """RST_STREAM: the client stops a stream (cancelled, answered early, or broken by the server)."""
    return _frame(_RST_STREAM, 0, stream_id, struct.pack(">L", code))


class _ProtocolError(Exception):
    """The server broke RFC 9113: the connection ends with a GOAWAY carrying `code`."""

    def __init__(self, message: str, code: int = _PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection (RFC 9113, client side); every method runs on the event loop.

    Frames are parsed and built here, header blocks through hpack. Kept per connection: the
    server's settings, the stream ids, flow control both ways and the HPACK tables; per stream:
    its place in a batch's results, what is left of its body to send, and the answer as it arrives.
    """

    def __init__(self, max_streams: int, max_body_bytes: int | None = None) -> None:
        self.encoder = _PlainLiteralEncoder()
        self.decoder = hpack.Decoder()
        self.max_body_bytes = max_body_bytes
        self._answered = False  # whether any bytes came back yet
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.settings_received = asyncio.get_running_loop().create_future()
        self._max_streams = max_streams
        self._server_max_streams = _MAX_STREAM_ID  # unlimited until its SETTINGS say otherwise
        self._server_initial_window = _DEFAULT_WINDOW
        self._server_max_frame = _DEFAULT_MAX_FRAME
        self._send_window = _DEFAULT_WINDOW  # connection-level, what we may still send
        self._unacknowledged = 0  # connection-level bytes received since our last WINDOW_UPDATE
        self._next_stream_id = 1
        self._buffer = b""
        self._out: list[bytes] = []
        self._continuing: int | None = None  # stream whose header block awaits CONTINUATION
        self._block: list[bytes] = []
        self._block_ends_stream = False
        self._open: dict[int, _Stream] = {}
        self._queued: collections.deque[_Stream] = collections.deque()
        self._blocked: set[int] = set()  # streams waiting for flow-control window to send body

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        settings = struct.pack(
            ">HLHL", _SETTINGS_ENABLE_PUSH, 0, _SETTINGS_INITIAL_WINDOW_SIZE, _STREAM_WINDOW
        )
        increment = struct.pack(">L", _CONNECTION_WINDOW - _DEFAULT_WINDOW)
        transport.write(
            _PREFACE + _frame(_SETTINGS, 0, 0, settings) + _frame(_WINDOW_UPDATE, 0, 0, increment)
        )

    def data_received(self, data: bytes) -> None:
        first, self._answered = not self._answered, True
        if first and len(data) >= 4 and data[3] != _SETTINGS:
            # The server's first frame must be SETTINGS; this is e.g. "HTTP/1.1 400" to our preface.
            self._fail_all(Http2NotSpokenError("the server does not answer in HTTP/2"))
            self.transport.close()
            return
        buffer = self._buffer + data if self._buffer else data
        offset, end = 0, len(buffer)
        unpack = _FRAME_HEADER.unpack_from
        try:
            while end - offset >= 9:
                high, low, kind, flags, stream_id = unpack(buffer, offset)
                length = (high << 8) | low
                if length > _DEFAULT_MAX_FRAME:  # we never raise SETTINGS_MAX_FRAME_SIZE
                    raise _ProtocolError(f"a {length}-byte frame", _FRAME_SIZE_ERROR)
                if end - offset - 9 < length:
                    break
                payload = buffer[offset + 9 : offset + 9 + length]
                offset += 9 + length
                self._on_frame(kind, flags, stream_id & _MAX_STREAM_ID, payload)
        except (_ProtocolError, hpack.HPACKError, struct.error) as exc:
            code = exc.code if isinstance(exc, _ProtocolError) else _COMPRESSION_ERROR
            self._out.append(_frame(_GOAWAY, 0, 0, struct.pack(">LL", 0, code)))
            self._flush()
            self._fail_all(Http2Error(f"HTTP/2 protocol error: {exc!r}"))
            self.transport.close()
            return
        self._buffer = buffer[offset:]
        self._start_queued()
        self._flush()
        if self.closed and not self._open and self.transport is not None:
            self.transport.close()  # GOAWAY or no stream ids left, and nothing in flight

    def connection_lost(self, exc) -> None:
        self._fail_all(Http2Error(f"connection lost: {exc!r}" if exc else "connection closed by the server"))

    # -- requests ----------------------------------------------------------------------------
    def submit(self, headers: list[tuple[bytes, bytes]], body: bytes, batch: _Batch, index: int) -> _Stream:
        """Queue one request, answered into `batch` at `index`; call flush() after a batch of them."""
        batch.add()
        stream = _Stream(headers, body, batch, index)
        if self.closed:
            batch.settle(index, Http2Error("connection closed"))
        elif len(self._open) < self._stream_limit() and not self._queued:
            self._start(stream)
        else:
            self._queued.append(stream)
        return stream

    def cancel(self, streams: list[_Stream]) -> None:
        """Give up on requests (timed out): reset their streams or drop them from the queue."""
        for stream in streams:
            stream_id = stream.stream_id
            if stream_id and self._open.get(stream_id) is stream:
                del self._open[stream_id]
                self._blocked.discard(stream_id)
                if not self.closed:
                    self._out.append(_reset_frame(stream_id, _CANCEL))
        given_up = set(streams)
        self._queued = collections.deque(s for s in self._queued if s not in given_up)

    def flush(self) -> None:
        self._start_queued()
        self._flush()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            try:
                # §6.8: the last stream the server opened that we processed; it opens none.
                self._out.append(_frame(_GOAWAY, 0, 0, struct.pack(">LL", 0, _NO_ERROR)))
                self._flush()
            finally:
                self.transport.close()

    # -- internals ---------------------------------------------------------------------------
    def _stream_limit(self) -> int:
        return min(self._server_max_streams, self._max_streams)

    def _start(self, stream: _Stream) -> None:
        stream_id = self._next_stream_id
        if stream_id > _MAX_STREAM_ID:  # stream ids used up: the next send reconnects
            self.closed = True  # open streams finish, then data_received closes the transport
            error = Http2Error("cannot open a stream: stream ids used up")
            for waiting in [stream, *self._queued]:
                self._settle(waiting, error)
            self._queued.clear()
            return
        self._next_stream_id += 2
        block = self.encoder.encode(stream.headers)
        flags = _END_HEADERS if stream.body else _END_HEADERS | _END_STREAM
        max_frame = self._server_max_frame
        if len(block) <= max_frame:
            self._out.append(_frame(_HEADERS, flags, stream_id, block))
        else:  # §6.10: the rest of the block in CONTINUATION frames
            self._out.append(_frame(_HEADERS, flags & _END_STREAM, stream_id, block[:max_frame]))
            for start in range(max_frame, len(block), max_frame):
                last = _END_HEADERS if start + max_frame >= len(block) else 0
                self._out.append(_frame(_CONTINUATION, last, stream_id, block[start : start + max_frame]))
        stream.stream_id = stream_id
        stream.window = self._server_initial_window
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
            size = min(len(body) - stream.sent, stream.window, self._send_window, self._server_max_frame)
            if size <= 0:
                self._blocked.add(stream_id)
                return
            chunk = body[stream.sent : stream.sent + size]
            stream.sent += size
            stream.window -= size
            self._send_window -= size
            self._out.append(_frame(_DATA, _END_STREAM if stream.sent >= len(body) else 0, stream_id, chunk))
        self._blocked.discard(stream_id)

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuing is not None and (kind != _CONTINUATION or stream_id != self._continuing):
            raise _ProtocolError("a frame inside a header block")  # §6.10
        if kind == _HEADERS:
            if not stream_id:
                raise _ProtocolError("HEADERS on stream 0")
            payload = _unpadded(flags, payload)
            if flags & _PRIORITY_FLAG:
                payload = payload[5:]
            self._block = [payload]
            self._block_ends_stream = bool(flags & _END_STREAM)
            if flags & _END_HEADERS:
                self._on_header_block(stream_id)
            else:
                self._continuing = stream_id
        elif kind == _DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == _CONTINUATION:
            if self._continuing is None:
                raise _ProtocolError("CONTINUATION without HEADERS")
            self._block.append(payload)
            if flags & _END_HEADERS:
                self._continuing = None
                self._on_header_block(stream_id)
        elif kind == _SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif kind == _WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == _RST_STREAM:
            if not stream_id or len(payload) != 4:
                raise _ProtocolError("a malformed RST_STREAM")
            stream = self._open.pop(stream_id, None)
            self._blocked.discard(stream_id)
            if stream is not None:
                code = struct.unpack(">L", payload)[0]
                if code == _NO_ERROR and stream.status:  # §8.1: answered before the body was needed
                    self._complete(stream)
                else:
                    error = Http2Error(f"stream reset by the server ({_error_name(code)})")
                    stream.batch.settle(stream.index, error)
        elif kind == _PING:
            if stream_id or len(payload) != 8:
                raise _ProtocolError("a malformed PING")
            if not flags & _ACK:
                self._out.append(_frame(_PING, _ACK, 0, payload))
        elif kind == _GOAWAY:
            if stream_id or len(payload) < 8:
                raise _ProtocolError("a malformed GOAWAY")
            last, code = struct.unpack_from(">LL", payload)
            self.closed = True  # streams above last_stream_id were never processed
            error = Http2Error(f"the server closed the connection (GOAWAY {_error_name(code)})")
            for other in [s for s in self._open if s > last & _MAX_STREAM_ID]:
                self._settle(self._open.pop(other), error)
            while self._queued:
                self._settle(self._queued.popleft(), error)
        elif kind == _PUSH_PROMISE:
            raise _ProtocolError("PUSH_PROMISE, though we disabled push")  # §8.4
        # PRIORITY and unknown frame types are ignored (§5.3.2, §4.1).

    def _on_header_block(self, stream_id: int) -> None:
        # Decoded even for a stream we gave up on: both HPACK tables must stay in step (§4.3).
        headers = self.decoder.decode(b"".join(self._block), raw=True)
        self._block = []
        stream = self._open.get(stream_id)
        if stream is None:
            return
        if not stream.status:  # the answer's headers; a later block is trailers (ignored)
            status = next((value for name, value in headers if name == b":status"), b"0")
            if status[:1] == b"1":  # §8.1: an interim answer (100, 103), the final one follows
                return
            stream.response_headers = dict(headers)
            stream.status = int(status)
        if self._block_ends_stream:
            self._end(stream_id)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise _ProtocolError("DATA on stream 0")
        self._unacknowledged += len(payload)  # §6.9.1: padding counts
        if self._unacknowledged >= _CONNECTION_WINDOW // 2:
            self._out.append(_frame(_WINDOW_UPDATE, 0, 0, struct.pack(">L", self._unacknowledged)))
            self._unacknowledged = 0
        stream = self._open.get(stream_id)
        if stream is None:
            return
        data = _unpadded(flags, payload)
        if self.max_body_bytes is None:
            stream.chunks.append(data)
        elif stream.received < self.max_body_bytes:
            stream.chunks.append(data[: self.max_body_bytes - stream.received])
        stream.received += len(data)
        if flags & _END_STREAM:
            self._end(stream_id)
            return
        stream.unacknowledged += len(payload)
        if stream.unacknowledged >= _STREAM_WINDOW // 2:
            self._out.append(_frame(_WINDOW_UPDATE, 0, stream_id, struct.pack(">L", stream.unacknowledged)))
            stream.unacknowledged = 0

    def _end(self, stream_id: int) -> None:
        stream = self._open.pop(stream_id)
        if stream_id in self._blocked:  # answered before its body was sent: stop sending it
            self._blocked.discard(stream_id)
            self._out.append(_reset_frame(stream_id, _NO_ERROR))
        self._complete(stream)

    @staticmethod
    def _complete(stream: _Stream) -> None:
        response = Http2Response(stream.status, stream.response_headers, b"".join(stream.chunks))
        stream.batch.settle(stream.index, response)

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise _ProtocolError("SETTINGS on a stream")
        if flags & _ACK:
            return
        if len(payload) % 6:
            raise _ProtocolError("a malformed SETTINGS", _FRAME_SIZE_ERROR)
        for offset in range(0, len(payload), 6):
            code, value = struct.unpack_from(">HL", payload, offset)
            if code == _SETTINGS_HEADER_TABLE_SIZE:
                if value < self.encoder.header_table_size:  # the server's decoder keeps less
                    self.encoder.header_table_size = value
            elif code == _SETTINGS_MAX_CONCURRENT_STREAMS:
                self._server_max_streams = value
            elif code == _SETTINGS_INITIAL_WINDOW_SIZE:
                if value > _MAX_STREAM_ID:
                    raise _ProtocolError("SETTINGS_INITIAL_WINDOW_SIZE too large", _FLOW_CONTROL_ERROR)
                delta, self._server_initial_window = value - self._server_initial_window, value
                for stream in self._open.values():  # §6.9.2: open streams' windows move by as much
                    stream.window += delta
                    if stream.window > _MAX_STREAM_ID:
                        raise _ProtocolError("a stream's window over 2^31-1", _FLOW_CONTROL_ERROR)
            elif code == _SETTINGS_MAX_FRAME_SIZE:
                if not _DEFAULT_MAX_FRAME <= value <= _LARGEST_FRAME:
                    raise _ProtocolError("SETTINGS_MAX_FRAME_SIZE out of range")
                self._server_max_frame = value
        self._out.append(_frame(_SETTINGS, _ACK, 0))
        self._resume_blocked()
        if not self.settings_received.done():
            self.settings_received.set_result(None)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ProtocolError("a malformed WINDOW_UPDATE", _FRAME_SIZE_ERROR)
        increment = struct.unpack(">L", payload)[0] & _MAX_STREAM_ID
        if not stream_id:
            if not increment:
                raise _ProtocolError("a WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > _MAX_STREAM_ID:
                raise _ProtocolError("the connection's window overflowed", _FLOW_CONTROL_ERROR)
            self._resume_blocked()
            return
        stream = self._open.get(stream_id)
        if stream is None:
            return
        # §6.9, §6.9.1: stream errors; the stream's request fails, the connection goes on.
        if not increment:
            return self._reset(stream_id, _PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
        stream.window += increment
        if stream.window > _MAX_STREAM_ID:
            return self._reset(stream_id, _FLOW_CONTROL_ERROR, "its window over 2^31-1")
        if stream_id in self._blocked:
            self._send_body(stream)

    def _reset(self, stream_id: int, code: int, reason: str) -> None:
        """Ends a stream the server broke the protocol on (RST_STREAM carrying `code`)."""
        stream = self._open.pop(stream_id)
        self._blocked.discard(stream_id)
        self._out.append(_reset_frame(stream_id, code))
        self._settle(stream, Http2Error(f"stream reset by us ({_error_name(code)}): {reason}"))

    def _resume_blocked(self) -> None:
        for stream_id in list(self._blocked):
            if stream_id in self._open:
                self._send_body(self._open[stream_id])
            else:
                self._blocked.discard(stream_id)

    def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            if self.transport is not None and not self.transport.is_closing():
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
        stream.batch.settle(stream.index, error)


def _unpadded(flags: int, payload: bytes) -> bytes:
    if not flags & _PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise _ProtocolError("padding as long as the frame")  # §6.1
    return payload[1 : len(payload) - payload[0]]


def _error_name(code: int) -> str:
    return _ERROR_NAMES.get(code, f"error code {code}")


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
        batch = _Batch(len(requests))
        results = batch.results
        streams: dict[_Connection, list[_Stream]] = {}
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
            submitted = streams.setdefault(connection, [])
            for index in indexes:
                request = requests[index]
                path = (b":path", paths[index])
                headers = [
                    *head,
                    hpack.NeverIndexedHeaderTuple(*path) if per_request else path,
                    *request.headers,
                ]
                submitted.append(connection.submit(headers, request.body, batch, index))
            connection.flush()
        batch.release()  # every request is submitted
        if streams:
            try:
                async with asyncio.timeout(timeout):
                    await batch.done
            except TimeoutError:
                for connection, submitted in streams.items():
                    unanswered = [stream for stream in submitted if results[stream.index] is None]
                    connection.cancel(unanswered)
                    for stream in unanswered:
                        results[stream.index] = TimeoutError(f"no answer within {timeout} s")
            for connection in streams:
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
