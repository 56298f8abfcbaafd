"""Writes for webhooks: registration, deletion, and the admin's "send again" and "enable"."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from delivery.webhooks.models import EventStatus, Webhook, WebhookEvent
from delivery.webhooks.signing import secret_generate
from notifyproject.identities.models import ApiKey


@dataclass(frozen=True)
class Owner:
    """Who a webhook belongs to: the API key that registered it, or a staff user."""

    api_key: ApiKey | None = None
    user: object | None = None

    def webhooks(self) -> QuerySet[Webhook]:
        if self.api_key is not None:
            return Webhook.objects.filter(api_key=self.api_key)
        return Webhook.objects.filter(api_key__isnull=True, created_by=self.user)


def api_key_is_bound(api_key: ApiKey) -> bool:
    """A key bound to an app hears only of its own sends; an unbound key is instance-wide."""
    return bool(getattr(api_key, "app", ""))  # ApiKey.app: the bound app's slug, "" when unbound


def webhook_create(*, owner: Owner, url: str, events: list[str], description: str = "") -> Webhook:
    """Register an endpoint; `url` must already be checked (notifyproject.outbound.clean_url).

    The returned webhook carries its secret; the API shows it this once.
    """
    everything = owner.api_key is None or not api_key_is_bound(owner.api_key)
    return Webhook.objects.create(
        api_key=owner.api_key,
        created_by=owner.user,
        url=url,
        events=sorted(set(events)),
        description=description,
        secret=secret_generate(),
        all_notifications=everything,
    )


def webhook_delete(*, owner: Owner, webhook_id: int) -> bool:
    """Delete one of the owner's webhooks (its outbox and attempts go with it); False if not theirs."""
    deleted, _ = owner.webhooks().filter(pk=webhook_id).delete()
    return bool(deleted)


def webhooks_enable(webhook_ids: list[int]) -> int:
    """Enable disabled endpoints again (admin); the failure clock starts afresh."""
    from delivery.webhooks.events import forget_active_webhooks

    enabled = Webhook.objects.filter(pk__in=webhook_ids, active=False).update(
        active=True, disabled_at=None, disabled_reason="", failing_since=None
    )
    forget_active_webhooks()
    return enabled


def events_send_again(event_ids: list[int]) -> int:
    """Queue finished or waiting events for one more attempt now, with the same webhook-id (admin)."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            WebhookEvent.objects.filter(pk__in=event_ids, webhook__active=True)
            .exclude(status=EventStatus.SENDING)
            .values_list("pk", flat=True)
        )
        WebhookEvent.objects.filter(pk__in=ids).exclude(status=EventStatus.SENDING).update(
            status=EventStatus.PENDING, next_attempt_at=now, enqueued_at=now, claim=None, updated_at=now
        )
        if ids:
            transaction.on_commit(lambda: _enqueue(ids), robust=True)
    return len(ids)


def _enqueue(event_ids: list[int]) -> None:
    from delivery.webhooks.events import event_sends_enqueue

    event_sends_enqueue(event_ids)
