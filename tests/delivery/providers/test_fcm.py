"""FCM provider (firebase-admin's OAuth and encoder, our HTTP/2) against the fake FCM v1 API and OAuth."""

import json
import os
import threading
from datetime import timedelta

import pytest
from django.utils import timezone
from firebase_admin import _messaging_encoder, messaging

from delivery.providers import Outcome, get_provider
from delivery.providers.base import PushOptions
from delivery.providers.fcm import (
    FcmProvider,
    fcm_counted_size,
    fcm_message_json,
    fcm_message_template,
    fcm_payload_size,
)
from delivery.sending import WITHDRAW_TTL_SECS, withdraw_message
from tests.delivery.providers.conftest import TTL_SECS, provider, push_message, targets


def test_the_device_gets_title_body_data_priority_ttl_and_collapse_key(fake_fcm):
    (result,) = provider("fcm").send(push_message(), targets(["token-1"]))

    (sent,) = fake_fcm.messages
    assert result.outcome == Outcome.SENT and result.provider_message_id == sent.name
    message = sent.message
    assert message["token"] == "token-1"
    assert message["notification"] == {"title": "New message", "body": "Bob: lunch?"}
    # FCM data values are strings: non-strings arrive JSON-encoded; Clarion's id and url ride along.
    assert message["data"] == {
        "thread": "42",
        "unread": "3",
        "tags": '["a", "b"]',
        "clarion_id": "42",
        "clarion_url": "https://app.example/t/42",
    }
    android = message["android"]
    assert (android["priority"], android["collapse_key"]) == ("high", "thread-42")
    assert TTL_SECS - 5 <= int(android["ttl"].rstrip("s")) <= TTL_SECS
    apns_headers = message["apns"]["headers"]
    assert apns_headers["apns-priority"] == "10" and apns_headers["apns-push-type"] == "alert"
    assert apns_headers["apns-collapse-id"] == "thread-42"
    webpush = message["webpush"]
    assert (webpush["headers"]["Urgency"], webpush["headers"]["Topic"]) == ("high", "thread-42")
    assert TTL_SECS - 5 <= int(webpush["headers"]["TTL"]) <= TTL_SECS
    assert webpush["notification"]["icon"] == "https://app.example/i.png"
    assert webpush["fcm_options"]["link"] == "https://app.example/t/42"
    assert not sent.validate_only


def test_normal_priority(fake_fcm):
    provider("fcm").send(push_message(priority="normal"), targets(["token-1"]))
    message = fake_fcm.messages[0].message
    assert message["android"]["priority"] == "normal"
    assert message["apns"]["headers"]["apns-priority"] == "5"
    assert message["webpush"]["headers"]["Urgency"] == "normal"


def test_no_title_or_body_is_a_data_only_message(fake_fcm):
    provider("fcm").send(push_message(title="", body="", collapse_key=""), targets(["token-1"]))
    message = fake_fcm.messages[0].message
    assert "notification" not in message and "notification" not in message["webpush"]
    assert message["apns"]["payload"] == {"aps": {"content-available": 1}}
    assert message["apns"]["headers"]["apns-push-type"] == "background"
    assert message["apns"]["headers"]["apns-priority"] == "5"  # Apple requires 5 for background pushes
    assert "collapse_key" not in message["android"] and "Topic" not in message["webpush"]["headers"]
    assert message["data"]["thread"] == "42"


def test_a_collapse_key_web_push_cannot_take_is_turned_into_a_topic(fake_fcm):
    key = "thread 42 / a very long collapse key that is not base64url"
    provider("fcm").send(push_message(collapse_key=key), targets(["token-1"]))
    message = fake_fcm.messages[0].message
    topic = message["webpush"]["headers"]["Topic"]
    assert len(topic) <= 32 and topic.replace("-", "").replace("_", "").isalnum()
    assert message["android"]["collapse_key"] == key


def test_a_batch_is_sent_concurrently_with_one_oauth_token_and_results_in_order(fake_fcm):
    tokens = [f"token-{i}" for i in range(60)]
    fake_fcm.fail_token("token-7", "UNREGISTERED")
    results = provider("fcm").send(push_message(), targets(tokens))

    assert [r.delivery_id for r in results] == list(range(1, 61))
    assert [r.outcome for r in results].count(Outcome.SENT) == 59
    assert results[7].outcome == Outcome.TOKEN_DEAD
    assert sorted(m.message["token"] for m in fake_fcm.messages) == sorted(set(tokens) - {"token-7"})
    assert fake_fcm.token_requests == 1  # the OAuth token is cached across threads and sends


