"""Celery tasks: thin wrappers that take ids and call the domain (fanout, sending, sweeper).

All are acks_late (settings), so a worker killed mid-task leaves the message to be
redelivered; each is idempotent, so the redelivery does not send anything twice.
"""

from datetime import datetime

from celery import shared_task

from delivery import fanout, lifecycle, sending, services, sweeper
from notifyproject.task_queue import MAX_COUNTDOWN_SECS


@shared_task(name="delivery.tasks.notification_dispatch")
def notification_dispatch(notification_id: int, resume: bool = False, claimed_at: str | None = None) -> None:
    """`claimed_at`: the sweeper's stamp on a resumed fan-out, ISO 8601 (fanout.Claim)."""
    claimed = datetime.fromisoformat(claimed_at) if claimed_at else None
    fanout.notification_fan_out(notification_id, resume=resume, claimed_at=claimed)


@shared_task(name="delivery.tasks.deliveries_send")
def deliveries_send(delivery_ids: list[int]) -> None:
    sending.deliveries_send(delivery_ids)


WITHDRAW_MAX_RETRIES = 5


@shared_task(name="delivery.tasks.push_withdraw", bind=True, max_retries=WITHDRAW_MAX_RETRIES)
def push_withdraw(self, delivery_ids: list[int]) -> None:
    retry = sending.push_withdraw(delivery_ids)
    if retry and self.request.retries < WITHDRAW_MAX_RETRIES:
        countdown = sending.retry_delay_secs(self.request.retries + 1)
        raise self.retry(args=(retry,), countdown=min(countdown, MAX_COUNTDOWN_SECS))


@shared_task(name="delivery.tasks.due_work_sweep", acks_late=False, expires=10)
def due_work_sweep() -> dict:
    """The one periodic sweep: deliveries, then the webhook outbox (due retries, dead workers' claims)."""
    from delivery.webhooks import sweeper as webhook_sweeper

    return {**sweeper.sweep(), **{f"webhook_{k}": v for k, v in webhook_sweeper.sweep().items()}}


@shared_task(name="delivery.tasks.recurring_notification_send")
def recurring_notification_send(recurring_id: int) -> None:
    services.recurring_notification_fire(recurring_id)


@shared_task(name="delivery.tasks.data_retention_sweep", acks_late=False, expires=3000)
def data_retention_sweep() -> dict:
    return lifecycle.data_retention_sweep()
