"""Per-sender order: sends accepted one after another reach each common recipient in that order.

End to end through real processes (daphne, a Celery worker with several threads, Redis,
PostgreSQL), and at the domain level for the pipelining between one sender's fan-outs.
"""

import concurrent.futures
import json
import os
import signal
import time
from datetime import timedelta

import httpx
import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from delivery import fanout, sweeper
from delivery.models import InboxMessage, Notification, NotificationStatus, UserStream
from delivery.services import notification_cancel
from notifyproject.identities.api_keys import api_key_create
from notifyproject.identities.client_tokens import end_user_token_create
from tests.delivery.factories import send, sender, users
from tests.realtime.conftest import open_socket, recv_type, wait_online
from tests.realtime.test_poll_and_sse import sse_events
from tests.support.locks import lock_waits
from tests.support.processes import database_url, wait_until

AUDIENCE = 300  # above the inline fan-out limit: every send fans out in worker tasks
SENDS = 8


def streams_by_user(user_ids) -> dict[int, list[int]]:
    """Each user's notification ids in cursor order (the inbox's, and every transport's)."""
    rows = InboxMessage.objects.filter(user_id__in=user_ids).order_by("user_id", "seq")
    streams: dict[int, list[int]] = {uid: [] for uid in user_ids}
    for user_id, notification_id in rows.values_list("user_id", "notification_id"):
        streams[user_id].append(notification_id)
    return streams


@pytest.mark.django_db(transaction=True)
def test_sends_from_one_sender_reach_each_recipient_in_order_on_every_transport(start_web, start_worker):
    audience = users(AUDIENCE, "o")
    live, replayed, polled, streamed, listed = audience[:5]
    tokens = {user.pk: end_user_token_create(user=user, ttl=None)[0] for user in audience[:5]}
    _key, api_key = api_key_create(name="ordered", scopes=["send"])
    web = start_web()
    start_worker(concurrency=4)
    usernames = [user.username for user in audience]
    with open_socket(web, tokens[live.pk]) as ws:
        wait_online(live)
        accepted = []
        with httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {api_key}"}) as api:
            for number in range(SENDS):
                response = api.post(
                    "/api/v1/notifications/",
                    json={"to": {"users": usernames}, "title": f"n{number}", "route": "realtime"},
                    timeout=30,
                )
                assert response.status_code == 202, response.text
                accepted.append(response.json()["id"])
        on_socket = [recv_type(ws, "notification", timeout=60)["id"] for _ in range(SENDS)]
    wait_until(
        lambda: Notification.objects.filter(pk__in=accepted, status="dispatched").count() == SENDS,
        timeout=120,
        message="every send dispatched",
    )

    assert on_socket == accepted
    streams = streams_by_user([user.pk for user in audience])
    out_of_order = [uid for uid, stream in streams.items() if stream != accepted]
    assert out_of_order == [], f"{len(out_of_order)} of {AUDIENCE} users got them out of order"

    with open_socket(web, tokens[replayed.pk], after=0) as ws:
        assert [recv_type(ws, "notification")["id"] for _ in range(SENDS)] == accepted
    page = httpx.get(
        f"{web.url}/api/v1/poll/", params={"token": tokens[polled.pk], "after": 0, "timeout": 0}, timeout=30
    ).json()
    assert [message["id"] for message in page["results"]] == accepted
    with httpx.stream(
        "GET", f"{web.url}/api/v1/events/", params={"token": tokens[streamed.pk], "after": 0}, timeout=30
    ) as stream:
        events = sse_events(stream, SENDS, time.monotonic() + 30)
    assert [json.loads(event["data"])["id"] for event in events] == accepted
    inbox = httpx.get(
        f"{web.url}/api/v1/inbox/", headers={"Authorization": f"Token {tokens[listed.pk]}"}, timeout=30
    ).json()
    assert [message["id"] for message in inbox["results"]] == accepted


