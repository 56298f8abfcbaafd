"""End to end through real processes: daphne, a Celery worker with beat, Redis and PostgreSQL."""

import json
from datetime import datetime, timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from websockets.sync.client import connect

from delivery import fanout
from delivery.fanout import FIRST_BATCH_USERS
from delivery.models import Delivery, InboxMessage, Notification, UserStream
from notifyproject.task_queue import IDS_PER_TASK
from realtime.presence import users_online
from tests.delivery.factories import device, send, users
from tests.support.broker import QUEUE
from tests.support.fanout_kill import fan_out_killed_mid_way
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
RECV_TIMEOUT_SECS = 20


def open_socket(web, client, after=None):
    query = f"token={client.token}" + (f"&after={after}" if after is not None else "")
    return connect(f"{web.ws_url}/ws/v1/notifications/?{query}", open_timeout=10)


def recv_json(ws):
    return json.loads(ws.recv(timeout=RECV_TIMEOUT_SECS))


def statuses(notification):
    return sorted(Delivery.objects.filter(notification=notification).values_list("channel", "status"))


def test_a_send_reaches_a_live_socket_and_its_ack_holds_back_push(
    start_web, start_worker, alice, alice_client, recorder
):
    device(alice)
    web = start_web()
    start_worker(CLARION_ACK_TIMEOUT=120)  # about the ack, not its deadline (CI machines can be loaded)
    with open_socket(web, alice_client) as ws:
        wait_until(
            lambda: users_online([alice.pk]),
            message="presence",
        )
        notification = send({"users": ["alice"]}, title="Lunch?", body="Bob: lunch?", data={"thread": "42"})
        message = recv_json(ws)
        assert message["type"] == "notification" and message["id"] == notification.pk
        assert (message["title"], message["body"], message["data"]) == (
            "Lunch?",
            "Bob: lunch?",
            {"thread": "42"},
        )
        ws.send(json.dumps({"type": "ack", "id": notification.pk}))
        wait_until(
            lambda: statuses(notification) == [("fcm", "cancelled"), ("realtime", "delivered")],
            message="ack recorded",
        )
    assert recorder.sent() == []


def test_without_a_socket_it_falls_back_to_push(start_worker, alice, recorder):
    phone = device(alice)
    start_worker()
    notification = send({"users": ["alice"]}, title="Away")
    wait_until(lambda: statuses(notification) == [("fcm", "sent")], message="push sent")
    assert [(s["device_id"], s["title"]) for s in recorder.sent()] == [(phone.pk, "Away")]


def test_a_socket_that_never_acks_falls_back_to_push_after_the_timeout(
    start_web, start_worker, alice, alice_client, recorder
):
    device(alice)
    web = start_web()
    start_worker(CLARION_ACK_TIMEOUT=2)
    with open_socket(web, alice_client) as ws:
        # The handshake is answered before the socket is registered: a send in between finds
        # alice offline and pushes at once (the case the test above covers).
        wait_until(lambda: users_online([alice.pk]), message="presence")
        notification = send({"users": ["alice"]}, title="Hello?")
        received = recv_json(ws)
        assert received["id"] == notification.pk
        sent_on_socket_at = timezone.now()
        wait_until(lambda: recorder.sent(), timeout=15, message="fallback push")
        pushed_at = timezone.datetime.fromtimestamp(
            recorder.sent()[0]["at"], tz=timezone.get_current_timezone()
        )
    assert (pushed_at - sent_on_socket_at).total_seconds() >= 1.5
    # The provider has it; the worker records the outcome just after.
    wait_until(
        lambda: statuses(notification) == [("fcm", "sent"), ("realtime", "sent")], message="push recorded"
    )


def test_a_scheduled_send_arrives_on_time_even_across_a_worker_restart(start_worker, alice, recorder):
    device(alice)
    worker = start_worker()
    send_at = timezone.now() + timedelta(seconds=6)
    notification = send({"users": ["alice"]}, title="Reminder", send_at=send_at)
    assert notification.status == "scheduled"
    worker.stop()  # the schedule lives in the database, not in this worker's memory
    start_worker()  # returns once the worker says it is ready
    due = max(send_at, timezone.now())  # on a loaded machine the restart may outlast send_at
    wait_until(lambda: recorder.sent(), timeout=20, message="scheduled push")
    arrived = timezone.datetime.fromtimestamp(recorder.sent()[0]["at"], tz=timezone.get_current_timezone())
    assert arrived >= send_at, ("sent early", arrived, send_at)
    # Released by the due-time sweep beat runs every second once the worker is up; the bound
    # leaves room for a loaded machine's first sweeps, not for a missed release.
    assert (arrived - due).total_seconds() <= 10, ("not released when due", arrived, due)


