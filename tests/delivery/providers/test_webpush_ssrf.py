"""Web Push SSRF end to end: register, refuse private endpoints, send; the listener must see nothing.

Each endpoint is registered while WEBPUSH_ALLOW_PRIVATE_ENDPOINTS is on (a development setup,
or an endpoint whose name resolved publicly then), the setting is turned off, and a notification
goes through fan-out and the real provider. A loopback listener counts what reaches it.
"""

from __future__ import annotations

import logging
import socket

import pytest

from delivery.models import Delivery
from devices.models import Device
from tests.conftest import webpush_keys
from tests.delivery.factories import device, send
from tests.support.listener import CountingListener, raw_response

pytestmark = pytest.mark.django_db
DEVICES_URL = "/api/v1/devices/"
SECRET = "sk_live_51HqLyjWDarjtT1zdp7dc"
REBOUND_NAME = "push.example.com"  # resolves to loopback in these tests


@pytest.fixture
def listener():
    with CountingListener() as counting:
        yield counting


@pytest.fixture
def register(alice_client, settings, vapid_keys):
    """Register an endpoint for alice the way her browser would, with private endpoints allowed."""

    def run(endpoint: str) -> Device:
        settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = True
        body = {"platform": "webpush", "subscription": {"endpoint": endpoint, "keys": webpush_keys()}}
        response = alice_client.post(DEVICES_URL, body, format="json")
        assert response.status_code == 201, response.content
        return Device.objects.get(pk=response.json()["id"])

    return run


@pytest.fixture
def push(alice, eager_tasks, fan_out):
    """Send alice a push notification through fan-out and the provider; her devices' deliveries."""

    def run(to_device: Device) -> Delivery:
        notification = send({"users": ["alice"]}, route="push", title="Hello")
        fan_out(notification.pk)
        return Delivery.objects.get(notification=notification, device=to_device)

    return run


@pytest.fixture
def rebinding_dns(monkeypatch):
    """DNS that answers loopback for a public-looking name (the attacker controls their zone)."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real_getaddrinfo("127.0.0.1" if host == REBOUND_NAME else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class TestRefusedAtSendTime:
    def test_an_ip_literal(self, listener, register, push, settings):
        browser = register(listener.url(scheme="https"))
        settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = False
        delivery = push(browser)
        assert listener.accepted == 0
        assert delivery.status == "failed"
        assert delivery.error.startswith("PRIVATE_ADDRESS: 127.0.0.1 is a loopback address")

    @pytest.mark.parametrize(
        "host, code",
        [
            ("１２７.０.０.１", "NONCANONICAL_ADDRESS"),  # aiohttp would connect to 127.0.0.1 directly
            ("0x7f.0.0.1", "NONCANONICAL_ADDRESS"),
            ("0177.0.0.1", "NONCANONICAL_ADDRESS"),
            ("2130706433", "NONCANONICAL_ADDRESS"),
            ("127.1", "NONCANONICAL_ADDRESS"),
            ("[::ffff:127.0.0.1]", "PRIVATE_ADDRESS"),
        ],
    )
    def test_a_disguised_ip_literal_stored_before_registration_refused_it(
        self, listener, push, alice, vapid_keys, settings, host, code
    ):
        settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = False
        browser = device(alice, "webpush", token=listener.url(scheme="https", host=host), **webpush_keys())
        delivery = push(browser)
        assert listener.accepted == 0
        assert delivery.status == "failed" and delivery.error.startswith(f"{code}: ")

    def test_a_name_that_resolves_to_loopback(self, listener, register, push, settings, rebinding_dns):
        browser = register(listener.url(scheme="https", host=REBOUND_NAME))
        settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = False
        delivery = push(browser)
        assert listener.accepted == 0
        assert delivery.status == "failed"
        assert delivery.error == "PRIVATE_ADDRESS: 127.0.0.1 is a loopback address"

    def test_localhost(self, listener, register, push, settings):
        browser = register(listener.url(scheme="https", host="localhost"))
        settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = False
        delivery = push(browser)
        assert listener.accepted == 0
        assert delivery.status == "failed" and delivery.error.startswith("PRIVATE_ADDRESS: 'localhost' names")


def test_a_redirect_is_not_followed(register, push):
    """An allowed endpoint answering 307 to another loopback service: that service sees nothing."""
    with CountingListener() as elsewhere:
        redirect = raw_response("307 Temporary Redirect", headers={"Location": elsewhere.url("/admin")})
        with CountingListener(redirect) as push_service:
            delivery = push(register(push_service.url()))
            # The HTTP/2 preface (answered in HTTP/1.1), then the same request in HTTP/1.1.
            assert push_service.accepted == 2
        assert elsewhere.accepted == 0
    assert delivery.status == "failed" and delivery.error == "307 Temporary Redirect"


@pytest.mark.parametrize(
    "body",
    [
        f"Traceback: connect(password={SECRET})".encode(),
        f'{{"code": 400, "errno": 999, "message": "bad key {SECRET}"}}'.encode(),
    ],
)
def test_the_remote_body_is_not_recorded(register, push, caplog, body):
    caplog.set_level(logging.DEBUG)
    with CountingListener(raw_response("400 Bad Request", body)) as push_service:
        delivery = push(register(push_service.url()))
    assert delivery.status == "failed" and delivery.error.startswith("400 Bad Request")
    assert SECRET not in delivery.error
    assert SECRET not in caplog.text
