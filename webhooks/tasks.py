"""Celery tasks for webhooks: thin wrappers over webhooks.sending and webhooks.sweeper.

acks_late (settings) and idempotent: a redelivered task finds its events already claimed or done.
"""

from celery import shared_task

from webhooks import sending, sweeper


@shared_task(name="webhooks.tasks.webhook_events_send")
def webhook_events_send(event_ids: list[int]) -> None:
    sending.webhook_events_send(event_ids)


@shared_task(name="webhooks.tasks.webhook_due_sweep", acks_late=False, expires=10)
def webhook_due_sweep() -> dict:
    return sweeper.sweep()
