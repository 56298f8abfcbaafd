"""A lean cleartext HTTP/2 server connection (RFC 9113) for a fake that answers many small requests.

h2's state machine, its frame objects and its per-request header validation were about two
thirds of the fake push service's CPU per message, more than the decryption it exists for.
This connection parses frames with `struct`, decodes the requests' header blocks itself
(RFC 7541, RequestDecoder) and encodes the answers' with hpack (Huffman-coded, as push services
send them). It keeps only what a server must: the preface and SETTINGS exchange, stream ids and
the concurrent-stream limit, header blocks across CONTINUATION frames, padding, flow control
both ways, PING, RST_STREAM and GOAWAY. Requests are checked against RFC 9113 §8.2-§8.3
(lower-case names, no connection-specific fields, the pseudo-headers once each and first) and a
malformed one is reset, as h2 would. The handler is synchronous, `(method, path, headers, body)
-> (status, headers, body)`, called when the request is complete; a delay (the fake's latency)
before the answer is waited out on a timer, and the answers due together go out in one write.
Used through tests/fakes/_h2.py's BackgroundH2Server(connection_class=LeanConnection).
"""

from __future__ import annotations

import asyncio
import collections
import re
import struct

import hpack

from ._h2 import Headers

try:  # hpack's Huffman and static tables, not its public API: RequestDecoder needs them
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
    from hpack.huffman_table import decode_huffman
    from hpack.table import HeaderTable
except ImportError:  # moved in some hpack release: hpack's own Decoder and Encoder instead
    decode_huffman = HeaderTable = REQUEST_CODES = REQUEST_CODES_LENGTH = None

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = struct.Struct(">HBBBL")  # 24-bit length as 16 + 8 bits, type, flags, stream id
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE = range(9)
CONTINUATION = 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0x0, 0x1, 0x3, 0x5
FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR = 0x6, 0x7, 0x9
SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x3, 0x4, 0x5
DEFAULT_WINDOW = 65_535  # RFC 9113 §6.9.2, until SETTINGS say otherwise
DEFAULT_MAX_FRAME = 16_384  # RFC 9113 §4.2
MAX_WINDOW = 2**31 - 1
MAX_CONCURRENT_STREAMS = 1000
# What a client may send before we replenish: a stream's window per request (push bodies are at
# most 4 KiB), the connection's for many requests in flight; topped up when half is used, as
# h2's window manager does.
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 1 << 24
# RFC 9113 §8.2: field names are lower-case tokens; values carry no NUL, CR or LF and no
# leading or trailing whitespace. §8.2.2: these fields are connection-specific.
FIELD_NAME = re.compile(r"^:?[!#$%&'*+\-.^_`|~0-9a-z]+$")
FIELD_VALUE = re.compile(r"^(?:[^\x00\r\n \t](?:[^\x00\r\n]*[^\x00\r\n \t])?)?$")
CONNECTION_SPECIFIC = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
REQUEST_PSEUDO = frozenset({":method", ":scheme", ":path", ":authority"})
SETTINGS_HEADER_TABLE_SIZE = 0x1
# Answer fields unique to each answer: sent never indexed, so the fields that do repeat keep
# their places in the HPACK table (and their encodings in AnswerEncoder) instead of churning.
UNIQUE_ANSWER_FIELDS = frozenset({"location"})
REMEMBERED_FIELDS = 256  # fields whose check or encoding is kept per connection; a bound, not a knob


class _ConnectionError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return FRAME_HEADER.pack(length >> 8, length & 0xFF, kind, flags, stream_id) + payload


