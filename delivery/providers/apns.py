"""Apple Push Notification service with token (.p8) auth over one HTTP/2 connection per environment.

Requests are built in the caller's thread; the I/O runs on this provider's background event
loop (one per process), where our HTTP/2 client (delivery/providers/http2.py) keeps one
connection per APNs host with up to 1,000 streams in flight, a whole batch framed and written at
once. The ES256 provider token is signed once per team, key id and key and reused, with its
`authorization` header, until it is 50 minutes old, by every app that holds that key. Why our
own client and not aioapns/httpx/httpcore: docs/providers.md.
Apple's reference: https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from hpack import NeverIndexedHeaderTuple

from delivery.providers.base import Outcome, PushMessage, PushTarget, SendResult, deep_merge
from delivery.providers.credentials import AppCredentials
from delivery.providers.http2 import Http2Client, Http2Request, Http2Response
from delivery.providers.transport import BackgroundLoop, client_ssl_context, parse_retry_after

logger = logging.getLogger(__name__)

# Apple rejects a provider token older than 60 minutes (ExpiredProviderToken) and one replaced
# more often than every 20 minutes (TooManyProviderTokenUpdates); renew at 50 to stay inside both.
PROVIDER_TOKEN_RENEW_SECS = 50 * 60
CONNECT_TIMEOUT_SECS = 10
REQUEST_TIMEOUT_SECS = 15  # a batch's requests, including the wait for a free stream on the connection
BATCH_TIMEOUT_SECS = 60  # safety net around a whole send(); unanswered deliveries are retried
# Idle connections are kept (Apple asks providers to keep them open rather than reconnect).
MAX_COLLAPSE_ID_BYTES = 64  # apns-collapse-id limit
MAX_PAYLOAD_BYTES = 4096  # Apple refuses larger (non-VoIP) payloads with PayloadTooLarge
PRIORITY_IMMEDIATE = "10"
PRIORITY_POWER_SAVING = "5"  # required for background (content-available) pushes
# apns-id = uuid5(namespace, delivery id): the same id in our logs, Apple's answer and on retries.
APNS_ID_NAMESPACE = uuid.UUID("5f0a7c1e-2b7d-4a57-9a8e-3c1f9d4b6e21")
# The address is gone or was never this app's: deactivate the device.
TOKEN_DEAD_REASONS = frozenset({"Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"})
EXPIRED_TOKEN_REASON = "ExpiredProviderToken"


def apns_collapse_id(collapse_key: str) -> str:
    """The collapse key if APNs takes it as is, else a stable digest that fits in 64 bytes."""
    if collapse_key.isascii() and collapse_key.isprintable() and len(collapse_key) <= MAX_COLLAPSE_ID_BYTES:
        return collapse_key
    return uuid.uuid5(APNS_ID_NAMESPACE, collapse_key).hex


_APNS_ID_HASH = hashlib.sha1(APNS_ID_NAMESPACE.bytes, usedforsecurity=False)


def apns_id(delivery_id: int, withdraw: bool = False) -> str:
    """uuid5(APNS_ID_NAMESPACE, "<kind>:<id>"), spelled out: uuid.uuid5 costs 3× as much per message."""
    kind = "withdraw" if withdraw else "delivery"  # a withdrawal is its own request, not a retry
    digest = _APNS_ID_HASH.copy()
    digest.update(f"{kind}:{delivery_id}".encode())
    raw = bytearray(digest.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # RFC 9562 §5.5: version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # and the RFC variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def apns_is_background(message: PushMessage) -> bool:
    """A withdrawal, silent, or nothing to show: a background (content-available) push."""
    return message.withdraw or message.options.silent or not (message.title or message.body)


def apns_payload(message: PushMessage) -> dict:
    """What the app receives: `aps` plus Clarion's id, data, url, icon and image, then the overrides.

    A background push carries only content-available in `aps`: Apple drops background pushes
    that also alert, badge or play a sound. A withdrawal is a background push
    `{"type": "read", "id"}`: the app removes the delivered notification whose payload has that id.
    """
    if message.withdraw:
        return {"aps": {"content-available": 1}, "type": "read", "id": message.notification_id}
    options = message.options
    if apns_is_background(message):
        aps: dict = {"content-available": 1}
    else:
        aps = {
            "alert": {
                key: value for key, value in (("title", message.title), ("body", message.body)) if value
            }
        }
        for key, value in (
            ("badge", options.badge),
            ("sound", options.sound),
            ("thread-id", options.thread_id),
            ("category", options.category),
            ("interruption-level", options.interruption_level),
        ):
            if value is not None:
                aps[key] = value
        if options.image:
            aps["mutable-content"] = 1  # lets the app's notification service extension fetch the image
    payload: dict = {"aps": aps, "id": message.notification_id}
    for key in ("data", "url", "icon"):
        if getattr(message, key):
            payload[key] = getattr(message, key)
    if options.image:
        payload["image"] = options.image
    return deep_merge(payload, message.overrides.get("apns") or {})


def apns_payload_bytes(message: PushMessage) -> bytes:
    """The request body exactly as sent."""
    return json.dumps(apns_payload(message), separators=(",", ":"), ensure_ascii=False).encode()


def apns_headers(message: PushMessage, topic: str) -> list[tuple[bytes, bytes]]:
    """Headers shared by every device of one message (auth and apns-id are added per request)."""
    background = apns_is_background(message)
    priority = PRIORITY_IMMEDIATE if not background and message.priority == "high" else PRIORITY_POWER_SAVING
    headers = [
        (b"apns-topic", topic.encode()),
        (b"apns-push-type", b"background" if background else b"alert"),
        (b"apns-priority", priority.encode()),
        # The ttl as Apple takes it: the absolute time (epoch seconds) after which it stops trying.
        (b"apns-expiration", str(int(message.expires_at.timestamp())).encode()),
        (b"content-type", b"application/json"),
    ]
    if message.collapse_key:
        headers.append((b"apns-collapse-id", apns_collapse_id(message.collapse_key).encode()))
    return headers


class ProviderToken:
    """The ES256 provider JWT and its `authorization` header, signed once and shared until renewal.

    One per (team, key id, key) in a process (`provider_token`): apps that hold the same key
    share it, and a provider rebuilt after an app's row changed keeps it, so Apple does not see
    a new token per app or per rebuild (it refuses updates more often than every 20 minutes).
    """

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        key_id: str,
        team_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key, self._key_id, self._team_id, self._clock = key, key_id, team_id, clock
        self._lock = threading.Lock()
        self._token = ""
        self._authorization = b""
        self._issued_at = 0.0

    def authorization(self) -> tuple[bytes, str]:
        """(the `authorization` header's value, the token in it), renewed once it is due."""
        with self._lock:
            if not self._token or self._clock() - self._issued_at >= PROVIDER_TOKEN_RENEW_SECS:
                self._sign()
            return self._authorization, self._token

    def renew(self, rejected: str) -> tuple[bytes, str]:
        """A fresh token, unless another request already replaced `rejected` (one renewal per expiry)."""
        with self._lock:
            if self._token == rejected:
                self._sign()
            return self._authorization, self._token

    def _sign(self) -> None:
        now = self._clock()
        claims = {"iss": self._team_id, "iat": int(now)}
        self._token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._key_id})
        self._authorization = f"bearer {self._token}".encode()
        self._issued_at = now


