"""Fake FCM HTTP v1 + Google OAuth2 token endpoint, so firebase-admin can be driven for real on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ._failures import FailurePlan
from ._h2 import BackgroundH2Server
from ._http import BackgroundHTTPServer, JSONHandler

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # google-auth always puts this in "aud"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ACCEPTED_SCOPES = frozenset(
    {  # either is enough for FCM v1 in production
        "https://www.googleapis.com/auth/firebase.messaging",
        "https://www.googleapis.com/auth/cloud-platform",
    }
)
ACCESS_TOKEN_LIFETIME_S = 3600
ASSERTION_MAX_LIFETIME_S = 3600  # Google rejects assertions valid for longer than an hour
CLOCK_SKEW_S = 300  # leeway for iat/exp checks
RSA_KEY_BITS = 2048
DEFAULT_RETRY_AFTER_S = 1  # Retry-After sent with QUOTA_EXCEEDED unless overridden
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
TARGET_FIELDS = ("token", "fid", "topic", "condition")  # firebase-admin 7.7 adds "fid", deprecates "token"

# FCM errorCode -> (HTTP status, canonical status, message), as documented for the v1 API.
FCM_ERRORS = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "INVALID_ARGUMENT": (
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
    ),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for sending messages."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}


def fcm_error_body(error_code: str) -> tuple[int, dict]:
    """Status and body of an FCM v1 error, in the shape firebase-admin parses into its exceptions."""
    status, canonical, message = FCM_ERRORS[error_code]
    return status, {
        "error": {
            "code": status,
            "message": message,
            "status": canonical,
            "details": [{"@type": FCM_ERROR_TYPE, "errorCode": error_code}],
        }
    }


def _google_error(status: int, canonical: str, message: str) -> dict:
    """A generic Google API error body (no FCM detail)."""
    return {"error": {"code": status, "message": message, "status": canonical}}


def block_regional_access_boundary_lookup(credential) -> None:
    """Stop google-auth from calling iamcredentials.googleapis.com in a background thread.

    google-auth >= 2.4x looks up a "Regional Access Boundary" for service-account credentials after
    each token refresh; against a fake that is an off-loopback request. Pass the google credential
    (e.g. ``messaging._get_messaging_service(app)._credential``).
    """
    credential._is_regional_access_boundary_lookup_required = lambda: False


@dataclasses.dataclass(frozen=True)
class SentMessage:
    """One message FCM accepted."""

    project_id: str
    message: dict
    name: str
    validate_only: bool
    access_token: str


@dataclasses.dataclass(frozen=True)
class Attempt:
    """Any messages:send request, successful or not, so tests can count retries."""

    target: str | None
    status: int
    error: str | None
    at: float = dataclasses.field(default_factory=time.time)  # when it arrived (epoch seconds)


class _Handler(JSONHandler):
    """Routes /token and /v1/projects/{p}/messages:send to the owning FakeFCM."""

    def do_POST(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        body = self.read_body()
        if self.path == "/token":
            status, payload = self.fake._grant(body)
            self.send_json(status, payload)
            return
        prefix, suffix = "/v1/projects/", "/messages:send"
        if self.path.startswith(prefix) and self.path.endswith(suffix):
            project = self.path[len(prefix) : -len(suffix)]
            status, payload, headers = self.fake._send(project, self.headers, body)
            self.send_json(status, payload, headers)
            return
        self.send_json(404, _google_error(404, "NOT_FOUND", f"No route for {self.path}"))


class FakeFCM:
    """FCM HTTP v1 and OAuth2 token endpoint on 127.0.0.1, with verifiable service-account auth.

    Use as a context manager (or start()/stop()). Point firebase-admin at it with
    write_service_account() (its token_uri is this fake) and the per-app messaging URL (send_url).
    The same API also answers over HTTP/2 (cleartext, prior knowledge) at `h2_url`, as FCM
    answers over HTTP/2 at fcm.googleapis.com.
    """

    def __init__(
        self,
        project_id: str = "clarion-test",
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        rate_error: str = "UNAVAILABLE",
        seed: int = 0,
        retry_after_s: int = DEFAULT_RETRY_AFTER_S,
    ) -> None:
        self.project_id = project_id
        self.client_email = f"firebase-adminsdk@{project_id}.iam.gserviceaccount.com"
        self.private_key_id = secrets.token_hex(20)
        self.latency_ms = latency_ms  # added before answering messages:send, for benchmarks
        self.retry_after_s = retry_after_s
        self.failures = FailurePlan(error_rate, rate_error, seed)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # access token -> expiry (epoch seconds)
        self._messages: list[SentMessage] = []
        self._attempts: list[Attempt] = []
        self._assertions: list[dict] = []
        self._http = BackgroundHTTPServer(_Handler, self)
        self._h2 = BackgroundH2Server(self._h2_request, type(self).__name__)
        self._tmp: tempfile.TemporaryDirectory | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeFCM:
        """Start serving on an ephemeral loopback port."""
        self._http.start()
        self._h2.start()
        return self

    def stop(self) -> None:
        """Stop the server and delete any files this fake wrote to its own temp dir."""
        self._http.stop()
        self._h2.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FakeFCM:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- addresses and credentials -----------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self._http.port}"

    @property
    def h2_url(self) -> str:
        """Base URL of the HTTP/2 listener (h2c), e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self._h2.port}"

    @property
    def h2_connections_opened(self) -> int:
        return self._h2.connections_opened

    @property
    def token_uri(self) -> str:
        """OAuth2 token endpoint to put in the service-account JSON."""
        return f"{self.url}/token"

    @property
    def send_url(self) -> str:
        """messages:send URL for this fake's project (what firebase-admin's _fcm_url should be)."""
        return f"{self.url}/v1/projects/{self.project_id}/messages:send"

    def service_account_info(self) -> dict:
        """Service-account JSON content whose key the fake can verify and whose token_uri is the fake."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
        }

    def write_service_account(self, path: str | Path | None = None) -> Path:
        """Write the service-account JSON (for FCM_CREDENTIALS); defaults to a temp file removed on stop()."""
        if path is None:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="fake-fcm-")
            path = Path(self._tmp.name) / "service-account.json"
        path = Path(path)
        path.write_text(json.dumps(self.service_account_info(), indent=2))
        return path

    # -- programming failures ------------------------------------------------------------------
    def fail_token(self, token: str, error: str, times: int | None = None) -> None:
        """Fail sends to this registration token (or fid/topic/condition) with an FCM errorCode."""
        self._check_error(error)
        self.failures.fail_key(token, error, times)

    def fail_next(self, error: str, count: int = 1) -> None:
        """Fail the next `count` sends, whatever their target."""
        self._check_error(error)
        self.failures.fail_next(error, count)

    def revoke_access_tokens(self) -> None:
        """Invalidate every issued access token, so the next send gets 401 and must re-authenticate."""
        with self._lock:
            self._tokens.clear()

    @staticmethod
    def _check_error(error: str) -> None:
        if error not in FCM_ERRORS:
            raise ValueError(f"unknown FCM error {error!r}; choose from {sorted(FCM_ERRORS)}")

    # -- records -------------------------------------------------------------------------------
    @property
    def messages(self) -> list[SentMessage]:
        """Messages accepted, in arrival order."""
        with self._lock:
            return list(self._messages)

    @property
    def attempts(self) -> list[Attempt]:
        """Every messages:send request with the status it got."""
        with self._lock:
            return list(self._attempts)

    @property
    def token_requests(self) -> int:
        """How many access tokens were granted (tests assert the client caches its token)."""
        with self._lock:
            return len(self._assertions)

    @property
    def assertions(self) -> list[dict]:
        """Verified claims of each JWT assertion presented to /token."""
        with self._lock:
            return list(self._assertions)

    def reset(self) -> None:
        """Clear records, counters and programmed failures (issued tokens stay valid)."""
        self._h2.connections_opened = 0
        self.failures.clear()
        with self._lock:
            self._messages.clear()
            self._attempts.clear()
            self._assertions.clear()

    # -- request handling (server threads) -------------------------------------------------------
    def _grant(self, body: bytes) -> tuple[int, dict]:
        """OAuth2 JWT-bearer grant: verify the assertion against our key and issue an access token."""
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}
        try:
            header = jwt.get_unverified_header(form.get("assertion", ""))
            claims = jwt.decode(
                form["assertion"],
                self._key.public_key(),
                algorithms=["RS256"],
                audience=[GOOGLE_TOKEN_URI, self.token_uri],
                issuer=self.client_email,
                options={"require": ["iss", "aud", "iat", "exp"]},
                leeway=CLOCK_SKEW_S,
            )
        except (KeyError, jwt.PyJWTError) as exc:
            return 400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"}
        if header.get("kid") not in (None, self.private_key_id):
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if claims["exp"] - claims["iat"] > ASSERTION_MAX_LIFETIME_S:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT: lifetime too long"}
        if not ACCEPTED_SCOPES & set(str(claims.get("scope", "")).split()):
            return 400, {"error": "invalid_scope", "error_description": "No FCM-capable scope requested"}
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.time() + ACCESS_TOKEN_LIFETIME_S
            self._assertions.append(claims)
        return 200, {"access_token": token, "expires_in": ACCESS_TOKEN_LIFETIME_S, "token_type": "Bearer"}

    def _authorised(self, headers) -> str | None:
        """Return the bearer token if it is one we issued and it has not expired."""
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        with self._lock:
            expiry = self._tokens.get(token.strip())
        return token.strip() if expiry and expiry > time.time() else None

    def _send(self, project: str, headers, body: bytes) -> tuple[int, dict, dict]:
        """messages:send: authenticate, validate, apply programmed failures, record."""
        arrived = time.time()
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        return self._answer_send(project, headers, body, arrived)

    async def _h2_request(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        """The HTTP/2 listener's answer: the same routes, the latency awaited per stream."""
        prefix, suffix = "/v1/projects/", "/messages:send"
        if method == "POST" and path == "/token":
            status, payload = self._grant(body)
            extra = {}
        elif method == "POST" and path.startswith(prefix) and path.endswith(suffix):
            arrived = time.time()
            if self.latency_ms:
                await asyncio.sleep(self.latency_ms / 1000)
            status, payload, extra = self._answer_send(
                path[len(prefix) : -len(suffix)], headers, body, arrived
            )
        else:
            status, payload, extra = 404, _google_error(404, "NOT_FOUND", f"No route for {path}"), {}
        return (
            status,
            {"content-type": "application/json; charset=UTF-8", **extra},
            json.dumps(payload).encode(),
        )

    def _answer_send(self, project: str, headers, body: bytes, arrived: float) -> tuple[int, dict, dict]:
        status, payload, extra, target, error = self._send_inner(project, headers, body)
        with self._lock:
            self._attempts.append(Attempt(target, status, error, arrived))
        return status, payload, extra

    def _send_inner(self, project, headers, body):
        access_token = self._authorised(headers)
        if access_token is None:
            return (
                401,
                _google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                ),
                {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
                None,
                "UNAUTHENTICATED",
            )
        if project != self.project_id:
            return (
                403,
                _google_error(403, "PERMISSION_DENIED", "Permission denied on project"),
                {},
                None,
                "PERMISSION_DENIED",
            )
        try:
            data = json.loads(body)
            message = data["message"]
            if not isinstance(message, dict):
                raise TypeError("message must be an object")
        except (ValueError, KeyError, TypeError) as exc:
            return (
                400,
                _google_error(400, "INVALID_ARGUMENT", f"Invalid JSON payload: {exc}"),
                {},
                None,
                "INVALID_ARGUMENT",
            )
        targets = [message[k] for k in TARGET_FIELDS if k in message]
        if len(targets) != 1:
            status, payload = fcm_error_body("INVALID_ARGUMENT")
            payload["error"]["message"] = "Exactly one of token, fid, topic or condition is required"
            return status, payload, {}, None, "INVALID_ARGUMENT"
        target = targets[0]
        error = self.failures.choose(target)
        if error is not None:
            status, payload = fcm_error_body(error)
            extra = {"Retry-After": self.retry_after_s} if error == "QUOTA_EXCEEDED" else {}
            return status, payload, extra, target, error
        name = f"projects/{project}/messages/0:{uuid.uuid4().hex}"
        with self._lock:
            self._messages.append(
                SentMessage(project, message, name, bool(data.get("validate_only")), access_token)
            )
        return 200, {"name": name}, {}, target, None
