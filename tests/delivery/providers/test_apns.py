"""APNs provider: our HTTP/2 client and ES256 provider tokens against the fake APNs (raw h2, TLS)."""

import threading
import uuid
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from delivery.providers import Outcome, get_provider
from delivery.providers.apns import (
    APNS_ID_NAMESPACE,
    PROVIDER_TOKEN_RENEW_SECS,
    ApnsProvider,
    ProviderToken,
    apns_id,
    provider_token,
)
from delivery.sending import WITHDRAW_TTL_SECS, withdraw_message
from tests.delivery.providers.conftest import APNS_DEVICE, _apns_settings, provider, push_message, targets
from tests.fakes.apns import FakeAPNs

WAIT_SECS = 10


def devices(count: int) -> list[str]:
    return [f"{i:064x}" for i in range(1, count + 1)]


def test_the_device_gets_title_body_data_priority_ttl_and_collapse_key(fake_apns):
    message = push_message()
    (result,) = provider("apns").send(message, targets([APNS_DEVICE], first_delivery_id=7))

    (note,) = fake_apns.notifications  # the fake verified the ES256 provider token to accept it
    assert note.token == APNS_DEVICE
    assert note.payload == {
        "aps": {"alert": {"title": "New message", "body": "Bob: lunch?"}},
        "id": 42,
        "data": {"thread": "42", "unread": 3, "tags": ["a", "b"]},
        "url": "https://app.example/t/42",
        "icon": "https://app.example/i.png",
    }
    headers = note.headers
    assert headers["apns-topic"] == fake_apns.topic
    assert (headers["apns-push-type"], headers["apns-priority"]) == ("alert", "10")
    assert headers["apns-expiration"] == str(int(message.expires_at.timestamp()))
    assert headers["apns-collapse-id"] == "thread-42"
    # apns-id is derived from the delivery id, so our logs, Apple's answer and retries correlate.
    assert headers["apns-id"] == str(uuid.uuid5(APNS_ID_NAMESPACE, "delivery:7"))
    assert result.outcome == Outcome.SENT and result.provider_message_id == headers["apns-id"]
    claims = jwt.decode(note.provider_token, options={"verify_signature": False})
    assert claims["iss"] == fake_apns.team_id
    assert jwt.get_unverified_header(note.provider_token)["kid"] == fake_apns.key_id


def test_normal_priority_is_5(fake_apns):
    provider("apns").send(push_message(priority="normal"), targets([APNS_DEVICE]))
    assert fake_apns.notifications[0].headers["apns-priority"] == "5"


def test_no_title_or_body_is_a_background_push_at_priority_5(fake_apns):
    provider("apns").send(push_message(title="", body="", collapse_key=""), targets([APNS_DEVICE]))
    note = fake_apns.notifications[0]
    assert note.payload["aps"] == {"content-available": 1}
    assert (note.headers["apns-push-type"], note.headers["apns-priority"]) == ("background", "5")
    assert "apns-collapse-id" not in note.headers


def test_a_collapse_key_longer_than_apple_allows_is_shortened(fake_apns):
    (result,) = provider("apns").send(push_message(collapse_key="k" * 100), targets([APNS_DEVICE]))
    assert result.outcome == Outcome.SENT
    assert len(fake_apns.notifications[0].headers["apns-collapse-id"]) <= 64


@pytest.mark.parametrize("reason", ["Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"])
def test_a_dead_token_is_reported_with_apples_reason(fake_apns, reason):
    dead_token, alive_token = devices(2)
    fake_apns.fail_token(dead_token, reason)
    dead, alive = provider("apns").send(push_message(), targets([dead_token, alive_token]))
    assert dead.outcome == Outcome.TOKEN_DEAD and dead.error.startswith(f"{reason}: ")
    assert alive.outcome == Outcome.SENT


@pytest.mark.parametrize(
    "reason, status", [("TooManyRequests", 429), ("InternalServerError", 500), ("ServiceUnavailable", 503)]
)
def test_throttling_and_server_errors_are_retried(fake_apns, reason, status):
    fake_apns.fail_token(APNS_DEVICE, reason, times=1)
    (result,) = provider("apns").send(push_message(), targets([APNS_DEVICE]))
    assert result.outcome == Outcome.RETRY and result.error.startswith(f"{reason}: HTTP {status}")
    assert result.retry_after_secs is None  # Apple sends no Retry-After: our back-off decides
    assert [a.status for a in fake_apns.attempts] == [status]


def test_a_bad_request_fails_without_killing_the_token(fake_apns):
    fake_apns.fail_token(APNS_DEVICE, "PayloadTooLarge")
    (result,) = provider("apns").send(push_message(), targets([APNS_DEVICE]))
    assert result.outcome == Outcome.FAILED and result.error.startswith("PayloadTooLarge: ")