_provider_tokens: dict[tuple[str, str, bytes], ProviderToken] = {}
_provider_tokens_lock = threading.Lock()


def provider_token(pem: bytes, key_id: str, team_id: str) -> ProviderToken:
    """The process's ProviderToken for this team, key id and key (`pem`, a .p8 file's bytes).

    Raises ValueError/TypeError when `pem` is not an EC (P-256) private key.
    """
    cache_key = (team_id, key_id, hashlib.sha256(pem).digest())
    with _provider_tokens_lock:
        token = _provider_tokens.get(cache_key)
        if token is None:
            key = load_pem_private_key(pem, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError("not an EC (P-256) key")
            token = _provider_tokens[cache_key] = ProviderToken(key, key_id, team_id)
        return token


def _not_configured_reason(creds: AppCredentials) -> str:
    key = ("APNS_KEY", creds.apns_key_path) if creds.is_default else ("an APNs key", creds.apns_key_pem)
    required = dict([key])
    required.update(
        APNS_KEY_ID=creds.apns_key_id, APNS_TEAM_ID=creds.apns_team_id, APNS_TOPIC=creds.apns_topic
    )
    missing = [name for name, value in required.items() if not value]
    if missing:
        return f"apns provider is not configured{creds.label()}: set {', '.join(missing)}"
    return ""


class ApnsProvider:
    """Token-based APNs; safe to call from many threads at once.

    One instance per app: its own provider token (key id, team), topic and connections.
    """

    platform = "apns"

    def __init__(self, credentials: AppCredentials | None = None) -> None:
        creds = credentials or AppCredentials.from_settings()
        self._reason = _not_configured_reason(creds)
        self._loop = BackgroundLoop(f"clarion-apns-{creds.app}")
        if self._reason:
            return
        try:
            pem = (
                creds.apns_key_pem.encode() if creds.apns_key_pem else Path(creds.apns_key_path).read_bytes()
            )
            self._token = provider_token(pem, creds.apns_key_id, creds.apns_team_id)
        except (OSError, ValueError, TypeError) as exc:
            source = f"APNS_KEY {creds.apns_key_path}" if creds.is_default else "the APNs key"
            self._reason = f"apns provider is not configured{creds.label()}: cannot load {source}: {exc}"
            return
        self._topic = creds.apns_topic
        self._endpoints = {"production": creds.apns_endpoint, "sandbox": creds.apns_sandbox_endpoint}
        self._extra_ca = creds.apns_ca_bundle or None

    def not_configured_reason(self) -> str:
        return self._reason

    def send(self, message: PushMessage, targets: list[PushTarget]) -> list[SendResult]:
        if not targets:
            return []
        body = apns_payload_bytes(message)
        if len(body) > MAX_PAYLOAD_BYTES:
            error = (
                f"PAYLOAD_TOO_LARGE: the APNs payload is {len(body)} bytes; "
                f"APNs takes at most {MAX_PAYLOAD_BYTES}"
            )
            return [SendResult(target.delivery_id, Outcome.FAILED, error=error) for target in targets]
        shared = apns_headers(message, self._topic)
        # apns-id differs per request: unindexed, it cannot evict the shared headers from HPACK's table.
        requests = [
            _Request(
                target.delivery_id,
                f"{self._endpoint(target)}/3/device/{target.token}",
                NeverIndexedHeaderTuple(b"apns-id", apns_id(target.delivery_id, message.withdraw).encode()),
            )
            for target in targets
        ]
        try:
            return self._loop.run(self._send_all(requests, shared, body), BATCH_TIMEOUT_SECS)
        except TimeoutError as exc:
            logger.warning("APNs batch of %d unanswered: %s; retrying it", len(requests), exc)
            return [SendResult(r.delivery_id, Outcome.RETRY, error=f"TIMEOUT: {exc}") for r in requests]

    def close(self) -> None:
        self._loop.close(_close_client)

    def _endpoint(self, target: PushTarget) -> str:
        """Sandbox tokens (development builds) only work against the sandbox host, and vice versa."""
        return self._endpoints["sandbox" if target.environment == "sandbox" else "production"]

    # -- on the loop ----------------------------------------------------------------------------
    async def _send_all(
        self, requests: list[_Request], shared: list[tuple[bytes, bytes]], body: bytes
    ) -> list[SendResult]:
        authorization, token = self._token.authorization()
        results = await self._post_all(requests, shared, body, authorization)
        expired = [i for i, (_, reason) in enumerate(results) if reason == EXPIRED_TOKEN_REASON]
        if expired:  # renew once and retry those; a second refusal is retried later
            authorization, _ = self._token.renew(token)
            again = await self._post_all([requests[i] for i in expired], shared, body, authorization)
            for i, result in zip(expired, again, strict=True):
                results[i] = result
        return [result for result, _ in results]

    async def _post_all(
        self, requests: list[_Request], shared: list[tuple[bytes, bytes]], body: bytes, authorization: bytes
    ) -> list[tuple[SendResult, str]]:
        """(outcome, Apple's reason or "") for each request."""
        headers = [(b"authorization", authorization), *shared]
        answers = await self._client().send_all(
            [Http2Request(r.url, [*headers, r.apns_id], body) for r in requests], REQUEST_TIMEOUT_SECS
        )
        return [_result(r.delivery_id, answer) for r, answer in zip(requests, answers, strict=True)]

    def _client(self) -> Http2Client:
        """The HTTP/2 client of this process: one connection per APNs host."""
        client = self._loop.resources.get("client")
        if client is None:
            client = self._loop.resources["client"] = Http2Client(
                client_ssl_context(extra_ca=self._extra_ca), CONNECT_TIMEOUT_SECS
            )
        return client


class _Request(NamedTuple):
    """What differs per device in a batch."""

    delivery_id: int
    url: str
    apns_id: tuple[bytes, bytes]


async def _close_client(resources: dict) -> None:
    client = resources.get("client")
    if client is not None:
        await client.close()


def _result(delivery_id: int, answer: Http2Response | Exception) -> tuple[SendResult, str]:
    """Map Apple's answer to (outcome, reason); the error text starts with Apple's reason."""
    if isinstance(answer, TimeoutError):
        error = f"TIMEOUT: no answer from APNs within {REQUEST_TIMEOUT_SECS} s ({answer})"
        return SendResult(delivery_id, Outcome.RETRY, error=error), ""
    if isinstance(answer, Exception):
        return SendResult(delivery_id, Outcome.RETRY, error=f"CONNECTION_ERROR: {answer}"), ""
    headers = answer.headers
    message_id = headers.get(b"apns-id", b"").decode()
    if answer.status == 200:
        return SendResult(delivery_id, Outcome.SENT, provider_message_id=message_id), ""
    try:
        reason = json.loads(answer.body).get("reason") or str(answer.status)
    except (ValueError, AttributeError):
        reason = str(answer.status)
    error = f"{reason}: HTTP {answer.status} from APNs (apns-id {message_id})"
    if reason in TOKEN_DEAD_REASONS:
        return SendResult(delivery_id, Outcome.TOKEN_DEAD, error=error), reason
    if answer.status == 429 or answer.status >= 500 or reason == EXPIRED_TOKEN_REASON:
        retry_after = parse_retry_after(headers.get(b"retry-after"))
        return SendResult(delivery_id, Outcome.RETRY, error=error, retry_after_secs=retry_after), reason
    return SendResult(delivery_id, Outcome.FAILED, error=error), reason
