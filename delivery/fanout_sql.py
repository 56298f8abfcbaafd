"""A fan-out batch's rows written by PostgreSQL itself (set-based SQL; see delivery/fanout.py).

The ORM path builds one model instance per inbox message and delivery (~0.3 ms of Python a
recipient). Here each kind of row is one INSERT … SELECT over arrays of user ids, so the
Python cost of a batch no longer grows with its size beyond the ids themselves. The rows are
the same as the ORM path's (tests/delivery/test_fanout_bulk.py compares them).
"""

from datetime import datetime

from django.db import connection

from delivery.models import Channel, Delivery, DeliveryStatus, InboxMessage, Notification, UserStream
from devices.models import Device, UserPreferences
from devices.preferences import quiet_hours_end


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def id_array(ids) -> str:
    """Ids as one array literal for a `::bigint[]` parameter: psycopg then quotes one string
    rather than dumping (and checking for quotes) each of a batch's thousands of ints."""
    return "{" + ",".join(str(int(pk)) for pk in ids) + "}"


def inbox_write(
    notification: Notification,
    user_ids: list[int],
    *,
    not_live: list[int],
    cursors_for: list[int],
    now: datetime,
) -> dict[int, int]:
    """Advance each user's stream and write their inbox message at the new position, in one
    statement; returns the positions of the users in `cursors_for` (those published to now).

    Users are locked in id order, as allocate_cursors does, so concurrent batches cannot deadlock.
    """
    streams, inbox = _table(UserStream), _table(InboxMessage)
    sql = (
        f"WITH stream AS (INSERT INTO {streams} (user_id, last_seq)"
        " SELECT uid, 1 FROM unnest(%s::bigint[]) AS uid ORDER BY uid"
        f" ON CONFLICT (user_id) DO UPDATE SET last_seq = {streams}.last_seq + 1"
        " RETURNING user_id, last_seq),"
        f" message AS (INSERT INTO {inbox} (user_id, notification_id, seq, live, created_at)"
        " SELECT user_id, %s, last_seq, NOT (user_id = ANY(%s::bigint[])), %s FROM stream"
        " RETURNING user_id, seq)"
        " SELECT user_id, seq FROM message WHERE user_id = ANY(%s::bigint[])"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql, [id_array(user_ids), notification.pk, id_array(not_live), now, id_array(cursors_for)]
        )
        return dict(cursor.fetchall())


def realtime_deliveries_write(
    notification: Notification, user_ids: list[int], ids_for: list[int], now: datetime
) -> list[int]:
    """One realtime delivery per user; returns the ids of those for the users in `ids_for`."""
    sql = (
        f"WITH written AS (INSERT INTO {_table(Delivery)} ({_DELIVERY_COLUMNS})"
        f" SELECT %s, uid, NULL, '{Channel.REALTIME}', '{DeliveryStatus.QUEUED}', 0, '', '',"
        " %s, %s, NULL, NULL"
        " FROM unnest(%s::bigint[]) AS uid ORDER BY uid RETURNING id, user_id)"
        " SELECT id FROM written WHERE user_id = ANY(%s::bigint[]) ORDER BY id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [notification.pk, now, now, id_array(user_ids), id_array(ids_for)])
        return [pk for (pk,) in cursor.fetchall()]


_DELIVERY_COLUMNS = (
    "notification_id, user_id, device_id, channel, status, attempts, error, provider_message_id,"
    " created_at, updated_at, next_attempt_at, enqueued_at"
)


def push_deliveries_write(
    notification: Notification,
    *,
    user_ids: list[int],
    device_only: list[int],
    held_users: list[int],
    held_until: datetime | None,
    quiet_ends: dict[int, datetime],
    now: datetime,
) -> list[tuple[int, datetime | None]]:
    """One delivery per active device the batch reaches (users reached only through `to.devices`:
    only those devices), written in (app, platform, id) order so each send task's slice is
    (mostly) one provider call; returns (id, next_attempt_at) in that order.

    Not before: the ack timeout for `held_users`, the end of quiet hours, whichever is later.
    Joins, not `= ANY` per row, so the cost stays linear in the batch.
    """
    app_filter = " AND device.app = %s" if notification.app else ""
    sql = (
        f"WITH written AS (INSERT INTO {_table(Delivery)} ({_DELIVERY_COLUMNS})"
        " SELECT %s, device.user_id, device.id, device.platform,"
        f" '{DeliveryStatus.QUEUED}', 0, '', '', %s, %s, not_before.at, coalesce(not_before.at, %s)"
        " FROM unnest(%s::bigint[]) AS reach(user_id)"
        f" JOIN {_table(Device)} AS device ON device.user_id = reach.user_id"
        " LEFT JOIN unnest(%s::bigint[]) AS held(user_id) ON held.user_id = device.user_id"
        " LEFT JOIN unnest(%s::bigint[], %s::timestamptz[]) AS quiet(user_id, ends)"
        "   ON quiet.user_id = device.user_id"
        " CROSS JOIN LATERAL (SELECT greatest("
        "   CASE WHEN held.user_id IS NOT NULL THEN %s::timestamptz END, quiet.ends) AS at) AS not_before"
        " WHERE device.active"
        "   AND (NOT (device.user_id = ANY(%s::bigint[])) OR device.id = ANY(%s::bigint[]))"
        f"{app_filter}"
        " ORDER BY device.app, device.platform, device.id"
        " RETURNING id, next_attempt_at)"
        " SELECT id, next_attempt_at FROM written ORDER BY id"
    )
    params = [
        notification.pk,
        now,
        now,
        now,
        id_array(user_ids),
        id_array(held_users),
        id_array(quiet_ends),
        list(quiet_ends.values()),
        held_until,
        id_array(device_only),
        id_array(notification.target.get("devices") or []),
    ]
    if notification.app:
        params.append(notification.app)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def quiet_hours_ends(user_ids: list[int], now: datetime) -> dict[int, datetime]:
    """user id → end of quiet hours, for those among these users in them now: devices/preferences'
    quiet_hours_ends in plain SQL with the ids as one array parameter (a batch's thousands of
    placeholders cost more to build and parse than the query costs to run, and for a one-user
    send the ORM's query building was an eighth of the request's CPU)."""
    sql = (
        f"SELECT user_id, quiet_start, quiet_end, timezone FROM {_table(UserPreferences)}"
        " WHERE user_id = ANY(%s::bigint[]) AND quiet_start IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [id_array(user_ids)])
        rows = cursor.fetchall()
    ends = {}
    for user_id, start, end, zone in rows:
        prefs = UserPreferences(user_id=user_id, quiet_start=start, quiet_end=end, timezone=zone)
        moment = quiet_hours_end(prefs, now)
        if moment is not None:
            ends[user_id] = moment
    return ends
