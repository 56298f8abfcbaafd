"""Self-tests: the real client libraries (firebase-admin, httpx/h2, pywebpush) against the fakes."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
import weakref

import firebase_admin
import h2.config
import h2.connection
import h2.errors
import h2.events
import hpack
import httpx
import jwt
import pytest
import requests
import requests.adapters
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from firebase_admin import credentials, exceptions, messaging
from py_vapid import Vapid, Vapid01
from pywebpush import WebPusher, WebPushException, webpush

from ._h2_frames import AnswerEncoder, RequestDecoder
from .apns import FakeAPNs
from .fcm import GOOGLE_TOKEN_URI, FakeFCM, block_regional_access_boundary_lookup
from .webpush import FakePushService, generate_vapid_keypair

pytestmark = [
    pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:MulticastMessage.tokens is deprecated:DeprecationWarning"),
]

CLIENT_TIMEOUT_S = 10  # generous ceiling; nothing here should come close
HTTPCORE_MAX_STREAMS = 100  # httpcore never opens more than 100 streams per HTTP/2 connection


# ================================================================================================
# FCM
# ================================================================================================
@pytest.fixture
def fcm():
    with FakeFCM() as fake:
        yield fake


def _firebase_app(fake: FakeFCM):
    """A firebase-admin app whose credentials and messaging URL point at the fake."""
    path = fake.write_service_account()
    app = firebase_admin.initialize_app(credentials.Certificate(str(path)), name=f"fake-{uuid.uuid4().hex}")
    service = messaging._get_messaging_service(app)
    service._fcm_url = fake.send_url  # per-app copy of _MessagingService.FCM_URL
    block_regional_access_boundary_lookup(service._credential)
    return app


@pytest.fixture
def fcm_app(fcm):
    app = _firebase_app(fcm)
    yield app
    firebase_admin.delete_app(app)


def _disable_sdk_retries(app, fake: FakeFCM) -> None:
    """firebase-admin retries 500/503 (and Retry-After 429) inside requests; turn that off for one URL."""
    session = messaging._get_messaging_service(app)._client.session
    session.mount(fake.url, requests.adapters.HTTPAdapter(max_retries=0))


def test_fcm_send_through_real_sdk(fcm, fcm_app):
    message = messaging.Message(
        token="device-token-1",
        notification=messaging.Notification(title="Hello", body="World"),
        data={"order": "42"},
        android=messaging.AndroidConfig(priority="high", ttl=60),
    )
    name = messaging.send(message, app=fcm_app)
    messaging.send(messaging.Message(topic="news", data={"k": "v"}), app=fcm_app)
    messaging.send(messaging.Message(fid="installation-id-1", data={"k": "v"}), app=fcm_app)

    assert name.startswith("projects/clarion-test/messages/")
    sent = fcm.messages
    assert [m.name for m in sent][0] == name
    assert sent[0].message == {
        "token": "device-token-1",
        "notification": {"title": "Hello", "body": "World"},
        "data": {"order": "42"},
        "android": {"priority": "high", "ttl": "60s"},
    }
    assert sent[1].message["topic"] == "news"
    assert sent[2].message["fid"] == "installation-id-1"
    assert fcm.token_requests == 1  # the SDK cached its OAuth token across sends
    claims = fcm.assertions[0]
    assert claims["iss"] == fcm.client_email
    assert claims["aud"] == GOOGLE_TOKEN_URI  # google-auth ignores token_uri for "aud"
    assert "https://www.googleapis.com/auth/cloud-platform" in claims["scope"].split()


def test_fcm_dry_run_is_recorded_as_validate_only(fcm, fcm_app):
    messaging.send(messaging.Message(token="t"), dry_run=True, app=fcm_app)
    assert fcm.messages[0].validate_only is True


@pytest.mark.parametrize(
    "error, exc_type, status",
    [
        ("UNREGISTERED", messaging.UnregisteredError, 404),
        ("INVALID_ARGUMENT", exceptions.InvalidArgumentError, 400),
        ("QUOTA_EXCEEDED", messaging.QuotaExceededError, 429),
        ("UNAVAILABLE", exceptions.UnavailableError, 503),
        ("INTERNAL", exceptions.InternalError, 500),
        ("SENDER_ID_MISMATCH", messaging.SenderIdMismatchError, 403),
        ("THIRD_PARTY_AUTH_ERROR", messaging.ThirdPartyAuthError, 401),
    ],
)
def test_fcm_errors_map_to_sdk_exceptions(fcm, fcm_app, error, exc_type, status):
    _disable_sdk_retries(fcm_app, fcm)
    fcm.fail_token("bad-token", error)
    with pytest.raises(exc_type) as info:
        messaging.send(messaging.Message(token="bad-token"), app=fcm_app)
    assert info.value.http_response.status_code == status
    if error == "QUOTA_EXCEEDED":
        assert info.value.http_response.headers["Retry-After"] == "1"
    messaging.send(messaging.Message(token="good-token"), app=fcm_app)
    # A 401 makes google-auth's AuthorizedSession refresh its token and retry, twice.
    tries = 3 if status == 401 else 1
    assert [a.status for a in fcm.attempts] == [status] * tries + [200]
    assert fcm.token_requests == tries


def test_fcm_sdk_retries_503_by_itself(fcm, fcm_app):
    fcm.fail_next("UNAVAILABLE")  # first retry has zero backoff in urllib3 2.x
    messaging.send(messaging.Message(token="t"), app=fcm_app)
    assert [(a.status, a.error) for a in fcm.attempts] == [(503, "UNAVAILABLE"), (200, None)]


def test_fcm_sdk_honours_retry_after_on_429():
    with FakeFCM(retry_after_s=0) as fake:
        app = _firebase_app(fake)
        try:
            fake.fail_next("QUOTA_EXCEEDED")
            messaging.send(messaging.Message(token="t"), app=app)
        finally:
            firebase_admin.delete_app(app)
        assert [a.status for a in fake.attempts] == [429, 200]


def test_fcm_send_each_reports_per_message_failures(fcm, fcm_app):
    fcm.fail_token("gone", "UNREGISTERED")
    batch = messaging.send_each(
        [messaging.Message(token=t, data={"i": t}) for t in ("a", "gone", "b")], app=fcm_app
    )
    assert (batch.success_count, batch.failure_count) == (2, 1)
    assert isinstance(batch.responses[1].exception, messaging.UnregisteredError)
    assert sorted(m.message["token"] for m in fcm.messages) == ["a", "b"]


def test_fcm_failure_queue_and_times(fcm, fcm_app):
    _disable_sdk_retries(fcm_app, fcm)
    fcm.fail_token("flaky", "INTERNAL", times=1)
    with pytest.raises(exceptions.InternalError):
        messaging.send(messaging.Message(token="flaky"), app=fcm_app)
    messaging.send(messaging.Message(token="flaky"), app=fcm_app)
    fcm.fail_next("INVALID_ARGUMENT", count=2)
    for _ in range(2):
        with pytest.raises(exceptions.InvalidArgumentError):
            messaging.send(messaging.Message(token="any"), app=fcm_app)
    messaging.send(messaging.Message(token="any"), app=fcm_app)
    assert [a.status for a in fcm.attempts] == [500, 200, 400, 400, 200]


def test_fcm_revoked_token_makes_sdk_reauthenticate(fcm, fcm_app):
    messaging.send(messaging.Message(token="t"), app=fcm_app)
    fcm.revoke_access_tokens()
    messaging.send(messaging.Message(token="t"), app=fcm_app)
    assert fcm.token_requests == 2
    assert [a.status for a in fcm.attempts] == [200, 401, 200]


def test_fcm_rejects_unknown_bearer_and_bad_assertions(fcm):
    response = requests.post(
        fcm.send_url,
        json={"message": {"token": "t"}},
        headers={"Authorization": "Bearer forged"},
        timeout=CLIENT_TIMEOUT_S,
    )
    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"

    now = int(time.time())
    good = {
        "iss": fcm.client_email,
        "aud": GOOGLE_TOKEN_URI,
        "iat": now,
        "exp": now + 3600,
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
    }
    own_key = fcm.service_account_info()["private_key"]
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = [
        (good, own_key, 200),
        (good, other_key, 400),  # signed by a key the fake never issued
        ({**good, "aud": "https://elsewhere.example/token"}, own_key, 400),
        ({**good, "iss": "someone@else.iam.gserviceaccount.com"}, own_key, 400),
        ({**good, "scope": "https://www.googleapis.com/auth/userinfo.email"}, own_key, 400),
    ]
    for claims, key, expected in cases:
        grant = {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": jwt.encode(claims, key, algorithm="RS256"),
        }
        response = requests.post(fcm.token_uri, data=grant, timeout=CLIENT_TIMEOUT_S)
        assert response.status_code == expected, response.text
    assert response.json()["error"] == "invalid_scope"


def test_fcm_error_rate_and_latency():
    with FakeFCM(error_rate=1.0, rate_error="UNAVAILABLE", latency_ms=50) as fake:
        token = requests.post(
            fake.token_uri,
            timeout=CLIENT_TIMEOUT_S,
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": jwt.encode(
                    {
                        "iss": fake.client_email,
                        "aud": fake.token_uri,
                        "iat": int(time.time()),
                        "exp": int(time.time()) + 600,
                        "scope": "https://www.googleapis.com/auth/cloud-platform",
                    },
                    fake.service_account_info()["private_key"],
                    algorithm="RS256",
                ),
            },
        ).json()["access_token"]
        started = time.monotonic()
        response = requests.post(
            fake.send_url,
            json={"message": {"token": "t"}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=CLIENT_TIMEOUT_S,
        )
        assert time.monotonic() - started >= 0.05
        assert response.status_code == 503
        assert response.json()["error"]["details"][0]["errorCode"] == "UNAVAILABLE"


# ================================================================================================
# APNs
# ================================================================================================
DEVICE = "a1" * 32  # 64 hex digits, like a real device token


@pytest.fixture
def apns():
    with FakeAPNs() as fake:
        yield fake


def _provider_token(fake: FakeAPNs, iat: int | None = None, key=None, kid=None, iss=None) -> str:
    """An APNs provider JWT signed with PyJWT, by default with the fake's .p8 key."""
    return jwt.encode(
        {"iss": iss or fake.team_id, "iat": int(time.time()) if iat is None else iat},
        key if key is not None else fake.key_path.read_bytes(),
        algorithm="ES256",
        headers={"kid": kid or fake.key_id},
    )


