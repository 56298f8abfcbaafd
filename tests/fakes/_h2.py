"""A cleartext HTTP/2 (prior knowledge) server on loopback for fakes that also speak HTTP/1.1.

Each request is answered by an async handler `(method, path, headers, body) -> (status, headers,
body)`, run as its own task, so a fake's latency delays one stream, not the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

LOOPBACK = "127.0.0.1"
MAX_CONCURRENT_STREAMS = 1000
START_TIMEOUT_S = 10
STOP_TIMEOUT_S = 10


class Headers(dict):
    """Request headers by lower-case name; get() ignores case like email.message headers."""

    def get(self, name, default=None):
        return super().get(name.lower(), default)


class _Connection(asyncio.Protocol):
    def __init__(self, server: BackgroundH2Server) -> None:
        self.server = server
        self.h2 = h2.connection.H2Connection(
            # Requests are validated (the clients under test skip that on their side); the
            # answers are the fakes' own, built lower-case and valid.
            h2.config.H2Configuration(
                client_side=False,
                header_encoding="utf-8",
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.transport = None
        self.requests: dict[int, tuple[Headers, list[bytes]]] = {}
        self.unsent: dict[int, bytes] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections_opened += 1
        self.server.open_connections.add(self)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS},
        )
        self.h2.initiate_connection()
        self._flush()

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.server.open_connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            if self.transport:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.requests[event.stream_id] = (Headers(event.headers), [])
            elif isinstance(event, h2.events.DataReceived):
                self.requests[event.stream_id][1].append(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                headers, chunks = self.requests.pop(event.stream_id)
                asyncio.ensure_future(self._answer(event.stream_id, headers, b"".join(chunks)))
            elif isinstance(event, h2.events.StreamReset):
                self.requests.pop(event.stream_id, None)
                self.unsent.pop(event.stream_id, None)
            elif isinstance(event, h2.events.WindowUpdated):
                self._send_unsent()
        self._flush()

    async def _answer(self, stream_id: int, headers: Headers, body: bytes) -> None:
        status, extra, payload = await self.server.handler(
            headers.get(":method"), headers.get(":path"), headers, body
        )
        if self.transport is None:
            return
        response = [(":status", str(status)), ("content-length", str(len(payload)))]
        response += [(name.lower(), str(value)) for name, value in extra.items()]
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.h2.send_headers(stream_id, response, end_stream=not payload)
            if payload:
                self.unsent[stream_id] = payload
                self._send_unsent()
        self._flush()

    def _send_unsent(self) -> None:
        """Send each answer's body as far as flow control allows (frame by frame, up to the window)."""
        for stream_id, data in list(self.unsent.items()):
            try:
                while data:
                    window = min(
                        self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
                    )
                    if window <= 0:
                        break
                    chunk, data = data[:window], data[window:]
                    self.h2.send_data(stream_id, chunk, end_stream=not data)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                data = b""  # the client reset or closed the stream: nothing more to send on it
            if data:
                self.unsent[stream_id] = data
            else:
                self.unsent.pop(stream_id, None)

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)


class LoopThread:
    """An event loop on a daemon thread, on which a fake's server opens, answers and closes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self, opening: Callable[[], Awaitable]) -> None:
        """Start the loop and wait for `opening()` (which binds the server) to finish on it."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        self.run(opening(), START_TIMEOUT_S)

    def run(self, coroutine: Awaitable, timeout: float = START_TIMEOUT_S):
        """Run `coroutine` on the loop from another thread; its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self, closing: Callable[[], Awaitable]) -> None:
        """Wait for `closing()` on the loop, then stop the loop and join its thread (no-op if stopped)."""
        if self._loop is None:
            return
        self.run(closing(), STOP_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_TIMEOUT_S)
        self._loop.close()
        self._loop = self._thread = None


class BackgroundH2Server:
    """h2c on an ephemeral loopback port, served by an event loop on a daemon thread.

    `connection_class` serves each connection: h2's (this module's, with an async handler) or
    the lean one (tests/fakes/_h2_frames.py, with a synchronous handler and `delay_s()`, the
    time to wait before answering).
    """

    def __init__(self, handler, name: str, connection_class=None, delay_s=lambda: 0.0) -> None:
        self.handler = handler
        self.name = name
        self.connection_class = connection_class or _Connection
        self.delay_s = delay_s
        self.port = 0
        self.connections_opened = 0
        self.open_connections: set[_Connection] = set()
        self._loop = LoopThread(f"{name}-h2")
        self._server = None

    def start(self) -> None:
        self._loop.start(self._open)

    def adopt(self, sock) -> None:
        """Serve a connection another listener accepted (its HTTP/2 preface still unread)."""
        self._loop.run(self._adopt(sock))

    async def _adopt(self, sock) -> None:
        await asyncio.get_running_loop().connect_accepted_socket(lambda: self.connection_class(self), sock)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: self.connection_class(self), LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        self._loop.stop(self._close)
        self._server = None

    async def _close(self) -> None:
        self._server.close()
        for connection in list(self.open_connections):
            if connection.transport is not None:
                connection.transport.abort()
        for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
            task.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1)
