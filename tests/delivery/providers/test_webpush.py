"""Web Push provider: VAPID + aes128gcm against the fake push service, which verifies and decrypts."""

import json
import socket
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from delivery.providers import Outcome, get_provider
from delivery.providers.transport import b64url_encode
from delivery.providers.webpush import (
    VAPID_TOKEN_LIFETIME_SECS,
    VAPID_TOKEN_RENEW_SECS,
    VapidHeaders,
    load_vapid_private_key,
    vapid_public_key,
)
from delivery.sending import WITHDRAW_TTL_SECS, withdraw_message
from tests.delivery.providers.conftest import (
    TTL_SECS,
    VAPID_SUBJECT,
    provider,
    push_message,
    subscription_target,
)
from tests.fakes.webpush import FakePushService, generate_vapid_keypair


def test_the_browser_gets_title_body_data_url_icon_with_priority_ttl_and_topic(fake_push_service, vapid_keys):
    _, public = vapid_keys
    subscription = fake_push_service.subscribe(application_server_key=public)  # only our key may push
    (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])

    (received,) = fake_push_service.messages  # decrypted with the browser's private key and secret
    assert json.loads(received.plaintext) == {
        "id": 42,
        "title": "New message",
        "body": "Bob: lunch?",
        "data": {"thread": "42", "unread": 3, "tags": ["a", "b"]},
        "url": "https://app.example/t/42",
        "icon": "https://app.example/i.png",
    }
    assert received.urgency == "high" and received.topic == "thread-42"
    assert TTL_SECS - 5 <= received.ttl <= TTL_SECS
    assert received.headers["content-encoding"] == "aes128gcm"
    assert received.auth_scheme == "vapid" and received.vapid_key == public
    assert received.vapid_claims["aud"] == fake_push_service.origin
    assert received.vapid_claims["sub"] == VAPID_SUBJECT
    assert result.outcome == Outcome.SENT and result.provider_message_id.startswith(fake_push_service.origin)


def test_normal_priority_and_a_collapse_key_that_is_not_a_valid_topic(fake_push_service):
    subscription = fake_push_service.subscribe()
    message = push_message(priority="normal", collapse_key="thread 42: longer than thirty-two characters")
    provider("webpush").send(message, [subscription_target(subscription)])
    received = fake_push_service.messages[0]
    assert received.urgency == "normal"
    assert len(received.topic) == 32  # derived, and the fake accepted it as base64url


def test_the_vapid_jwt_is_signed_once_per_push_service(fake_push_service):
    webpush = provider("webpush")
    subscriptions = [fake_push_service.subscribe() for _ in range(3)]
    for number, subscription in enumerate(subscriptions, start=1):
        webpush.send(push_message(), [subscription_target(subscription, number)])
    assert len({m.headers["authorization"] for m in fake_push_service.messages}) == 1


def test_a_batch_goes_out_as_streams_of_one_http2_connection(fake_push_service):
    webpush = provider("webpush")
    subscriptions = [fake_push_service.subscribe() for _ in range(20)]
    for first in (1, 11):  # two batches, one connection
        batch = [subscription_target(s, n) for n, s in enumerate(subscriptions[first - 1 : first + 9], first)]
        assert {r.outcome for r in webpush.send(push_message(), batch)} == {Outcome.SENT}
    assert len(fake_push_service.messages) == 20
    assert fake_push_service.http2_connections_opened == 1


def test_a_batch_reports_each_subscription_in_order(fake_push_service):
    subscriptions = [fake_push_service.subscribe() for _ in range(5)]
    fake_push_service.fail_subscription(subscriptions[2], 410)
    batch = [subscription_target(s, n) for n, s in enumerate(subscriptions, start=1)]
    results = provider("webpush").send(push_message(), batch)
    assert [r.delivery_id for r in results] == [1, 2, 3, 4, 5]
    assert [r.outcome for r in results] == [Outcome.SENT] * 2 + [Outcome.TOKEN_DEAD] + [Outcome.SENT] * 2
    assert len(fake_push_service.messages) == 4


@pytest.mark.parametrize("status", [404, 410])
def test_a_gone_subscription_is_a_dead_token(fake_push_service, status):
    subscription = fake_push_service.subscribe()
    fake_push_service.fail_subscription(subscription, status)
    (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])
    assert result.outcome == Outcome.TOKEN_DEAD and result.error.startswith(f"{status} ")


def test_an_unsubscribed_browser_is_a_dead_token(fake_push_service):
    subscription = fake_push_service.subscribe()
    fake_push_service.unsubscribe(subscription)
    (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])
    assert result.outcome == Outcome.TOKEN_DEAD and result.error == "410 Gone"