_reused_tokens: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _reused_token(fake: FakeAPNs) -> str:
    """One provider JWT per fake: ES256 signatures are randomised, so re-signing would change it."""
    if fake not in _reused_tokens:
        _reused_tokens[fake] = _provider_token(fake)
    return _reused_tokens[fake]


def _apns_headers(fake: FakeAPNs, token: str | None = None, **extra) -> dict:
    headers = {
        "authorization": f"bearer {token or _reused_token(fake)}",
        "apns-topic": fake.topic,
        "apns-push-type": "alert",
        "apns-priority": "10",
    }
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return {k: v for k, v in headers.items() if v is not None}


def _h2_client(fake: FakeAPNs) -> httpx.Client:
    return httpx.Client(http2=True, verify=fake.client_ssl_context(), timeout=CLIENT_TIMEOUT_S)


def test_apns_accepts_notification_over_http2(apns):
    with _h2_client(apns) as client:
        response = client.post(
            f"{apns.url}/3/device/{DEVICE}",
            headers=_apns_headers(apns, apns_expiration="0", apns_collapse_id="order-42"),
            json={"aps": {"alert": {"title": "Hi", "body": "there"}, "sound": "default"}, "order": 42},
        )
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200 and response.content == b""
    (note,) = apns.notifications
    assert response.headers["apns-id"] == note.apns_id
    assert note.token == DEVICE
    assert note.payload["aps"]["alert"]["title"] == "Hi"
    assert note.headers["apns-collapse-id"] == "order-42"
    assert note.headers["apns-push-type"] == "alert"


