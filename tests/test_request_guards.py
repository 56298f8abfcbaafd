"""Request bodies over the limit are refused before they are read; NUL never reaches a lookup.

Against a real daphne over raw sockets, since daphne itself reads the body before the
application runs; and against the ASGI application directly, for servers that stream bodies.
"""

import json
import socket
import time

import pytest
from django.conf import settings

from tests.support.asgi import asgi_request

URL = "/api/v1/notifications/"
TWO_GB = 2 * 1024**3
# A refusal "at once": well under any time a client would take to send what it declared.
PROMPT_SECS = 5.0


def _read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """Read one HTTP response (status line, headers, Content-Length body) from a raw socket."""
    sock.settimeout(PROMPT_SECS)
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {raw!r}"
        raw += chunk
    head, body = raw.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def _assert_payload_too_large(status: int, headers: dict, body: bytes) -> None:
    assert status == 413, (status, body)
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large" and str(settings.CLARION_MAX_BODY_BYTES) in error["message"]


@pytest.fixture
def web(start_web):
    return start_web()


def _connect(web) -> socket.socket:
    return socket.create_connection(("127.0.0.1", web.port), timeout=PROMPT_SECS)


class TestBodyLimitInDaphne:
    def test_a_declared_2gb_body_is_refused_before_it_is_sent(self, web):
        with _connect(web) as sock:
            started = time.monotonic()
            sock.sendall(
                b"POST /api/v1/notifications/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(TWO_GB).encode() + b'\r\n\r\n{"to":'
            )
            _assert_payload_too_large(*_read_response(sock))
            assert time.monotonic() - started < PROMPT_SECS
            # The server closed its side: nothing more is read from this request.
            assert sock.recv(1) == b""

    def test_expect_100_continue_with_a_declared_2gb_body_gets_413_not_100(self, web):
        with _connect(web) as sock:
            sock.sendall(
                b"PUT /api/v1/me/preferences/ HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
                b"Content-Length: " + str(TWO_GB).encode() + b"\r\n\r\n"
            )
            _assert_payload_too_large(*_read_response(sock))

    def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(self, web):
        chunk = b"x" * 65536
        with _connect(web) as sock:
            sock.sendall(
                b"POST /api/v1/notifications/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            sent = 0
            # Just past the limit, and never the terminating chunk: the answer cannot wait for the end.
            while sent <= settings.CLARION_MAX_BODY_BYTES:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            _assert_payload_too_large(*_read_response(sock))

    def test_one_byte_over_the_limit_is_refused(self, web):
        body = b"x" * (settings.CLARION_MAX_BODY_BYTES + 1)
        with _connect(web) as sock:
            sock.sendall(
                b"POST /api/v1/notifications/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:1000]
            )
            _assert_payload_too_large(*_read_response(sock))

    def test_a_body_within_the_limit_still_reaches_the_api(self, web, api_key_client, alice):
        key = api_key_client("send").key
        payload = json.dumps({"to": {"users": ["alice"]}, "title": "x" * 1000}).encode()
        with _connect(web) as sock:
            sock.sendall(
                b"POST /api/v1/notifications/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Authorization: Bearer " + key.encode() + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
            )
            status, _headers, body = _read_response(sock)
        assert status == 202, body


class TestBodyLimitInTheApplication:
    """For ASGI servers that stream the body to the application as it arrives."""

    def test_a_declared_oversized_body_is_refused_without_reading_it(self):
        endless = [{"type": "http.request", "body": b"x" * 65536, "more_body": True}] * 10_000
        headers = [(b"host", b"127.0.0.1"), (b"content-length", str(TWO_GB).encode())]
        status, _headers, body, received = asgi_request(
            URL, method="POST", headers=headers, body_messages=endless
        )
        assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
        assert received == 0

    def test_an_undeclared_body_stops_being_read_past_the_limit(self):
        chunk = 65536
        endless = [{"type": "http.request", "body": b"x" * chunk, "more_body": True}] * 10_000
        status, _headers, body, received = asgi_request(URL, method="POST", body_messages=endless)
        assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
        assert received == settings.CLARION_MAX_BODY_BYTES // chunk + 1
