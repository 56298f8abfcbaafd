"""A one-statement notification insert writes what save() writes and finds the same blocker."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from delivery.fanout import notification_insert, sender_order_state
from delivery.models import Notification, NotificationStatus
from tests.delivery.factories import sender

pytestmark = pytest.mark.django_db(transaction=True)


EXPIRES_AT = timezone.now() + timedelta(hours=1)


def unsaved(by, **fields) -> Notification:
    values = {
        "sender_key": by.api_key,
        "sender_label": by.label,
        "idempotency_key": None,
        "title": "Hi",
        "body": "Bob: lunch?",
        "data": {"thread": "42", "n": [1, 2.5, None]},
        "url": "https://app.example/t/42",
        "priority": "high",
        "ttl": 3600,
        "expires_at": EXPIRES_AT,
        "collapse_key": "thread-42",
        "route": "all",
        "push": {"badge": 3},
        "overrides": {"apns": {"aps": {"sound": "x"}}},
        "app": "",
        "target": {"users": ["alice"], "broadcast": False},
        "unknown": {"users": ["nobody"]},
        "recipients": 1,
        "status": NotificationStatus.QUEUED,
    }
    return Notification(**(values | fields))


def stored(notification_id: int) -> dict:
    row = model_to_dict(Notification.objects.get(pk=notification_id))
    return {key: value for key, value in row.items() if key not in ("id",)}


def test_the_insert_writes_the_row_save_writes():
    by = sender()
    saved, inserted = unsaved(by), unsaved(by)

    saved.save()
    with transaction.atomic():
        notification_insert(inserted)

    assert inserted.pk and not inserted._state.adding
    assert stored(inserted.pk) == stored(saved.pk)
    row = Notification.objects.get(pk=inserted.pk)
    assert (row.created_at, row.updated_at) == (inserted.created_at, inserted.updated_at)


def test_the_insert_returns_the_blocker_sender_order_state_finds():
    by = sender()
    behind = unsaved(by, status=NotificationStatus.DISPATCHING, fanout_cursor=5)
    ahead = unsaved(by, status=NotificationStatus.QUEUED, fanout_cursor=9)
    done = unsaved(by, status=NotificationStatus.DISPATCHED, fanout_cursor=0)
    other_sender = unsaved(sender(), status=NotificationStatus.QUEUED, fanout_cursor=0)
    for notification in (behind, ahead, done, other_sender):
        notification.save()

    with transaction.atomic():
        new = unsaved(by)
        blocker = notification_insert(new)
        assert blocker == (behind.pk, 5) == sender_order_state(new)[0]
        assert sender_order_state(new)[1] == []


def test_a_first_send_of_its_sender_has_no_blocker():
    with transaction.atomic():
        assert notification_insert(unsaved(sender())) is None
