"""Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm payload encryption (RFC 8291).

Encryption (ours: cryptography's ECDH and AES-GCM, HKDF from hmac) runs in the caller's thread;
the POSTs run on this provider's background event loop. Push services (FCM, Mozilla autopush,
Apple) speak HTTP/2: a batch goes out as streams on one connection per push-service origin
through our HTTP/2 client (delivery/providers/http2.py). An origin that does not speak HTTP/2
(ALPN gives another protocol; on a cleartext development endpoint, the preface gets no HTTP/2
answer) gets HTTP/1.1 over one pooled aiohttp session instead, remembered for an hour.
The VAPID JWT is signed once per push-service origin and reused for hours. Where a request may
go is notifyproject.outbound's rule, on both transports: unless WEBPUSH_ALLOW_PRIVATE_ENDPOINTS,
the endpoint is checked as written before encryption, every address is checked again at
connect time (so a name that resolves or rebinds to a private address is refused), redirects
are not followed, and an error records the status and a reason token, never the push
service's body. Why not pywebpush.webpush() or httpx: docs/providers.md.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import hmac
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from django.conf import settings
from django.utils import timezone

from delivery.providers.base import Outcome, PushMessage, PushTarget, SendResult, deep_merge
from delivery.providers.credentials import AppCredentials
from delivery.providers.http2 import Http2Client, Http2NotSpokenError, Http2Request, Http2Response
from delivery.providers.transport import (
    BackgroundLoop,
    b64url_decode,
    b64url_encode,
    ca_bundle_from_env,
    client_ssl_context,
    parse_retry_after,
)
from notifyproject import outbound

logger = logging.getLogger(__name__)

# RFC 8292 §2: exp at most 24 h ahead, judged by the push service's clock; 12 h leaves room for
# skew, and re-signing an hour early means no request carries an almost-expired token.
VAPID_TOKEN_LIFETIME_SECS = 12 * 3600
VAPID_TOKEN_RENEW_SECS = 11 * 3600
TOPIC_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # RFC 8030 §5.4: at most 32 base64url characters
CONNECT_TIMEOUT_SECS = 10  # TCP + TLS
READ_TIMEOUT_SECS = 15  # waiting for the push service's answer
BATCH_TIMEOUT_SECS = 60  # safety net around a whole send(); unanswered deliveries are retried
# Concurrent requests (= HTTP/1.1 connections) per process, and per push service so that one
# slow service (most browsers use FCM's) cannot hold every connection.
MAX_CONNECTIONS = 100
MAX_CONNECTIONS_PER_ORIGIN = 50
KEEPALIVE_SECS = 60  # idle connections are kept this long for the next batch
# Streams in flight per HTTP/2 connection: Google's front ends (FCM, where most browsers'
# subscriptions live) advertise 100; more would only queue there.
MAX_STREAMS_PER_CONNECTION = 100
# An origin found not to speak HTTP/2 is sent HTTP/1.1 this long before HTTP/2 is tried again.
HTTP1_ORIGIN_RECHECK_SECS = 3600
DEAD_STATUSES = frozenset({404, 410})  # RFC 8030 §7.3: the subscription is gone
# RFC 8030 §7.2: a push service must accept 4096 bytes of (encrypted) body; more may be refused (413).
MAX_ENCRYPTED_BYTES = 4096
ECE_RECORD_SIZE = 4096  # rs: the record size every push service takes (RFC 8188 §2.1)
ECE_HEADER_BYTES = 16 + 4 + 1 + 65  # salt, rs, idlen, uncompressed P-256 key id (RFC 8291 §4)
ECE_RECORD_OVERHEAD = 16 + 1  # AEAD tag and padding delimiter per record
WEB_PUSH_INFO = b"WebPush: info\x00"  # RFC 8291 §3.4
CEK_INFO = b"Content-Encoding: aes128gcm\x00"  # RFC 8188 §2.2
NONCE_INFO = b"Content-Encoding: nonce\x00"  # RFC 8188 §2.3
CEK_INFO_1, NONCE_INFO_1 = CEK_INFO + b"\x01", NONCE_INFO + b"\x01"  # with HKDF-Expand's first counter
# The body's header after the salt: record size, key id length, then our 65-byte public key.
ECE_HEADER_TAIL = ECE_RECORD_SIZE.to_bytes(4, "big") + bytes([65])
_P256, _ECDH = ec.SECP256R1(), ec.ECDH()
_X962, _UNCOMPRESSED = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
SILENT_REASON = "Web Push cannot send silent notifications: browsers must show every push"


def load_vapid_private_key(value: str) -> ec.EllipticCurvePrivateKey:
    """VAPID_PRIVATE_KEY as base64url of the raw 32-byte P-256 scalar, or as PEM (PKCS#8 or SEC 1)."""
    value = value.strip()
    if value.startswith("-----BEGIN"):
        key = load_pem_private_key(value.replace("\\n", "\n").encode(), password=None)
    else:
        raw = b64url_decode(value)
        if len(raw) != 32:
            raise ValueError("expected base64url of a 32-byte P-256 private key, or a PEM")
        key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("VAPID keys are P-256 (prime256v1) EC keys")
    return key


def vapid_public_key(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as browsers take it for applicationServerKey: base64url uncompressed point."""
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url_encode(point)


def web_push_topic(collapse_key: str) -> str:
    """The collapse key if it is a valid Topic, else a stable 32-character digest of it."""
    if TOPIC_PATTERN.match(collapse_key):
        return collapse_key
    return b64url_encode(hashlib.sha256(collapse_key.encode()).digest())[:32]


def web_push_payload(message: PushMessage) -> bytes:
    """What the service worker gets (before encryption), with the overrides merged last; a
    withdrawal is `{"type": "read", "id"}`, on which /sw.js closes the notification it showed for
    that id."""
    if message.withdraw:
        return orjson.dumps({"type": "read", "id": message.notification_id})
    options = message.options
    payload = {
        "id": message.notification_id,
        "title": message.title,
        "body": message.body,
        "data": message.data,
        "url": message.url,
        "icon": message.icon,
    }
    for key, value in (("badge_count", options.badge), ("image", options.image), ("tag", options.thread_id)):
        if value is not None:
            payload[key] = value
    return orjson.dumps(deep_merge(payload, message.overrides.get("webpush") or {}))


def web_push_encrypted_size(plaintext_bytes: int) -> int:
    """The aes128gcm body's size for a plaintext of this size (RFC 8188 §2, as http-ece writes it).

    A header (salt, record size, key id = our 65-byte ephemeral public key), then records of up
    to ECE_RECORD_SIZE bytes, each carrying a padding delimiter and a 16-byte tag.
    """
    per_record = ECE_RECORD_SIZE - ECE_RECORD_OVERHEAD
    records = max(1, math.ceil(plaintext_bytes / per_record))
    return ECE_HEADER_BYTES + plaintext_bytes + records * ECE_RECORD_OVERHEAD


def web_push_encrypt(plaintext: bytes, p256dh: bytes, auth_secret: bytes) -> bytes:
    """The aes128gcm body for one subscription (RFC 8291 §3.4 with RFC 8188 records).

    A fresh sender key pair and salt per message, as the RFC requires; only the subscription's
    own keys are reused. Raises ValueError for keys that are not a P-256 point and a 16-byte secret.
    """
    if len(auth_secret) != 16:
        raise ValueError(f"the auth secret is {len(auth_secret)} bytes, not 16")
    receiver = ec.EllipticCurvePublicKey.from_encoded_point(_P256, p256dh)
    sender = ec.generate_private_key(_P256)
    sender_public = sender.public_key().public_bytes(_X962, _UNCOMPRESSED)
    shared = sender.exchange(_ECDH, receiver)
    # HKDF-SHA256 (RFC 5869) with outputs of at most one hash, all RFC 8291 needs: Extract, then
    # one HMAC per Expand. The key info (RFC 8291 §3.4), then Extract once with the salt for both
    # the content key and the nonce (RFC 8188 §2.2, §2.3).
    ikm = hmac.digest(
        hmac.digest(auth_secret, shared, "sha256"), WEB_PUSH_INFO + p256dh + sender_public + b"\x01", "sha256"
    )
    salt = os.urandom(16)
    prk = hmac.digest(salt, ikm, "sha256")
    aead = AESGCM(hmac.digest(prk, CEK_INFO_1, "sha256")[:16])
    nonce = hmac.digest(prk, NONCE_INFO_1, "sha256")[:12]
    header = salt + ECE_HEADER_TAIL + sender_public
    per_record = ECE_RECORD_SIZE - ECE_RECORD_OVERHEAD
    if len(plaintext) <= per_record:  # one record, the last: the usual case
        return header + aead.encrypt(nonce, plaintext + b"\x02", None)
    nonce_int = int.from_bytes(nonce, "big")
    starts = range(0, len(plaintext), per_record)
    parts = [header]
    for seq, start in enumerate(starts):
        delimiter = b"\x02" if seq == len(starts) - 1 else b"\x01"  # last record, or not
        record_nonce = (nonce_int ^ seq).to_bytes(12, "big")
        parts.append(aead.encrypt(record_nonce, plaintext[start : start + per_record] + delimiter, None))
    return b"".join(parts)


class VapidHeaders:
    """`vapid t=<JWT>, k=<key>` per push-service origin (the JWT's audience), signed again an hour
    before the token expires; a new key is a new provider, hence a new cache. ES256 signing is the
    costly part, so a batch's messages share one header."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, subject: str, clock=time.time) -> None:
        self._key, self._subject, self._clock = key, subject, clock
        self._public = vapid_public_key(key)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, float]] = {}  # origin -> (header, renew at)

    def for_origin(self, origin: str) -> str:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(origin)
            if cached is not None and now < cached[1]:
                return cached[0]
            claims = {"aud": origin, "exp": int(now) + VAPID_TOKEN_LIFETIME_SECS, "sub": self._subject}
            token = jwt.encode(claims, self._key, algorithm="ES256")
            header = f"vapid t={token}, k={self._public}"
            self._cache[origin] = (header, now + VAPID_TOKEN_RENEW_SECS)
            return header


@dataclass(frozen=True, slots=True)
class _Request:
    delivery_id: int
    url: str
    origin: str
    authorization: str
    body: bytes


def _not_configured_reason(creds: AppCredentials) -> str:
    values = {"VAPID_PRIVATE_KEY": creds.vapid_private_key, "VAPID_SUBJECT": creds.vapid_subject}
    missing = [name for name, value in values.items() if not value]
    if missing:
        return f"webpush provider is not configured{creds.label()}: set {', '.join(missing)}"
    if not creds.vapid_subject.startswith(("mailto:", "https:")):
        subject_rule = "VAPID_SUBJECT must be a mailto: or https: URI"
        return f"webpush provider is not configured{creds.label()}: {subject_rule}"
    return ""


class WebPushProvider:
    """Web Push to any RFC 8030 push service; safe to call from many threads at once.

    One instance per app: its own VAPID identity and connections.
    """

    platform = "webpush"

    def __init__(self, credentials: AppCredentials | None = None) -> None:
        creds = credentials or AppCredentials.from_settings()
        self._reason = _not_configured_reason(creds)
        self._loop = BackgroundLoop(f"clarion-webpush-{creds.app}")
        if self._reason:
            return
        try:
            key = load_vapid_private_key(creds.vapid_private_key)
        except ValueError as exc:
            self._reason = f"webpush provider is not configured{creds.label()}: VAPID_PRIVATE_KEY: {exc}"
            return
        public = vapid_public_key(key)
        if creds.vapid_public_key and creds.vapid_public_key.rstrip("=") != public:
            self._reason = (
                f"webpush provider is not configured{creds.label()}: "
                "VAPID_PUBLIC_KEY is not VAPID_PRIVATE_KEY's public key"
            )
            return
        self._vapid = VapidHeaders(key, creds.vapid_subject)

    def not_configured_reason(self) -> str:
        return self._reason

    def send(self, message: PushMessage, targets: list[PushTarget]) -> list[SendResult]:
        if not targets:
            return []
        if message.options.silent:
            return [
                SendResult(target.delivery_id, Outcome.SKIPPED, error=SILENT_REASON) for target in targets
            ]
        payload = web_push_payload(message)
        size = web_push_encrypted_size(len(payload))
        if size > MAX_ENCRYPTED_BYTES:
            error = (
                f"PAYLOAD_TOO_LARGE: the encrypted Web Push payload is {size} bytes; "
                f"push services must take only {MAX_ENCRYPTED_BYTES}"
            )
            return [SendResult(target.delivery_id, Outcome.FAILED, error=error) for target in targets]
        ttl = message.ttl_secs(timezone.now())
        shared = {
            "TTL": str(ttl),
            "Urgency": "high" if message.priority == "high" else "normal",
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
        }
        if message.collapse_key:
            shared["Topic"] = web_push_topic(message.collapse_key)
        # Read per send: a policy, not a client option (the registry does not rebuild providers for it).
        allow_private = settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS
        results: dict[int, SendResult] = {}
        requests: list[_Request] = []
        authorizations: dict[str, str] = {}  # origin -> VAPID header, for this batch
        for target in targets:
            request = self._request(target, payload, allow_private, authorizations)
            if isinstance(request, SendResult):
                results[target.delivery_id] = request
            else:
                requests.append(request)
        if requests:
            try:
                sent = self._loop.run(self._post_all(requests, shared, allow_private), BATCH_TIMEOUT_SECS)
            except TimeoutError as exc:
                logger.warning("Web Push batch of %d unanswered: %s; retrying it", len(requests), exc)
                sent = [SendResult(r.delivery_id, Outcome.RETRY, error=f"TIMEOUT: {exc}") for r in requests]
            results.update((result.delivery_id, result) for result in sent)
        return [results[target.delivery_id] for target in targets]

    def close(self) -> None:
        self._loop.close(_close_clients)

    def _request(
        self, target: PushTarget, payload: bytes, allow_private: bool, authorizations: dict[str, str]
    ) -> _Request | SendResult:
        """Encrypt for one subscription, or the reason it cannot be sent to."""
        try:  # again at send time: the policy may have changed since the endpoint was registered
            url = outbound.clean_url(target.token, allow_private=allow_private)
        except outbound.UnsafeURLError as exc:
            return SendResult(target.delivery_id, Outcome.FAILED, error=f"{exc.code}: {exc}")
        try:
            body = web_push_encrypt(payload, b64url_decode(target.p256dh), b64url_decode(target.auth))
        except (ValueError, TypeError) as exc:
            error = f"INVALID_SUBSCRIPTION: cannot encrypt for its keys ({exc})"
            return SendResult(target.delivery_id, Outcome.TOKEN_DEAD, error=error)
        origin = outbound.url_origin(url)
        authorization = authorizations.get(origin)
        if authorization is None:
            authorization = authorizations[origin] = self._vapid.for_origin(origin)
        return _Request(target.delivery_id, url, origin, authorization, body)

    # -- on the loop ----------------------------------------------------------------------------
    async def _post_all(
        self, requests: list[_Request], shared: dict[str, str], allow_private: bool
    ) -> list[SendResult]:
        """HTTP/2 to every origin that speaks it, HTTP/1.1 to the others (and to those found not to)."""
        http1_until = self._loop.resources.setdefault("http1-origins", {})  # origin -> retry h2 after
        now = time.monotonic()
        over_h2, over_http1 = [], []
        for request in requests:
            (over_http1 if http1_until.get(request.origin, 0) > now else over_h2).append(request)
        results: list[SendResult] = []
        if over_h2:
            head = [(name.lower().encode(), value.encode()) for name, value in shared.items()]
            by_authorization: dict[str, list[tuple[bytes, bytes]]] = {}  # one list per origin's VAPID
            for request in over_h2:
                if request.authorization not in by_authorization:
                    by_authorization[request.authorization] = [
                        *head,
                        (b"authorization", request.authorization.encode()),
                    ]
            http2_requests = [Http2Request(r.url, by_authorization[r.authorization], r.body) for r in over_h2]
            answers = await self._client(allow_private).send_all(http2_requests, READ_TIMEOUT_SECS)
            for request, answer in zip(over_h2, answers, strict=True):
                if isinstance(answer, Http2NotSpokenError):
                    http1_until[request.origin] = now + HTTP1_ORIGIN_RECHECK_SECS
                    over_http1.append(request)
                else:
                    results.append(_http2_result(request.delivery_id, answer))
        if over_http1:
            session = self._session(allow_private)
            sent = await asyncio.gather(*(_post(session, request, shared) for request in over_http1))
            results.extend(sent)
        return results

    def _client(self, allow_private: bool) -> Http2Client:
        """The HTTP/2 connections of this process, one per push-service origin, built on first use.

        Connections made while private addresses were allowed are never reused once they are not.
        """
        key = "h2:any-address" if allow_private else "h2:public-only"
        client = self._loop.resources.get(key)
        if client is None:
            client = self._loop.resources[key] = Http2Client(
                client_ssl_context(ca_file=ca_bundle_from_env()),
                CONNECT_TIMEOUT_SECS,
                MAX_STREAMS_PER_CONNECTION,
                open_connection=functools.partial(
                    outbound.create_guarded_connection, allow_private=allow_private
                ),
                alpn_protocols=("h2", "http/1.1"),
                max_body_bytes=outbound.ERROR_BODY_SCAN_BYTES + 1,
            )
        return client

    def _session(self, allow_private: bool) -> aiohttp.ClientSession:
        """The pooled HTTP/1.1 session of this process, built on first use on the loop."""
        key = "session:any-address" if allow_private else "session:public-only"
        session = self._loop.resources.get(key)
        if session is None:
            connector = outbound.guarded_connector(
                allow_private=allow_private,
                ssl=client_ssl_context(ca_file=ca_bundle_from_env()),
                limit=MAX_CONNECTIONS,
                limit_per_host=MAX_CONNECTIONS_PER_ORIGIN,
                keepalive_timeout=KEEPALIVE_SECS,
            )
            timeout = aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT_SECS, sock_read=READ_TIMEOUT_SECS)
            session = self._loop.resources[key] = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return session


