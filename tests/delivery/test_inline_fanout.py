"""A send to a handful of users is fanned out by the web process that accepted it (no broker hop)."""

import json
import time

import httpx
import pytest
from websockets.sync.client import connect

from delivery.models import Notification, NotificationStatus
from notifyproject.identities.api_keys import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)
RECEIVE_TIMEOUT_SECS = 20


def next_notification(ws) -> dict:
    deadline = time.monotonic() + RECEIVE_TIMEOUT_SECS
    while True:
        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if frame.get("type") == "notification":
            return frame


def test_a_small_send_reaches_the_socket_with_no_worker_running(start_web, alice, client_for):
    web = start_web()  # and no worker: only the web process can fan this out
    _key, key = api_key_create(name="inline", scopes=["send"])
    token = client_for(alice).token
    with connect(f"{web.ws_url}/ws/v1/notifications/?token={token}", open_timeout=10) as ws:
        response = httpx.post(
            f"{web.url}/api/v1/notifications/",
            json={"to": {"users": ["alice"]}, "title": "inline", "route": "realtime"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert response.status_code == 202, response.text

        frame = next_notification(ws)

    assert frame["id"] == response.json()["id"] and frame["title"] == "inline"
    assert Notification.objects.get(pk=frame["id"]).status == NotificationStatus.DISPATCHED


def test_with_inline_fan_out_off_the_send_waits_for_a_worker(start_web, alice):
    web = start_web(CLARION_INLINE_FANOUT_MAX=0)
    _key, key = api_key_create(name="queued", scopes=["send"])
    response = httpx.post(
        f"{web.url}/api/v1/notifications/",
        json={"to": {"users": ["alice"]}, "title": "queued", "route": "realtime"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )

    assert response.status_code == 202
    # The response is sent after the commit hooks ran: no worker, so nothing was fanned out.
    assert Notification.objects.get(pk=response.json()["id"]).status == NotificationStatus.QUEUED


def test_a_send_to_named_users_reads_them_once_and_the_batch_no_preferences_alone(alice, bob):
    """The send's own lookup gives the first batch its recipients; the push insert reads quiet hours."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from delivery import services
    from delivery.models import InboxMessage

    request = services.NotificationRequest(target={"users": ["bob", "alice", "nobody", "alice"]}, title="t")
    with CaptureQueriesContext(connection) as queries:
        notification, created = services.notification_send(
            sender=services.Sender(label="test"), request=request
        )

    statements = [query["sql"] for query in queries if query["sql"] not in ("BEGIN", "COMMIT")]
    assert created and notification.recipients == 2 and notification.unknown["users"] == ["nobody"]
    assert sorted(
        InboxMessage.objects.filter(notification=notification).values_list("user_id", flat=True)
    ) == sorted([alice.pk, bob.pk])
    assert Notification.objects.get(pk=notification.pk).status == NotificationStatus.DISPATCHED
    assert sum('"auth_user"' in sql for sql in statements) == 1, statements
    assert not any(sql.startswith("SELECT") and "userpreferences" in sql for sql in statements), statements
    # The lookup, the insert with the sender-order check, the inbox with the notification's
    # status, the push deliveries with the recipients' quiet hours.
    assert len(statements) <= 4, statements
