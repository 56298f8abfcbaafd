"""Firebase Cloud Messaging (HTTP v1) through firebase-admin.

One firebase-admin app per process, built on the first send. A batch is sent one
`messaging.send()` per device on a bounded thread pool shared by every caller in the process
(HTTP/1.1 keep-alive, one pooled connection per thread), with the SDK's own retries turned
off so that delivery/sending.py's back-off alone decides. Why not send_each/send_each_async:
docs/providers.md.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import firebase_admin
import google.auth.exceptions
import requests
import requests.adapters
from django.conf import settings
from django.utils import timezone
from firebase_admin import credentials, exceptions, messaging

from delivery.providers.apns import apns_collapse_id
from delivery.providers.base import Outcome, PushMessage, PushTarget, SendResult
from delivery.providers.transport import ca_bundle_from_env, parse_retry_after
from delivery.providers.webpush import web_push_topic

logger = logging.getLogger(__name__)

GOOGLE_FCM_ENDPOINT = "https://fcm.googleapis.com"
MAX_CONCURRENT_REQUESTS = 50  # threads and pooled connections per process
HTTP_TIMEOUT_SECS = 10  # each request, and the OAuth token refresh it may trigger
BATCH_TIMEOUT_SECS = 60  # safety net around a whole send(); unanswered deliveries are retried
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
TOKEN_DEAD_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
# INVALID_ARGUMENT is also FCM's answer to a bad payload; only this message says the token is bad.
BAD_TOKEN_MESSAGE = "registration token"
RETRY_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "UNKNOWN"})
PRIORITY_APNS = {"high": "10", "normal": "5"}


def point_messaging_at(service, endpoint: str) -> None:
    """Make firebase-admin's messaging service send to `endpoint` instead of fcm.googleapis.com.

    There is no public option: firebase-admin 7.7.0 (pinned in requirements.txt) copies
    `_MessagingService.FCM_URL` into the per-app `_fcm_url`, which we rewrite. An SDK upgrade
    that changes this fails here (and in its test) instead of silently sending to Google.
    """
    url = getattr(service, "_fcm_url", None)
    if not isinstance(url, str) or not url.startswith(f"{GOOGLE_FCM_ENDPOINT}/v1/projects/"):
        raise RuntimeError(
            f"firebase-admin {firebase_admin.__version__} has no per-app _fcm_url to override; "
            "FCM_ENDPOINT needs updating for this version"
        )
    service._fcm_url = endpoint.rstrip("/") + url[len(GOOGLE_FCM_ENDPOINT) :]


def _is_google(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "googleapis.com" or host.endswith(".googleapis.com")


def _tune_transport(service, credential, endpoint: str, token_uri: str) -> requests.Session:
    """Our retry policy, pool size and CA bundle on the SDK's requests session (returned)."""
    session = service._client.session  # firebase-admin's AuthorizedSession; no public handle
    # max_retries=0: no urllib3 retries of 500/503 and no sleeping on 429 Retry-After in this thread.
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=1, pool_maxsize=MAX_CONCURRENT_REQUESTS, max_retries=0
    )
    session.mount(endpoint, adapter)
    # With trust_env, requests re-reads the proxy variables by scanning os.environ on every
    # request: a third of our CPU per message in a Celery worker's environment. Read them once.
    session.proxies.update(requests.utils.get_environ_proxies(endpoint))
    session.trust_env = False
    ca_bundle = ca_bundle_from_env()
    if ca_bundle:  # without trust_env requests reads neither REQUESTS_CA_BUNDLE nor SSL_CERT_FILE
        session.verify = ca_bundle
        auth_session = getattr(session, "_auth_request_session", None)
        if auth_session is not None:
            auth_session.verify = ca_bundle
    if not (_is_google(endpoint) and _is_google(token_uri)):
        # google-auth looks up a "regional access boundary" at iamcredentials.googleapis.com in a
        # background thread after each token refresh; pointless (and a leak) when FCM is elsewhere.
        credential._is_regional_access_boundary_lookup_required = lambda: False
    return session