def request_problem(headers: list[tuple[str, str]], valid: set | None = None) -> str | None:
    """Why this request's header list is malformed (RFC 9113 §8.2-§8.3), or None.

    `valid`: fields already found well-formed on this connection (checked once, added here).
    """
    seen: set[str] = set()
    regular = False
    for field in headers:
        name, value = field
        if valid is None or field not in valid:
            if not FIELD_NAME.match(name) or not FIELD_VALUE.match(value):
                return f"invalid field {name!r}"
            if valid is not None and name != ":path" and len(valid) < REMEMBERED_FIELDS:
                valid.add(field)  # the path differs per request; the others repeat
        if name[0] == ":":
            if regular or name not in REQUEST_PSEUDO or name in seen:
                return f"misplaced, unknown or repeated pseudo-header {name!r}"
            seen.add(name)
        else:
            regular = True
            if name in CONNECTION_SPECIFIC or (name == "te" and value != "trailers"):
                return f"connection-specific field {name!r}"
    if not {":method", ":scheme", ":path"} <= seen:
        return "a request needs :method, :scheme and :path"
    return None


STATIC_TABLE = [(name.decode(), value.decode()) for name, value in getattr(HeaderTable, "STATIC_TABLE", ())]
HPACK_TABLE_SIZE = 4096  # RFC 7541 §4.2 / RFC 9113 §6.5.2: the default we leave in place
HPACK_ENTRY_OVERHEAD = 32  # RFC 7541 §4.1
MAX_HEADER_LIST_BYTES = 64 * 1024  # as hpack's decoder allows by default


class RequestDecoder:
    """RFC 7541 decoding of the requests' header blocks, to (name, value) strings.

    hpack's Decoder builds and checks a HeaderTuple per field through several calls; this is
    the same decoding in one loop (the table, integers, literals, Huffman-coded strings through
    hpack's own table). tests/fakes/test_fakes.py checks it against hpack's decoder.
    """

    def __init__(self) -> None:
        self.dynamic: collections.deque[tuple[str, str, int]] = collections.deque()  # newest first
        self.size = 0
        self.max_size = HPACK_TABLE_SIZE

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        try:
            return self._decode(block)
        except (IndexError, ValueError) as exc:  # truncated, or not UTF-8
            raise hpack.HPACKDecodingError(f"malformed header block: {exc!r}") from exc

    def _decode(self, block: bytes) -> list[tuple[str, str]]:
        fields: list[tuple[str, str]] = []
        offset, end, listed = 0, len(block), 0
        while offset < end:
            first = block[offset]
            if first & 0x80:  # §6.1, an indexed field
                index, offset = _integer(block, offset, 7)
                field = self._entry(index)
            elif first & 0x40:  # §6.2.1, a literal added to the table
                field, offset = self._literal(block, offset, 6)
                self._add(field)
            elif first & 0x20:  # §6.3, a table size update
                if fields:
                    raise hpack.HPACKDecodingError("a table size update after a field")  # §4.2
                size, offset = _integer(block, offset, 5)
                if size > HPACK_TABLE_SIZE:
                    raise hpack.HPACKDecodingError(f"table size {size} above what we allow")
                self.max_size = size
                self._evict()
                continue
            else:  # §6.2.2 and §6.2.3, literals not added
                field, offset = self._literal(block, offset, 4)
            listed += len(field[0]) + len(field[1]) + HPACK_ENTRY_OVERHEAD
            if listed > MAX_HEADER_LIST_BYTES:
                raise hpack.HPACKDecodingError("header list too large")
            fields.append(field)
        return fields

    def _entry(self, index: int) -> tuple[str, str]:
        if index <= len(STATIC_TABLE):
            if not index:
                raise ValueError("index 0")  # §6.1
            return STATIC_TABLE[index - 1]
        position = index - len(STATIC_TABLE) - 1
        if position >= len(self.dynamic):
            raise ValueError(f"no table entry {index}")
        name, value, _ = self.dynamic[position]
        return name, value

    def _literal(self, block: bytes, offset: int, prefix: int) -> tuple[tuple[str, str], int]:
        index, offset = _integer(block, offset, prefix)
        if index:
            name = self._entry(index)[0]
        else:
            name, offset = _string(block, offset)
        value, offset = _string(block, offset)
        return (name, value), offset

    def _add(self, field: tuple[str, str]) -> None:
        size = len(field[0].encode()) + len(field[1].encode()) + HPACK_ENTRY_OVERHEAD
        self.dynamic.appendleft((*field, size))
        self.size += size
        self._evict()

    def _evict(self) -> None:
        while self.size > self.max_size:
            self.size -= self.dynamic.pop()[2]


