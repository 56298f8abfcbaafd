"""Apple Push Notification service with token (.p8) auth over one HTTP/2 connection per environment.

Requests are built in the caller's thread; the I/O runs on this provider's background event
loop (one per process), where one httpcore pool keeps one HTTP/2 connection per APNs host,
each multiplexing up to 100 streams. The ES256 provider token is signed once and reused until it
is 50 minutes old. Why httpcore and not aioapns/httpx: docs/providers.md.
Apple's reference: https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpcore
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from django.conf import settings

from delivery.providers.base import Outcome, PushMessage, PushTarget, SendResult
from delivery.providers.transport import BackgroundLoop, client_ssl_context, parse_retry_after

logger = logging.getLogger(__name__)

# Apple rejects a provider token older than 60 minutes (ExpiredProviderToken) and one replaced
# more often than every 20 minutes (TooManyProviderTokenUpdates); renew at 50 to stay inside both.
PROVIDER_TOKEN_RENEW_SECS = 50 * 60
CONNECT_TIMEOUT_SECS = 10
REQUEST_TIMEOUT_SECS = 15  # one request, including the wait for a free stream on the connection
BATCH_TIMEOUT_SECS = 60  # safety net around a whole send(); unanswered deliveries are retried
# Idle connections are kept: Apple asks providers to keep them open rather than reconnect.
KEEPALIVE_EXPIRY_SECS = None
MAX_COLLAPSE_ID_BYTES = 64  # apns-collapse-id limit
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


def apns_id(delivery_id: int, withdraw: bool = False) -> str:
    kind = "withdraw" if withdraw else "delivery"  # a withdrawal is its own request, not a retry
    return str(uuid.uuid5(APNS_ID_NAMESPACE, f"{kind}:{delivery_id}"))


def apns_payload(message: PushMessage) -> dict:
    """What the app receives: `aps` plus Clarion's id, data, url and icon (same names as Web Push).

    A withdrawal is a background push `{"type": "read", "id"}`: the app removes the delivered
    notification whose payload has that id.
    """
    if message.withdraw:
        return {"aps": {"content-available": 1}, "type": "read", "id": message.notification_id}
    alert = {key: value for key, value in (("title", message.title), ("body", message.body)) if value}
    aps = {"alert": alert} if alert else {"content-available": 1}
    payload: dict = {"aps": aps, "id": message.notification_id}
    for key in ("data", "url", "icon"):
        if getattr(message, key):
            payload[key] = getattr(message, key)
    return payload


def apns_headers(message: PushMessage, topic: str) -> list[tuple[bytes, bytes]]:
    """Headers shared by every device of one message (auth and apns-id are added per request)."""
    alert = bool(message.title or message.body)
    priority = PRIORITY_IMMEDIATE if alert and message.priority == "high" else PRIORITY_POWER_SAVING
    headers = [
        (b"apns-topic", topic.encode()),
        (b"apns-push-type", b"alert" if alert else b"background"),
        (b"apns-priority", priority.encode()),
        # The ttl as Apple takes it: the absolute time (epoch seconds) after which it stops trying.
        (b"apns-expiration", str(int(message.expires_at.timestamp())).encode()),
        (b"content-type", b"application/json"),
    ]
    if message.collapse_key:
        headers.append((b"apns-collapse-id", apns_collapse_id(message.collapse_key).encode()))
    return headers


class ProviderToken:
    """The ES256 provider JWT, signed once and shared until renewal (never per request)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, key_id: str, team_id: str) -> None:
        self._key, self._key_id, self._team_id = key, key_id, team_id
        self._lock = threading.Lock()
        self._token = ""
        self._issued_at = 0.0

    def current(self) -> str:
        with self._lock:
            if not self._token or time.time() - self._issued_at >= PROVIDER_TOKEN_RENEW_SECS:
                self._sign()
            return self._token

    def renew(self, rejected: str) -> str:
        """A fresh token, unless another request already replaced `rejected` (one renewal per expiry)."""
        with self._lock:
            if self._token == rejected:
                self._sign()
            return self._token

    def _sign(self) -> None:
        now = time.time()
        claims = {"iss": self._team_id, "iat": int(now)}
        self._token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._key_id})
        self._issued_at = now


@dataclass(frozen=True)
class _Request:
    delivery_id: int
    url: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


def _not_configured_reason() -> str:
    required = ("APNS_KEY", "APNS_KEY_ID", "APNS_TEAM_ID", "APNS_TOPIC")
    missing = [name for name in required if not getattr(settings, name)]
    if missing:
        return f"apns provider is not configured: set {', '.join(missing)}"
    return ""


