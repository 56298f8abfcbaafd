"""A provider that stops answering: bounded timeouts, the send returns, the delivery is retried."""

import time

import pytest
from django.utils import timezone

from delivery import sending
from delivery.models import Delivery
from delivery.providers import apns
from tests.delivery.factories import device, send
from tests.delivery.providers.conftest import APNS_DEVICE

pytestmark = pytest.mark.django_db


def test_a_hanging_provider_times_out_and_the_delivery_is_retried_until_it_answers(
    fake_apns, monkeypatch, alice, eager_tasks, fan_out
):
    monkeypatch.setattr(apns, "REQUEST_TIMEOUT_SECS", 1)
    device(alice, "apns", token=APNS_DEVICE)
    fake_apns.hold()  # receives requests, answers none
    started = time.monotonic()
    fan_out(send({"users": ["alice"]}, route="push").pk)
    assert time.monotonic() - started < 10  # the worker is not stuck on it

    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("queued", 1)
    assert delivery.next_attempt_at > timezone.now()
    assert delivery.error

    fake_apns.release()
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    sending.deliveries_send([delivery.pk])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("sent", 2)