def test_429_is_retried_after_the_services_retry_after(vapid_keys, settings):
    settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = True
    with FakePushService(retry_after_s=7) as fake:
        subscription = fake.subscribe()
        fake.fail_subscription(subscription, 429, times=1)
        (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])
    assert result.outcome == Outcome.RETRY and result.retry_after_secs == 7
    assert result.error == "429 Too Many Requests"


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried(fake_push_service, status):
    subscription = fake_push_service.subscribe()
    fake_push_service.fail_subscription(subscription, status, times=1)
    (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])
    assert result.outcome == Outcome.RETRY and result.error.startswith(f"{status} ")


def test_a_payload_too_large_fails_without_a_request(fake_push_service):
    subscription = fake_push_service.subscribe()
    (result,) = provider("webpush").send(
        push_message(data={"blob": "x" * 5000}), [subscription_target(subscription)]
    )
    assert result.outcome == Outcome.FAILED and result.error.startswith("PAYLOAD_TOO_LARGE: ")
    assert fake_push_service.attempts == []


def test_a_push_service_refusing_the_size_fails(fake_push_service):
    subscription = fake_push_service.subscribe()
    fake_push_service.fail_subscription(subscription, 413)
    (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])
    assert result.outcome == Outcome.FAILED and result.error.startswith("413 ")


def test_a_vapid_key_the_subscription_does_not_know_fails_without_killing_it(fake_push_service):
    _, other_public = generate_vapid_keypair()
    subscription = fake_push_service.subscribe(application_server_key=other_public)
    (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])
    assert result.outcome == Outcome.FAILED and result.error == "403 Forbidden"


def test_undecodable_subscription_keys_are_a_dead_token(fake_push_service):
    subscription = fake_push_service.subscribe()
    subscription["keys"]["p256dh"] = b64url_encode(b"\x04" + b"\x00" * 64)  # not a point on P-256
    (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])
    assert result.outcome == Outcome.TOKEN_DEAD and result.error.startswith("INVALID_SUBSCRIPTION: ")
    assert fake_push_service.attempts == []


class TestPrivateEndpoints:
    """Sending checks the endpoint as written and every address it connects to (tests/test_outbound.py)."""

    @pytest.fixture
    def tls_service(self, vapid_keys, monkeypatch):
        with FakePushService(tls=True) as fake:
            monkeypatch.setenv("SSL_CERT_FILE", str(fake.ca_path))
            monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
            yield fake

    @pytest.fixture
    def public_name(self, monkeypatch):
        """DNS that answers loopback for a public-looking name (a rebinding attacker's setup)."""
        real_getaddrinfo = socket.getaddrinfo

        def getaddrinfo(host, *args, **kwargs):
            return real_getaddrinfo("127.0.0.1" if host == "push.example.com" else host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return "push.example.com"

    def test_a_literal_private_address_is_refused(self, tls_service, settings):
        settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = False
        subscription = tls_service.subscribe()
        (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])
        assert result.outcome == Outcome.FAILED
        assert result.error.startswith("PRIVATE_ADDRESS: 127.0.0.1 is a loopback address")
        assert tls_service.attempts == []

    def test_a_name_that_resolves_to_a_private_address_is_refused(self, tls_service, public_name, settings):
        settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = False
        subscription = tls_service.subscribe()
        subscription["endpoint"] = subscription["endpoint"].replace("127.0.0.1", public_name)
        (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])
        assert result.outcome == Outcome.FAILED
        assert result.error == "PRIVATE_ADDRESS: 127.0.0.1 is a loopback address"
        assert tls_service.attempts == []

    def test_plain_http_is_refused(self, fake_push_service, settings):
        settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = False
        subscription = fake_push_service.subscribe()
        (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])
        assert result.outcome == Outcome.FAILED and result.error.startswith("INSECURE_SCHEME: ")

    def test_allowed_when_configured_and_tls_trusts_ssl_cert_file(self, tls_service, settings):
        settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = True
        subscription = tls_service.subscribe()
        (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])
        assert result.outcome == Outcome.SENT and len(tls_service.messages) == 1

    def test_a_service_whose_alpn_is_not_h2_gets_http1(self, tls_service, settings):
        settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = True
        webpush = provider("webpush")
        subscriptions = [tls_service.subscribe() for _ in range(3)]
        for number, subscription in enumerate(subscriptions, start=1):  # the second send knows already
            (result,) = webpush.send(push_message(), [subscription_target(subscription, number)])
            assert result.outcome == Outcome.SENT
        assert len(tls_service.messages) == 3 and tls_service.http2_connections_opened == 0

    def test_tls_trusts_requests_ca_bundle(self, tls_service, settings, monkeypatch):
        settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = True
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_service.ca_path))
        monkeypatch.delenv("SSL_CERT_FILE")
        subscription = tls_service.subscribe()
        (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])
        assert result.outcome == Outcome.SENT


