"""Threaded HTTP/1.1 server on loopback that stops cleanly even with keep-alive clients attached.

Given an `h2` server (tests/fakes/_h2.py), a cleartext connection that opens with the HTTP/2
preface is handed to it instead, so one port speaks both, as push services do.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOOPBACK = "127.0.0.1"
HANDLER_IDLE_TIMEOUT_S = 30  # drop idle keep-alive connections eventually, as a safety net
SHUTDOWN_TIMEOUT_S = 10  # how long stop() waits for the serving thread
SERVE_POLL_INTERVAL_S = 0.02  # serve_forever notices shutdown() only between polls
# "PRI * HTTP/2.0": no HTTP/1.x method is PRI, so three bytes tell the protocols apart.
H2_PREFACE_START = b"PRI"


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks open client sockets so stop() can unblock their threads."""

    daemon_threads = False  # join handler threads on close, so nothing outlives the fake
    block_on_close = True
    request_queue_size = 1024  # the default backlog of 5 resets bursts of new connections (peers open many)

    def __init__(self, handler, ssl_context: ssl.SSLContext | None, fake, h2=None) -> None:
        self.fake = fake
        self.ssl_context = ssl_context
        self.h2 = h2
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        super().__init__((LOOPBACK, 0), handler)

    def finish_request(self, request, client_address) -> None:
        """Wrap in TLS (handshake on the worker thread) and remember the socket while it is served."""
        request.settimeout(HANDLER_IDLE_TIMEOUT_S)
        self._track(request, True)
        wrapped = None
        try:
            if self.h2 is not None and self.ssl_context is None and _opens_with_h2_preface(request):
                self._track(request, False)
                sock = socket.socket(request.family, request.type, request.proto, fileno=request.detach())
                sock.settimeout(None)
                self.h2.adopt(sock)  # the HTTP/2 server owns it now; shutdown_request finds it detached
                return
            if self.ssl_context is not None:
                self._track(request, False)  # wrap_socket detaches the plain socket
                try:
                    wrapped = self.ssl_context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                self._track(wrapped, True)
            super().finish_request(wrapped or request, client_address)
        finally:
            self._track(wrapped or request, False)
            if wrapped is not None:
                wrapped.close()

    def _track(self, sock: socket.socket, is_open: bool) -> None:
        """Add or remove a client socket from the set that stop() shuts down."""
        with self._clients_lock:
            if is_open:
                self._clients.add(sock)
            else:
                self._clients.discard(sock)

    def close_clients(self) -> None:
        """Shut down every open client socket so handler threads blocked on keep-alive reads exit."""
        with self._clients_lock:
            clients = list(self._clients)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _opens_with_h2_preface(sock: socket.socket) -> bool:
    try:
        return sock.recv(len(H2_PREFACE_START), socket.MSG_PEEK | socket.MSG_WAITALL) == H2_PREFACE_START
    except OSError:
        return False


class JSONHandler(BaseHTTPRequestHandler):
    """Request handler base: HTTP/1.1 keep-alive, quiet logs, JSON helpers."""

    protocol_version = "HTTP/1.1"
    timeout = HANDLER_IDLE_TIMEOUT_S
    # Headers and body go out in separate writes; with Nagle on, each response waited ~40 ms.
    disable_nagle_algorithm = True

    @property
    def fake(self):
        """The fake that owns this server, for handlers to record into."""
        return self.server.fake

    def log_message(self, format, *args) -> None:
        """Keep test output clean."""

    def read_body(self) -> bytes:
        """Read the request body (Content-Length framed; clients here never use chunked uploads)."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_body(
        self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str | None = None
    ) -> None:
        """Send a complete response with Content-Length so the connection can be reused."""
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def send_json(self, status: int, payload, headers: dict | None = None) -> None:
        """Send a JSON response."""
        self.send_body(status, json.dumps(payload).encode(), headers, "application/json; charset=UTF-8")


class BackgroundHTTPServer:
    """Runs a _Server on an ephemeral loopback port in a background thread."""

    def __init__(
        self, handler: type[JSONHandler], fake, ssl_context: ssl.SSLContext | None = None, h2=None
    ) -> None:
        self._handler = handler
        self._fake = fake
        self._ssl_context = ssl_context
        self._h2 = h2
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The ephemeral port the server is bound to."""
        if self._server is None:
            raise RuntimeError("server is not running")
        return self._server.server_address[1]

    def start(self) -> None:
        """Bind and start serving; returns once the socket is listening."""
        self._server = _Server(self._handler, self._ssl_context, self._fake, self._h2)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(SERVE_POLL_INTERVAL_S,),
            name=f"{type(self._fake).__name__}-http",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, cut open connections and join every server thread."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_clients()
        self._server.server_close()
        self._thread.join(SHUTDOWN_TIMEOUT_S)
        self._server = None
        self._thread = None
