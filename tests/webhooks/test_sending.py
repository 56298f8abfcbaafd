"""The outbox sender: retries and their schedule, redirects, connect-time address checks,
the disable threshold, "send again", and the attempts API, against a real loopback receiver."""

import json
import socket
from datetime import timedelta

import pytest
import standardwebhooks
from django.utils import timezone

from delivery.webhooks import sending, services
from delivery.webhooks.models import EventStatus, Webhook, WebhookAttempt, WebhookEvent
from delivery.webhooks.signing import message_id_generate

pytestmark = pytest.mark.django_db
REBOUND_NAME = "hooks.rebinding.example"


def event_for(webhook, *, age=timedelta(0), event_type="delivery.failed") -> WebhookEvent:
    """An outbox row as events.record writes it."""
    created = timezone.now() - age
    body = json.dumps({"type": event_type, "timestamp": created.isoformat(), "data": {"id": 1}})
    return WebhookEvent.objects.create(
        webhook=webhook,
        event_type=event_type,
        message_id=message_id_generate(),
        body=body,
        next_attempt_at=created,
        created_at=created,
        updated_at=created,
    )


def send_now(*events) -> None:
    WebhookEvent.objects.filter(pk__in=[e.pk for e in events]).update(next_attempt_at=timezone.now())
    sending.webhook_events_send([e.pk for e in events])


@pytest.fixture
def in_process(eager_tasks):
    """Tasks run inline; a retry's countdown task then finds nothing due, and send_now() sends it."""


class TestRetries:
    def test_a_500_is_retried_with_the_same_webhook_id_and_a_fresh_signature(
        self, receiver, make_webhook, private_urls_allowed, in_process
    ):
        webhook = make_webhook(receiver.url)
        event = event_for(webhook)
        receiver.program(500)
        send_now(event)
        event.refresh_from_db()
        assert (event.status, event.attempts, event.last_status_code) == (EventStatus.PENDING, 1, 500)
        assert event.next_attempt_at > timezone.now() - timedelta(seconds=1)
        send_now(event)
        first, second = receiver.wait_for(2)
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == event.message_id
        assert first.body == second.body
        for received in (first, second):
            standardwebhooks.Webhook(webhook.secret).verify(received.body, received.headers)
        event.refresh_from_db()
        assert (event.status, event.attempts) == (EventStatus.SUCCEEDED, 2)
        attempts = list(WebhookAttempt.objects.filter(event=event).order_by("attempt"))
        assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 200)]
        assert attempts[0].error == "500 Internal Server Error"

    def test_delays_grow_with_jitter_up_to_the_cap(self, settings):
        settings.CLARION_WEBHOOK_RETRY_BASE_SECS = 5
        for attempts in range(1, 30):
            ceiling = min(sending.RETRY_CAP_SECS, 5 * 2 ** (attempts - 1))
            delays = [sending.retry_delay_secs(attempts) for _ in range(20)]
            assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert sending.retry_delay_secs(30) <= sending.RETRY_CAP_SECS

    def test_retried_for_24_hours_then_given_up(
        self, receiver, make_webhook, private_urls_allowed, in_process
    ):
        webhook = make_webhook(receiver.url)
        young = event_for(webhook, age=sending.RETRY_WINDOW - timedelta(minutes=5))
        old = event_for(webhook, age=sending.RETRY_WINDOW + timedelta(minutes=5))
        receiver.default = 503
        send_now(young, old)
        young.refresh_from_db()
        old.refresh_from_db()
        assert young.status == EventStatus.PENDING
        assert old.status == EventStatus.FAILED and old.last_status_code == 503


