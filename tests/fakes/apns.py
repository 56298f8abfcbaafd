"""Fake APNs provider API (HTTP/2 over TLS, token auth) built on raw h2, to exercise real HTTP/2 clients."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import tempfile
import threading
import time
import uuid
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ._failures import FailurePlan
from ._h2 import LoopThread
from .tls import LocalCA

LOOPBACK = "127.0.0.1"
MAX_CONCURRENT_STREAMS = 1000  # what api.push.apple.com advertises once authenticated
PROVIDER_TOKEN_MAX_AGE_S = 3600  # Apple rejects tokens whose iat is older than one hour
PROVIDER_TOKEN_UPDATE_WINDOW_S = 20 * 60  # at most one token change per connection per 20 minutes
CLOCK_SKEW_S = 60  # leeway for a provider token whose iat is slightly in the future
MAX_PAYLOAD_BYTES = 4096
MAX_VOIP_PAYLOAD_BYTES = 5120
MAX_COLLAPSE_ID_BYTES = 64
VERIFIED_TOKENS_KEPT = 1024  # provider tokens whose signature was checked

PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "location",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
        "widgets",
    }
)
VALID_PRIORITIES = frozenset({"1", "5", "10"})
# Push types whose apns-topic is the bundle id plus a suffix.
TOPIC_SUFFIXES = {
    "voip": ".voip",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity",
    "location": ".location-query",
    "pushtotalk": ".voip-ptt",
}
DEVICE_PATH = re.compile(r"^/3/device/([^/?]+)$")
DEVICE_TOKEN = re.compile(r"^(?:[0-9a-fA-F]{2}){32,100}$")  # 64..200 hex digits
EXPIRATION = re.compile(r"\d+")  # epoch seconds, or 0
UUID_FORMAT = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# reason -> HTTP status, per Apple's "Handling notification responses from APNs".
APNS_ERRORS = {
    "BadCollapseId": 400,
    "BadDeviceToken": 400,
    "BadExpirationDate": 400,
    "BadMessageId": 400,
    "BadPriority": 400,
    "BadTopic": 400,
    "DeviceTokenNotForTopic": 400,
    "DuplicateHeaders": 400,
    "InvalidPushType": 400,
    "MissingTopic": 400,
    "PayloadEmpty": 400,
    "InvalidPayload": 400,  # not an Apple reason: the fake's answer to non-JSON or "aps"-less bodies
    "ExpiredProviderToken": 403,
    "InvalidProviderToken": 403,
    "MissingProviderToken": 403,
    "BadPath": 404,
    "MethodNotAllowed": 405,
    "Unregistered": 410,
    "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
    "Shutdown": 503,
}


@dataclasses.dataclass(frozen=True)
class Notification:
    """One notification APNs accepted."""

    token: str
    headers: dict
    payload: dict
    apns_id: str
    connection_id: int
    provider_token: str


@dataclasses.dataclass(frozen=True)
class Attempt:
    """Any request, accepted or not, with the answer it got."""

    token: str | None
    status: int
    reason: str | None
    connection_id: int
    at: float = dataclasses.field(default_factory=time.time)  # when it arrived (epoch seconds)


class _ServerH2Connection(h2.connection.H2Connection):
    """h2's connection, told its open streams by the fake (`owned_streams`).

    h2 counts them, to enforce MAX_CONCURRENT_STREAMS, by walking every stream it holds for
    each new one: quadratic in the streams a client keeps in flight (8 % of the fake's CPU at
    1,000). The streams the fake has received and not yet ended or seen reset are the same
    number; h2's walk, which also forgets closed streams, runs once per read (`forget_closed`).
    """

    owned_streams: set[int] | None = None

    @property
    def open_inbound_streams(self) -> int:
        if self.owned_streams is None:
            return super().open_inbound_streams
        return len(self.owned_streams)

    def forget_closed(self) -> None:
        super().open_inbound_streams  # noqa: B018 - h2's count, for its side effect


@dataclasses.dataclass
class _Stream:
    """Request state while its frames arrive."""

    headers: list
    body: bytearray = dataclasses.field(default_factory=bytearray)


class _Connection(asyncio.Protocol):
    """One client TCP connection speaking HTTP/2 (server side)."""

    def __init__(self, fake: FakeAPNs) -> None:
        self.fake = fake
        self.id = 0
        self.transport: asyncio.Transport | None = None
        self.h2: h2.connection.H2Connection | None = None
        self.streams: dict[int, _Stream] = {}
        self.open_requests = 0  # requests received in full, not answered yet
        self.provider_token: str | None = None
        self.token_changes: list[float] = []  # times the provider token changed on this connection
        self.tasks: set[asyncio.Task] = set()  # answers waiting for a held gate
        self.timers: dict[int, asyncio.TimerHandle] = {}  # stream -> its answer waiting out the latency
        self.open_streams: set[int] = set()  # received and not yet ended by our answer or reset
        self._unsent: dict[int, tuple[bytes, bool]] = {}  # stream -> (data, end) awaiting window
        self._flush_scheduled = False

    # asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            transport.abort()  # APNs speaks HTTP/2 only
            return
        self.id = self.fake._connection_opened(self)
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = _ServerH2Connection(config=config)
        self.h2.owned_streams = self.open_streams
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.fake.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
            },
        )
        self.h2.initiate_connection()
        self._flush()

    def connection_lost(self, exc) -> None:
        self.fake._connection_closed(self)
        for task in self.tasks:
            task.cancel()
        self.drop_timers()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.h2 is None:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            if self.transport:
                self.transport.close()
            return
        for event in events:
            self._on_event(event)
        self.h2.forget_closed()
        self._flush()

    # h2 events --------------------------------------------------------------------------------
    def _on_event(self, event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self.open_streams.add(event.stream_id)
            self.streams[event.stream_id] = _Stream(list(event.headers))
            if event.stream_ended:
                self._request_complete(event.stream_id)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.body += event.data
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._request_complete(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.open_streams.discard(event.stream_id)
            self.streams.pop(event.stream_id, None)
            self._unsent.pop(event.stream_id, None)
        elif isinstance(event, h2.events.WindowUpdated):
            self._send_unsent()
        elif isinstance(event, h2.events.ConnectionTerminated) and self.transport:
            self.transport.close()

    def _request_complete(self, stream_id: int) -> None:
        """Judge the request now (arrival order matters for token rules), answer it later."""
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        answer = self.fake._judge(self, stream.headers, bytes(stream.body))
        self.open_requests += 1
        self.fake._request_started(self.open_requests)
        loop = asyncio.get_running_loop()
        if not self.fake._gate.is_set():  # held: wait for release(), then the latency
            task = loop.create_task(self._answer_after_gate(stream_id, *answer))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif self.fake.latency_ms:
            # A timer rather than a task per answer: the answers due together go out in one write.
            delay = self.fake.latency_ms / 1000
            self.timers[stream_id] = loop.call_later(delay, self._answer_timer, stream_id, *answer)
        else:
            self._answer(stream_id, *answer)

    async def _answer_after_gate(self, stream_id: int, status: int, apns_id: str, body: dict | None) -> None:
        try:
            await self.fake._gate.wait()
            if self.fake.latency_ms:
                await asyncio.sleep(self.fake.latency_ms / 1000)
        except asyncio.CancelledError:
            self._request_done()
            raise
        self._answer(stream_id, status, apns_id, body)

    def _answer_timer(self, stream_id: int, status: int, apns_id: str, body: dict | None) -> None:
        del self.timers[stream_id]
        self._answer(stream_id, status, apns_id, body)

    def drop_timers(self) -> None:
        """Forget the answers still waiting out the latency (the connection is going away)."""
        timers, self.timers = self.timers, {}
        for timer in timers.values():
            timer.cancel()
            self._request_done()

    def _answer(self, stream_id: int, status: int, apns_id: str, body: dict | None) -> None:
        """Send HEADERS (+ DATA for errors) like Apple; the write waits for the other answers due now."""
        try:
            if self.transport is None:
                return
            headers = [(":status", str(status)), ("apns-id", apns_id)]
            try:
                if body is None:
                    self.h2.send_headers(stream_id, headers, end_stream=True)
                    self.open_streams.discard(stream_id)
                else:
                    data = json.dumps(body, separators=(",", ":")).encode()
                    headers += [("content-type", "application/json"), ("content-length", str(len(data)))]
                    self.h2.send_headers(stream_id, headers)
                    self._send_data(stream_id, data)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.open_streams.discard(stream_id)  # client reset the stream or went away
            self._flush_soon()
        finally:
            self._request_done()

    def _request_done(self) -> None:
        self.open_requests -= 1
        self.fake._request_finished()

    # output ---------------------------------------------------------------------------------
    def _send_data(self, stream_id: int, data: bytes) -> None:
        """Send within the flow-control window; keep the rest until WINDOW_UPDATE arrives."""
        window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
        chunk, rest = data[:window], data[window:]
        self.h2.send_data(stream_id, chunk, end_stream=not rest)
        if rest:
            self._unsent[stream_id] = (rest, True)
        else:
            self.open_streams.discard(stream_id)

    def _send_unsent(self) -> None:
        for stream_id, (data, _) in list(self._unsent.items()):
            del self._unsent[stream_id]
            try:
                self._send_data(stream_id, data)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.open_streams.discard(stream_id)

    def _flush_soon(self) -> None:
        """Flush once the loop has run every callback that is ready now (e.g. answers due together)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is not None and self.h2 is not None:
            data = self.h2.data_to_send()
            if data:
                self.transport.write(data)

    def abort(self) -> None:
        """Drop the connection immediately (used when the fake stops)."""
        if self.transport is not None:
            self.transport.abort()