def _integer(block: bytes, offset: int, prefix: int) -> tuple[int, int]:
    """RFC 7541 §5.1: an integer with an N-bit prefix; (value, offset after it)."""
    mask = (1 << prefix) - 1
    value = block[offset] & mask
    offset += 1
    if value < mask:
        return value, offset
    shift = 0
    while True:
        byte = block[offset]
        offset += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
        if shift > 28:
            raise ValueError("integer too large")


def _string(block: bytes, offset: int) -> tuple[str, int]:
    """RFC 7541 §5.2: a string literal, Huffman-coded or not; (text, offset after it)."""
    huffman = block[offset] & 0x80
    length, offset = _integer(block, offset, 7)
    raw = block[offset : offset + length]
    if len(raw) != length:
        raise ValueError("truncated string")
    return (decode_huffman(raw) if huffman else raw).decode(), offset + length


class AnswerEncoder:
    """HPACK for the answers, Huffman-coded as push services send them, with hpack's encoder.

    A field that repeats (`:status`, `content-length`, `ttl`) is added to the table once and
    then sent as its index; while the table is unchanged, that index's bytes are reused instead
    of searching the table again for each answer.
    """

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()
        self.indexed: dict[tuple[str, str], bytes] = {}
        self.names: dict[str, bytes] = {}  # a never-indexed field's name part, per name

    def resize(self, size: int) -> None:
        """The client's SETTINGS_HEADER_TABLE_SIZE: its decoder's table bound."""
        self.encoder.header_table_size = size
        self.indexed.clear()

    def encode(self, fields: list[tuple[str, str]]) -> bytes:
        block = []
        for field in fields:
            if field[0] in UNIQUE_ANSWER_FIELDS:
                block.append(self._never_indexed(field))
                continue
            encoded = self.indexed.get(field)
            if encoded is None:
                encoded = self.encoder.encode([field])
                if encoded[0] & 0x80 and len(self.indexed) < REMEMBERED_FIELDS:  # §6.1: indexed
                    self.indexed[field] = encoded
                else:  # added to the table (or a size update went first): every index moved
                    self.indexed.clear()
            block.append(encoded)
        return b"".join(block)

    def _never_indexed(self, field: tuple[str, str]) -> bytes:
        """RFC 7541 §6.2.3, the name as hpack encodes it and the value Huffman-coded here."""
        if REQUEST_CODES is None:
            return self.encoder.encode([hpack.NeverIndexedHeaderTuple(*field)])
        prefix = self.names.get(field[0])
        if prefix is None:  # the name's part (its static index, or the literal name), before "x"
            prefix = self.names[field[0]] = self.encoder.encode(
                [hpack.NeverIndexedHeaderTuple(field[0], "x")], huffman=False
            )[:-2]
        value = huffman_encode(field[1].encode())
        return prefix + _length(len(value), 0x80) + value