def fcm_message_template(message: PushMessage, ttl_secs: int) -> dict:
    """The keyword arguments of messaging.Message shared by every device of one notification."""
    if message.withdraw:
        return fcm_withdraw_template(message, ttl_secs)
    alert = bool(message.title or message.body)
    data = {key: v if isinstance(v, str) else json.dumps(v) for key, v in message.data.items()}
    data["clarion_id"] = str(message.notification_id)
    if message.url:
        data["clarion_url"] = message.url
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
    return {
        "data": data,
        "notification": messaging.Notification(title=message.title or None, body=message.body or None)
        if alert
        else None,
        "android": messaging.AndroidConfig(
            priority="high" if message.priority == "high" else "normal",
            ttl=ttl_secs,
            collapse_key=collapse,
            # A tag the app can name to remove it once read elsewhere (FCM shows it as (tag, id 0)).
            notification=messaging.AndroidNotification(tag=withdraw_tag(message.notification_id))
            if alert
            else None,
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


def _not_configured_reason() -> str:
    if not settings.FCM_CREDENTIALS:
        return "fcm provider is not configured: set FCM_CREDENTIALS (path to a service-account JSON)"
    return ""


class FcmProvider:
    """FCM for Android, iOS and web apps registered with Firebase; safe to call from many threads."""

    platform = "fcm"

    def __init__(self) -> None:
        self._reason = _not_configured_reason()
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._app: firebase_admin.App | None = None
        self._session: requests.Session | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pid = 0
        if self._reason:
            return
        try:  # parse now, so a bad file shows up as the reason instead of as failed sends
            info = json.loads(Path(settings.FCM_CREDENTIALS).read_text())
            self._certificate = credentials.Certificate(info)
        except (OSError, ValueError) as exc:
            path = settings.FCM_CREDENTIALS
            self._reason = f"fcm provider is not configured: FCM_CREDENTIALS {path}: {exc}"
            return
        self._token_uri = info.get("token_uri", "")

    def not_configured_reason(self) -> str:
        return self._reason

    def send(self, message: PushMessage, targets: list[PushTarget]) -> list[SendResult]:
        if not targets:
            return []
        app, pool = self._client()
        template = fcm_message_template(message, message.ttl_secs(timezone.now()))
        first: list[SendResult] = []
        if not app.credential.get_credential().valid:
            # No OAuth token yet (or it is about to expire): let one send fetch it, or every
            # pool thread would fetch its own at once.
            with self._refresh_lock:
                if not app.credential.get_credential().valid:
                    first.append(self._send_one(app, template, targets[0]))
        rest = targets[len(first) :]
        futures = [pool.submit(self._send_one, app, template, target) for target in rest]
        concurrent.futures.wait(futures, timeout=BATCH_TIMEOUT_SECS)
        results = first
        for target, future in zip(rest, futures, strict=True):
            if future.done():
                results.append(future.result())
            else:
                future.cancel()
                logger.warning(
                    "FCM send for delivery %s unanswered after %s s", target.delivery_id, BATCH_TIMEOUT_SECS
                )
                error = f"TIMEOUT: no answer from FCM within {BATCH_TIMEOUT_SECS} s"
                results.append(SendResult(target.delivery_id, Outcome.RETRY, error=error))
        return results

    def close(self) -> None:
        with self._lock:
            app, session, pool = self._app, self._session, self._pool
            self._app = self._session = self._pool = None
            if self._pid != os.getpid():
                return  # the parent's app and threads; not ours to close
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if app is not None:
            firebase_admin.delete_app(app)
            session.close()  # delete_app closes only the SDK's async client

    def _client(self) -> tuple[firebase_admin.App, concurrent.futures.ThreadPoolExecutor]:
        """The firebase-admin app and thread pool of this process, built on first use.

        A forked child (Celery prefork) inherits neither the pool's threads nor usable
        connections, so it builds its own.
        """
        with self._lock:
            if self._app is None or self._pid != os.getpid():
                app = firebase_admin.initialize_app(
                    self._certificate,
                    options={"httpTimeout": HTTP_TIMEOUT_SECS},
                    name=f"clarion-fcm-{uuid.uuid4().hex}",  # ours alone, never the default app
                )
                service = messaging._get_messaging_service(app)
                endpoint = settings.FCM_ENDPOINT or GOOGLE_FCM_ENDPOINT
                point_messaging_at(service, endpoint)
                credential = app.credential.get_credential()
                self._session = _tune_transport(service, credential, endpoint, self._token_uri)
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    MAX_CONCURRENT_REQUESTS, thread_name_prefix="clarion-fcm"
                )
                self._app, self._pid = app, os.getpid()
            return self._app, self._pool

    @staticmethod
    def _send_one(app: firebase_admin.App, template: dict, target: PushTarget) -> SendResult:
        fcm_message = messaging.Message(**template)
        # Devices register FCM registration tokens, which the v1 API takes in `token`. The SDK
        # deprecates that keyword (it prefers installation ids), so set the field directly.
        fcm_message.token = target.token
        try:
            name = messaging.send(fcm_message, app=app)
        except exceptions.FirebaseError as exc:
            return _failure(target.delivery_id, exc)
        except google.auth.exceptions.GoogleAuthError as exc:  # the OAuth token refresh failed
            retryable = isinstance(exc, google.auth.exceptions.TransportError) or getattr(
                exc, "retryable", False
            )
            outcome = Outcome.RETRY if retryable else Outcome.FAILED
            return SendResult(target.delivery_id, outcome, error=f"AUTH_ERROR: {exc}")
        except ValueError as exc:  # the SDK refused our message before sending it
            return SendResult(target.delivery_id, Outcome.FAILED, error=f"INVALID_MESSAGE: {exc}")
        return SendResult(target.delivery_id, Outcome.SENT, provider_message_id=name)


def _error_code(exc: exceptions.FirebaseError) -> str:
    """FCM's own errorCode (UNREGISTERED, QUOTA_EXCEEDED, ...) when present, else the canonical status."""
    response = exc.http_response
    if response is not None:
        try:
            details = response.json()["error"].get("details", [])
            for detail in details:
                if detail.get("@type") == FCM_ERROR_TYPE and detail.get("errorCode"):
                    return detail["errorCode"]
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    return exc.code


def _failure(delivery_id: int, exc: exceptions.FirebaseError) -> SendResult:
    code = _error_code(exc)
    error = f"{code}: {exc}"
    status = exc.http_response.status_code if exc.http_response is not None else 0
    if code in TOKEN_DEAD_CODES or (code == "INVALID_ARGUMENT" and BAD_TOKEN_MESSAGE in str(exc).lower()):
        return SendResult(delivery_id, Outcome.TOKEN_DEAD, error=error)
    if code in RETRY_CODES or status == 429 or status >= 500:
        headers = exc.http_response.headers if exc.http_response is not None else {}
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return SendResult(delivery_id, Outcome.RETRY, error=error, retry_after_secs=retry_after)
    return SendResult(delivery_id, Outcome.FAILED, error=error)
