"""Admin fixtures: staff with and without the send permission, and delivery-log data."""

import itertools

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from delivery.models import Delivery
from tests.delivery.factories import device, send

_serial = itertools.count(1)


@pytest.fixture
def superuser(make_user):
    return make_user("ops", is_staff=True, is_superuser=True, password="ops-password-123")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_client(superuser):
    return logged_in(superuser)


def _staff_with(make_user, username, codenames):
    user = make_user(username, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="delivery", codename__in=codenames)
    )
    return user


@pytest.fixture
def viewer_client(make_user):
    """Staff who may look at everything in the delivery app but not send."""
    viewer = _staff_with(
        make_user,
        "viewer",
        ["view_notification", "view_delivery", "view_audience", "view_deliverydashboard"],
    )
    viewer.user_permissions.add(Permission.objects.get(codename="view_device"))
    return logged_in(viewer)


@pytest.fixture
def sender_client(make_user):
    """Staff who may send, and view what they sent, but nothing else."""
    user = _staff_with(make_user, "sender", ["view_notification", "view_delivery", "send_notification"])
    user.user_permissions.add(Permission.objects.get(codename="view_device"))
    return logged_in(user)


@pytest.fixture
def delivery_rows():
    """Add `count` deliveries spread over users, devices, channels, statuses and notifications."""

    def add(count: int, *, notification=None, users=None, status=None, channel=None, error="", **fields):
        from tests.delivery.factories import users as make_users

        recipients = users or make_users(5, prefix=f"log{next(_serial)}-")
        phones = [device(user) for user in recipients]
        notification = notification or send({"users": [u.username for u in recipients]}, title="log")
        now = timezone.now()
        statuses = ["sent", "delivered", "failed", "queued"]
        rows = [
            Delivery(
                notification=notification,
                user=recipients[i % len(recipients)],
                device=None,
                channel=channel or ("fcm" if i % 2 else "apns"),
                status=status or statuses[i % len(statuses)],
                error=error
                or ("UNREGISTERED: token gone" if (status or statuses[i % 4]) == "failed" else ""),
                provider_message_id=f"msg-{i}",
                sent_at=now,
                **fields,
            )
            for i in range(count)
        ]
        created = Delivery.objects.bulk_create(rows)
        return notification, created, phones

    return add