async def _post(session: aiohttp.ClientSession, request: _Request, shared: dict[str, str]) -> SendResult:
    headers = {**shared, "Authorization": request.authorization}
    try:
        answer = outbound.post(session, request.url, data=request.body, headers=headers)
        async with answer as response:
            content = await outbound.read_answer(response)
    except aiohttp.InvalidURL:
        return SendResult(request.delivery_id, Outcome.FAILED, error="INVALID_URL: aiohttp cannot parse it")
    except TimeoutError:
        error = "TIMEOUT: no answer from the push service"
        return SendResult(request.delivery_id, Outcome.RETRY, error=error)
    except aiohttp.ClientError as exc:  # refused, reset, DNS failure, TLS failure, malformed answer
        refused = outbound.refused_reason(exc)
        if refused is not None:
            return SendResult(request.delivery_id, Outcome.FAILED, error=f"PRIVATE_ADDRESS: {refused}")
        error = f"CONNECTION_ERROR: {outbound.transport_error(exc)}"
        return SendResult(request.delivery_id, Outcome.RETRY, error=error)
    headers = response.headers
    return _result(
        request.delivery_id, response.status, headers.get("Location"), headers.get("Retry-After"), content
    )


def _http2_result(delivery_id: int, answer: Http2Response | Exception) -> SendResult:
    if isinstance(answer, Http2Response):
        headers = answer.headers
        location = headers.get(b"location", b"").decode("latin-1")
        return _result(delivery_id, answer.status, location, headers.get(b"retry-after"), answer.body)
    if isinstance(answer, TimeoutError):
        return SendResult(delivery_id, Outcome.RETRY, error="TIMEOUT: no answer from the push service")
    refused = outbound.refused_reason(answer)
    if refused is not None:
        return SendResult(delivery_id, Outcome.FAILED, error=f"PRIVATE_ADDRESS: {refused}")
    cause = answer.__cause__ or answer  # the connect error, in our own words (never the remote's text)
    return SendResult(delivery_id, Outcome.RETRY, error=f"CONNECTION_ERROR: {_connect_error(cause)}")