class TestWhereItGoes:
    def test_redirects_are_not_followed(
        self, receiver, second_receiver, make_webhook, private_urls_allowed, eager_tasks
    ):
        webhook = make_webhook(receiver.url)
        event = event_for(webhook)
        receiver.program(("redirect", 307, second_receiver.url))
        send_now(event)
        assert len(receiver.wait_for(1)) == 1
        assert second_receiver.requests == [] and second_receiver.connections == 0
        event.refresh_from_db()
        assert (event.status, event.last_status_code) == (EventStatus.PENDING, 307)

    def test_a_url_refused_by_the_current_policy_is_not_sent_to(
        self, receiver, make_webhook, settings, eager_tasks
    ):
        settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
        webhook = make_webhook(receiver.url)  # registered while allowed
        settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
        event = event_for(webhook)
        send_now(event)
        event.refresh_from_db()
        assert receiver.connections == 0
        assert event.status == EventStatus.FAILED  # not retried: trying again cannot help
        assert event.last_error.startswith("INSECURE_SCHEME: ")  # http:// is allowed only with private URLs
        assert event.last_status_code is None

    def test_a_name_resolving_to_loopback_is_refused_when_connecting(
        self, receiver, make_webhook, eager_tasks, monkeypatch
    ):
        real_getaddrinfo = socket.getaddrinfo

        def rebinding_dns(host, *args, **kwargs):  # the attacker's zone answers loopback
            return real_getaddrinfo("127.0.0.1" if host == REBOUND_NAME else host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
        port = receiver.server.server_address[1]
        webhook = make_webhook(f"https://{REBOUND_NAME}:{port}/hooks")  # public when registered
        event = event_for(webhook)
        send_now(event)
        event.refresh_from_db()
        assert receiver.connections == 0
        assert event.last_error == "PRIVATE_ADDRESS: 127.0.0.1 is a loopback address"
        assert event.status == EventStatus.FAILED


class TestDisabling:
    def test_an_endpoint_failing_every_attempt_for_days_is_disabled(
        self, receiver, make_webhook, private_urls_allowed, in_process, admin_client
    ):
        webhook = make_webhook(receiver.url)
        Webhook.objects.filter(pk=webhook.pk).update(
            failing_since=timezone.now() - sending.DISABLE_AFTER - timedelta(minutes=1)
        )
        waiting = event_for(webhook)
        WebhookEvent.objects.filter(pk=waiting.pk).update(next_attempt_at=timezone.now() + timedelta(hours=1))
        receiver.default = 500
        event = event_for(webhook)
        send_now(event)
        webhook.refresh_from_db()
        assert webhook.active is False and "5 days" in webhook.disabled_reason
        assert set(WebhookEvent.objects.values_list("status", flat=True)) == {EventStatus.FAILED}
        page = admin_client.get("/admin/webhooks/webhook/").content.decode()
        assert "DISABLED: every attempt failed for 5 days" in page
        assert services.webhooks_enable([webhook.pk]) == 1
        webhook.refresh_from_db()
        assert webhook.active and webhook.failing_since is None

    def test_one_success_resets_the_clock(self, receiver, make_webhook, private_urls_allowed, in_process):
        webhook = make_webhook(receiver.url)
        receiver.program(500)
        send_now(event_for(webhook))
        webhook.refresh_from_db()
        assert webhook.failing_since is not None and webhook.active
        send_now(event_for(webhook))
        webhook.refresh_from_db()
        assert webhook.failing_since is None and webhook.last_success_at is not None


class TestSendAgainAndAttempts:
    def test_admin_send_again_posts_the_same_message_again(
        self,
        receiver,
        make_webhook,
        private_urls_allowed,
        eager_tasks,
        admin_client,
        django_capture_on_commit_callbacks,
    ):
        webhook = make_webhook(receiver.url)
        event = event_for(webhook)
        send_now(event)
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(
                "/admin/webhooks/webhookevent/", {"action": "send_again", "_selected_action": [event.pk]}
            )
        assert response.status_code == 302
        first, second = receiver.wait_for(2)
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == event.message_id
        event.refresh_from_db()
        assert (event.status, event.attempts) == (EventStatus.SUCCEEDED, 2)
        page = admin_client.get(f"/admin/webhooks/webhookevent/{event.pk}/change/").content.decode()
        assert event.message_id in page
        listing = admin_client.get("/admin/webhooks/webhookevent/?status__exact=succeeded").content.decode()
        assert event.message_id in listing
        page = admin_client.get(f"/admin/webhooks/webhook/{webhook.pk}/change/").content.decode()
        assert webhook.url in page and webhook.secret not in page

    def test_attempts_api_lists_every_attempt_newest_first(
        self, receiver, private_urls_allowed, api_key_client, in_process
    ):
        client = api_key_client("send")
        created = client.post(
            "/api/v1/webhooks/", {"url": receiver.url, "events": ["delivery.failed"]}, format="json"
        )
        webhook = Webhook.objects.get(pk=created.json()["id"])
        event = event_for(webhook)
        receiver.program(502)
        send_now(event)
        send_now(event)
        results = client.get(f"/api/v1/webhooks/{webhook.pk}/attempts/").json()["results"]
        assert [(r["attempt"], r["status_code"], r["event"], r["webhook_id"]) for r in results] == [
            (2, 200, "delivery.failed", event.message_id),
            (1, 502, "delivery.failed", event.message_id),
        ]
        assert results[1]["error"] == "502 Bad Gateway" and results[0]["error"] == ""
        assert {"webhook_id", "event", "status_code", "error", "attempt", "created_at"} <= set(results[0])


def test_events_older_than_the_retention_period_are_purged_with_their_attempts(make_webhook, settings):
    from delivery.lifecycle import data_retention_sweep

    webhook = make_webhook("https://hooks.example.com/x")
    old = event_for(webhook, age=timedelta(days=settings.CLARION_RETENTION_DAYS, minutes=1))
    WebhookAttempt.objects.create(
        event=old, webhook=webhook, attempt=1, status_code=200, created_at=old.created_at
    )
    recent = event_for(webhook, age=timedelta(days=1))
    assert data_retention_sweep()["webhook_events_deleted"] == 1
    assert list(WebhookEvent.objects.values_list("pk", flat=True)) == [recent.pk]
    assert WebhookAttempt.objects.count() == 0
