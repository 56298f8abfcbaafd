"""Webhooks through real processes: a Celery worker (with beat) sending to a loopback receiver."""

import pytest
import standardwebhooks

from delivery.models import Delivery
from delivery.webhooks.models import EventStatus, WebhookAttempt, WebhookEvent
from tests.delivery.factories import device, send, users
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

WORKER_ENV = {"WEBHOOK_ALLOW_PRIVATE_URLS": "1", "CLARION_WEBHOOK_RETRY_BASE": "0.2"}


def verify(webhook, received) -> dict:
    return standardwebhooks.Webhook(webhook.secret).verify(received.body, received.headers)


def test_a_send_is_posted_and_a_500_retried_with_the_same_webhook_id(
    start_worker, alice, recorder, receiver, make_webhook
):
    webhook = make_webhook(receiver.url, events=["delivery.sent"])
    device(alice)
    receiver.program(500)
    worker = start_worker(**WORKER_ENV)
    notification = send({"users": ["alice"]}, route="push")
    first, second = receiver.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert verify(webhook, first) == verify(webhook, second)
    assert verify(webhook, second)["data"]["notification"] == notification.pk
    wait_until(
        lambda: WebhookEvent.objects.filter(status=EventStatus.SUCCEEDED).count() == 1, message="recorded"
    )
    codes = WebhookAttempt.objects.order_by("attempt").values_list("status_code", flat=True)
    assert list(codes) == [500, 200]
    assert webhook.secret.removeprefix("whsec_") not in "".join(worker.output)  # the secret is never logged


def test_no_answer_within_the_timeout_is_retried_with_the_same_webhook_id(
    start_worker, alice, recorder, receiver, make_webhook
):
    webhook = make_webhook(receiver.url, events=["delivery.sent"])
    device(alice)
    receiver.program("hang")
    start_worker(CLARION_WEBHOOK_TIMEOUT="1", **WORKER_ENV)
    send({"users": ["alice"]}, route="push")
    first, second = receiver.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    verify(webhook, second)
    wait_until(
        lambda: WebhookEvent.objects.filter(status=EventStatus.SUCCEEDED).count() == 1, message="recorded"
    )
    timed_out = WebhookAttempt.objects.get(attempt=1)
    assert timed_out.status_code is None and timed_out.error.startswith("TIMEOUT")


def test_a_worker_killed_mid_batch_loses_no_event(start_worker, recorder, receiver, make_webhook):
    webhook = make_webhook(receiver.url, events=["delivery.sent"])
    audience = users(40, prefix="k")
    for user in audience:
        device(user)
    receiver.default = "hang"  # every POST waits: the batch is in flight when the worker dies
    doomed = start_worker(CLARION_WEBHOOK_TIMEOUT="60", **WORKER_ENV)
    send({"users": [u.username for u in audience]}, route="push")
    receiver.wait_for(1)
    doomed.kill()
    assert WebhookEvent.objects.filter(status=EventStatus.SENDING).exists()
    receiver.default = 200
    receiver.released.set()
    start_worker(CLARION_WEBHOOK_SENDING_STALE_SECS="2", **WORKER_ENV)
    wait_until(
        lambda: WebhookEvent.objects.filter(status=EventStatus.SUCCEEDED).count() == 40,
        timeout=60,
        message="every event sent",
    )
    assert Delivery.objects.filter(status="sent").count() == 40
    message_ids = set(WebhookEvent.objects.values_list("message_id", flat=True))
    received = {r.headers["webhook-id"] for r in receiver.requests}
    assert message_ids <= received and len(message_ids) == 40
    for request in receiver.requests:
        verify(webhook, request)