def test_rolled_back_python_api_send_sends_nothing(start_worker, alice, recorder):
    device(alice)
    start_worker()
    with pytest.raises(RuntimeError), transaction.atomic():
        send({"users": ["alice"]}, title="rolled back")
        raise RuntimeError("the caller's transaction fails")
    with transaction.atomic():
        send({"users": ["alice"]}, title="committed")
    wait_until(lambda: recorder.sent(), message="the committed send")
    assert [s["title"] for s in recorder.sent()] == ["committed"]
    assert list(Notification.objects.values_list("title", flat=True)) == ["committed"]


def test_a_send_inside_a_long_transaction_is_dispatched_when_it_commits(
    start_worker, alice, recorder, settings
):
    """Enqueued on commit: a worker never picks the task up before the row is visible."""
    import redis

    device(alice)
    start_worker()
    broker = redis.Redis.from_url(settings.REDIS_URL)
    with transaction.atomic():
        send({"users": ["alice"]}, title="after commit")
        # Whatever was enqueued so far has run to completion (acks_late: acked when done).
        wait_until(
            lambda: broker.llen(QUEUE) == 0 and broker.hlen("unacked") == 0,
            message="every enqueued task to finish",
        )
    wait_until(lambda: recorder.sent(), timeout=10, message="the push, promptly after commit")


def test_worker_killed_mid_fan_out_resumes_and_sends_nothing_twice(start_worker, recorder, settings):
    """SIGKILL while the fan-out is provably between batches, then restart."""
    recipients = users(1000, "k")
    for user in recipients:
        device(user)
    UserStream.objects.bulk_create([UserStream(user=user) for user in recipients])
    env = {"CLARION_FANOUT_BATCH": 100, "CLARION_STALE_WORK_SECS": 2, "CLARION_SENDING_STALE_SECS": 5}
    # A lock the fifth batch of 100 needs freezes the worker mid-fan-out when it is killed.
    notification = fan_out_killed_mid_way(
        start_worker,
        env,
        blocker_user_id=recipients[450].pk,
        send=lambda: send({"broadcast": True}, title="big"),
        written_before=400,
    )

    start_worker(**env)
    wait_until(
        lambda: Delivery.objects.filter(notification=notification, status="sent").count() == 1000,
        timeout=60,
        message="every delivery sent after the restart",
    )
    assert InboxMessage.objects.filter(notification=notification).count() == 1000
    sent_ids = [s["delivery_id"] for s in recorder.sent()]
    assert len(sent_ids) == len(set(sent_ids)) == 1000
    assert Notification.objects.get(pk=notification.pk).status == "dispatched"


def test_duplicated_dispatch_tasks_write_and_send_each_recipient_once(start_worker, recorder):
    """Three dispatch tasks for one broadcast, taken by four worker processes at once (a redelivery
    racing the original): each batch is written by whichever holds the row lock, found done by the others."""
    from delivery.tasks import notification_dispatch

    recipients = users(1500, "d")
    for user in recipients:
        device(user)
    start_worker(CLARION_FANOUT_BATCH=100)
    notification = send({"broadcast": True}, title="once", route="push")  # enqueues its dispatch
    notification_dispatch.delay(notification.pk)
    notification_dispatch.delay(notification.pk)
    wait_until(
        lambda: Delivery.objects.filter(notification=notification, status="sent").count() == 1500,
        timeout=60,
        message="every delivery sent",
    )
    assert Notification.objects.get(pk=notification.pk).status == "dispatched"
    assert InboxMessage.objects.filter(notification=notification).count() == 1500
    assert Delivery.objects.filter(notification=notification).count() == 1500
    assert set(UserStream.objects.values_list("last_seq", flat=True)) == {1}  # each cursor moved once
    sent_ids = [s["delivery_id"] for s in recorder.sent()]
    assert len(sent_ids) == len(set(sent_ids)) == 1500


