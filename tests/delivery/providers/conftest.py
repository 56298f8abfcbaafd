"""Fakes of FCM, APNs and Web Push, and settings that point the real providers at them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from delivery.providers import PushMessage, PushTarget, get_provider
from tests.fakes.apns import FakeAPNs
from tests.fakes.fcm import FakeFCM
from tests.fakes.loopback import loopback_only  # noqa: F401 - autouse: nothing leaves loopback
from tests.fakes.webpush import FakePushService, generate_vapid_keypair

APNS_DEVICE = "a1" * 32  # 64 hex digits, like a real device token
VAPID_SUBJECT = "mailto:ops@example.com"
TTL_SECS = 3600


def push_message(**fields) -> PushMessage:
    """A notification as the sending pipeline hands it to a provider."""
    defaults = {
        "notification_id": 42,
        "title": "New message",
        "body": "Bob: lunch?",
        "data": {"thread": "42", "unread": 3, "tags": ["a", "b"]},
        "url": "https://app.example/t/42",
        "icon": "https://app.example/i.png",
        "priority": "high",
        "expires_at": timezone.now() + timedelta(seconds=TTL_SECS),
        "collapse_key": "thread-42",
    }
    return PushMessage(**{**defaults, **fields})


def targets(tokens, first_delivery_id: int = 1, **fields) -> list[PushTarget]:
    return [
        PushTarget(delivery_id=first_delivery_id + i, device_id=1000 + i, token=token, **fields)
        for i, token in enumerate(tokens)
    ]


def provider(platform: str):
    built, reason = get_provider(platform)
    assert built is not None, reason
    return built


# -- FCM -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def _fcm_server():
    with FakeFCM() as fake:  # module-scoped: its RSA key takes a moment to generate
        yield fake


@pytest.fixture
def fake_fcm(_fcm_server, settings):
    _fcm_server.reset()
    settings.FCM_CREDENTIALS = str(_fcm_server.write_service_account())
    settings.FCM_ENDPOINT = _fcm_server.h2_url  # the provider speaks HTTP/2 only
    yield _fcm_server
    _fcm_server.reset()


# -- APNs ----------------------------------------------------------------------------------------
def _apns_settings(settings, production: FakeAPNs, sandbox: FakeAPNs, ca_bundle: Path) -> None:
    settings.APNS_KEY = str(production.key_path)
    settings.APNS_KEY_ID = production.key_id
    settings.APNS_TEAM_ID = production.team_id
    settings.APNS_TOPIC = production.topic
    settings.APNS_ENDPOINT = production.url
    settings.APNS_SANDBOX_ENDPOINT = sandbox.url
    settings.APNS_CA_BUNDLE = str(ca_bundle)


@pytest.fixture
def fake_apns(settings):
    with FakeAPNs() as fake:
        _apns_settings(settings, fake, fake, fake.ca_path)
        yield fake


@pytest.fixture
def fake_apns_pair(settings, tmp_path):
    """(production, sandbox): two hosts that trust the same .p8 key, like Apple's two environments."""
    production, sandbox = FakeAPNs(), FakeAPNs()
    sandbox._signing_key = production._signing_key  # one Apple key works in both environments
    with production, sandbox:
        bundle = tmp_path / "apns-cas.pem"
        bundle.write_bytes(production.ca_path.read_bytes() + sandbox.ca_path.read_bytes())
        _apns_settings(settings, production, sandbox, bundle)
        yield production, sandbox


# -- Web Push ------------------------------------------------------------------------------------
@pytest.fixture
def vapid_keys(settings):
    """(private, public) VAPID keys, configured."""
    private, public = generate_vapid_keypair()
    settings.VAPID_PRIVATE_KEY = private
    settings.VAPID_PUBLIC_KEY = public
    settings.VAPID_SUBJECT = VAPID_SUBJECT
    return private, public


@pytest.fixture
def fake_push_service(vapid_keys, settings):
    """A plain-HTTP push service on loopback, so private endpoints are allowed."""
    settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = True
    with FakePushService() as fake:
        yield fake


def subscription_target(subscription: dict, delivery_id: int = 1) -> PushTarget:
    return PushTarget(
        delivery_id=delivery_id,
        device_id=1000 + delivery_id,
        token=subscription["endpoint"],
        p256dh=subscription["keys"]["p256dh"],
        auth=subscription["keys"]["auth"],
    )