def test_apns_echoes_client_apns_id(apns):
    apns_id = str(uuid.uuid4()).upper()
    with _h2_client(apns) as client:
        response = client.post(
            f"{apns.url}/3/device/{DEVICE}", json={"aps": {}}, headers=_apns_headers(apns, apns_id=apns_id)
        )
    assert response.headers["apns-id"] == apns_id


def _raw_h2_post(fake: FakeAPNs, body: bytes, headers: dict) -> list:
    """POST with a bare h2 client and return the h2 events for the stream (to inspect framing)."""
    context = fake.client_ssl_context()
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", fake.port), timeout=CLIENT_TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config)
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", f"127.0.0.1:{fake.port}"),
                (":path", f"/3/device/{DEVICE}"),
                *headers.items(),
            ],
        )
        conn.send_data(stream_id, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        events: list = []
        while not any(isinstance(e, h2.events.StreamEnded) for e in events):
            data = sock.recv(65536)
            assert data, "server closed the connection early"
            events += [e for e in conn.receive_data(data) if getattr(e, "stream_id", None) == stream_id]
            sock.sendall(conn.data_to_send())
        return events


def test_apns_frames_like_apple(apns):
    ok = _raw_h2_post(apns, b'{"aps":{}}', _apns_headers(apns))
    assert isinstance(ok[0], h2.events.ResponseReceived)
    assert ok[0].stream_ended is not None  # 200 is one HEADERS frame with END_STREAM
    assert not any(isinstance(e, h2.events.DataReceived) for e in ok)

    apns.fail_token(DEVICE, "Unregistered")
    gone = _raw_h2_post(apns, b'{"aps":{}}', _apns_headers(apns))
    assert gone[0].stream_ended is None  # errors are HEADERS, then DATA with END_STREAM
    data = [e for e in gone if isinstance(e, h2.events.DataReceived)]
    assert json.loads(b"".join(e.data for e in data))["reason"] == "Unregistered"
    assert data[-1].stream_ended is not None


def test_apns_client_token_caching_is_observable(apns):
    token = _provider_token(apns)
    with _h2_client(apns) as client:
        for _ in range(5):
            assert (
                client.post(
                    f"{apns.url}/3/device/{DEVICE}", json={"aps": {}}, headers=_apns_headers(apns, token)
                ).status_code
                == 200
            )
    assert apns.provider_tokens == {token}
    assert apns.connections_opened == 1
    assert {n.connection_id for n in apns.notifications} == {1}


def test_apns_limits_provider_token_changes_per_connection(apns):
    now = int(time.time())
    tokens = [_provider_token(apns, iat=now - age) for age in (0, 1, 2)]  # three distinct JWTs
    with _h2_client(apns) as client:
        statuses = [
            client.post(f"{apns.url}/3/device/{DEVICE}", json={"aps": {}}, headers=_apns_headers(apns, t))
            for t in tokens
        ]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[2].json() == {"reason": "TooManyProviderTokenUpdates"}
    assert len(apns.provider_tokens) == 3


@pytest.mark.parametrize(
    "case, reason",
    [
        ("missing", "MissingProviderToken"),
        ("other_key", "InvalidProviderToken"),
        ("wrong_kid", "InvalidProviderToken"),
        ("wrong_team", "InvalidProviderToken"),
        ("expired", "ExpiredProviderToken"),
    ],
)
def test_apns_rejects_bad_provider_tokens(apns, case, reason):
    other_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tokens = {
        "missing": None,
        "other_key": _provider_token(apns, key=other_key),
        "wrong_kid": _provider_token(apns, kid="OTHERKEY01"),
        "wrong_team": _provider_token(apns, iss="OTHERTEAM1"),
        "expired": _provider_token(apns, iat=int(time.time()) - 2 * 3600),
    }
    headers = _apns_headers(apns)
    if tokens[case] is None:
        del headers["authorization"]
    else:
        headers["authorization"] = f"bearer {tokens[case]}"
    with _h2_client(apns) as client:
        response = client.post(f"{apns.url}/3/device/{DEVICE}", json={"aps": {}}, headers=headers)
    assert (response.status_code, response.json()) == (403, {"reason": reason})
    assert apns.notifications == []


@pytest.mark.parametrize(
    "path, headers, body, status, reason",
    [
        (f"/3/device/{DEVICE}", {"apns-topic": None}, b'{"aps":{}}', 400, "MissingTopic"),
        (
            f"/3/device/{DEVICE}",
            {"apns-topic": "com.other.app"},
            b'{"aps":{}}',
            400,
            "DeviceTokenNotForTopic",
        ),
        (f"/3/device/{DEVICE}", {"apns-push-type": "shout"}, b'{"aps":{}}', 400, "InvalidPushType"),
        (f"/3/device/{DEVICE}", {"apns-priority": "7"}, b'{"aps":{}}', 400, "BadPriority"),
        (f"/3/device/{DEVICE}", {"apns-expiration": "soon"}, b'{"aps":{}}', 400, "BadExpirationDate"),
        (f"/3/device/{DEVICE}", {"apns-collapse-id": "x" * 65}, b'{"aps":{}}', 400, "BadCollapseId"),
        (f"/3/device/{DEVICE}", {"apns-id": "not-a-uuid"}, b'{"aps":{}}', 400, "BadMessageId"),
        ("/3/device/not-hex", {}, b'{"aps":{}}', 400, "BadDeviceToken"),
        ("/2/device/abc", {}, b'{"aps":{}}', 404, "BadPath"),
        (f"/3/device/{DEVICE}", {}, b"", 400, "PayloadEmpty"),
        (f"/3/device/{DEVICE}", {}, b'{"alert":"no aps"}', 400, "InvalidPayload"),
        (f"/3/device/{DEVICE}", {}, b'{"aps":{},"pad":"' + b"x" * 4096 + b'"}', 413, "PayloadTooLarge"),
    ],
)
def test_apns_validates_requests(apns, path, headers, body, status, reason):
    with _h2_client(apns) as client:
        response = client.post(
            f"{apns.url}{path}",
            content=body,
            headers=_apns_headers(apns, **{k.replace("-", "_"): v for k, v in headers.items()}),
        )
    assert (response.status_code, response.json()["reason"]) == (status, reason)
    assert "apns-id" in response.headers


def test_apns_topic_suffix_for_voip(apns):
    with _h2_client(apns) as client:
        response = client.post(
            f"{apns.url}/3/device/{DEVICE}",
            json={"aps": {}},
            headers=_apns_headers(
                apns, apns_push_type="voip", apns_topic=f"{apns.topic}.voip", apns_priority="10"
            ),
        )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "reason, status",
    [
        ("Unregistered", 410),
        ("BadDeviceToken", 400),
        ("DeviceTokenNotForTopic", 400),
        ("TooManyRequests", 429),
        ("InternalServerError", 500),
        ("ServiceUnavailable", 503),
    ],
)
def test_apns_programmed_failures(apns, reason, status):
    apns.fail_token(DEVICE, reason)
    other = "b2" * 32
    with _h2_client(apns) as client:
        failed = client.post(f"{apns.url}/3/device/{DEVICE}", json={"aps": {}}, headers=_apns_headers(apns))
        ok = client.post(f"{apns.url}/3/device/{other}", json={"aps": {}}, headers=_apns_headers(apns))
    assert failed.status_code == status and failed.json()["reason"] == reason
    assert ("timestamp" in failed.json()) == (reason == "Unregistered")
    assert ok.status_code == 200
    assert [n.token for n in apns.notifications] == [other]