class ApnsProvider:
    """Token-based APNs; safe to call from many threads at once."""

    platform = "apns"

    def __init__(self) -> None:
        self._reason = _not_configured_reason()
        self._loop = BackgroundLoop("clarion-apns")
        if self._reason:
            return
        try:
            key = load_pem_private_key(Path(settings.APNS_KEY).read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError("not an EC (P-256) key")
        except (OSError, ValueError, TypeError) as exc:
            self._reason = f"apns provider is not configured: cannot load APNS_KEY {settings.APNS_KEY}: {exc}"
            return
        self._token = ProviderToken(key, settings.APNS_KEY_ID, settings.APNS_TEAM_ID)
        self._topic = settings.APNS_TOPIC
        self._endpoints = {"production": settings.APNS_ENDPOINT, "sandbox": settings.APNS_SANDBOX_ENDPOINT}
        self._extra_ca = settings.APNS_CA_BUNDLE or None

    def not_configured_reason(self) -> str:
        return self._reason

    def send(self, message: PushMessage, targets: list[PushTarget]) -> list[SendResult]:
        if not targets:
            return []
        body = json.dumps(apns_payload(message), separators=(",", ":"), ensure_ascii=False).encode()
        shared = apns_headers(message, self._topic)
        requests = [
            _Request(
                target.delivery_id,
                f"{self._endpoint(target)}/3/device/{target.token}",
                [*shared, (b"apns-id", apns_id(target.delivery_id, message.withdraw).encode())],
                body,
            )
            for target in targets
        ]
        try:
            return self._loop.run(self._send_all(requests), BATCH_TIMEOUT_SECS)
        except TimeoutError as exc:
            logger.warning("APNs batch of %d unanswered: %s; retrying it", len(requests), exc)
            return [SendResult(r.delivery_id, Outcome.RETRY, error=f"TIMEOUT: {exc}") for r in requests]

    def close(self) -> None:
        self._loop.close(_close_pools)

    def _endpoint(self, target: PushTarget) -> str:
        """Sandbox tokens (development builds) only work against the sandbox host, and vice versa."""
        return self._endpoints["sandbox" if target.environment == "sandbox" else "production"]

    # -- on the loop ----------------------------------------------------------------------------
    async def _send_all(self, requests: list[_Request]) -> list[SendResult]:
        return list(await asyncio.gather(*(self._send_one(request) for request in requests)))

    async def _send_one(self, request: _Request) -> SendResult:
        token = self._token.current()
        result, reason = await self._post(request, token)
        if reason == EXPIRED_TOKEN_REASON:  # renew and retry once; a second refusal is retried later
            result, _ = await self._post(request, self._token.renew(token))
        return result

    async def _post(self, request: _Request, token: str) -> tuple[SendResult, str]:
        """(outcome, Apple's reason or "") for one request."""
        headers = [(b"authorization", f"bearer {token}".encode()), *request.headers]
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECS):
                response = await self._pool().request(
                    "POST", request.url, headers=headers, content=request.body, extensions=_TIMEOUTS
                )
        except (TimeoutError, httpcore.TimeoutException) as exc:
            error = f"TIMEOUT: no answer from APNs within {REQUEST_TIMEOUT_SECS} s ({exc!r})"
            return SendResult(request.delivery_id, Outcome.RETRY, error=error), ""
        except (httpcore.NetworkError, httpcore.RemoteProtocolError) as exc:
            return SendResult(request.delivery_id, Outcome.RETRY, error=f"CONNECTION_ERROR: {exc!r}"), ""
        return _result(request.delivery_id, response)

    def _pool(self) -> httpcore.AsyncConnectionPool:
        """The one HTTP/2 connection pool of this process; one connection per APNs host."""
        pool = self._loop.resources.get("pool")
        if pool is None:
            pool = self._loop.resources["pool"] = httpcore.AsyncConnectionPool(
                ssl_context=client_ssl_context(extra_ca=self._extra_ca),
                http1=False,  # APNs speaks HTTP/2 only
                http2=True,
                # Per host: production and sandbox each get their own connection.
                max_connections=len(self._endpoints),
                keepalive_expiry=KEEPALIVE_EXPIRY_SECS,
            )
        return pool


_TIMEOUTS = {
    "timeout": {
        "connect": CONNECT_TIMEOUT_SECS,
        "read": REQUEST_TIMEOUT_SECS,
        "write": REQUEST_TIMEOUT_SECS,
        "pool": REQUEST_TIMEOUT_SECS,
    }
}


async def _close_pools(resources: dict) -> None:
    pool = resources.get("pool")
    if pool is not None:
        await pool.aclose()


def _result(delivery_id: int, response: httpcore.Response) -> tuple[SendResult, str]:
    """Map Apple's answer to (outcome, reason); the error text starts with Apple's reason."""
    headers = {name.lower(): value for name, value in response.headers}
    message_id = headers.get(b"apns-id", b"").decode()
    if response.status == 200:
        return SendResult(delivery_id, Outcome.SENT, provider_message_id=message_id), ""
    try:
        reason = json.loads(response.content).get("reason") or str(response.status)
    except (ValueError, AttributeError):
        reason = str(response.status)
    error = f"{reason}: HTTP {response.status} from APNs (apns-id {message_id})"
    if reason in TOKEN_DEAD_REASONS:
        return SendResult(delivery_id, Outcome.TOKEN_DEAD, error=error), reason
    if response.status == 429 or response.status >= 500 or reason == EXPIRED_TOKEN_REASON:
        retry_after = parse_retry_after(headers.get(b"retry-after"))
        return SendResult(delivery_id, Outcome.RETRY, error=error, retry_after_secs=retry_after), reason
    return SendResult(delivery_id, Outcome.FAILED, error=error), reason