def test_broadcast_to_ten_thousand_users_completes(start_worker, recorder):
    recipients = users(10_000, "b")
    for start in range(0, 10_000, 2_000):  # every fifth user has a phone
        for user in recipients[start : start + 400]:
            device(user)
    start_worker()
    notification = send({"broadcast": True}, title="everyone")
    wait_until(
        lambda: Notification.objects.get(pk=notification.pk).status == "dispatched",
        timeout=120,
        interval=0.5,
        message="fan-out done",
    )
    assert InboxMessage.objects.filter(notification=notification).count() == 10_000
    wait_until(
        lambda: Delivery.objects.filter(notification=notification, status="sent").count() == 2_000,
        timeout=120,
        interval=0.5,
        message="all pushes sent",
    )
    assert len(recorder.sent()) == 2_000


def test_the_sweepers_resume_leaves_a_live_fan_out_alone_and_takes_over_a_dead_ones(settings):
    """A fan-out slower than CLARION_STALE_WORK_SECS is re-dispatched by the sweeper; that task
    must not hold a worker on the row lock until the live fan-out ends (it waits 2 s at most)."""
    import psycopg
    from django.db import connection

    from tests.support.processes import database_url

    settings.CLARION_INLINE_FANOUT_MAX = 0  # every send fans out in a task (none runs here)
    audience = users(5, "z")
    notification = send({"users": [user.username for user in audience]}, route="realtime")
    with psycopg.connect(database_url(), autocommit=False) as live_fan_out:
        live_fan_out.execute(
            "SELECT 1 FROM delivery_notification WHERE id = %s FOR UPDATE", [notification.pk]
        )
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '10s'")  # a resume that waits on fails, not hangs
        try:
            fanout.notification_fan_out(notification.pk, resume=True)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
        assert not InboxMessage.objects.filter(notification=notification).exists()
        live_fan_out.rollback()  # the worker holding the row died: its lock went with its connection
    fanout.notification_fan_out(notification.pk, resume=True)
    notification.refresh_from_db()
    assert notification.status == "dispatched"
    assert InboxMessage.objects.filter(notification=notification).count() == 5


def test_a_sweep_passes_over_a_fan_out_whose_row_a_live_batch_holds(settings, broker_queue):
    """A batch slower than CLARION_STALE_WORK_SECS (or blocked on a recipient's stream row)
    holds its notification's row. A sweep must not wait for it: each would hold a worker thread
    until the batch ends, one more every interval, until none is left. Once the row is free
    and the fan-out still stale, the sweep resumes it."""
    import psycopg
    from django.db import connection

    from delivery import sweeper
    from tests.support.broker import queued_tasks_with_kwargs
    from tests.support.processes import database_url

    def resumed():
        tasks = queued_tasks_with_kwargs(settings.REDIS_URL)
        return [kw["claimed_at"] for _, _, kw in tasks if kw.get("resume")]

    settings.CLARION_INLINE_FANOUT_MAX = 0  # every send fans out in a task (none runs here)
    notification = send({"users": [user.username for user in users(3, "held")]}, route="realtime")
    settings.CLARION_STALE_WORK_SECS = 0  # its fan-out is stale at once
    with psycopg.connect(database_url(), autocommit=False) as live_batch:
        live_batch.execute("SELECT 1 FROM delivery_notification WHERE id = %s FOR UPDATE", [notification.pk])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '10s'")  # a sweep that waits fails, not hangs
        try:
            assert sweeper.redispatch_stalled_fanouts(timezone.now()) == 0
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
        assert resumed() == []
        live_batch.rollback()  # the batch ended (or its worker died)
    now = timezone.now()
    assert sweeper.redispatch_stalled_fanouts(now) == 1
    assert resumed() == [now.isoformat()]
    assert Notification.objects.get(pk=notification.pk).updated_at == now