class FakeAPNs:
    """APNs HTTP/2 provider API on 127.0.0.1 with token (JWT) authentication.

    Use as a context manager (or start()/stop()). Trust `ca_path`, sign provider tokens with
    `key_path` / `key_id` / `team_id`, and send to `url` + "/3/device/<token>".
    """

    def __init__(
        self,
        topic: str = "com.example.clarion",
        team_id: str = "TEAM123456",
        key_id: str = "KEY1234567",
        max_concurrent_streams: int = MAX_CONCURRENT_STREAMS,
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        rate_error: str = "ServiceUnavailable",
        seed: int = 0,
        directory: str | Path | None = None,
    ) -> None:
        self.topic = topic
        self.team_id = team_id
        self.key_id = key_id
        self.max_concurrent_streams = max_concurrent_streams
        self.latency_ms = latency_ms  # added before each answer (concurrently per stream)
        self.failures = FailurePlan(error_rate, rate_error, seed)
        self._directory = directory
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._signing_key = ec.generate_private_key(ec.SECP256R1())
        self._lock = threading.Lock()
        self._in_flight = threading.Condition(self._lock)
        self._notifications: list[Notification] = []
        self._attempts: list[Attempt] = []
        self._provider_tokens: set[str] = set()
        self._verified_tokens: dict[str, tuple[dict, dict]] = {}  # token -> (header, claims)
        self._last_body, self._last_payload = b"", None  # the loop thread's; see _payload()
        self._connections_opened = 0
        self._connections: set[_Connection] = set()
        self._pending = 0
        self._peak_streams = 0
        self._loop = LoopThread("FakeAPNs-loop")
        self._server: asyncio.AbstractServer | None = None
        self._gate: asyncio.Event | None = None
        self.ca: LocalCA | None = None
        self.key_path: Path | None = None
        self.port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeAPNs:
        """Write the CA and .p8 key, then serve on an ephemeral loopback port."""
        if self._directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fake-apns-")
            directory = Path(self._tmp.name)
        else:
            directory = Path(self._directory)
        self.ca = LocalCA(directory)
        self.key_path = directory / f"AuthKey_{self.key_id}.p8"
        self.key_path.write_bytes(
            self._signing_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self._loop.start(self._open)
        return self

    async def _open(self) -> None:
        self._gate = asyncio.Event()
        self._gate.set()
        ssl_context = self.ca.server_context(alpn=["h2"])
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), LOOPBACK, 0, ssl=ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Drop connections, stop the loop and thread, remove temp files."""
        if not self._loop.running:
            return
        self._loop.stop(self._close)
        self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def _close(self) -> None:
        self._server.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            for task in list(connection.tasks):
                task.cancel()
            connection.drop_timers()
            connection.abort()
        await self._server.wait_closed()
        tasks = [t for c in connections for t in c.tasks]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> FakeAPNs:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- addresses and keys --------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. https://127.0.0.1:PORT (the cert is also valid for localhost)."""
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def ca_path(self) -> Path:
        """PEM of the CA that signed the server certificate (for APNS_CA_BUNDLE)."""
        return self.ca.ca_path

    def client_ssl_context(self):
        """An ssl.SSLContext trusting only this fake's CA."""
        return self.ca.client_context()

    # -- programming behaviour -----------------------------------------------------------------
    def fail_token(self, token: str, reason: str, times: int | None = None) -> None:
        """Answer requests for this device token with an APNs error reason (e.g. "Unregistered")."""
        self._check_reason(reason)
        self.failures.fail_key(token, reason, times)

    def fail_next(self, reason: str, count: int = 1) -> None:
        """Answer the next `count` otherwise-valid requests with `reason`."""
        self._check_reason(reason)
        self.failures.fail_next(reason, count)

    @staticmethod
    def _check_reason(reason: str) -> None:
        if reason not in APNS_ERRORS:
            raise ValueError(f"unknown APNs reason {reason!r}; choose from {sorted(APNS_ERRORS)}")

    def hold(self) -> None:
        """Stop answering (requests are still received and judged) until release()."""
        self._loop.run(self._set_gate(False))

    def release(self) -> None:
        """Answer everything held by hold()."""
        self._loop.run(self._set_gate(True))

    async def _set_gate(self, is_open: bool) -> None:
        if is_open:
            self._gate.set()
        else:
            self._gate.clear()

    def wait_for_in_flight(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least `count` requests are received but unanswered; False on timeout."""
        with self._in_flight:
            return self._in_flight.wait_for(lambda: self._pending >= count, timeout)

    # -- records -------------------------------------------------------------------------------
    @property
    def notifications(self) -> list[Notification]:
        """Accepted notifications, in arrival order."""
        with self._lock:
            return list(self._notifications)

    @property
    def attempts(self) -> list[Attempt]:
        """Every request with its status and reason."""
        with self._lock:
            return list(self._attempts)

    @property
    def connections_opened(self) -> int:
        """TCP+TLS+h2 connections accepted so far."""
        with self._lock:
            return self._connections_opened

    @property
    def provider_tokens(self) -> set[str]:
        """Distinct provider JWTs presented (len() == 1 means the client cached its token)."""
        with self._lock:
            return set(self._provider_tokens)

    @property
    def peak_concurrent_streams(self) -> int:
        """Most requests in flight at once on a single connection."""
        with self._lock:
            return self._peak_streams

    def reset(self) -> None:
        """Clear records and programmed failures (connections stay open)."""
        self.failures.clear()
        with self._lock:
            self._notifications.clear()
            self._attempts.clear()
            self._provider_tokens.clear()
            self._peak_streams = 0

    # -- bookkeeping called from the loop thread ------------------------------------------------
    def _connection_opened(self, connection: _Connection) -> int:
        with self._lock:
            self._connections_opened += 1
            self._connections.add(connection)
            return self._connections_opened

    def _connection_closed(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _request_started(self, open_on_connection: int) -> None:
        with self._in_flight:
            self._pending += 1
            self._peak_streams = max(self._peak_streams, open_on_connection)
            self._in_flight.notify_all()

    def _request_finished(self) -> None:
        with self._in_flight:
            self._pending -= 1
            self._in_flight.notify_all()

    # -- request judgement ----------------------------------------------------------------------
    def _judge(self, connection: _Connection, raw_headers: list, body: bytes) -> tuple[int, str, dict | None]:
        """Validate one request like APNs; return (status, apns-id, error body or None) and record it."""
        headers: dict[str, str] = {}
        duplicate = False
        for name, value in raw_headers:
            duplicate |= name in headers and name.startswith("apns-")
            headers[name] = value
        supplied_id = headers.get("apns-id")
        apns_id = supplied_id if supplied_id and UUID_FORMAT.match(supplied_id) else str(uuid.uuid4()).upper()
        match = DEVICE_PATH.match(headers.get(":path", ""))
        token = match.group(1) if match else None
        reason = self._validate(connection, headers, body, token, duplicate, supplied_id)
        if reason is None:
            reason = self.failures.choose(token)
        error_body = None
        if reason is None:
            status = 200
            with self._lock:
                self._notifications.append(
                    Notification(
                        token,
                        {k: v for k, v in headers.items() if not k.startswith(":")},
                        self._payload(body),
                        apns_id,
                        connection.id,
                        connection.provider_token,
                    )
                )
        else:
            status = APNS_ERRORS[reason]
            error_body = {"reason": reason}
            if reason == "Unregistered":
                error_body["timestamp"] = int(time.time() * 1000)  # ms since epoch, like Apple
        with self._lock:
            self._attempts.append(Attempt(token, status, reason, connection.id))
        return status, apns_id, error_body

    def _validate(self, connection, headers, body, token, duplicate, supplied_id) -> str | None:
        """Return the APNs reason this request is rejected with, or None if it is well-formed."""
        if headers.get(":method") != "POST":
            return "MethodNotAllowed"
        if token is None:
            return "BadPath"
        if not DEVICE_TOKEN.match(token):
            return "BadDeviceToken"
        auth_error = self._check_provider_token(connection, headers.get("authorization"))
        if auth_error:
            return auth_error
        if duplicate:
            return "DuplicateHeaders"
        push_type = headers.get("apns-push-type")
        if push_type is not None and push_type not in PUSH_TYPES:
            return "InvalidPushType"
        topic = headers.get("apns-topic")
        if not topic:
            return "MissingTopic"
        if topic != self.topic + TOPIC_SUFFIXES.get(push_type or "", ""):
            return "DeviceTokenNotForTopic"
        if headers.get("apns-priority", "10") not in VALID_PRIORITIES:
            return "BadPriority"
        if not EXPIRATION.fullmatch(headers.get("apns-expiration", "0")):
            return "BadExpirationDate"
        if len(headers.get("apns-collapse-id", "").encode()) > MAX_COLLAPSE_ID_BYTES:
            return "BadCollapseId"
        if supplied_id is not None and not UUID_FORMAT.match(supplied_id):
            return "BadMessageId"
        if not body:
            return "PayloadEmpty"
        limit = MAX_VOIP_PAYLOAD_BYTES if push_type == "voip" else MAX_PAYLOAD_BYTES
        if len(body) > limit:
            return "PayloadTooLarge"
        try:
            payload = self._payload(body)
        except ValueError:
            return "InvalidPayload"
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return "InvalidPayload"
        return None

    def _payload(self, body: bytes) -> object:
        """The JSON body, parsed once for a run of requests with the same body (a batch's devices)."""
        if body != self._last_body:
            self._last_payload, self._last_body = json.loads(body), body
        return self._last_payload

    def _check_provider_token(self, connection: _Connection, authorization: str | None) -> str | None:
        """Verify `authorization: bearer <ES256 JWT>` and Apple's token-refresh rate rule."""
        if not authorization:
            return "MissingProviderToken"
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "MissingProviderToken"
        with self._lock:
            self._provider_tokens.add(token)
            verified = self._verified_tokens.get(token)
        if verified is None:
            # Providers reuse one token for up to an hour: check its signature once (the costliest
            # step per request); age and update rules below still apply to every request.
            try:
                header = jwt.get_unverified_header(token)
                claims = jwt.decode(
                    token,
                    self._signing_key.public_key(),
                    algorithms=["ES256"],
                    options={
                        "verify_iat": False,
                        "verify_exp": False,
                        "verify_nbf": False,
                        "require": ["iss", "iat"],
                    },
                )
            except jwt.PyJWTError:
                return "InvalidProviderToken"
            with self._lock:
                if len(self._verified_tokens) >= VERIFIED_TOKENS_KEPT:
                    self._verified_tokens.clear()
                self._verified_tokens[token] = (header, claims)
        else:
            header, claims = verified
        if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
            return "InvalidProviderToken"
        if claims["iss"] != self.team_id or not isinstance(claims["iat"], int):
            return "InvalidProviderToken"
        now = time.time()
        if claims["iat"] > now + CLOCK_SKEW_S:
            return "InvalidProviderToken"
        if now - claims["iat"] > PROVIDER_TOKEN_MAX_AGE_S:
            return "ExpiredProviderToken"
        if connection.provider_token is None:
            connection.provider_token = token
        elif token != connection.provider_token:
            recent = [t for t in connection.token_changes if now - t < PROVIDER_TOKEN_UPDATE_WINDOW_S]
            if recent:
                return "TooManyProviderTokenUpdates"
            connection.token_changes = recent + [now]
            connection.provider_token = token
        return None