class TestConfiguration:
    def test_not_configured_without_vapid_keys(self, settings):
        settings.VAPID_PRIVATE_KEY = settings.VAPID_SUBJECT = ""
        built, reason = get_provider("webpush")
        assert built is None and reason.startswith("webpush provider is not configured")
        assert "VAPID_PRIVATE_KEY" in reason and "VAPID_SUBJECT" in reason

    def test_a_public_key_that_does_not_match_is_refused(self, vapid_keys, settings):
        settings.VAPID_PUBLIC_KEY = generate_vapid_keypair()[1]
        built, reason = get_provider("webpush")
        assert built is None and "VAPID_PUBLIC_KEY" in reason

    def test_a_subject_must_be_mailto_or_https(self, vapid_keys, settings):
        settings.VAPID_SUBJECT = "ops@example.com"
        built, reason = get_provider("webpush")
        assert built is None and "mailto:" in reason

    def test_the_private_key_may_be_raw_base64url_or_pem(self):
        key = ec.generate_private_key(ec.SECP256R1())
        raw = b64url_encode(key.private_numbers().private_value.to_bytes(32, "big"))
        pkcs8 = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        sec1 = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        expected = vapid_public_key(key)
        for form in (raw, pkcs8, sec1, pkcs8.replace("\n", "\\n")):  # \n-escaped, as in a one-line env file
            assert vapid_public_key(load_vapid_private_key(form)) == expected
        with pytest.raises(ValueError):
            load_vapid_private_key(b64url_encode(b"too short"))


def test_a_withdrawal_reaches_the_service_worker_as_a_read_message(fake_push_service, vapid_keys):
    subscription = fake_push_service.subscribe(application_server_key=vapid_keys[1])
    expires_at = timezone.now() + timedelta(seconds=WITHDRAW_TTL_SECS)
    (result,) = provider("webpush").send(
        withdraw_message(42, expires_at), [subscription_target(subscription)]
    )

    assert result.outcome == Outcome.SENT
    (received,) = fake_push_service.messages  # decrypted with the browser's keys
    assert json.loads(received.plaintext) == {"type": "read", "id": 42}
    assert received.urgency == "normal" and received.topic is None
    assert WITHDRAW_TTL_SECS - 5 <= received.ttl <= WITHDRAW_TTL_SECS


def test_the_vapid_header_is_kept_per_audience_and_signed_again_before_it_expires(vapid_keys):
    private, public = vapid_keys
    key = load_vapid_private_key(private)
    now = [1_900_000_000.0]
    headers = VapidHeaders(key, VAPID_SUBJECT, clock=lambda: now[0])

    first = headers.for_origin("https://push.example")
    now[0] += VAPID_TOKEN_RENEW_SECS - 1
    assert headers.for_origin("https://push.example") is first
    other = headers.for_origin("https://other.example")
    now[0] += 1
    renewed = headers.for_origin("https://push.example")

    def claims(header: str) -> dict:
        token = header.removeprefix("vapid t=").split(", k=")[0]
        options = {"verify_exp": False, "verify_aud": False}
        return jwt.decode(token, key.public_key(), algorithms=["ES256"], options=options)

    assert renewed != first and renewed.endswith(f", k={public}")
    assert claims(first)["exp"] == 1_900_000_000 + VAPID_TOKEN_LIFETIME_SECS
    assert claims(renewed)["exp"] == claims(first)["exp"] + VAPID_TOKEN_RENEW_SECS
    assert (
        claims(other)["aud"] == "https://other.example" and claims(renewed)["aud"] == "https://push.example"
    )


def test_a_new_vapid_key_signs_with_that_key(vapid_keys):
    headers = [
        VapidHeaders(load_vapid_private_key(private), VAPID_SUBJECT).for_origin("https://push.example")
        for private in (vapid_keys[0], generate_vapid_keypair()[0])
    ]
    assert headers[0].endswith(f", k={vapid_keys[1]}")
    assert headers[0].split(", k=")[1] != headers[1].split(", k=")[1]


def test_every_message_of_large_batches_reaches_the_browser_decrypted(fake_push_service):
    """Batches of more streams than one connection takes at once, twice: header blocks reused."""
    subscriptions = [fake_push_service.subscribe() for _ in range(250)]
    targets = [subscription_target(s, number) for number, s in enumerate(subscriptions, start=1)]
    webpush = provider("webpush")
    withdrawal = withdraw_message(42, timezone.now() + timedelta(seconds=WITHDRAW_TTL_SECS))
    for message in (push_message(), withdrawal):  # the second batch's TTL changes the header table
        results = webpush.send(message, targets)
        assert [r.outcome for r in results] == [Outcome.SENT] * len(targets)
    received = fake_push_service.messages
    assert sorted(m.subscription_id for m in received) == sorted(
        fake_push_service.subscription_id(s) for s in subscriptions for _ in range(2)
    )
    assert {json.loads(m.plaintext)["title"] for m in received[:250]} == {"New message"}
    assert {json.loads(m.plaintext)["type"] for m in received[250:]} == {"read"}
    assert all(WITHDRAW_TTL_SECS - 5 <= m.ttl <= WITHDRAW_TTL_SECS for m in received[250:])
