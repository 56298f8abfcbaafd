"""Apple Push Notification service with token (.p8) auth over one HTTP/2 connection per environment.

Requests are built in the caller's thread; the I/O runs on this provider's background event
loop (one per process), where our HTTP/2 client (delivery/providers/http2.py) keeps one
connection per APNs host with up to 1,000 streams in flight, a whole batch framed and written at
once. The ES256 provider token is signed once and reused until it is 50 minutes old. Why our
own client and not aioapns/httpx/httpcore: docs/providers.md.
Apple's reference: https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path

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


def apns_id(delivery_id: int, withdraw: bool = False) -> str:
    kind = "withdraw" if withdraw else "delivery"  # a withdrawal is its own request, not a retry
    return str(uuid.uuid5(APNS_ID_NAMESPACE, f"{kind}:{delivery_id}"))


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
            key = load_pem_private_key(pem, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError("not an EC (P-256) key")
        except (OSError, ValueError, TypeError) as exc:
            source = f"APNS_KEY {creds.apns_key_path}" if creds.is_default else "the APNs key"
            self._reason = f"apns provider is not configured{creds.label()}: cannot load {source}: {exc}"
            return
        self._token = ProviderToken(key, creds.apns_key_id, creds.apns_team_id)
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
            (
                target.delivery_id,
                Http2Request(
                    f"{self._endpoint(target)}/3/device/{target.token}",
                    [
                        *shared,
                        NeverIndexedHeaderTuple(
                            b"apns-id", apns_id(target.delivery_id, message.withdraw).encode()
                        ),
                    ],
                    body,
                ),
            )
            for target in targets
        ]
        try:
            return self._loop.run(self._send_all(requests), BATCH_TIMEOUT_SECS)
        except TimeoutError as exc:
            logger.warning("APNs batch of %d unanswered: %s; retrying it", len(requests), exc)
            return [
                SendResult(delivery_id, Outcome.RETRY, error=f"TIMEOUT: {exc}") for delivery_id, _ in requests
            ]

    def close(self) -> None:
        self._loop.close(_close_client)

    def _endpoint(self, target: PushTarget) -> str:
        """Sandbox tokens (development builds) only work against the sandbox host, and vice versa."""
        return self._endpoints["sandbox" if target.environment == "sandbox" else "production"]

    # -- on the loop ----------------------------------------------------------------------------
    async def _send_all(self, requests: list[tuple[int, Http2Request]]) -> list[SendResult]:
        token = self._token.current()
        results = await self._post_all(requests, token)
        expired = [i for i, (_, reason) in enumerate(results) if reason == EXPIRED_TOKEN_REASON]
        if expired:  # renew once and retry those; a second refusal is retried later
            again = await self._post_all([requests[i] for i in expired], self._token.renew(token))
            for i, result in zip(expired, again, strict=True):
                results[i] = result
        return [result for result, _ in results]

    async def _post_all(
        self, requests: list[tuple[int, Http2Request]], token: str
    ) -> list[tuple[SendResult, str]]:
        """(outcome, Apple's reason or "") for each request."""
        authorization = (b"authorization", f"bearer {token}".encode())
        answers = await self._client().send_all(
            [Http2Request(r.url, [authorization, *r.headers], r.body) for _, r in requests],
            REQUEST_TIMEOUT_SECS,
        )
        return [
            _result(delivery_id, answer) for (delivery_id, _), answer in zip(requests, answers, strict=True)
        ]

    def _client(self) -> Http2Client:
        """The HTTP/2 client of this process: one connection per APNs host."""
        client = self._loop.resources.get("client")
        if client is None:
            client = self._loop.resources["client"] = Http2Client(
                client_ssl_context(extra_ca=self._extra_ca), CONNECT_TIMEOUT_SECS
            )
        return client


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
