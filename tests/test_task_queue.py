"""ids_enqueue: every id in exactly one task, in order; a large enqueue in a few broker messages."""

from celery import shared_task

from notifyproject.task_queue import IDS_PER_TASK, TASKS_PER_MESSAGE, ids_enqueue, messages_for
from tests.support.broker import queued_calls

received: list[list[int]] = []


@shared_task(name="tests.test_task_queue.ids_receive")
def ids_receive(ids: list[int]) -> None:
    received.append(ids)


def slices(ids: list[int]) -> list[list[int]]:
    return [ids[start : start + IDS_PER_TASK] for start in range(0, len(ids), IDS_PER_TASK)]


def test_twenty_tasks_are_four_messages_of_five(broker_queue, settings):
    from delivery.tasks import deliveries_send

    ids = list(range(1, 20 * IDS_PER_TASK + 1))

    ids_enqueue(deliveries_send, ids)

    assert [name for name, _args in broker_queue()] == ["celery.starmap"] * 4
    assert queued_calls(settings.REDIS_URL) == [("delivery.tasks.deliveries_send", [s]) for s in slices(ids)]


def test_a_few_tasks_are_a_message_each(broker_queue, settings):
    from delivery.tasks import deliveries_send

    ids = list(range(1, 3 * IDS_PER_TASK - 49))

    ids_enqueue(deliveries_send, ids)

    assert broker_queue() == [("delivery.tasks.deliveries_send", [s]) for s in slices(ids)]


def test_each_slice_of_a_grouped_message_runs_once_in_order(eager_tasks):
    """Celery's starmap run eagerly: which slices and in what order. A real worker running a
    fan-out's grouped messages is test_pipeline.py's test_a_batchs_sends_travel_several_…"""
    received.clear()
    ids = list(range(1, 12 * IDS_PER_TASK + 35))

    ids_enqueue(ids_receive, ids)

    assert received == slices(ids)


def test_messages_never_carry_more_than_their_share():
    for tasks in range(1, 500):
        messages = messages_for(tasks)
        assert 1 <= messages <= tasks
        assert -(-tasks // messages) <= TASKS_PER_MESSAGE
