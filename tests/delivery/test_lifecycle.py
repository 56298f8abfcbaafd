"""Retention of delivery rows, expired tokens, stale devices, and deleting a user."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from knox.models import AuthToken

from delivery import lifecycle
from delivery.models import Delivery, InboxMessage, Notification
from devices.models import Device
from notifyproject.identities.client_tokens import end_user_token_create
from tests.delivery.factories import device, send

pytestmark = pytest.mark.django_db


def test_old_delivery_rows_are_deleted_in_batches(alice, eager_tasks, fan_out, monkeypatch, settings):
    settings.CLARION_RETENTION_DAYS = 30
    monkeypatch.setattr(lifecycle, "DELETE_BATCH_ROWS", 2)
    for _ in range(5):
        device(alice)
    notification = send({"users": ["alice"]}, route="push")
    fan_out(notification.pk)
    assert Delivery.objects.count() == 5
    old = list(Delivery.objects.values_list("pk", flat=True)[:3])
    Delivery.objects.filter(pk__in=old).update(created_at=timezone.now() - timedelta(days=31))
    assert lifecycle.deliveries_purge() == 3
    assert set(Delivery.objects.values_list("pk", flat=True)).isdisjoint(old)
    assert Delivery.objects.count() == 2


def test_stale_devices_are_deactivated(alice, settings):
    settings.CLARION_STALE_DEVICE_DAYS = 60
    fresh, stale = device(alice), device(alice)
    Device.objects.filter(pk=stale.pk).update(last_seen_at=timezone.now() - timedelta(days=61))
    assert lifecycle.stale_devices_deactivate() == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert (fresh.active, stale.active) == (True, False)
    assert stale.deactivated_reason == "not seen for 60 days"


def test_expired_tokens_are_deleted(alice):
    end_user_token_create(user=alice, ttl=timedelta(seconds=-1))
    end_user_token_create(user=alice, ttl=timedelta(days=1))
    assert lifecycle.end_user_tokens_purge() == 1
    assert AuthToken.objects.count() == 1


def test_deleting_a_user_deletes_their_devices_inbox_and_deliveries(alice, bob, eager_tasks, fan_out):
    device(alice)
    device(bob)
    notification = send({"users": ["alice", "bob"]}, route="push")
    fan_out(notification.pk)
    get_user_model().objects.filter(pk=alice.pk).delete()
    assert not Device.objects.filter(user_id=alice.pk).exists()
    assert not InboxMessage.objects.filter(user_id=alice.pk).exists()
    assert not Delivery.objects.filter(user_id=alice.pk).exists()
    assert Delivery.objects.filter(user=bob).count() == 1
    assert Notification.objects.filter(pk=notification.pk).exists()
