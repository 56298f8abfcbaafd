"""Fake Web Push service (RFC 8030): checks VAPID (RFC 8292), decrypts aes128gcm payloads (RFC 8291).

Over plain HTTP its one port speaks HTTP/1.1 and, to a client that opens with the HTTP/2 preface
(prior knowledge), HTTP/2, as push services speak both; over TLS it offers HTTP/1.1 only, so a
client's fallback from HTTP/2 is tested there.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
import time
import uuid
from pathlib import Path

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._failures import FailurePlan
from ._h2 import BackgroundH2Server
from ._h2_frames import LeanConnection
from ._http import BackgroundHTTPServer, JSONHandler
from .tls import LocalCA

AUTH_SECRET_BYTES = 16  # RFC 8291 section 3.2
P256_POINT_BYTES = 65  # uncompressed P-256 point: 0x04, x, y
ECE_HEADER_FIXED_BYTES = 16 + 4 + 1  # salt, record size, keyid length (RFC 8188 section 2.1)
ECE_MIN_RECORD_SIZE = 18  # RFC 8188 section 2.1: a tag and a delimiter at least
MAX_PAYLOAD_BYTES = 4096  # RFC 8030 section 7.2: services must accept at least this much
VAPID_MAX_LIFETIME_S = 24 * 3600  # RFC 8292 section 2: exp no more than 24 hours ahead
DEFAULT_RETRY_AFTER_S = 1  # Retry-After sent with 429 unless overridden
VERIFIED_TOKENS_KEPT = 1024  # VAPID tokens whose signature was checked (senders reuse one per origin)
URGENCIES = frozenset({"very-low", "low", "normal", "high"})  # RFC 8030 section 5.3
TOPIC_FORMAT = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # RFC 8030 section 5.4: <= 32 base64url chars
FAILURE_STATUSES = frozenset({404, 410, 413, 429, 500, 503})
REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    410: "Gone",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url, the encoding Web Push uses for keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_vapid_keypair() -> tuple[str, str]:
    """A VAPID key pair as (raw private scalar, uncompressed public point), both b64url.

    The private form is what pywebpush's vapid_private_key= accepts as a string
    (py_vapid.Vapid.from_string); the public form is a browser's applicationServerKey.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url_encode(private), b64url_encode(public)


@dataclasses.dataclass
class _Subscription:
    """Browser-side state the fake needs to decrypt and to restrict senders."""

    id: str
    private_key: ec.EllipticCurvePrivateKey
    public_key: bytes  # uncompressed point, the p256dh the sender encrypts to
    auth_secret: bytes
    application_server_key: str | None
    gone: bool = False


@dataclasses.dataclass(frozen=True)
class PushMessage:
    """One push message the service accepted, decrypted."""

    subscription_id: str
    plaintext: bytes
    ttl: int
    urgency: str | None
    topic: str | None
    vapid_claims: dict | None
    vapid_key: str | None
    auth_scheme: str | None  # "vapid" (RFC 8292) or "webpush" (draft, with Crypto-Key)
    headers: dict


@dataclasses.dataclass(frozen=True)
class Attempt:
    """Any push request with the status it got."""

    subscription_id: str | None
    status: int
    detail: str | None
    at: float = dataclasses.field(default_factory=time.time)  # when it arrived (epoch seconds)


