"""Our HTTP/2 client's options for callers with untrusted peers, against a real h2 server on loopback."""

import asyncio
import functools

import pytest

from delivery.providers.http2 import Http2Client, Http2NotSpokenError, Http2Request, Http2Response
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