def test_apns_failure_queue(apns):
    apns.fail_next("ServiceUnavailable", count=2)
    with _h2_client(apns) as client:
        codes = [
            client.post(
                f"{apns.url}/3/device/{DEVICE}", json={"aps": {}}, headers=_apns_headers(apns)
            ).status_code
            for _ in range(3)
        ]
    assert codes == [503, 503, 200]


def test_apns_many_concurrent_streams_on_one_connection(apns):
    token = _provider_token(apns)
    count = 200

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            http2=True, verify=apns.client_ssl_context(), timeout=CLIENT_TIMEOUT_S
        ) as client:
            sends = asyncio.gather(
                *[
                    client.post(
                        f"{apns.url}/3/device/{DEVICE}",
                        json={"aps": {}, "n": i},
                        headers=_apns_headers(apns, token),
                    )
                    for i in range(count)
                ]
            )
            # Hold answers until the client has as many streams open as it allows, proving multiplexing.
            assert await asyncio.to_thread(apns.wait_for_in_flight, HTTPCORE_MAX_STREAMS, CLIENT_TIMEOUT_S)
            apns.release()
            return await sends

    apns.hold()
    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * count
    assert apns.connections_opened == 1
    assert apns.peak_concurrent_streams >= HTTPCORE_MAX_STREAMS
    assert sorted(n.payload["n"] for n in apns.notifications) == list(range(count))