def test_the_provider_token_is_signed_once_and_reused_across_sends(fake_apns):
    apns = provider("apns")
    for first in range(0, 150, 50):
        results = apns.send(push_message(), targets(devices(50), first_delivery_id=first + 1))
        assert {r.outcome for r in results} == {Outcome.SENT}
    assert len(fake_apns.notifications) == 150
    assert len(fake_apns.provider_tokens) == 1
    assert fake_apns.connections_opened == 1


def test_an_expired_provider_token_is_renewed_once_and_the_sends_retried(fake_apns):
    fake_apns.fail_next("ExpiredProviderToken", count=5)  # five streams in flight see it at once
    results = provider("apns").send(push_message(), targets(devices(5)))
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert [a.status for a in fake_apns.attempts] == [403] * 5 + [200] * 5
    assert len(fake_apns.provider_tokens) == 2  # renewed once, not per stream


def test_an_invalid_provider_token_fails(fake_apns):
    fake_apns.fail_next("InvalidProviderToken")
    (result,) = provider("apns").send(push_message(), targets([APNS_DEVICE]))
    assert result.outcome == Outcome.FAILED and result.error.startswith("InvalidProviderToken: ")


def test_many_concurrent_streams_share_one_connection(fake_apns):
    apns, count, results = provider("apns"), 300, []  # the fake allows 1,000 streams, as Apple does
    fake_apns.hold()  # answers wait until the client has opened every stream it may
    sender = threading.Thread(
        target=lambda: results.extend(apns.send(push_message(), targets(devices(count))))
    )
    sender.start()
    try:
        assert fake_apns.wait_for_in_flight(count, WAIT_SECS)  # the whole batch in flight at once
    finally:
        fake_apns.release()
        sender.join(WAIT_SECS)
    assert [r.outcome for r in results] == [Outcome.SENT] * count
    assert fake_apns.connections_opened == 1
    assert fake_apns.peak_concurrent_streams == count


def test_no_more_streams_than_the_server_allows_are_opened(settings):
    with FakeAPNs(max_concurrent_streams=40) as fake:  # Apple allows 1 until a token is accepted
        _apns_settings(settings, fake, fake, fake.ca_path)
        apns, count, results = provider("apns"), 100, []
        fake.hold()
        sender = threading.Thread(
            target=lambda: results.extend(apns.send(push_message(), targets(devices(count))))
        )
        sender.start()
        try:
            assert fake.wait_for_in_flight(40, WAIT_SECS)
        finally:
            fake.release()
            sender.join(WAIT_SECS)
        assert [r.outcome for r in results] == [Outcome.SENT] * count
        assert fake.peak_concurrent_streams == 40 and fake.connections_opened == 1


def test_worker_threads_sending_at_once_share_the_connection_and_token(fake_apns):
    apns, threads, per_thread = provider("apns"), 4, 40
    start, results = threading.Barrier(threads), []

    def worker(n):
        start.wait(WAIT_SECS)
        tokens = devices(threads * per_thread)[n * per_thread : (n + 1) * per_thread]
        results.extend(apns.send(push_message(), targets(tokens, first_delivery_id=n * per_thread + 1)))

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(WAIT_SECS)
    assert sorted(r.delivery_id for r in results if r.outcome == Outcome.SENT) == list(
        range(1, threads * per_thread + 1)
    )
    assert fake_apns.connections_opened == 1 and len(fake_apns.provider_tokens) == 1


def test_the_environment_of_each_device_chooses_the_endpoint(fake_apns_pair):
    production, sandbox = fake_apns_pair
    prod_token, sandbox_token, default_token = devices(3)
    batch = [
        *targets([prod_token], first_delivery_id=1, environment="production"),
        *targets([sandbox_token], first_delivery_id=2, environment="sandbox"),
        *targets([default_token], first_delivery_id=3),  # no environment: production
    ]
    results = provider("apns").send(push_message(), batch)
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert sorted(n.token for n in production.notifications) == sorted([prod_token, default_token])
    assert [n.token for n in sandbox.notifications] == [sandbox_token]
    assert production.provider_tokens == sandbox.provider_tokens  # one token for both hosts
    assert (production.connections_opened, sandbox.connections_opened) == (1, 1)


def test_a_network_failure_is_retried(fake_apns, settings):
    settings.APNS_ENDPOINT = "https://127.0.0.1:1"  # nothing listens there
    (result,) = provider("apns").send(push_message(), targets([APNS_DEVICE]))
    assert result.outcome == Outcome.RETRY and result.error.startswith("CONNECTION_ERROR: ")


def test_not_configured_until_key_ids_and_topic_are_set(settings):
    settings.APNS_KEY = settings.APNS_KEY_ID = settings.APNS_TEAM_ID = settings.APNS_TOPIC = ""
    built, reason = get_provider("apns")
    assert built is None and reason.startswith("apns provider is not configured")
    assert "APNS_KEY" in reason and "APNS_TOPIC" in reason