def test_the_sweepers_resume_waits_out_a_later_send_registering_as_a_waiter(settings):
    """A later send of the sender holds the row for a moment while it registers as a waiter;
    the resume must not give up on that, or the send would wait for the next sweep."""
    import concurrent.futures

    import psycopg
    from django.db import connection

    from tests.support.locks import lock_waits
    from tests.support.processes import database_url

    settings.CLARION_INLINE_FANOUT_MAX = 0
    audience = users(5, "y")
    notification = send({"users": [user.username for user in audience]}, route="realtime")

    def resume():
        try:
            fanout.notification_fan_out(notification.pk, resume=True)
        finally:
            connection.close()

    with psycopg.connect(database_url(), autocommit=False) as registering:
        registering.execute(
            "SELECT 1 FROM delivery_notification WHERE id = %s FOR NO KEY UPDATE", [notification.pk]
        )
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            resumed = pool.submit(resume)
            wait_until(
                lambda: lock_waits(),
                timeout=10,
                interval=0.01,
                message="the resume waiting for the row",
            )
            registering.rollback()  # registered: the row is free again
            resumed.result(timeout=30)
    notification.refresh_from_db()
    assert notification.status == "dispatched"
    assert InboxMessage.objects.filter(notification=notification).count() == 5


@pytest.mark.parametrize("first", ["resume", "live"])
def test_a_live_fan_out_and_the_sweepers_resume_of_it_never_both_go_on(first, settings, broker_queue):
    """A batch slower than CLARION_STALE_WORK_SECS gets a fan-out resumed while it still runs;
    the resume may take the row between two of the live run's batches. Whichever writes the
    next batch keeps the fan-out and the other stops at its next one, so the two never
    alternate batches to the end, each holding a worker."""
    from delivery import sweeper
    from delivery.tasks import notification_dispatch
    from tests.support.broker import queued_tasks_with_kwargs

    settings.CLARION_INLINE_FANOUT_MAX = 0  # every send fans out in a task (none runs here)
    settings.CLARION_FANOUT_BATCH = 2
    audience = users(8, "claim")
    for user in audience:
        device(user)
    notification = send({"users": [user.username for user in audience]}, route="push")
    live = fanout.Claim()
    assert fanout._fan_out_next_batch(notification.pk, claim=live)  # the live run's first batch

    settings.CLARION_STALE_WORK_SECS = 0  # that batch outlasted it
    assert sweeper.redispatch_stalled_fanouts(timezone.now()) == 1
    (resume,) = [kw for name, _, kw in queued_tasks_with_kwargs(settings.REDIS_URL) if kw.get("resume")]
    if first == "resume":
        resumed = fanout.Claim(stamped_at=datetime.fromisoformat(resume["claimed_at"]))
        assert fanout._fan_out_next_batch(notification.pk, claim=resumed)
        assert not fanout._fan_out_next_batch(notification.pk, claim=live)  # the live run stops
        assert InboxMessage.objects.filter(notification=notification).count() == 4
        while fanout._fan_out_next_batch(notification.pk, claim=resumed):
            pass
    else:
        assert fanout._fan_out_next_batch(notification.pk, claim=live)
        notification_dispatch(notification.pk, **resume)  # the resume's task finds it taken
        assert InboxMessage.objects.filter(notification=notification).count() == 4
        while fanout._fan_out_next_batch(notification.pk, claim=live):
            pass

    notification.refresh_from_db()
    assert notification.status == "dispatched"
    assert sorted(InboxMessage.objects.filter(notification=notification).values_list("user_id", "seq")) == [
        (user.pk, 1) for user in audience
    ]
    assert Delivery.objects.filter(notification=notification).count() == 8
    assert UserStream.objects.filter(user__in=audience, last_seq=1).count() == 8


def test_a_batchs_sends_travel_several_to_a_broker_message_and_each_device_is_sent_once(
    start_worker, recorder
):
    """Past 2 × MIN_MESSAGES send tasks, a fan-out batch's tasks go several to a message
    (Celery's starmap, notifyproject/task_queue.py): a real worker runs every slice, once."""
    count = FIRST_BATCH_USERS + 8 * IDS_PER_TASK  # the second batch alone is eight send tasks
    phones = [device(user) for user in users(count, "starmap")]
    start_worker()
    notification = send({"broadcast": True}, route="push", title="Everyone")
    wait_until(
        lambda: Delivery.objects.filter(notification=notification, status="sent").count() == count,
        timeout=120,
        message="every device sent",
    )
    sent = [entry["device_id"] for entry in recorder.sent()]
    assert sorted(sent) == sorted(phone.pk for phone in phones)  # each once