def huffman_encode(data: bytes) -> bytes:
    """RFC 7541 §5.2 and Appendix B: the codes one after another, padded with the EOS prefix (ones)."""
    codes, lengths = REQUEST_CODES, REQUEST_CODES_LENGTH
    number = bits = 0
    for byte in data:
        number = (number << lengths[byte]) | codes[byte]
        bits += lengths[byte]
    padding = -bits % 8
    return ((number << padding) | ((1 << padding) - 1)).to_bytes((bits + padding) // 8, "big")


def _length(length: int, flag: int) -> bytes:
    """A string's length, RFC 7541 §5.1's integer with a 7-bit prefix, under the Huffman flag."""
    if length < 0x7F:
        return bytes((flag | length,))
    out, length = bytearray((flag | 0x7F,)), length - 0x7F
    while length >= 0x80:
        out.append((length & 0x7F) | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out)


class _Stream:
    __slots__ = ("block", "headers", "chunks", "received", "unsent", "window", "ended", "refused")

    def __init__(self, window: int) -> None:
        self.block: list[bytes] = []  # header block fragments until END_HEADERS
        self.headers: list[tuple[str, str]] | None = None
        self.chunks: list[bytes] = []
        self.received = 0  # flow-controlled bytes since our last WINDOW_UPDATE for the stream
        self.unsent = b""  # answer body waiting for window
        self.window = window  # what we may still send on it
        self.ended = False  # the request is complete (END_STREAM seen)
        self.refused = False  # over the concurrent-stream limit: its block is decoded, then reset


class LeanConnection(asyncio.Protocol):
    """One client connection; every method runs on the server's event loop."""

    def __init__(self, server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.preface_seen = False
        self.out: list[bytes] = []
        self.decoder = RequestDecoder() if STATIC_TABLE and decode_huffman else hpack.Decoder()
        self.encoder = AnswerEncoder()
        self.valid_fields: set[tuple[str, str]] = set()
        self.streams: dict[int, _Stream] = {}  # open: receiving, waiting for the handler, or sending
        self.last_stream_id = 0
        self.continuing: int | None = None  # stream whose header block awaits CONTINUATION
        self.received = 0  # connection-level flow-controlled bytes since our last WINDOW_UPDATE
        self.send_window = DEFAULT_WINDOW  # connection-level, what we may still send
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = DEFAULT_MAX_FRAME
        self.timers: dict[int, asyncio.TimerHandle] = {}  # stream -> its answer waiting out the delay
        self._flush_scheduled = False

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections_opened += 1
        self.server.open_connections.add(self)
        settings = struct.pack(
            ">HLHL",
            SETTINGS_MAX_CONCURRENT_STREAMS,
            MAX_CONCURRENT_STREAMS,
            SETTINGS_INITIAL_WINDOW_SIZE,
            STREAM_WINDOW,
        )
        self.out.append(_frame(SETTINGS, 0, 0, settings))
        self.out.append(_frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", CONNECTION_WINDOW - DEFAULT_WINDOW)))
        self._flush()

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.server.open_connections.discard(self)
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        try:
            if not self.preface_seen:
                if len(buffer) < len(PREFACE):
                    self.buffer = buffer
                    return
                if not buffer.startswith(PREFACE):
                    raise _ConnectionError(PROTOCOL_ERROR)
                self.preface_seen = True
                buffer = buffer[len(PREFACE) :]
            offset, end = 0, len(buffer)
            unpack = FRAME_HEADER.unpack_from
            while end - offset >= 9:
                high, low, kind, flags, stream_id = unpack(buffer, offset)
                length = (high << 8) | low
                if end - offset - 9 < length:
                    break
                payload = buffer[offset + 9 : offset + 9 + length]
                offset += 9 + length
                self._on_frame(kind, flags, stream_id & MAX_WINDOW, payload)
            self.buffer = buffer[offset:]
        except _ConnectionError as error:
            self._go_away(error.code)
            return
        self._flush()

    # -- frames ------------------------------------------------------------------------------
    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.continuing is not None and (kind != CONTINUATION or stream_id != self.continuing):
            raise _ConnectionError(PROTOCOL_ERROR)  # §6.10: nothing may come between
        if kind == HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif kind == DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == CONTINUATION:
            if self.continuing is None:
                raise _ConnectionError(PROTOCOL_ERROR)
            stream = self.streams[stream_id]
            stream.block.append(payload)
            if flags & END_HEADERS:
                self.continuing = None
                self._headers_complete(stream_id, stream)
        elif kind == SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == PING:
            if stream_id or len(payload) != 8:
                raise _ConnectionError(PROTOCOL_ERROR if stream_id else FRAME_SIZE_ERROR)
            if not flags & ACK:
                self.out.append(_frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            if not stream_id or len(payload) != 4:
                raise _ConnectionError(PROTOCOL_ERROR if not stream_id else FRAME_SIZE_ERROR)
            self.streams.pop(stream_id, None)
        elif kind == GOAWAY:
            if self.transport is not None:
                self.transport.close()
        elif kind == PUSH_PROMISE:
            raise _ConnectionError(PROTOCOL_ERROR)  # §8.4: clients never push
        elif kind == PRIORITY and len(payload) != 5:
            raise _ConnectionError(FRAME_SIZE_ERROR)
        # PRIORITY (deprecated, §5.3.2) and unknown types (§4.1) are ignored.

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id % 2 == 0 or stream_id <= self.last_stream_id:
            # §5.1.1: a new stream's id is odd and larger; trailers are not part of a push request.
            raise _ConnectionError(PROTOCOL_ERROR)
        self.last_stream_id = stream_id
        payload = _unpadded(flags, payload)
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        stream = _Stream(self.peer_initial_window)
        stream.block.append(payload)
        stream.refused = len(self.streams) >= MAX_CONCURRENT_STREAMS  # §5.1.2
        stream.ended = bool(flags & END_STREAM)
        self.streams[stream_id] = stream
        if flags & END_HEADERS:
            self._headers_complete(stream_id, stream)
        else:
            self.continuing = stream_id

    def _headers_complete(self, stream_id: int, stream: _Stream) -> None:
        try:  # decoded even for a stream about to be reset: the table must stay in step (§4.3)
            headers = self.decoder.decode(b"".join(stream.block))
        except hpack.HPACKError as exc:
            raise _ConnectionError(COMPRESSION_ERROR) from exc
        stream.block = []
        if stream.refused:
            self._reset(stream_id, REFUSED_STREAM)
        elif request_problem(headers, self.valid_fields) is not None:
            self._reset(stream_id, PROTOCOL_ERROR)
        else:
            stream.headers = headers
            if stream.ended:
                self._request_complete(stream_id, stream)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise _ConnectionError(PROTOCOL_ERROR)
        self.received += len(payload)  # §6.9: padding counts too
        if self.received > CONNECTION_WINDOW:
            raise _ConnectionError(FLOW_CONTROL_ERROR)
        if self.received >= CONNECTION_WINDOW // 2:
            self.out.append(_frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", self.received)))
            self.received = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.ended:
            if stream_id > self.last_stream_id:
                raise _ConnectionError(PROTOCOL_ERROR)  # §6.1: DATA on an idle stream
            self._reset(stream_id, STREAM_CLOSED)  # already answered, reset or refused
            return
        stream.received += len(payload)
        if stream.received > STREAM_WINDOW:
            self._reset(stream_id, FLOW_CONTROL_ERROR)
            return
        stream.chunks.append(_unpadded(flags, payload))
        if flags & END_STREAM:
            stream.ended = True
            self._request_complete(stream_id, stream)
        elif stream.received >= STREAM_WINDOW // 2:
            self.out.append(_frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">L", stream.received)))
            stream.received = 0

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise _ConnectionError(PROTOCOL_ERROR)
        if flags & ACK:
            return
        if len(payload) % 6:
            raise _ConnectionError(FRAME_SIZE_ERROR)
        for offset in range(0, len(payload), 6):
            code, value = struct.unpack_from(">HL", payload, offset)
            if code == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _ConnectionError(FLOW_CONTROL_ERROR)
                delta, self.peer_initial_window = value - self.peer_initial_window, value
                for stream in self.streams.values():  # §6.9.2: open streams' windows move too
                    stream.window += delta
            elif code == SETTINGS_HEADER_TABLE_SIZE:
                self.encoder.resize(value)
            elif code == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= 2**24 - 1:
                    raise _ConnectionError(PROTOCOL_ERROR)
                self.peer_max_frame = value
        self.out.append(_frame(SETTINGS, ACK, 0))
        self._send_unsent()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR)
        increment = struct.unpack(">L", payload)[0] & MAX_WINDOW
        if not increment:
            if not stream_id:
                raise _ConnectionError(PROTOCOL_ERROR)
            self._reset(stream_id, PROTOCOL_ERROR)
            return
        if not stream_id:
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise _ConnectionError(FLOW_CONTROL_ERROR)
        else:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.window += increment
        self._send_unsent()

    # -- answers -----------------------------------------------------------------------------
    def _request_complete(self, stream_id: int, stream: _Stream) -> None:
        headers = Headers(stream.headers)
        body = b"".join(stream.chunks)
        stream.chunks = []
        answer = self.server.handler(headers.get(":method"), headers.get(":path"), headers, body)
        delay = self.server.delay_s()
        if not delay:
            self._answer(stream_id, *answer)
            return
        loop = asyncio.get_running_loop()
        self.timers[stream_id] = loop.call_later(delay, self._answer_later, stream_id, answer)

    def _answer_later(self, stream_id: int, answer: tuple[int, dict, bytes]) -> None:
        del self.timers[stream_id]
        if self.transport is None:
            return
        self._answer(stream_id, *answer)
        if not self._flush_scheduled:  # the answers that fall due together share a write
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _answer(self, stream_id: int, status: int, extra: dict, payload: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:  # reset by the client meanwhile
            return
        response = [(":status", str(status)), ("content-length", str(len(payload)))]
        response += [(name.lower(), str(value)) for name, value in extra.items()]
        block = self.encoder.encode(response)
        flags = END_HEADERS if payload else END_HEADERS | END_STREAM
        max_frame = self.peer_max_frame
        first = flags if len(block) <= max_frame else flags & END_STREAM
        self.out.append(_frame(HEADERS, first, stream_id, block[:max_frame]))
        for start in range(max_frame, len(block), max_frame):
            last = END_HEADERS if start + max_frame >= len(block) else 0
            self.out.append(_frame(CONTINUATION, last, stream_id, block[start : start + max_frame]))
        if not payload:
            del self.streams[stream_id]
            return
        stream.unsent = payload
        self._send_body(stream_id, stream)

    def _send_body(self, stream_id: int, stream: _Stream) -> None:
        while stream.unsent:
            size = min(len(stream.unsent), stream.window, self.send_window, self.peer_max_frame)
            if size <= 0:
                return  # waits for WINDOW_UPDATE
            chunk, stream.unsent = stream.unsent[:size], stream.unsent[size:]
            stream.window -= size
            self.send_window -= size
            self.out.append(_frame(DATA, 0 if stream.unsent else END_STREAM, stream_id, chunk))
        del self.streams[stream_id]

    def _send_unsent(self) -> None:
        for stream_id, stream in list(self.streams.items()):
            if stream.unsent:
                self._send_body(stream_id, stream)

    def _reset(self, stream_id: int, code: int) -> None:
        self.streams.pop(stream_id, None)
        self.out.append(_frame(RST_STREAM, 0, stream_id, struct.pack(">L", code)))

    def _go_away(self, code: int) -> None:
        self.out.append(_frame(GOAWAY, 0, 0, struct.pack(">LL", self.last_stream_id, code)))
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.out and self.transport is not None:
            self.transport.write(b"".join(self.out))
        self.out.clear()


def _unpadded(flags: int, payload: bytes) -> bytes:
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise _ConnectionError(PROTOCOL_ERROR)  # §6.1: padding as long as the payload or longer
    return payload[1 : len(payload) - payload[0]]