def test_not_configured_with_an_unreadable_key(fake_apns, settings, tmp_path):
    settings.APNS_KEY = str(tmp_path / "AuthKey_missing.p8")
    built, reason = get_provider("apns")
    assert built is None and "AuthKey_missing.p8" in reason


def test_close_stops_the_event_loop_thread(fake_apns):
    apns = ApnsProvider()
    apns.send(push_message(), targets([APNS_DEVICE]))
    loop_thread = apns._loop._thread
    assert (
        loop_thread in threading.enumerate() and loop_thread.name == "clarion-apns-default"
    )  # one loop per app
    apns.close()
    assert not loop_thread.is_alive()


def test_a_withdrawal_is_a_background_read_push_with_its_own_apns_id(fake_apns):
    expires_at = timezone.now() + timedelta(seconds=WITHDRAW_TTL_SECS)
    (result,) = provider("apns").send(
        withdraw_message(42, expires_at), targets([APNS_DEVICE], first_delivery_id=7)
    )

    assert result.outcome == Outcome.SENT
    (note,) = fake_apns.notifications
    assert note.payload == {"aps": {"content-available": 1}, "type": "read", "id": 42}
    headers = note.headers
    assert (headers["apns-push-type"], headers["apns-priority"]) == ("background", "5")
    assert headers["apns-expiration"] == str(int(expires_at.timestamp()))
    assert "apns-collapse-id" not in headers
    # Not the id of the notification's own push to this device (delivery 7).
    assert headers["apns-id"] == str(uuid.uuid5(APNS_ID_NAMESPACE, "withdraw:7"))


class Clock:
    """A wall clock the test moves by hand (what ProviderToken reads instead of time.time)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_provider_token_is_renewed_once_it_is_due_and_not_before():
    key = ec.generate_private_key(ec.SECP256R1())
    clock = Clock(1_700_000_000.0)
    token = ProviderToken(key, "KEY1234567", "TEAM123456", clock=clock)
    first_header, first = token.authorization()
    assert first_header == f"bearer {first}".encode()

    clock.now += PROVIDER_TOKEN_RENEW_SECS - 1
    assert token.authorization() == (first_header, first)  # the same header bytes, not re-signed

    clock.now += 1
    header, renewed = token.authorization()
    assert renewed != first and header == f"bearer {renewed}".encode()
    claims = jwt.decode(renewed, key.public_key(), algorithms=["ES256"], options={"verify_iat": False})
    assert claims == {"iss": "TEAM123456", "iat": int(clock.now)}
    assert jwt.get_unverified_header(renewed)["kid"] == "KEY1234567"


def test_a_rejected_token_is_renewed_once_however_many_requests_saw_it_rejected():
    token = ProviderToken(ec.generate_private_key(ec.SECP256R1()), "KEY1234567", "TEAM123456")
    _, rejected = token.authorization()
    _, renewed = token.renew(rejected)
    assert renewed != rejected
    assert token.renew(rejected)[1] == renewed  # a second refusal of the old token signs nothing


def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_one_provider_token_per_team_key_id_and_key():
    key, other_key = (
        pem(ec.generate_private_key(ec.SECP256R1())),
        pem(ec.generate_private_key(ec.SECP256R1())),
    )
    shared = provider_token(key, "KEY1234567", "TEAM123456")
    assert provider_token(key, "KEY1234567", "TEAM123456") is shared
    assert provider_token(key, "KEY7654321", "TEAM123456") is not shared
    assert provider_token(key, "KEY1234567", "TEAM654321") is not shared
    assert provider_token(other_key, "KEY1234567", "TEAM123456") is not shared


def test_providers_with_the_same_key_present_one_token_and_a_rebuilt_provider_keeps_it(fake_apns):
    first, second = ApnsProvider(), ApnsProvider()  # e.g. two apps of one team, or one rebuilt
    try:
        for apns, delivery_id in ((first, 1), (second, 2)):
            (result,) = apns.send(push_message(), targets([APNS_DEVICE], first_delivery_id=delivery_id))
            assert result.outcome == Outcome.SENT
    finally:
        first.close()
        second.close()
    assert fake_apns.connections_opened == 2  # one connection each, one token for both
    assert len(fake_apns.provider_tokens) == 1


def test_apns_ids_are_uuid5_of_the_delivery():
    for delivery_id in (0, 1, 7, 123_456_789, 2**63 - 1):
        for withdraw, kind in ((False, "delivery"), (True, "withdraw")):
            expected = uuid.uuid5(APNS_ID_NAMESPACE, f"{kind}:{delivery_id}")
            assert apns_id(delivery_id, withdraw) == str(expected)