def _connect_error(exc: BaseException) -> str:
    name = type(exc).__name__
    os_errno = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and isinstance(os_errno, int):
        return f"{name} ({errno.errorcode.get(os_errno, str(os_errno))})"
    return name


async def _close_clients(resources: dict) -> None:
    for name, resource in resources.items():
        if name.startswith("session:") or name.startswith("h2:"):
            await resource.close()


def _result(delivery_id: int, status: int, location: str | None, retry_after, content: bytes) -> SendResult:
    """Map the push service's answer; the error starts with the HTTP status (the codes RFC 8030 has).

    3xx lands in FAILED: redirects are not followed (a push service has no reason to redirect).
    """
    if 200 <= status < 300:
        return SendResult(delivery_id, Outcome.SENT, provider_message_id=location or "")
    error = outbound.response_error(status, content[: outbound.ERROR_BODY_SCAN_BYTES + 1])
    if status in DEAD_STATUSES:
        return SendResult(delivery_id, Outcome.TOKEN_DEAD, error=error)
    if status == 429 or status >= 500:
        return SendResult(
            delivery_id, Outcome.RETRY, error=error, retry_after_secs=parse_retry_after(retry_after)
        )
    # 400 bad request, 401/403 VAPID refused (a key problem of ours, not the device's), 413 too large.
    return SendResult(delivery_id, Outcome.FAILED, error=error)