def test_apns_error_rate_and_latency():
    fake = FakeAPNs(error_rate=0.5, rate_error="ServiceUnavailable", seed=7, latency_ms=20)
    with fake, _h2_client(fake) as client:  # the fake starts before the client is built
        started = time.monotonic()
        codes = [
            client.post(
                f"{fake.url}/3/device/{DEVICE}", json={"aps": {}}, headers=_apns_headers(fake)
            ).status_code
            for _ in range(20)
        ]
        elapsed = time.monotonic() - started
    assert set(codes) == {200, 503}
    assert elapsed >= 20 * 0.02


def test_apns_requires_h2_alpn(apns):
    http1_only = httpx.Client(http2=False, verify=apns.client_ssl_context(), timeout=CLIENT_TIMEOUT_S)
    with http1_only, pytest.raises(httpx.TransportError):
        http1_only.post(f"{apns.url}/3/device/{DEVICE}", json={"aps": {}}, headers=_apns_headers(apns))


# ================================================================================================
# Web Push
# ================================================================================================
@pytest.fixture
def push_service():
    with FakePushService() as fake:
        yield fake


def _claims() -> dict:
    """pywebpush fills aud/exp into the dict it is given, so every call needs a fresh one."""
    return {"sub": "mailto:ops@example.com"}


