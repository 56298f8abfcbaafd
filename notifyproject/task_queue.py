"""Handing work to Celery: ids in batches, short waits as countdowns, and the back-off between
attempts. Long waits live in the database (`next_attempt_at`), never in the broker: the
sweeper enqueues them when due (docs/architecture.md, Long waits live in the database)."""

import random
from collections.abc import Mapping, Sequence

# Longest wait handed to the broker as a countdown (retries, held pushes); longer waits are
# left to the sweeper, so no task sits in Redis past its visibility timeout (600 s, settings).
MAX_COUNTDOWN_SECS = 120
# Ids per task: a push send task's deliveries are one provider round of concurrent requests.
# A task's fixed cost (Celery's, three statements, one network round trip) spread over 250
# rather than 100 halves the worker's own CPU per message (docs/benchmarks.md, Provider sends);
# far more would grow h2's per-stream bookkeeping, which counts the open streams.
IDS_PER_TASK = 250
# Each message is a round trip to Redis, which under load waits for Redis to be scheduled
# (12 ms a message on a loaded 2-core machine, against 1.5 ms of Celery's CPU): a call of
# many tasks sends up to 5 to a message, in at least 4 messages (the worker processes share
# them), so a fan-out batch of 2,000 push deliveries is 4 messages of 2 tasks, not 8 of 1.
TASKS_PER_MESSAGE = 5
MIN_MESSAGES = 4


def ids_enqueue(
    task,
    ids: Sequence[int],
    per_task: int = IDS_PER_TASK,
    countdown: float | Mapping[int, float] | None = None,
) -> None:
    """Enqueue `task` once per `per_task` ids, in the order given, over one broker connection
    (not one taken from the pool per task); a call of many tasks sends them several to a
    message (`messages_for`).

    `countdown`: seconds every task waits in the broker, or id → seconds, when each task waits
    for its latest id (give the ids soonest first).
    """
    if not ids:
        return
    tasks = -(-len(ids) // per_task)
    per_message = per_task * -(-tasks // messages_for(tasks))
    with task.app.producer_or_acquire() as producer:
        for start in range(0, len(ids), per_message):
            chunk = list(ids[start : start + per_message])
            wait = max(countdown[pk] for pk in chunk) if isinstance(countdown, Mapping) else countdown
            if len(chunk) <= per_task:
                task.apply_async((chunk,), countdown=wait, argsrepr=_ids_repr(chunk), producer=producer)
                continue
            # Celery's own starmap: one message whose worker runs the task once per slice.
            slices = [(chunk[i : i + per_task],) for i in range(0, len(chunk), per_task)]
            task.starmap(slices).apply_async(
                countdown=wait, argsrepr="()", kwargsrepr=_ids_repr(chunk), producer=producer
            )


def messages_for(tasks: int) -> int:
    """How many broker messages carry `tasks` tasks: one each for a few, else at most
    TASKS_PER_MESSAGE to a message but never fewer than MIN_MESSAGES, so the worker processes
    still share a batch's sends."""
    if tasks < 2 * MIN_MESSAGES:
        return tasks
    return max(MIN_MESSAGES, -(-tasks // TASKS_PER_MESSAGE))


def _ids_repr(ids: list[int]) -> str:
    """A task's arguments as its log shows them: Celery's own repr walks every id (a sixth of
    the cost of enqueueing a task of 100)."""
    return f"([{ids[0]}, … {ids[-1]}] ({len(ids)} ids),)"


def backoff_secs(attempts: int, base_secs: float, cap_secs: float) -> float:
    """Capped exponential back-off after `attempts` tries, jittered between half and all of it,
    so retries of one outage spread out instead of arriving together."""
    ceiling = min(cap_secs, base_secs * 2 ** max(0, attempts - 1))
    return random.uniform(ceiling / 2, ceiling)