@pytest.mark.parametrize("error", ["UNREGISTERED", "INVALID_ARGUMENT", "SENDER_ID_MISMATCH"])
def test_a_dead_token_is_reported_with_fcms_reason(fake_fcm, error):
    fake_fcm.fail_token("gone", error)
    dead, alive = provider("fcm").send(push_message(), targets(["gone", "alive"]))
    assert dead.outcome == Outcome.TOKEN_DEAD and dead.error.startswith(f"{error}: ")
    assert alive.outcome == Outcome.SENT


def test_quota_exceeded_is_retried_after_fcms_retry_after_and_not_at_once(fake_fcm):
    fake_fcm.fail_token("busy", "QUOTA_EXCEEDED", times=1)
    (result,) = provider("fcm").send(push_message(), targets(["busy"]))
    assert result.outcome == Outcome.RETRY and result.error.startswith("QUOTA_EXCEEDED: ")
    assert result.retry_after_secs == fake_fcm.retry_after_s
    assert [a.status for a in fake_fcm.attempts] == [429]  # not slept on and retried in the send


@pytest.mark.parametrize("error, status", [("UNAVAILABLE", 503), ("INTERNAL", 500)])
def test_server_errors_are_retried_later_not_in_the_send(fake_fcm, error, status):
    fake_fcm.fail_token("flaky", error, times=1)
    (result,) = provider("fcm").send(push_message(), targets(["flaky"]))
    assert result.outcome == Outcome.RETRY and result.error.startswith(f"{error}: ")
    assert [a.status for a in fake_fcm.attempts] == [status]


def test_a_rejected_payload_or_auth_error_fails_without_killing_the_token(fake_fcm):
    fake_fcm.fail_token("ios-device", "THIRD_PARTY_AUTH_ERROR")
    (result,) = provider("fcm").send(push_message(), targets(["ios-device"]))
    assert result.outcome == Outcome.FAILED and result.error.startswith("THIRD_PARTY_AUTH_ERROR: ")


def test_a_revoked_access_token_is_refreshed_transparently(fake_fcm):
    fcm = provider("fcm")
    fcm.send(push_message(), targets(["token-1"]))
    fake_fcm.revoke_access_tokens()
    (result,) = fcm.send(push_message(), targets(["token-1"]))
    assert result.outcome == Outcome.SENT and fake_fcm.token_requests == 2


def test_not_configured_without_credentials(settings):
    settings.FCM_CREDENTIALS = ""
    built, reason = get_provider("fcm")
    assert built is None
    assert reason.startswith("fcm provider is not configured") and "FCM_CREDENTIALS" in reason


def test_not_configured_with_an_unreadable_credentials_file(settings, tmp_path):
    settings.FCM_CREDENTIALS = str(tmp_path / "missing.json")
    built, reason = get_provider("fcm")
    assert built is None and "missing.json" in reason


def test_close_stops_the_event_loop_thread(fake_fcm):
    fcm = FcmProvider()
    fcm.send(push_message(), targets(["token-1"]))
    loop_thread = fcm._loop._thread
    assert loop_thread in threading.enumerate() and loop_thread.name == "clarion-fcm-default"
    fcm.close()
    assert not loop_thread.is_alive()


def test_a_batch_is_multiplexed_on_one_http2_connection(fake_fcm):
    fcm = provider("fcm")
    for first in range(0, 600, 300):
        results = fcm.send(
            push_message(), targets([f"t-{i}" for i in range(300)], first_delivery_id=first + 1)
        )
        assert {r.outcome for r in results} == {Outcome.SENT}
    assert len(fake_fcm.messages) == 600 and fake_fcm.h2_connections_opened == 1


def test_worker_threads_sending_at_once_share_the_connection_and_token(fake_fcm):
    fcm, threads, per_thread = provider("fcm"), 4, 40
    start, results = threading.Barrier(threads), []

    def worker(n):
        start.wait(10)
        tokens = [f"t-{n}-{i}" for i in range(per_thread)]
        results.extend(fcm.send(push_message(), targets(tokens, first_delivery_id=n * per_thread + 1)))

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(10)
    assert sorted(r.delivery_id for r in results if r.outcome == Outcome.SENT) == list(
        range(1, threads * per_thread + 1)
    )
    assert fake_fcm.h2_connections_opened == 1 and fake_fcm.token_requests == 1