def test_webpush_delivers_and_fake_decrypts(push_service):
    vapid_private, vapid_public = generate_vapid_keypair()
    subscription = push_service.subscribe(application_server_key=vapid_public)
    plaintext = json.dumps({"title": "Hi", "body": "ünïcode ✓"})
    response = webpush(
        subscription,
        data=plaintext,
        vapid_private_key=vapid_private,
        vapid_claims=_claims(),
        ttl=120,
        headers={"Urgency": "high", "Topic": "t1"},
    )
    assert response.status_code == 201
    assert response.headers["Location"].startswith(push_service.origin + "/message/")
    (message,) = push_service.messages
    assert message.plaintext == plaintext.encode()
    assert (message.ttl, message.urgency, message.topic) == (120, "high", "t1")
    assert message.auth_scheme == "vapid" and message.vapid_key == vapid_public
    assert message.vapid_claims["aud"] == push_service.origin
    assert message.vapid_claims["sub"] == "mailto:ops@example.com"
    assert message.headers["content-encoding"] == "aes128gcm"


def test_webpush_over_tls(loopback_only):
    vapid = Vapid()
    vapid.generate_keys()
    with FakePushService(tls=True) as fake:
        subscription = fake.subscribe()
        with requests.Session() as session:
            session.verify = str(fake.ca_path)
            session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides session.verify
            webpush(
                subscription,
                data="over tls",
                vapid_private_key=vapid,
                vapid_claims=_claims(),
                ttl=60,
                requests_session=session,
            )
        assert subscription["endpoint"].startswith("https://127.0.0.1:")
        assert fake.messages[0].plaintext == b"over tls"


def test_webpush_legacy_webpush_scheme_from_vapid01(push_service):
    vapid = Vapid01()
    vapid.generate_keys()
    subscription = push_service.subscribe()
    webpush(subscription, data="legacy", vapid_private_key=vapid, vapid_claims=_claims(), ttl=0)
    (message,) = push_service.messages
    assert message.auth_scheme == "webpush"
    assert message.headers["authorization"].startswith("WebPush ")
    assert message.headers["crypto-key"].startswith("p256ecdsa=")
    assert message.plaintext == b"legacy"