@pytest.mark.django_db(transaction=True)
def test_a_small_send_fanned_out_by_the_web_process_waits_for_the_large_one_before_it(
    start_web, start_worker
):
    """Whatever the audience sizes: the second send is small enough to fan out inline, in the
    web process, right after its commit; the first goes through the worker, held up here."""
    audience = users(AUDIENCE, "m")
    UserStream.objects.bulk_create([UserStream(user=user) for user in audience])
    last = audience[-1]  # in both audiences; the large send reaches this user last
    token = end_user_token_create(user=last, ttl=None)[0]
    _key, api_key = api_key_create(name="ordered", scopes=["send"])
    web = start_web()
    start_worker(concurrency=4)
    headers = {"Authorization": f"Bearer {api_key}"}

    def post(to: list[str], title: str) -> int:
        body = {"to": {"users": to}, "title": title, "route": "realtime"}
        response = httpx.post(f"{web.url}/api/v1/notifications/", json=body, headers=headers, timeout=60)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    # Hold the first user's stream row, so the large fan-out's batch is frozen before it reaches anyone.
    with psycopg.connect(database_url(), autocommit=False) as lock_conn:
        lock_conn.execute("SELECT 1 FROM delivery_userstream WHERE user_id = %s FOR UPDATE", [audience[0].pk])
        large = post([user.username for user in audience], "large")
        wait_until(lambda: lock_waits("%userstream%"), timeout=120, message="the large fan-out to block")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            small = pool.submit(post, [last.username], "small")
            # The small send's inline fan-out either went ahead or is waiting for the large one.
            wait_until(
                lambda: small.done() or lock_waits("%delivery_notification%"),
                timeout=120,
                message="the small send's fan-out to run or wait",
            )
            lock_conn.rollback()
            accepted = [large, small.result(timeout=60)]
    wait_until(
        lambda: Notification.objects.filter(pk__in=accepted, status="dispatched").count() == 2,
        timeout=120,
        message="both dispatched",
    )
    assert streams_by_user([last.pk])[last.pk] == accepted
    with open_socket(web, token, after=0) as ws:
        assert [recv_type(ws, "notification")["id"] for _ in range(2)] == accepted


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_way_through_one_senders_sends_resumes_them_in_order_once(start_worker):
    """SIGKILL while the first send is provably frozen mid fan-out and the later ones wait for it."""
    audience = users(300, "k")
    UserStream.objects.bulk_create([UserStream(user=user) for user in audience])
    # Stale after 10 s, so the restarted worker's sweeper resumes the frozen fan-out soon. Before
    # the kill the sweeper passes over it (its batch holds the row), so the later sends catch up
    # however slowly they run on a loaded machine: a sweep that waited for that row would hold a
    # worker thread, one more each interval, until none was left for them.
    env = {"CLARION_FANOUT_BATCH": 100, "CLARION_STALE_WORK_SECS": 10}
    worker = start_worker(concurrency=8, **env)
    one = sender()
    names = [user.username for user in audience]

    # Hold a lock the first send's third batch needs, so it is frozen there when the worker dies.
    with psycopg.connect(database_url(), autocommit=False) as lock_conn:
        lock_conn.execute(
            "SELECT 1 FROM delivery_userstream WHERE user_id = %s FOR UPDATE", [audience[250].pk]
        )
        sends = [send({"users": names}, by=one, route="realtime", title=f"n{n}").pk for n in range(3)]
        # The later two follow the first up to the users it has reached, and no further.
        wait_until(
            lambda: (
                [InboxMessage.objects.filter(notification_id=pk).count() for pk in sends] == [200, 200, 200]
            ),
            timeout=120,
            message="the later sends caught up with the frozen one",
        )
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(10)
        lock_conn.rollback()

    start_worker(concurrency=8, **env)  # its sweeper dispatches the stalled fan-outs again
    wait_until(
        lambda: Notification.objects.filter(pk__in=sends, status="dispatched").count() == 3,
        timeout=120,
        message="every send dispatched after the restart",
    )
    streams = streams_by_user([user.pk for user in audience])
    assert {tuple(stream) for stream in streams.values()} == {tuple(sends)}  # in order, each once


