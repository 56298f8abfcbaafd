"""A worker SIGKILLed while its fan-out is provably between batches (tests of resumption)."""

import os
import signal

import psycopg

from delivery.models import Delivery, InboxMessage
from tests.support.locks import lock_waits
from tests.support.processes import database_url, wait_until


def fan_out_killed_mid_way(start_worker, env: dict, *, blocker_user_id: int, send, written_before: int):
    """Start a worker, send with `send()`, and SIGKILL the worker once `written_before` recipients
    are written and sent while the next batch waits on a lock held on `blocker_user_id`'s stream.
    Returns the notification; the caller starts a worker again."""
    worker = start_worker(**env)
    with psycopg.connect(database_url(), autocommit=False) as lock_conn:
        lock_conn.execute(
            "SELECT 1 FROM delivery_userstream WHERE user_id = %s FOR UPDATE", [blocker_user_id]
        )
        notification = send()
        wait_until(
            lambda: lock_waits("%userstream%"), timeout=30, message="the fan-out to block on the held lock"
        )
        wait_until(
            lambda: (
                Delivery.objects.filter(notification=notification, status="sent").count() == written_before
            ),
            timeout=30,
            message="the batches before the blocked one sent",
        )
        assert InboxMessage.objects.filter(notification=notification).count() == written_before
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(10)
        lock_conn.rollback()
    return notification