def test_webpush_rejects_wrong_vapid_key(push_service):
    _, allowed_public = generate_vapid_keypair()
    other_private, _ = generate_vapid_keypair()
    subscription = push_service.subscribe(application_server_key=allowed_public)
    with pytest.raises(WebPushException) as info:
        webpush(subscription, data="x", vapid_private_key=other_private, vapid_claims=_claims())
    assert info.value.response.status_code == 403

    forged = (
        Vapid.from_string(other_private)
        .sign({**_claims(), "aud": push_service.origin, "exp": int(time.time()) + 600})["Authorization"]
        .rsplit(",k=", 1)[0]
        + f",k={allowed_public}"
    )  # claim someone else's key
    with pytest.raises(WebPushException) as info:
        webpush(subscription, data="x", headers={"Authorization": forged})
    assert info.value.response.status_code == 401
    assert push_service.messages == []


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "mailto:ops@example.com", "aud": "https://push.example.net"},  # wrong origin
        {"sub": "mailto:ops@example.com", "exp": int(time.time()) + 25 * 3600},  # beyond 24 h
    ],
)
def test_webpush_rejects_bad_vapid_claims(push_service, claims):
    private, _ = generate_vapid_keypair()
    with pytest.raises(WebPushException) as info:
        webpush(push_service.subscribe(), data="x", vapid_private_key=private, vapid_claims=dict(claims))
    assert info.value.response.status_code == 401


def test_webpush_requires_vapid_ttl_and_aes128gcm(push_service):
    subscription = push_service.subscribe()
    with pytest.raises(WebPushException) as info:
        webpush(subscription, data="no vapid")
    assert info.value.response.status_code == 401

    private, _ = generate_vapid_keypair()
    with pytest.raises(WebPushException) as info:
        webpush(
            subscription,
            data="old encoding",
            vapid_private_key=private,
            vapid_claims=_claims(),
            content_encoding="aesgcm",
        )
    assert info.value.response.status_code == 400

    missing_ttl = requests.post(
        subscription["endpoint"],
        data=b"",
        timeout=CLIENT_TIMEOUT_S,
        headers=Vapid.from_string(private).sign(
            {**_claims(), "aud": push_service.origin, "exp": int(time.time()) + 600}
        ),
    )
    assert missing_ttl.status_code == 400
    assert push_service.messages == []


def test_webpush_gone_subscription_raises_410(push_service):
    private, _ = generate_vapid_keypair()
    subscription = push_service.subscribe()
    push_service.unsubscribe(subscription)
    with pytest.raises(WebPushException) as info:
        webpush(subscription, data="x", vapid_private_key=private, vapid_claims=_claims())
    assert info.value.response.status_code == 410


def test_webpush_payload_too_large(push_service):
    private, _ = generate_vapid_keypair()
    with pytest.raises(WebPushException) as info:
        webpush(push_service.subscribe(), data="x" * 5000, vapid_private_key=private, vapid_claims=_claims())
    assert info.value.response.status_code == 413


@pytest.mark.parametrize("status", [404, 410, 413, 429, 500, 503])
def test_webpush_programmed_failures(push_service, status):
    private, _ = generate_vapid_keypair()
    subscription = push_service.subscribe()
    push_service.fail_subscription(subscription, status, times=1)
    with pytest.raises(WebPushException) as info:
        webpush(subscription, data="x", vapid_private_key=private, vapid_claims=_claims())
    assert info.value.response.status_code == status
    assert ("Retry-After" in info.value.response.headers) == (status == 429)
    webpush(subscription, data="y", vapid_private_key=private, vapid_claims=_claims())
    assert [m.plaintext for m in push_service.messages] == [b"y"]
    assert [a.status for a in push_service.attempts] == [status, 201]


def test_webpush_failure_queue_error_rate_and_latency():
    private, _ = generate_vapid_keypair()
    with FakePushService(error_rate=1.0, rate_error=503, latency_ms=30) as fake:
        subscription = fake.subscribe()
        fake.fail_next(429)
        started = time.monotonic()
        codes = []
        for _ in range(2):
            with pytest.raises(WebPushException) as info:
                webpush(subscription, data="x", vapid_private_key=private, vapid_claims=_claims())
            codes.append(info.value.response.status_code)
        assert time.monotonic() - started >= 2 * 0.03
        assert codes == [429, 503]


