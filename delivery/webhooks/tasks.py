"""Celery tasks for webhooks: a thin wrapper over webhooks.sending.

acks_late (settings) and idempotent: a redelivered task finds its events already claimed or done.
The outbox's sweep runs inside beat's one sweep task (delivery.tasks.due_work_sweep).
"""

from celery import shared_task

from delivery.webhooks import sending


@shared_task(name="webhooks.tasks.webhook_events_send")
def webhook_events_send(event_ids: list[int]) -> None:
    sending.webhook_events_send(event_ids)
