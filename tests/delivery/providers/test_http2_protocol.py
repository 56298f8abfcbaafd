"""Our HTTP/2 client's framing against h2's server side, scripted per request path: interim
answers, CONTINUATION, padding, resets, GOAWAY, PING, flow control both ways, and settings the
server changes mid-connection (stream windows, the HPACK table). h2 checks what the client sends:
a DATA frame beyond a window or a header block its HPACK decoder cannot follow is an error it
raises, recorded in the exchange's record."""

import asyncio
import hashlib
import struct

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest

from delivery.providers.http2 import Http2Client, Http2Error, Http2Request, Http2Response
from tests.fakes.loopback import loopback_only  # noqa: F401 - autouse: nothing leaves loopback

TIMEOUT_SECS = 5
BIG_BODY_BYTES = 300_000  # several times the server's windows: the client must wait for WINDOW_UPDATE
SMALL_WINDOW = 1_000  # the server's SETTINGS_INITIAL_WINDOW_SIZE in the flow-control test
# A body over the connection's first window (65,535): the client is mid-body when the server
# changes the stream windows. Counters, so a chunk sent twice, lost or out of order shows.
COUNTED_BODY = b"".join(i.to_bytes(4, "big") for i in range(25_000))
RAISED_WINDOW = 4_096  # what the server raises SETTINGS_INITIAL_WINDOW_SIZE to after closing it
DEFAULT_WINDOW = 65_535  # RFC 9113 §6.9.2, a connection's window and a stream's until SETTINGS say otherwise
LARGEST_WINDOW = 2**31 - 1
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4
INITIAL_WINDOW = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE
HEADER_TABLE_SIZE = h2.settings.SettingCodes.HEADER_TABLE_SIZE


