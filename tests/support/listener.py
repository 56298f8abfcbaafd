"""A loopback TCP listener that counts the connections it accepts: the target of SSRF tests.

Each connection is counted on accept, then, if it carries an HTTP request, answered with the
programmed raw response (a redirect, an error with a secret body). A client that gets an answer
was counted before it got it, so after a synchronous send returns the count is final.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading

LOOPBACK = "127.0.0.1"
READ_TIMEOUT_SECS = 5  # a client that sends nothing (e.g. a TLS hello we cannot read) is dropped
MAX_REQUEST_BYTES = 1 << 20
SERVE_POLL_INTERVAL_SECS = 0.02  # serve_forever notices shutdown() only between polls
NO_CONTENT = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def raw_response(status_line: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """An HTTP/1.1 answer that closes the connection."""
    head = [f"HTTP/1.1 {status_line}", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        listener: CountingListener = self.server.listener
        listener._count()
        self.request.settimeout(READ_TIMEOUT_SECS)
        with contextlib.suppress(OSError):
            if _read_request(self.request):
                self.request.sendall(listener.response)


def _read_request(sock: socket.socket) -> bool:
    """Read one request (head and Content-Length body); False if it is not one."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk or len(data) > MAX_REQUEST_BYTES:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        body += chunk
    return True


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class CountingListener:
    """`with CountingListener(response) as listener:` ... `listener.accepted` connections so far."""

    def __init__(self, response: bytes = NO_CONTENT) -> None:
        self.response = response
        self._accepted = 0
        self._lock = threading.Lock()
        self._server = _Server((LOOPBACK, 0), _Handler)
        self._server.listener = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": SERVE_POLL_INTERVAL_SECS}, daemon=True
        )

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    def url(self, path: str = "/push/1", *, scheme: str = "http", host: str = LOOPBACK) -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def _count(self) -> None:
        with self._lock:
            self._accepted += 1

    def __enter__(self) -> CountingListener:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
