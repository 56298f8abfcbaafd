"""Our HTTP/2 client's framing against h2's server side, scripted per request path: interim
answers, CONTINUATION, padding, resets, GOAWAY, PING and flow control both ways."""

import asyncio

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

from delivery.providers.http2 import Http2Client, Http2Error, Http2Request, Http2Response
from tests.fakes.loopback import loopback_only  # noqa: F401 - autouse: nothing leaves loopback

TIMEOUT_SECS = 5
BIG_BODY_BYTES = 300_000  # several times the server's windows: the client must wait for WINDOW_UPDATE
SMALL_WINDOW = 1_000  # the server's SETTINGS_INITIAL_WINDOW_SIZE in the flow-control test


class _ScriptedServer(asyncio.Protocol):
    """h2's server side; what it does with a request depends on the request's path."""

    def __init__(self, record: dict, initial_window: int | None) -> None:
        self.record = record
        self.initial_window = initial_window
        self.bodies: dict[int, bytearray] = {}
        self.paths: dict[int, str] = {}

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
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.paths[event.stream_id] = dict(event.headers)[b":path"].decode()
                self.bodies[event.stream_id] = bytearray()
            elif isinstance(event, h2.events.DataReceived):
                self.bodies[event.stream_id] += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.answer(event.stream_id, self.paths[event.stream_id], bytes(self.bodies[event.stream_id]))
            elif isinstance(event, h2.events.PingAckReceived):
                self.record["ping acks"] += 1
            elif isinstance(event, h2.events.StreamReset):
                self.record["resets"].append(event.error_code)
        self.transport.write(self.h2.data_to_send())

    def answer(self, stream_id: int, path: str, body: bytes) -> None:
        done = [(":status", "201"), ("length", str(len(body)))]
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
        elif path == "/ping":
            self.h2.ping(b"12345678")
            self.h2.send_headers(stream_id, done, end_stream=True)
        else:
            self.h2.send_headers(stream_id, done, end_stream=True)


def exchange(requests: list[tuple[str, bytes]], initial_window: int | None = None, rounds: int = 1):
    """Send the (path, body) requests `rounds` times, each round one batch; (answers per round, record)."""
    record = {"connections": 0, "ping acks": 0, "resets": []}

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