def _raw_h2c_pushes(fake: FakePushService, requests_: list[tuple[list, bytes]]) -> dict[int, list]:
    """POST over cleartext HTTP/2 with h2's client, headers sent exactly as given (no lower-casing),
    each body in 100-byte padded DATA frames; the events per stream."""
    host, port = fake.origin.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=CLIENT_TIMEOUT_S) as sock:
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = h2.connection.H2Connection(config)
        conn.initiate_connection()
        events: dict[int, list] = {}
        for headers, body in requests_:
            stream_id = conn.get_next_available_stream_id()
            events[stream_id] = []
            conn.send_headers(stream_id, headers)
            for start in range(0, len(body), 100):
                conn.send_data(stream_id, body[start : start + 100], pad_length=7)
            conn.end_stream(stream_id)
        sock.sendall(conn.data_to_send())
        finished: set[int] = set()
        while finished != set(events):
            data = sock.recv(65536)
            assert data, "the fake closed the connection"
            for event in conn.receive_data(data):
                stream_id = getattr(event, "stream_id", None)
                if stream_id in events:
                    events[stream_id].append(event)
                    if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        finished.add(stream_id)
            sock.sendall(conn.data_to_send())
    return events


def test_webpush_http2_decrypts_http_ece_bodies_and_resets_malformed_requests(push_service):
    """h2's client and http-ece's encryption (pywebpush's), independent of Clarion's: padded DATA
    frames decrypt; an upper-case or connection-specific field resets its stream, as RFC 9113 says."""
    vapid = Vapid()
    vapid.generate_keys()
    subscription = push_service.subscribe()
    body = WebPusher(subscription).encode(b"x" * 700)["body"]
    authorization = vapid.sign({**_claims(), "aud": push_service.origin})["Authorization"]
    path = "/push/" + push_service.subscription_id(subscription)
    head = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", push_service.origin[7:]),
        (":path", path),
    ]
    fields = [("ttl", "60"), ("content-encoding", "aes128gcm"), ("authorization", authorization)]
    events = _raw_h2c_pushes(
        push_service,
        [
            (head + fields, body),
            (head + [("TTL", "60"), *fields[1:]], body),
            (head + [*fields, ("connection", "keep-alive")], body),
            ([*fields, *head], body),  # pseudo-headers after regular ones
        ],
    )
    ok, upper_case, connection_specific, misplaced = events.values()
    assert isinstance(ok[0], h2.events.ResponseReceived) and dict(ok[0].headers)[":status"] == "201"
    for reset in (upper_case, connection_specific, misplaced):
        assert [type(e) for e in reset] == [h2.events.StreamReset]
        assert reset[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    (message,) = push_service.messages
    assert message.plaintext == b"x" * 700


def test_webpush_request_decoder_agrees_with_hpack():
    """The fake's HPACK decoder against hpack's encoder and decoder: indexed and literal fields,
    Huffman or not, never indexed, evictions, a table size update, multi-byte integers."""
    encoder, theirs, ours = hpack.Encoder(), hpack.Decoder(), RequestDecoder()
    for n in range(300):
        fields = [
            (":method", "POST"),
            (":path", f"/push/{n}" + "p" * (n % 150)),
            ("ttl", str(n % 7)),
            ("authorization", "vapid t=" + "t" * (n % 40) + ", k=key"),
            hpack.NeverIndexedHeaderTuple("x-secret", f"s{n}"),
            ("x-ünï", "çødé ✓"),
        ]
        if n == 150:
            encoder.header_table_size = 256  # evicts, and the next block opens with a size update
        block = encoder.encode(fields, huffman=n % 2 == 0)
        assert ours.decode(block) == theirs.decode(block) == [tuple(field) for field in fields]
    with pytest.raises(hpack.HPACKError):
        ours.decode(b"\xff\xff\xff")  # an index far past the table


def test_webpush_answer_encoder_agrees_with_hpack():
    """The fake's answers decode with hpack: repeated fields from the table, each Location
    Huffman-coded and never indexed, across a table size change."""
    encoder, decoder = AnswerEncoder(), hpack.Decoder()
    for n in range(200):
        if n == 100:
            encoder.resize(64)  # the client's SETTINGS_HEADER_TABLE_SIZE
            decoder.max_allowed_table_size = 64
        location = f"http://127.0.0.1:8/message/{n:x}" + "é" * (n % 90)
        fields = [(":status", "201"), ("content-length", "0"), ("location", location), ("ttl", str(n % 3))]
        block = encoder.encode(fields)
        assert decoder.decode(block) == fields
        assert location.encode() not in {value for _, value in decoder.header_table.dynamic_entries}