class _RejectedError(Exception):
    """Abort handling with an HTTP error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Handler(JSONHandler):
    """Routes POST /push/<id> to the owning FakePushService."""

    def do_POST(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        body = self.read_body()
        status, payload, headers = self.fake._push(self.path, self.headers, body)
        if payload is None:
            self.send_body(status, b"", headers)
        else:
            self.send_json(status, payload, headers)


class FakePushService:
    """Web Push service on 127.0.0.1 (plain HTTP, or HTTPS with tls=True).

    Use as a context manager (or start()/stop()). subscribe() returns a PushSubscription-like dict
    for pywebpush; the fake keeps the private key and auth secret and decrypts what it receives.
    """

    def __init__(
        self,
        tls: bool = False,
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        rate_error: int = 503,
        seed: int = 0,
        require_vapid: bool = True,
        retry_after_s: int = DEFAULT_RETRY_AFTER_S,
    ) -> None:
        self.tls = tls
        self.latency_ms = latency_ms  # added before answering each push, for benchmarks
        self.require_vapid = require_vapid
        self.retry_after_s = retry_after_s
        self.failures = FailurePlan(error_rate, rate_error, seed)
        self.ca: LocalCA | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._http: BackgroundHTTPServer | None = None
        self._h2: BackgroundH2Server | None = None
        self._lock = threading.Lock()
        self._subscriptions: dict[str, _Subscription] = {}
        self._messages: list[PushMessage] = []
        self._attempts: list[Attempt] = []
        self._verified_vapid: dict[tuple[str, str], dict] = {}  # (token, key) -> claims

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakePushService:
        """Serve on an ephemeral loopback port (writing a CA first when tls=True)."""
        ssl_context = None
        if self.tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="fake-webpush-")
            self.ca = LocalCA(self._tmp.name)
            ssl_context = self.ca.server_context()
        else:
            self._h2 = BackgroundH2Server(
                self._h2_push, type(self).__name__, LeanConnection, lambda: self.latency_ms / 1000
            )
            self._h2.start()
        self._http = BackgroundHTTPServer(_Handler, self, ssl_context, h2=self._h2)
        self._http.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove temp files."""
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self._h2 is not None:
            self._h2.stop()
            self._h2 = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FakePushService:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        """scheme://host:port — what the VAPID "aud" claim must be."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._http.port}"

    url = origin

    @property
    def http2_connections_opened(self) -> int:
        """Connections that spoke HTTP/2 (prior knowledge) to this service."""
        return self._h2.connections_opened if self._h2 is not None else 0

    @property
    def ca_path(self) -> Path:
        """CA PEM to trust when tls=True (e.g. requests.Session().verify = str(ca_path))."""
        if self.ca is None:
            raise RuntimeError("ca_path exists only with tls=True")
        return self.ca.ca_path

    # -- subscriptions -------------------------------------------------------------------------
    def subscribe(self, application_server_key: str | None = None) -> dict:
        """Create a browser-side subscription; with application_server_key, only that VAPID key may push."""
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(AUTH_SECRET_BYTES)
        sub_id = secrets.token_urlsafe(16)
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        with self._lock:
            self._subscriptions[sub_id] = _Subscription(sub_id, key, public, auth, application_server_key)
        return {
            "endpoint": f"{self.origin}/push/{sub_id}",
            "keys": {"p256dh": b64url_encode(public), "auth": b64url_encode(auth)},
        }

    def subscription_id(self, subscription: dict | str) -> str:
        """Id for a subscription dict, endpoint URL or id."""
        if isinstance(subscription, dict):
            subscription = subscription["endpoint"]
        return subscription.rsplit("/", 1)[-1]

    def unsubscribe(self, subscription: dict | str) -> None:
        """Mark the subscription gone: pushes to it get 410 from now on."""
        with self._lock:
            self._subscriptions[self.subscription_id(subscription)].gone = True

    # -- programming failures ------------------------------------------------------------------
    def fail_subscription(self, subscription: dict | str, status: int, times: int | None = None) -> None:
        """Answer pushes to this subscription with `status` (404, 410, 413, 429, 500, 503)."""
        self._check_status(status)
        self.failures.fail_key(self.subscription_id(subscription), status, times)

    def fail_next(self, status: int, count: int = 1) -> None:
        """Answer the next `count` otherwise-valid pushes with `status`."""
        self._check_status(status)
        self.failures.fail_next(status, count)

    @staticmethod
    def _check_status(status: int) -> None:
        if status not in FAILURE_STATUSES:
            raise ValueError(f"status must be one of {sorted(FAILURE_STATUSES)}")

    # -- records -------------------------------------------------------------------------------
    @property
    def messages(self) -> list[PushMessage]:
        """Accepted, decrypted messages in arrival order."""
        with self._lock:
            return list(self._messages)

    @property
    def attempts(self) -> list[Attempt]:
        """Every push request with its status."""
        with self._lock:
            return list(self._attempts)

    def reset(self) -> None:
        """Clear records and programmed failures (subscriptions stay)."""
        self.failures.clear()
        with self._lock:
            self._messages.clear()
            self._attempts.clear()

    # -- request handling (server threads) -------------------------------------------------------
    def _h2_push(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        """One push request over HTTP/2, judged on arrival (the connection waits out the latency)."""
        arrived = time.time()
        if method != "POST":
            return 405, {}, b""
        status, payload, extra = self._push(path, headers, body, arrived=arrived)
        if payload is None:
            return status, extra, b""
        return status, {**extra, "content-type": "application/json"}, json.dumps(payload).encode()

    def _push(
        self, path: str, headers, body: bytes, arrived: float | None = None
    ) -> tuple[int, dict | None, dict]:
        """Handle one push request; returns (status, JSON body or None, extra headers)."""
        if arrived is None:
            arrived = time.time()
            if self.latency_ms:
                time.sleep(self.latency_ms / 1000)
        sub_id = path[len("/push/") :] if path.startswith("/push/") else None
        try:
            message = self._accept(sub_id, headers, body)
        except _RejectedError as rejection:
            with self._lock:
                self._attempts.append(Attempt(sub_id, rejection.status, rejection.message, arrived))
            extra = {"Retry-After": self.retry_after_s} if rejection.status == 429 else {}
            return (
                rejection.status,
                {
                    "code": rejection.status,
                    "error": REASONS.get(rejection.status, ""),
                    "message": rejection.message,
                },
                extra,
            )
        with self._lock:
            self._messages.append(message)
            self._attempts.append(Attempt(sub_id, 201, None, arrived))
        return 201, None, {"Location": f"{self.origin}/message/{uuid.uuid4().hex}", "TTL": message.ttl}

    def _accept(self, sub_id: str | None, headers, body: bytes) -> PushMessage:
        """Validate, authenticate and decrypt; raise _RejectedError with the status to answer otherwise."""
        with self._lock:
            sub = self._subscriptions.get(sub_id or "")
        if sub is None:
            raise _RejectedError(404, "No such subscription")
        if sub.gone:
            raise _RejectedError(410, "Subscription has expired or been unsubscribed")
        scheme, claims, vapid_key = self._check_vapid(headers)
        if sub.application_server_key and vapid_key != sub.application_server_key:
            raise _RejectedError(403, "VAPID key does not match the subscription's applicationServerKey")
        ttl = headers.get("TTL")
        if ttl is None or not ttl.isdigit():
            raise _RejectedError(400, "Missing or invalid TTL header")
        urgency, topic = headers.get("Urgency"), headers.get("Topic")
        if urgency is not None and urgency not in URGENCIES:
            raise _RejectedError(400, f"Invalid Urgency {urgency!r}")
        if topic is not None and not TOPIC_FORMAT.match(topic):
            raise _RejectedError(400, "Topic must be at most 32 base64url characters")
        if len(body) > MAX_PAYLOAD_BYTES:
            raise _RejectedError(413, f"Payload larger than {MAX_PAYLOAD_BYTES} bytes")
        plaintext = self._decrypt(sub, headers, body)
        status = self.failures.choose(sub.id)
        if status is not None:
            raise _RejectedError(status, f"Programmed failure {status}")
        return PushMessage(
            sub.id,
            plaintext,
            int(ttl),
            urgency,
            topic,
            claims,
            vapid_key,
            scheme,
            {k.lower(): v for k, v in headers.items() if not k.startswith(":")},
        )

    def _check_vapid(self, headers) -> tuple[str | None, dict | None, str | None]:
        """Verify the VAPID Authorization header; returns (scheme, claims, public key b64url)."""
        authorization = headers.get("Authorization")
        if not authorization:
            if self.require_vapid:
                raise _RejectedError(401, "Missing VAPID Authorization header")
            return None, None, None
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() == "vapid":  # RFC 8292: vapid t=<jwt>, k=<key>
            params = dict(p.strip().split("=", 1) for p in rest.split(",") if "=" in p)
            token, key = params.get("t"), params.get("k")
        elif scheme.lower() == "webpush":  # draft-01: WebPush <jwt> + Crypto-Key: p256ecdsa=<key>
            token = rest.strip()
            crypto_key = dict(
                p.strip().split("=", 1) for p in re.split("[;,]", headers.get("Crypto-Key", "")) if "=" in p
            )
            key = crypto_key.get("p256ecdsa")
        else:
            raise _RejectedError(401, f"Unsupported Authorization scheme {scheme!r}")
        if not token or not key:
            raise _RejectedError(401, "VAPID header needs both a token and a public key")
        claims = self._vapid_claims(token, key)
        if claims["aud"] != self.origin:
            raise _RejectedError(401, "Invalid VAPID token: Audience doesn't match")
        if claims["exp"] <= time.time():
            raise _RejectedError(401, "Invalid VAPID token: Signature has expired")
        if claims["exp"] > time.time() + VAPID_MAX_LIFETIME_S:
            raise _RejectedError(401, "VAPID exp is more than 24 hours ahead")
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            raise _RejectedError(401, "VAPID sub must be a mailto: or https: URI")
        return scheme.lower(), claims, key.rstrip("=")

    def _vapid_claims(self, token: str, key: str) -> dict:
        """The token's claims once its ES256 signature checks out against `key`.

        Senders reuse one token for hours; its signature is checked once, and aud/exp on every
        request (the check that dominated this fake's CPU under load).
        """
        with self._lock:
            claims = self._verified_vapid.get((token, key))
        if claims is not None:
            return dict(claims)
        try:
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
            claims = jwt.decode(
                token,
                public_key,
                algorithms=["ES256"],
                options={"verify_exp": False, "verify_aud": False, "require": ["aud", "exp", "sub"]},
            )
        except (ValueError, jwt.PyJWTError) as exc:
            raise _RejectedError(401, f"Invalid VAPID token: {exc}") from exc
        if not isinstance(claims["exp"], int | float):
            raise _RejectedError(401, "Invalid VAPID token: Expiration Time claim (exp) must be an integer.")
        with self._lock:
            if len(self._verified_vapid) >= VERIFIED_TOKENS_KEPT:
                self._verified_vapid.clear()
            self._verified_vapid[(token, key)] = claims
        return claims

    @staticmethod
    def _decrypt(sub: _Subscription, headers, body: bytes) -> bytes:
        """Decrypt an aes128gcm body with the subscription's private key and auth secret."""
        if not body:
            return b""
        encoding = (headers.get("Content-Encoding") or "").lower()
        if encoding != "aes128gcm":
            raise _RejectedError(400, f"Content-Encoding must be aes128gcm, got {encoding!r}")
        try:
            return aes128gcm_decrypt(body, sub.private_key, sub.public_key, sub.auth_secret)
        except (ValueError, InvalidTag) as exc:
            raise _RejectedError(400, f"Could not decrypt payload: {exc!r}") from exc


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def aes128gcm_decrypt(
    body: bytes, private_key: ec.EllipticCurvePrivateKey, public_key: bytes, auth_secret: bytes
) -> bytes:
    """RFC 8291 §3.4 key derivation and RFC 8188 records, as the user agent decrypts them.

    ValueError (or cryptography's InvalidTag) for anything a browser would drop the message for.
    """
    if len(body) < ECE_HEADER_FIXED_BYTES:
        raise ValueError("shorter than the aes128gcm header")
    salt, record_size, id_length = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    if record_size < ECE_MIN_RECORD_SIZE:
        raise ValueError(f"record size {record_size} is below {ECE_MIN_RECORD_SIZE}")
    if id_length != P256_POINT_BYTES:  # RFC 8291 §4: the keyid is the sender's public key
        raise ValueError(f"keyid is {id_length} bytes, not an uncompressed P-256 point")
    sender_public = body[ECE_HEADER_FIXED_BYTES : ECE_HEADER_FIXED_BYTES + id_length]
    sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_public)
    shared = private_key.exchange(ec.ECDH(), sender)
    # HKDF-SHA256 (RFC 5869) with single-block outputs: Extract = HMAC(salt, ikm),
    # Expand = HMAC(prk, info || 0x01) truncated.
    ikm = _hmac_sha256(
        _hmac_sha256(auth_secret, shared), b"WebPush: info\x00" + public_key + sender_public + b"\x01"
    )
    prk = _hmac_sha256(salt, ikm)
    aead = AESGCM(_hmac_sha256(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16])
    nonce = int.from_bytes(_hmac_sha256(prk, b"Content-Encoding: nonce\x00\x01")[:12], "big")
    ciphertext = body[ECE_HEADER_FIXED_BYTES + id_length :]
    if not ciphertext:
        raise ValueError("no records")
    plaintext = []
    records = range(0, len(ciphertext), record_size)
    for seq, start in enumerate(records):
        record_nonce = (nonce ^ seq).to_bytes(12, "big")
        record = aead.decrypt(record_nonce, ciphertext[start : start + record_size], None)
        content = record.rstrip(b"\x00")  # RFC 8188 §2: padding is a delimiter then zeros
        last = seq == len(records) - 1
        if not content or content[-1] != (2 if last else 1):
            raise ValueError(f"record {seq} has no {'last' if last else 'non-last'} padding delimiter")
        plaintext.append(content[:-1])
    return b"".join(plaintext)