@pytest.mark.django_db
class TestPipeline:
    """One sender's fan-outs follow each other batch by batch; other senders are not held up."""

    @pytest.fixture(autouse=True)
    def small_batches(self, settings):
        settings.CLARION_FANOUT_BATCH = 2

    def test_a_later_send_reaches_only_users_the_earlier_one_has_reached(
        self, eager_tasks, django_capture_on_commit_callbacks
    ):
        audience = users(5, "p")
        names = [user.username for user in audience]
        one = sender()
        first = send({"users": names}, by=one, route="realtime")
        second = send({"users": names}, by=one, route="realtime")
        with django_capture_on_commit_callbacks(execute=False):
            fanout._fan_out_next_batch(first.pk)  # the first two users
        with django_capture_on_commit_callbacks(execute=False):
            fanout.notification_fan_out(second.pk)
        second.refresh_from_db()
        assert (second.fanout_cursor, second.waiting_for) == (audience[1].pk, first.pk)
        assert InboxMessage.objects.filter(notification=second).count() == 2

        # Each batch of the first wakes the second, which follows it to the end.
        with django_capture_on_commit_callbacks(execute=True):
            fanout.notification_fan_out(first.pk)
        second.refresh_from_db()
        assert second.status == NotificationStatus.DISPATCHED and second.waiting_for is None
        streams = streams_by_user([user.pk for user in audience])
        assert set(map(tuple, streams.values())) == {(first.pk, second.pk)}

    def test_other_senders_fan_out_while_one_sender_waits(
        self, eager_tasks, django_capture_on_commit_callbacks
    ):
        audience = users(5, "q")
        names = [user.username for user in audience]
        one = sender()
        first = send({"users": names}, by=one, route="realtime")
        second = send({"users": names}, by=one, route="realtime")
        other = send({"users": names}, by=sender(), route="realtime")
        with django_capture_on_commit_callbacks(execute=False):
            fanout.notification_fan_out(second.pk)
            fanout.notification_fan_out(other.pk)
        assert Notification.objects.get(pk=other.pk).status == NotificationStatus.DISPATCHED
        second.refresh_from_db()
        assert (second.status, second.waiting_for) == (NotificationStatus.QUEUED, first.pk)
        assert not InboxMessage.objects.filter(notification=second).exists()

    def test_cancelling_the_earlier_send_lets_the_later_one_go(
        self, eager_tasks, django_capture_on_commit_callbacks
    ):
        audience = users(3, "r")
        one = sender()
        first = send({"users": [u.username for u in audience]}, by=one)
        second = send({"users": [u.username for u in audience]}, by=one)
        with django_capture_on_commit_callbacks(execute=False):
            fanout.notification_fan_out(second.pk)
        assert Notification.objects.get(pk=second.pk).waiting_for == first.pk
        with django_capture_on_commit_callbacks(execute=True):
            notification_cancel(first.pk)
        assert Notification.objects.get(pk=second.pk).status == NotificationStatus.DISPATCHED

    def test_the_sweeper_leaves_a_waiting_send_to_its_wake_up_unless_that_was_lost(
        self, settings, eager_tasks, django_capture_on_commit_callbacks
    ):
        names = [user.username for user in users(3, "w")]
        one = sender()
        first, second = (send({"users": names}, by=one) for _ in range(2))
        with django_capture_on_commit_callbacks(execute=False):
            fanout.notification_fan_out(second.pk)
        stale = timezone.now() - timedelta(seconds=settings.CLARION_STALE_WORK_SECS + 1)
        Notification.objects.update(updated_at=stale)
        # Only the first is swept; its fan-out then wakes the second.
        with django_capture_on_commit_callbacks(execute=True):
            assert sweeper.redispatch_stalled_fanouts(timezone.now()) == 1
        assert set(Notification.objects.values_list("status", flat=True)) == {NotificationStatus.DISPATCHED}

        # A send whose earlier one ended without waking it (the wake-up task was lost) is swept.
        third, fourth = (send({"users": names}, by=one) for _ in range(2))
        with django_capture_on_commit_callbacks(execute=False):
            fanout.notification_fan_out(fourth.pk)
        Notification.objects.filter(pk=third.pk).update(status=NotificationStatus.CANCELLED)
        Notification.objects.filter(pk=fourth.pk).update(updated_at=stale)
        with django_capture_on_commit_callbacks(execute=True):
            assert sweeper.redispatch_stalled_fanouts(timezone.now()) == 1
        assert Notification.objects.get(pk=fourth.pk).status == NotificationStatus.DISPATCHED

    def test_a_long_chain_of_waiting_sends_drains_in_one_pass_when_its_blocker_moves(
        self, eager_tasks, django_capture_on_commit_callbacks
    ):
        """Sends that queued up behind a stalled one (an outage's backlog) each fan out once, in
        order, when it moves: none is woken before an earlier one and has to wait again."""
        (user,) = users(1, "chain")
        one = sender()
        blocker = send({"users": [user.username]}, by=one, route="realtime")
        waiters = [send({"users": [user.username]}, by=one, route="realtime") for _ in range(30)]
        # Registered latest first, so the rows' storage order is the reverse of the send order.
        for waiter in reversed(waiters):
            with django_capture_on_commit_callbacks(execute=False):
                fanout.notification_fan_out(waiter.pk)
        assert set(
            Notification.objects.filter(pk__in=[w.pk for w in waiters]).values_list("waiting_for", flat=True)
        ) == {blocker.pk}

        with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
            fanout.notification_fan_out(blocker.pk)
        waits_again = [q["sql"] for q in queries.captured_queries if 'SET "waiting_for"' in q["sql"]]
        assert waits_again == []
        assert set(Notification.objects.values_list("status", flat=True)) == {NotificationStatus.DISPATCHED}
        assert streams_by_user([user.pk])[user.pk] == [blocker.pk] + [w.pk for w in waiters]
