"""Firebase Cloud Messaging (HTTP v1): firebase-admin for OAuth and the message, our HTTP/2 to send.

The v1 `message` object is built once per notification with firebase-admin's own encoder, and
only the token changes per device. The POSTs run on this provider's background event loop over
one HTTP/2 connection to FCM with a whole batch of streams in flight (delivery/providers/http2.py):
firebase-admin's send() costs a requests round trip and a thread per message, several times the
CPU. The OAuth token is firebase-admin's credential, refreshed in the caller's thread when it
is about to expire or FCM answers 401. No retries here: delivery/sending.py's back-off alone
decides. See docs/providers.md.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from urllib.parse import urlsplit

import firebase_admin
import google.auth.exceptions
import google.auth.transport.requests
import orjson
import requests
from django.utils import timezone
from firebase_admin import _messaging_encoder, messaging
from firebase_admin import credentials as credentials_module

from delivery.providers.apns import apns_collapse_id
from delivery.providers.base import Outcome, PushMessage, PushTarget, SendResult, deep_merge
from delivery.providers.credentials import AppCredentials
from delivery.providers.http2 import Http2Client, Http2Request, Http2Response
from delivery.providers.transport import (
    BackgroundLoop,
    ca_bundle_from_env,
    client_ssl_context,
    parse_retry_after,
)
from delivery.providers.webpush import web_push_topic

logger = logging.getLogger(__name__)

GOOGLE_FCM_ENDPOINT = "https://fcm.googleapis.com"
CONNECT_TIMEOUT_SECS = 10
REQUEST_TIMEOUT_SECS = 15  # a batch's requests, including the wait for a free stream
TOKEN_TIMEOUT_SECS = 10  # the OAuth token refresh
BATCH_TIMEOUT_SECS = 60  # safety net around a whole send(); unanswered deliveries are retried
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
TOKEN_DEAD_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
# INVALID_ARGUMENT is also FCM's answer to a bad payload; only this message says the token is bad.
BAD_TOKEN_MESSAGE = "registration token"
RETRY_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "UNKNOWN"})
PRIORITY_APNS = {"high": "10", "normal": "5"}
MAX_PAYLOAD_BYTES = 4096  # FCM's limit on a message's data and notification payload
# Google's canonical codes for an error answer without a body we can read (as firebase-admin maps them).
STATUS_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "CONFLICT",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
UNAUTHENTICATED = "UNAUTHENTICATED"  # FCM refused our OAuth token (revoked): refresh and send again
# What firebase-admin's own send() adds to each request.
CLIENT_HEADERS = [
    (b"content-type", b"application/json; charset=UTF-8"),
    (b"x-goog-api-format-version", b"2"),
    (b"x-firebase-client", f"fire-admin-python/{firebase_admin.__version__}".encode()),
]


def _is_google(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "googleapis.com" or host.endswith(".googleapis.com")


def fcm_message_template(message: PushMessage, ttl_secs: int) -> dict:
    """The keyword arguments of messaging.Message shared by every device of one notification."""
    if message.withdraw:
        return fcm_withdraw_template(message, ttl_secs)
    options = message.options
    alert = _shows_alert(message)
    data = _fcm_data(message)
    collapse = message.collapse_key or None
    webpush_headers = {"Urgency": "high" if message.priority == "high" else "normal", "TTL": str(ttl_secs)}
    apns_headers = {
        "apns-push-type": "alert" if alert else "background",
        "apns-priority": PRIORITY_APNS[message.priority] if alert else "5",  # background must be 5
        "apns-expiration": str(int(message.expires_at.timestamp())),
    }
    if collapse:
        webpush_headers["Topic"] = web_push_topic(collapse)
        apns_headers["apns-collapse-id"] = apns_collapse_id(collapse)
    android_notification = None
    if alert:
        android_notification = messaging.AndroidNotification(
            notification_count=options.badge,
            sound=options.sound,
            # The thread when the sender names one (a newer message of it replaces the older);
            # else a tag the app can name to remove it once read elsewhere (FCM shows it as (tag, id 0)).
            tag=options.thread_id or withdraw_tag(message.notification_id),
            click_action=options.category,
            channel_id=options.channel_id,
        )
    return {
        "data": data,
        "notification": messaging.Notification(
            title=message.title or None, body=message.body or None, image=options.image
        )
        if alert
        else None,
        "android": messaging.AndroidConfig(
            priority="high" if message.priority == "high" else "normal",
            ttl=ttl_secs,
            collapse_key=collapse,
            notification=android_notification,
        ),
        "apns": messaging.APNSConfig(
            headers=apns_headers,
            payload=None if alert else messaging.APNSPayload(aps=messaging.Aps(content_available=True)),
        ),
        "webpush": messaging.WebpushConfig(
            headers=webpush_headers,
            notification=messaging.WebpushNotification(
                title=message.title or None, body=message.body or None, icon=message.icon or None
            )
            if alert
            else None,
            # FCM takes only https links here; others still reach the app as data["clarion_url"].
            fcm_options=messaging.WebpushFCMOptions(link=message.url)
            if message.url.startswith("https://")
            else None,
        ),
    }


def withdraw_tag(notification_id: int) -> str:
    return f"clarion-{notification_id}"


def _shows_alert(message: PushMessage) -> bool:
    return bool(message.title or message.body) and not message.options.silent  # silent: data-only


def _fcm_data(message: PushMessage) -> dict[str, str]:
    data = {key: v if isinstance(v, str) else json.dumps(v) for key, v in message.data.items()}
    data["clarion_id"] = str(message.notification_id)
    if message.url:
        data["clarion_url"] = message.url
    return data


def fcm_withdraw_template(message: PushMessage, ttl_secs: int) -> dict:
    """A data-only message: the app's messaging service gets it even in the background (Android)
    or as a background push (iOS) and removes the notification it shows for `clarion_id`.

    Normal priority: nothing here is urgent, and Android demotes high-priority messages that
    show nothing.
    """
    return {
        "data": {"clarion_type": "read", "clarion_id": str(message.notification_id)},
        "android": messaging.AndroidConfig(priority="normal", ttl=ttl_secs),
        "apns": messaging.APNSConfig(
            headers={
                "apns-push-type": "background",
                "apns-priority": "5",  # Apple requires 5 for background pushes
                "apns-expiration": str(int(message.expires_at.timestamp())),
            },
            payload=messaging.APNSPayload(aps=messaging.Aps(content_available=True)),
        ),
        "webpush": messaging.WebpushConfig(headers={"Urgency": "normal", "TTL": str(ttl_secs)}),
    }


def fcm_message_json(message: PushMessage, token: str = "token") -> dict:
    """The FCM v1 `message` object as it goes on the wire (for size checks and tests)."""
    template = fcm_message_template(message, message.ttl_secs(timezone.now()))
    fcm_message = messaging.Message(**template)
    fcm_message.token = token  # registration tokens go in `token` (the SDK deprecates the keyword)
    encoded = _messaging_encoder.MessageEncoder().default(fcm_message)
    return deep_merge(encoded, message.overrides.get("fcm") or {})


def fcm_payload_size(encoded: dict) -> int:
    """What FCM counts against its 4 KB limit: the data and notification objects, JSON-encoded."""
    counted = {key: encoded[key] for key in ("data", "notification") if key in encoded}
    return len(json.dumps(counted, separators=(",", ":"), ensure_ascii=False).encode())


def fcm_counted_size(message: PushMessage) -> int:
    """fcm_payload_size(fcm_message_json(message)) without encoding the parts FCM does not
    count (android, apns, webpush): the SDK's encoder was most of every send's size check.
    A message whose FCM fields are overridden, or a withdrawal, takes the full encoding."""
    if message.withdraw or message.overrides.get("fcm"):
        return fcm_payload_size(fcm_message_json(message))
    counted: dict = {"data": _fcm_data(message)}
    if _shows_alert(message):
        # As the SDK encodes messaging.Notification: unset (None) fields left out.
        shown = {"title": message.title or None, "body": message.body or None, "image": message.options.image}
        counted["notification"] = {key: value for key, value in shown.items() if value is not None}
    return len(json.dumps(counted, separators=(",", ":"), ensure_ascii=False).encode())


def _not_configured_reason(creds: AppCredentials) -> str:
    if creds.is_default and not creds.fcm_credentials_path:
        return "fcm provider is not configured: set FCM_CREDENTIALS (path to a service-account JSON)"
    if not creds.is_default and not creds.fcm_credentials_json:
        return f"fcm provider is not configured{creds.label()}: the app has no FCM credentials"
    return ""


class FcmProvider:
    """FCM for Android, iOS and web apps registered with Firebase; safe to call from many threads.

    One instance per app (its own OAuth token and connection).
    """

    platform = "fcm"

    def __init__(self, credentials: AppCredentials | None = None) -> None:
        creds = credentials or AppCredentials.from_settings()
        self._endpoint = (creds.fcm_endpoint or GOOGLE_FCM_ENDPOINT).rstrip("/")
        self._reason = _not_configured_reason(creds)
        self._loop = BackgroundLoop(f"clarion-fcm-{creds.app}")
        self._token_lock = threading.Lock()
        if self._reason:
            return
        try:  # parse now, so a bad file shows up as the reason instead of as failed sends
            info = json.loads(creds.fcm_credentials_json or Path(creds.fcm_credentials_path).read_text())
            self._credential = credentials_module.Certificate(info).get_credential()
        except (OSError, ValueError) as exc:
            source = (
                f"FCM_CREDENTIALS {creds.fcm_credentials_path}" if creds.is_default else "FCM credentials"
            )
            self._reason = f"fcm provider is not configured{creds.label()}: {source}: {exc}"
            return
        self._send_url = f"{self._endpoint}/v1/projects/{info['project_id']}/messages:send"
        if not (_is_google(self._endpoint) and _is_google(info.get("token_uri", ""))):
            # google-auth looks up a "regional access boundary" at iamcredentials.googleapis.com in a
            # background thread after each token refresh; pointless (and a leak) when FCM is elsewhere.
            self._credential._is_regional_access_boundary_lookup_required = lambda: False
        self._token_session = requests.Session()
        self._token_session.verify = ca_bundle_from_env() or True

    def not_configured_reason(self) -> str:
        return self._reason

    def send(self, message: PushMessage, targets: list[PushTarget]) -> list[SendResult]:
        if not targets:
            return []
        encoded = fcm_message_json(message)
        size = fcm_payload_size(encoded)
        if size > MAX_PAYLOAD_BYTES:
            error = (
                f"PAYLOAD_TOO_LARGE: the FCM payload is {size} bytes; FCM takes at most {MAX_PAYLOAD_BYTES}"
            )
            return [SendResult(target.delivery_id, Outcome.FAILED, error=error) for target in targets]
        bodies = [orjson.dumps({"message": {**encoded, "token": target.token}}) for target in targets]
        results: list[SendResult | None] = [None] * len(targets)
        pending = list(range(len(targets)))
        rejected_token = ""
        for _attempt in range(2):  # a second time only for those FCM answered 401 (token revoked)
            try:
                token = self._access_token(rejected_token)
            except google.auth.exceptions.GoogleAuthError as exc:  # the OAuth token refresh failed
                retryable = isinstance(exc, google.auth.exceptions.TransportError) or getattr(
                    exc, "retryable", False
                )
                outcome = Outcome.RETRY if retryable else Outcome.FAILED
                for i in pending:
                    results[i] = SendResult(targets[i].delivery_id, outcome, error=f"AUTH_ERROR: {exc}")
                break
            headers = [(b"authorization", f"Bearer {token}".encode()), *CLIENT_HEADERS]
            requests_ = [Http2Request(self._send_url, headers, bodies[i]) for i in pending]
            try:
                answers = self._loop.run(self._client_send(requests_), BATCH_TIMEOUT_SECS)
            except TimeoutError as exc:
                logger.warning("FCM batch of %d unanswered: %s; retrying it", len(pending), exc)
                answers = [TimeoutError(str(exc))] * len(pending)
            unauthenticated = []
            for i, answer in zip(pending, answers, strict=True):
                results[i] = _result(targets[i].delivery_id, answer)
                if results[i].error.startswith(f"{UNAUTHENTICATED}: "):  # our token, not the device's
                    unauthenticated.append(i)
            pending, rejected_token = unauthenticated, token
            if not pending:
                break
        return results

    def close(self) -> None:
        self._loop.close(_close_client)

    def _access_token(self, rejected: str = "") -> str:
        """The OAuth token, refreshed once by one thread when it is (about to be) invalid or was rejected."""
        with self._token_lock:
            credential = self._credential
            if not credential.valid or (rejected and credential.token == rejected):
                request = google.auth.transport.requests.Request(self._token_session)
                credential.refresh(_TimeoutRequest(request))
            return credential.token

    # -- on the loop ----------------------------------------------------------------------------
    async def _client_send(self, requests_: list[Http2Request]) -> list[Http2Response | Exception]:
        client = self._loop.resources.get("client")
        if client is None:
            client = self._loop.resources["client"] = Http2Client(
                client_ssl_context(ca_file=ca_bundle_from_env()), CONNECT_TIMEOUT_SECS
            )
        return await client.send_all(requests_, REQUEST_TIMEOUT_SECS)


class _TimeoutRequest:
    """google-auth's requests transport with our timeout on the token request."""

    def __init__(self, request) -> None:
        self._request = request

    def __call__(self, *args, **kwargs):
        kwargs.setdefault("timeout", TOKEN_TIMEOUT_SECS)
        return self._request(*args, **kwargs)


