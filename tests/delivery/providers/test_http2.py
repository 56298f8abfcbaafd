"""Our HTTP/2 client's options for callers with untrusted peers, against a real h2 server on loopback;
its HPACK encoder against hpack's decoder."""

import asyncio
import functools
from urllib.parse import urlsplit

import hpack
import pytest

from delivery.providers import http2
from delivery.providers.http2 import (
    Http2Client,
    Http2NotSpokenError,
    Http2Request,
    Http2Response,
    _PlainLiteralEncoder,
)
from notifyproject import outbound
from tests.fakes._h2 import BackgroundH2Server
from tests.fakes.loopback import loopback_only  # noqa: F401 - autouse: nothing leaves loopback
from tests.support.listener import CountingListener, raw_response

BIG_BODY_BYTES = 200_000  # several DATA frames and flow-control windows


@pytest.fixture
def server():
    async def answer(method, path, headers, body):
        return 500, {"path": path}, b"x" * BIG_BODY_BYTES

    h2_server = BackgroundH2Server(answer, "test-http2")
    h2_server.start()
    yield h2_server
    h2_server.stop()


def send(client: Http2Client, url: str) -> Http2Response | Exception:
    async def run():
        try:
            (answer,) = await client.send_all([Http2Request(url, [(b"ttl", b"60")], b"body")], 5)
            return answer
        finally:
            await client.close()

    return asyncio.run(run())


def test_an_answer_body_is_kept_up_to_the_cap_and_read_to_its_end(server):
    client = Http2Client(None, 5, max_body_bytes=4097)
    answer = send(client, f"http://127.0.0.1:{server.port}/push/1")
    assert answer.status == 500 and answer.body == b"x" * 4097


def test_without_a_cap_the_whole_body_is_kept(server):
    answer = send(Http2Client(None, 5), f"http://127.0.0.1:{server.port}/push/abc?x=1")
    assert answer.headers[b"path"] == b"/push/abc?x=1" and len(answer.body) == BIG_BODY_BYTES


def test_an_http1_server_answering_the_preface_is_not_spoken_to():
    with CountingListener(raw_response("400 Bad Request")) as listener:
        answer = send(Http2Client(None, 5), listener.url())
    assert isinstance(answer, Http2NotSpokenError)


def test_a_guarded_connection_refuses_before_connecting():
    guard = functools.partial(outbound.create_guarded_connection, allow_private=False)
    with CountingListener() as listener:
        answer = send(Http2Client(None, 5, open_connection=guard), listener.url())
        assert listener.accepted == 0
    assert outbound.refused_reason(answer) == "127.0.0.1 is a loopback address"


def test_header_blocks_decode_to_the_headers_while_the_table_changes_under_them():
    """The encoder reuses indexed fields and never-indexed names only while the HPACK table is unchanged."""
    encoder, decoder = _PlainLiteralEncoder(), hpack.Decoder()
    shared = [(b":method", b"POST"), (b"apns-topic", b"com.example"), (b"authorization", b"bearer one")]
    blocks = []
    for n in range(40):
        path = f"/3/device/{n:064x}" + ("/" * 200 if n % 5 == 0 else "")  # lengths past one byte
        headers = [*shared, hpack.NeverIndexedHeaderTuple(b":path", path.encode())]
        headers.append(hpack.NeverIndexedHeaderTuple(b"x-round", f"never-{n}".encode()))
        if n % 7 == 3:  # a new indexable header: every entry's index moves (x-round's name too)
            headers.append((b"x-round", str(n).encode()))
        if n == 20:  # a renewed token replaces a header that repeats
            shared[2] = (b"authorization", b"bearer two")
        if n == 30:  # the peer shrinks the table: a size update, entries evicted
            encoder.header_table_size = 64
        blocks.append((headers, encoder.encode(headers)))
    for headers, block in blocks:
        assert decoder.decode(block, raw=True) == [(name, value) for name, value in headers]
    assert len(blocks[1][1]) < len(blocks[0][1])  # once in the table, repeated headers go as indexes


def test_header_blocks_are_reused_only_while_the_table_is_as_it_was():
    """Our encoder's blocks decode to what was asked for, across table changes and paths."""
    encoder, decoder = http2._PlainLiteralEncoder(), hpack.Decoder()

    def request(path: bytes, ttl: bytes, authorization: bytes = b"vapid t=a.b.c, k=key") -> list:
        return [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", b"push.example"),
            hpack.NeverIndexedHeaderTuple(b":path", path),
            (b"ttl", ttl),
            (b"authorization", authorization),
        ]

    plain = hpack.Encoder()
    for number, (ttl, authorization) in enumerate(
        [(b"60", b"one"), (b"60", b"one"), (b"60", b"one"), (b"59", b"one"), (b"60", b"one"), (b"60", b"two")]
        * 3
    ):
        headers = request(b"/push/%d" % number, ttl, authorization)
        block = encoder.encode(headers)
        assert block == plain.encode(headers, huffman=False)  # hpack's own encoding, byte for byte
        assert decoder.decode(block, raw=True) == [tuple(header) for header in headers]
    encoder.header_table_size = 0  # the peer's SETTINGS shrink the table: a size update leads
    headers = request(b"/push/last", b"60")
    plain.header_table_size = 0
    block = encoder.encode(headers)
    assert block == plain.encode(headers, huffman=False)
    assert decoder.decode(block, raw=True) == [tuple(header) for header in headers]


@pytest.mark.parametrize(
    "url",
    [
        "https://push.example/fcm/send/abc:APA91b-_x",
        "http://127.0.0.1:8080/push/xyz",
        "https://Push.Example:8443/a?b=1#f",
        "HTTPS://push.example/x",
        "https://push.example/x?",
        "https://[::1]:5/p",
        "https://push.example/a%20b//c",
        "https://push.example/é",
    ],
)
def test_a_request_target_is_what_urlsplit_reads(url):
    parts = urlsplit(url)
    origin = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    path = (parts.path + (f"?{parts.query}" if parts.query else "")).encode()
    assert http2._request_target(url) == (origin, (b":authority", parts.netloc.encode()), path)