def test_an_endpoint_that_does_not_answer_is_retried(fake_fcm, settings):
    settings.FCM_ENDPOINT = "http://127.0.0.1:1"  # nothing listens there
    (result,) = provider("fcm").send(push_message(), targets(["token-1"]))
    assert result.outcome == Outcome.RETRY and result.error.startswith("CONNECTION_ERROR: ")


def test_an_endpoint_that_speaks_only_http1_is_a_connection_error_not_a_hang(fake_fcm, settings):
    settings.FCM_ENDPOINT = fake_fcm.url  # the fake's HTTP/1.1 listener
    (result,) = provider("fcm").send(push_message(), targets(["token-1"]))
    assert result.outcome == Outcome.RETRY and result.error.startswith("CONNECTION_ERROR: ")
    assert fake_fcm.messages == []


def test_the_message_is_the_one_firebase_admin_builds(fake_fcm):
    """Built with the SDK's own encoder: what messaging.send() would have sent for the same message."""
    message = push_message()
    provider("fcm").send(message, targets(["token-1"]))
    sdk_message = messaging.Message(**fcm_message_template(message, TTL_SECS))
    sdk_message.token = "token-1"
    expected = json.loads(json.dumps(_messaging_encoder.MessageEncoder().default(sdk_message)))
    assert _without_ttl(fake_fcm.messages[0].message) == _without_ttl(expected)


def _without_ttl(message: dict) -> dict:
    """The message less its TTLs, whose seconds depend on when it was built."""
    message["android"].pop("ttl")
    message["webpush"]["headers"].pop("TTL")
    return message


def test_a_forked_child_opens_its_own_connection(fake_fcm, monkeypatch):
    fcm = provider("fcm")
    fcm.send(push_message(), targets(["token-1"]))
    parent_loop = fcm._loop._loop
    child_pid = os.getpid() + 1
    monkeypatch.setattr(os, "getpid", lambda: child_pid)  # what a child sees after fork()
    try:
        (result,) = fcm.send(push_message(), targets(["token-2"]))
        assert result.outcome == Outcome.SENT
        assert fcm._loop._loop is not parent_loop and fake_fcm.h2_connections_opened == 2
    finally:
        fcm.close()  # the child's own loop
        monkeypatch.undo()
        parent_loop.call_soon_threadsafe(parent_loop.stop)  # in a real fork it is not in the child


def test_an_alert_carries_the_tag_the_app_removes_it_by(fake_fcm):
    provider("fcm").send(push_message(), targets(["token-1"]))
    assert fake_fcm.messages[0].message["android"]["notification"] == {"tag": "clarion-42"}


def test_a_withdrawal_is_a_data_only_read_message_the_app_handles_in_the_background(fake_fcm):
    expires_at = timezone.now() + timedelta(seconds=WITHDRAW_TTL_SECS)
    (result,) = provider("fcm").send(withdraw_message(42, expires_at), targets(["token-1"]))

    assert result.outcome == Outcome.SENT
    message = fake_fcm.messages[0].message
    assert message["token"] == "token-1"
    assert message["data"] == {"clarion_type": "read", "clarion_id": "42"}
    assert "notification" not in message and "notification" not in message["android"]
    assert message["android"]["priority"] == "normal"
    assert WITHDRAW_TTL_SECS - 5 <= int(message["android"]["ttl"].rstrip("s")) <= WITHDRAW_TTL_SECS
    assert message["apns"]["payload"] == {"aps": {"content-available": 1}}
    assert message["apns"]["headers"]["apns-push-type"] == "background"
    assert message["apns"]["headers"]["apns-priority"] == "5"
    assert "notification" not in message["webpush"]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"title": "", "body": "only a body"},
        {"title": "only a title", "body": ""},
        {"title": "", "body": "", "data": {"silent": "data"}},
        {
            "title": "ünïcødé ✓ \u2028",
            "body": 'quotes " and \\ and \n',
            "data": {"k\u00e9": {"n": [1, 2.5, None]}},
        },
        {"url": "", "data": {}},
        {"options": PushOptions(image="https://app.example/big.png", badge=3, sound="ping")},
        {"options": PushOptions(silent=True)},
        {"options": PushOptions(image="")},
        {"overrides": {"fcm": {"data": {"extra": "x" * 50}, "notification": {"title": "over"}}}},
        {"overrides": {"apns": {"aps": {"sound": "x"}}}},
        {"withdraw": True},
        {"notification_id": 2**63 - 1, "body": "b" * 3000},
    ],
)
def test_the_counted_size_is_the_size_of_what_firebase_admin_encodes(fields):
    message = push_message(**fields)
    assert fcm_counted_size(message) == fcm_payload_size(fcm_message_json(message))