class _ScriptedServer(asyncio.Protocol):
    """h2's server side; what it does with a request depends on the request's path.

    `/window/N`: on its first request, SETTINGS_INITIAL_WINDOW_SIZE becomes N, and the body's
    DATA is not acknowledged until the client acknowledges the SETTINGS (so the open streams'
    windows go below zero); then a PING, and once it is answered a window of 0 is raised to
    RAISED_WINDOW. `/window-overflow`: once the connection's window is used up, a stream window
    of 2^31-1 and a SETTINGS_INITIAL_WINDOW_SIZE one larger than before. `/stream-window/N`: a
    WINDOW_UPDATE of N on the request's stream, written as raw bytes (h2 would refuse to send
    0 or an overflow) before anything else is answered. `/table-size/N`: on
    its first request, SETTINGS_HEADER_TABLE_SIZE becomes N. `/encoder-table/N,M,...`: the
    answer's header block is encoded after resizing the server's own HPACK table to N, then M...
    """

    def __init__(self, record: dict, initial_window: int | None) -> None:
        self.record = record
        self.initial_window = initial_window
        self.bodies: dict[int, bytearray] = {}
        self.paths: dict[int, str] = {}
        self.settings_changed = False  # by a /window/ or /table-size/ request, once per connection
        self.held: list[tuple[int, int]] | None = None  # (stream, bytes) of DATA not yet acknowledged
        self.window_closed = False  # between the window of 0 taking effect and its raise

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.record["connections"] += 1
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        if self.initial_window is not None:
            self.h2.local_settings = h2.settings.Settings(
                client=False,
                initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.initial_window},
            )
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        self.record["received"] += data
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:  # e.g. DATA beyond a window, an HPACK mismatch
            self.record["errors"].append(repr(exc))
            self.transport.write(self.h2.data_to_send())  # h2's GOAWAY
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.on_request(event.stream_id, event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.on_data(event.stream_id, event.data, event.flow_controlled_length)
            elif isinstance(event, h2.events.StreamEnded):
                self.answer(event.stream_id, self.paths[event.stream_id], bytes(self.bodies[event.stream_id]))
            elif isinstance(event, h2.events.SettingsAcknowledged):
                self.on_settings_acknowledged(event.changed_settings)
            elif isinstance(event, h2.events.PingAckReceived):
                self.record["ping acks"] += 1
                if self.window_closed:  # the client has seen every WINDOW_UPDATE before the PING
                    self.h2.update_settings({INITIAL_WINDOW: RAISED_WINDOW})
            elif isinstance(event, h2.events.StreamReset):
                self.record["resets"].append(event.error_code)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.record["goaways"].append(event.error_code)
        self.transport.write(self.h2.data_to_send())

    def on_request(self, stream_id: int, headers: list) -> None:
        path = dict(headers)[b":path"].decode()
        self.paths[stream_id] = path
        self.bodies[stream_id] = bytearray()
        self.record["requests"].append(headers)
        self.record["table sizes"].append(self.h2.decoder.header_table_size)  # as the client's updates set it
        if path.startswith("/stream-window/"):
            increment = int(path.rsplit("/", 1)[1])
            self.transport.write(struct.pack(">BHBBL", 0, 4, 8, 0, stream_id) + struct.pack(">L", increment))
        if self.settings_changed:
            return
        if path.startswith("/window/"):
            self.settings_changed = True
            self.held = []
            self.h2.update_settings({INITIAL_WINDOW: int(path.rsplit("/", 1)[1])})
        elif path.startswith("/table-size/"):
            self.settings_changed = True
            self.h2.update_settings({HEADER_TABLE_SIZE: int(path.rsplit("/", 1)[1])})

    def on_data(self, stream_id: int, data: bytes, flow_controlled: int) -> None:
        self.bodies[stream_id] += data
        if self.window_closed:
            self.record["bytes while closed"] += flow_controlled
        if self.paths[stream_id] == "/window-overflow":  # never acknowledged
            if len(self.bodies[stream_id]) == DEFAULT_WINDOW:
                # The connection's window is used up, so the client sends nothing more.
                self.h2.increment_flow_control_window(LARGEST_WINDOW, stream_id)  # the stream's was 0
                self.h2.update_settings({INITIAL_WINDOW: DEFAULT_WINDOW + 1})
        elif self.held is not None:
            self.held.append((stream_id, flow_controlled))
        else:
            self.h2.acknowledge_received_data(flow_controlled, stream_id)

    def on_settings_acknowledged(self, changes: dict) -> None:
        if INITIAL_WINDOW not in changes:
            return
        self.window_closed = changes[INITIAL_WINDOW].new_value == 0
        if self.held is not None:
            # The new window is in force on both sides: acknowledge what came under the old one,
            # one DATA frame at a time (a WINDOW_UPDATE each, the first ones leaving it below zero).
            held, self.held = self.held, None
            for stream_id, size in held:
                self.h2.acknowledge_received_data(size, stream_id)
        if self.window_closed:
            self.h2.ping(b"closed!!")

    def answer(self, stream_id: int, path: str, body: bytes) -> None:
        done = [(":status", "201"), ("length", str(len(body))), ("sha256", hashlib.sha256(body).hexdigest())]
        if path == "/interim":
            self.h2.send_headers(stream_id, [(":status", "103"), ("link", "</a>")])
            self.h2.send_headers(stream_id, done, end_stream=True)
        elif path == "/big-headers":  # one header block across HEADERS and CONTINUATION frames
            self.h2.send_headers(stream_id, [*done, ("x-big", "b" * 40_000)], end_stream=True)
        elif path == "/padded":
            self.h2.send_headers(stream_id, done)
            self.h2.send_data(stream_id, b"padded body", end_stream=True, pad_length=20)
        elif path == "/reset":
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        elif path == "/goaway":
            self.h2.close_connection(h2.errors.ErrorCodes.NO_ERROR, last_stream_id=stream_id - 2)
        elif path.startswith("/encoder-table/"):
            for size in path.rsplit("/", 1)[1].split(","):  # each a Dynamic Table Size Update
                self.h2.encoder.header_table_size = int(size)
            self.h2.send_headers(stream_id, [*done, ("x-stream", str(stream_id))], end_stream=True)
        elif path == "/ping":
            self.h2.ping(b"12345678")
            self.h2.send_headers(stream_id, done, end_stream=True)
        else:
            self.h2.send_headers(stream_id, done, end_stream=True)


def exchange(requests: list[tuple[str, bytes]], initial_window: int | None = None, rounds: int = 1):
    """Send the (path, body) requests `rounds` times, each round one batch; (answers per round, record)."""
    record = {
        "connections": 0,
        "ping acks": 0,
        "resets": [],
        "goaways": [],
        "errors": [],  # what h2 raised at the client's frames
        "requests": [],  # each request's headers as the server decoded them
        "table sizes": [],  # the server's HPACK decoder's table size after each request's headers
        "bytes while closed": 0,
        "received": bytearray(),  # every byte from the client, as sent
    }

    async def run():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _ScriptedServer(record, initial_window), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = Http2Client(None, TIMEOUT_SECS)
        try:
            batch = [
                Http2Request(f"http://127.0.0.1:{port}{path}", [(b"ttl", b"60")], body)
                for path, body in requests
            ]
            return [await client.send_all(batch, TIMEOUT_SECS) for _ in range(rounds)]
        finally:
            await client.close()
            server.close()

    return asyncio.run(run()), record


def test_an_interim_answer_is_skipped_for_the_final_one():
    ([answer],), _ = exchange([("/interim", b"x")])
    assert isinstance(answer, Http2Response) and answer.status == 201 and b"link" not in answer.headers


def test_a_header_block_continued_over_frames_is_decoded_whole():
    ([answer],), _ = exchange([("/big-headers", b"")])
    assert answer.status == 201 and answer.headers[b"x-big"] == b"b" * 40_000


def test_padding_is_not_part_of_the_body():
    ([answer],), _ = exchange([("/padded", b"x")])
    assert answer.body == b"padded body"


def test_a_reset_stream_fails_only_its_request():
    ([reset, ok],), _ = exchange([("/reset", b"x"), ("/ok", b"y")])
    assert isinstance(reset, Http2Error) and "REFUSED_STREAM" in str(reset)
    assert ok.status == 201


def test_a_goaway_fails_the_unprocessed_streams_and_the_next_batch_reconnects():
    (first, second), record = exchange([("/ok", b"a"), ("/goaway", b"b")], rounds=2)
    assert first[0].status == 201
    assert isinstance(first[1], Http2Error) and "GOAWAY" in str(first[1])
    assert second[0].status == 201 and record["connections"] == 2


def test_a_ping_is_acknowledged():
    ([answer],), record = exchange([("/ping", b"x")])
    assert answer.status == 201 and record["ping acks"] == 1


def test_a_body_larger_than_the_windows_waits_for_window_updates():
    body = bytes(range(256)) * (BIG_BODY_BYTES // 256)
    ([first, second],), _ = exchange([("/ok", body), ("/ok", body)], initial_window=SMALL_WINDOW)
    assert first.headers[b"length"] == second.headers[b"length"] == str(len(body)).encode()


@pytest.mark.parametrize("window", [0, SMALL_WINDOW])
def test_a_stream_window_lowered_below_what_was_sent_holds_the_body_until_it_is_positive(window):
    # Two streams mid-body when the server lowers SETTINGS_INITIAL_WINDOW_SIZE: the first has
    # used the whole connection window, so its window goes to 0 - 65,535 or 1,000 - 65,535 and
    # comes back up by WINDOW_UPDATEs; to 0 it stays there until the server raises the setting.
    path = f"/window/{window}"
    ([first, second],), record = exchange([(path, COUNTED_BODY), (path, COUNTED_BODY[::-1])])
    assert record["errors"] == []  # h2 raises at a DATA frame beyond the stream's window
    assert record["bytes while closed"] == 0
    assert record["ping acks"] == (1 if window == 0 else 0)
    for answer, body in ((first, COUNTED_BODY), (second, COUNTED_BODY[::-1])):
        assert answer.status == 201
        assert answer.headers[b"sha256"] == hashlib.sha256(body).hexdigest().encode()


def test_a_settings_change_taking_a_stream_window_over_2_31_minus_1_is_a_flow_control_error():
    # §6.9.2: the stream's window is 2^31-1 after a WINDOW_UPDATE; SETTINGS_INITIAL_WINDOW_SIZE
    # one larger than before would take it over.
    ([answer],), record = exchange([("/window-overflow", COUNTED_BODY)])
    assert isinstance(answer, Http2Error)
    assert record["goaways"] == [h2.errors.ErrorCodes.FLOW_CONTROL_ERROR]
    assert record["errors"] == []


@pytest.mark.parametrize(
    "increment, code",
    [(0, h2.errors.ErrorCodes.PROTOCOL_ERROR), (LARGEST_WINDOW, h2.errors.ErrorCodes.FLOW_CONTROL_ERROR)],
)
def test_a_stream_window_update_of_0_or_past_2_31_minus_1_resets_only_that_stream(increment, code):
    # §6.9 and §6.9.1: stream errors. The stream's window is 65,535 when the update arrives.
    ([broken, ok],), record = exchange([(f"/stream-window/{increment}", b"x"), ("/ok", b"y")])
    assert isinstance(broken, Http2Error) and code.name in str(broken)
    assert ok.status == 201
    # h2 drops a reset of a stream it has answered already: read the client's frames themselves
    resets = [(stream_id, payload) for kind, stream_id, payload in client_frames(record) if kind == 3]
    assert resets == [(1, struct.pack(">L", code))]
    # The connection went on: one connection, closed only by the client's own NO_ERROR GOAWAY
    assert record["goaways"] == [h2.errors.ErrorCodes.NO_ERROR] and record["connections"] == 1


def client_frames(record: dict) -> list[tuple[int, int, bytes]]:
    """(type, stream, payload) of each frame the client sent, after the connection preface."""
    data, frames = bytes(record["received"][len(CLIENT_PREFACE) :]), []
    assert record["received"].startswith(CLIENT_PREFACE)
    while data:
        length, kind, stream_id = int.from_bytes(data[:3], "big"), data[3], int.from_bytes(data[5:9], "big")
        frames.append((kind, stream_id & 0x7FFFFFFF, data[9 : 9 + length]))
        data = data[9 + length :]
    return frames


@pytest.mark.parametrize("size", [0, 64, 1_000])
def test_a_smaller_hpack_table_is_taken_up_at_the_start_of_the_next_header_block(size):
    # Requests before and after the server lowers SETTINGS_HEADER_TABLE_SIZE: its HPACK decoder
    # rejects a block that leaves the table over the new size (no Dynamic Table Size Update, or
    # one not at the start) and would misread indexes into a table out of step with ours.
    path = f"/table-size/{size}"
    rounds, record = exchange([(path, b"a"), ("/ok", b"b"), (path, b"c")], rounds=3)
    assert record["errors"] == []
    assert all(answer.status == 201 for answer in sum(rounds, []))
    authority = dict(record["requests"][0])[b":authority"]
    head = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", authority)]
    expected = [[*head, (b":path", sent), (b"ttl", b"60")] for sent in (path.encode(), b"/ok", path.encode())]
    assert record["requests"] == expected * 3
    # The first round's blocks went before the SETTINGS: the default table of 4,096 bytes.
    assert record["table sizes"] == [4_096] * 3 + [size] * 6


def test_the_server_resizing_its_own_hpack_table_within_the_default_is_followed():
    # We advertise no SETTINGS_HEADER_TABLE_SIZE: the server's encoder may use up to 4,096 bytes.
    # "0,4096": two size updates at the start of one block (RFC 7541 §4.2), the table emptied.
    paths = ["/encoder-table/100", "/encoder-table/0", "/encoder-table/0,4096", "/encoder-table/4096"]
    rounds, record = exchange([(path, b"x") for path in paths], rounds=2)
    assert record["errors"] == []
    answers = sum(rounds, [])
    assert [answer.status for answer in answers] == [201] * len(answers)
    assert {answer.headers[b"sha256"] for answer in answers} == {hashlib.sha256(b"x").hexdigest().encode()}
    # Each answer has a header of its own, indexed: the tables must stay in step to read it.
    assert [int(answer.headers[b"x-stream"]) for answer in answers] == list(range(1, 2 * len(answers), 2))


def test_the_server_growing_its_hpack_table_over_what_we_allow_is_a_compression_error():
    ([answer],), record = exchange([("/encoder-table/8192", b"x")])
    assert isinstance(answer, Http2Error)
    assert record["goaways"] == [h2.errors.ErrorCodes.COMPRESSION_ERROR]