async def _close_client(resources: dict) -> None:
    client = resources.get("client")
    if client is not None:
        await client.close()


def _error(status: int, body: bytes) -> tuple[str, str]:
    """(FCM's errorCode, else the canonical status; its message) from an error answer."""
    try:
        error = json.loads(body)["error"]
        code = error.get("status") or STATUS_CODES.get(status, "UNKNOWN")
        for detail in error.get("details") or []:
            if detail.get("@type") == FCM_ERROR_TYPE and detail.get("errorCode"):
                code = detail["errorCode"]
        return code, str(error.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return STATUS_CODES.get(status, "UNKNOWN"), f"HTTP {status} from FCM"


def _result(delivery_id: int, answer: Http2Response | Exception) -> SendResult:
    if isinstance(answer, TimeoutError):
        return SendResult(delivery_id, Outcome.RETRY, error=f"TIMEOUT: no answer from FCM ({answer})")
    if isinstance(answer, Exception):
        return SendResult(delivery_id, Outcome.RETRY, error=f"CONNECTION_ERROR: {answer}")
    if answer.status == 200:
        try:
            name = json.loads(answer.body).get("name", "")
        except (ValueError, AttributeError):
            name = ""
        return SendResult(delivery_id, Outcome.SENT, provider_message_id=name)
    code, text = _error(answer.status, answer.body)
    error = f"{code}: {text}"
    if code in TOKEN_DEAD_CODES or (code == "INVALID_ARGUMENT" and BAD_TOKEN_MESSAGE in text.lower()):
        return SendResult(delivery_id, Outcome.TOKEN_DEAD, error=error)
    if code in RETRY_CODES or answer.status == 429 or answer.status >= 500:
        retry_after = parse_retry_after(answer.headers.get(b"retry-after"))
        return SendResult(delivery_id, Outcome.RETRY, error=error, retry_after_secs=retry_after)
    return SendResult(delivery_id, Outcome.FAILED, error=error)
