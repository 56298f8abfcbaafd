"""A fan-out batch's rows written by PostgreSQL itself (set-based SQL; see delivery/fanout.py).

The ORM path builds one model instance per inbox message and delivery (~0.3 ms of Python a
recipient). Here each kind of row is one INSERT … SELECT over arrays of user ids, so the
Python cost of a batch no longer grows with its size beyond the ids themselves. The rows are
the same as the ORM path's (tests/delivery/test_fanout_bulk.py compares them).
"""

import functools
from datetime import datetime

from django.db import connection
from django.utils import timezone

from delivery.models import Channel, Delivery, DeliveryStatus, InboxMessage, Notification, UserStream
from devices.models import Device, UserPreferences
from devices.preferences import quiet_hours_end


@functools.cache
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
    published: list[int],
    realtime_users: list[int],
    now: datetime,
    with_state: bool = False,
) -> tuple[dict[int, int], list[int]]:
    """Advance each user's stream, write their inbox message at the new position and a realtime
    delivery for each of `realtime_users`, in one statement; returns the positions and the
    realtime delivery ids (in id order) of the users in `published` (those published to after
    the commit). Their deliveries are written `sent` (attempts 1, sent_at `now`), as the update
    after the publish wrote them before: a publish is handed on at-most-once and never reports
    back, so that update only ever said the frame was handed on; a lost frame still reaches the
    client by the stream (gap-fill, replay).
    `with_state`: the same statement writes the notification's fan-out state as the instance
    holds it (status, cursor, dispatched_at, waiting_for), which the batch would otherwise save
    in a statement of its own.

    Users are locked in id order, as allocate_cursors does, so concurrent batches cannot deadlock.
    """
    streams, inbox = _table(UserStream), _table(InboxMessage)
    state, state_params = "", []
    if with_state:
        state = (
            f"state AS (UPDATE {_table(Notification)} SET status = %s, fanout_cursor = %s,"
            " dispatched_at = %s, waiting_for = %s, updated_at = %s WHERE id = %s), "
        )
        notification.updated_at = timezone.now()
        state_params = [
            notification.status,
            notification.fanout_cursor,
            notification.dispatched_at,
            notification.waiting_for,
            notification.updated_at,
            notification.pk,
        ]
    live, live_select, live_params = "", "", []
    if realtime_users:
        live = (
            f", live AS (INSERT INTO {_table(Delivery)} ({_DELIVERY_COLUMNS}, sent_at)"
            " SELECT %s, uid, NULL, %s, CASE WHEN uid = ANY(%s::bigint[]) THEN %s ELSE %s END,"
            " CASE WHEN uid = ANY(%s::bigint[]) THEN 1 ELSE 0 END, '', '', %s, %s, NULL, NULL,"
            " CASE WHEN uid = ANY(%s::bigint[]) THEN %s::timestamptz END"
            " FROM unnest(%s::bigint[]) AS uid ORDER BY uid RETURNING id, user_id, status)"
        )
        live_select = f" UNION ALL SELECT 1, id, user_id FROM live WHERE status = '{DeliveryStatus.SENT}'"
        published_ids = id_array(published)
        live_params = [
            notification.pk,
            Channel.REALTIME,
            published_ids,
            DeliveryStatus.SENT,
            DeliveryStatus.QUEUED,
            published_ids,
            now,
            now,
            published_ids,
            now,
            id_array(realtime_users),
        ]
    sql = (
        f"WITH {state}stream AS (INSERT INTO {streams} (user_id, last_seq)"
        " SELECT uid, 1 FROM unnest(%s::bigint[]) AS uid ORDER BY uid"
        f" ON CONFLICT (user_id) DO UPDATE SET last_seq = {streams}.last_seq + 1"
        " RETURNING user_id, last_seq),"
        f" message AS (INSERT INTO {inbox} (user_id, notification_id, seq, live, created_at)"
        " SELECT user_id, %s, last_seq, NOT (user_id = ANY(%s::bigint[])), %s FROM stream"
        f" RETURNING user_id, seq){live}"
        f" SELECT 0, user_id, seq FROM message WHERE user_id = ANY(%s::bigint[]){live_select}"
    )
    params = [id_array(user_ids), notification.pk, id_array(not_live), now]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*state_params, *params, *live_params, id_array(published)])
        rows = cursor.fetchall()
    cursors = {user_id: seq for kind, user_id, seq in rows if kind == 0}
    return cursors, sorted(pk for kind, pk, _user_id in rows if kind == 1)


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
    quiet_hours: bool,
    now: datetime,
) -> list[tuple[int, datetime | None]]:
    """One delivery per active device the batch reaches (users reached only through `to.devices`:
    only those devices), written in (app, platform, id) order so each send task's slice is
    (mostly) one provider call; returns (id, next_attempt_at) in id order.

    Not before: the ack timeout for `held_users`, and with `quiet_hours` the end of the user's
    quiet hours, whichever is later. The insert returns the quiet-hours settings of the users it
    wrote for, so a batch that reaches no device (or no one with quiet hours) reads nothing
    more; only deliveries of users inside their quiet hours now take a second statement.
    Each reached user's devices are one lookup in `device_user_active` (a LATERAL subquery the
    planner cannot flatten, `OFFSET 0`): as a plain join PostgreSQL chose a scan of every device
    per batch, with statistics or without, so a batch cost grew with the device table.
    """
    app_filter = " AND device.app = %s" if notification.app else ""
    sql = (
        f"WITH written AS (INSERT INTO {_table(Delivery)} ({_DELIVERY_COLUMNS})"
        " SELECT %s, device.user_id, device.id, device.platform,"
        f" '{DeliveryStatus.QUEUED}', 0, '', '', %s, %s, held.at, coalesce(held.at, %s)"
        " FROM unnest(%s::bigint[]) AS reach(user_id)"
        " CROSS JOIN LATERAL (SELECT device.id, device.user_id, device.platform, device.app"
        f"   FROM {_table(Device)} AS device"
        f"   WHERE device.user_id = reach.user_id AND device.active{app_filter}"
        "   OFFSET 0) AS device"
        " LEFT JOIN (SELECT user_id, %s::timestamptz AS at FROM unnest(%s::bigint[]) AS user_id) AS held"
        "   ON held.user_id = device.user_id"
        " WHERE NOT (device.user_id = ANY(%s::bigint[])) OR device.id = ANY(%s::bigint[])"
        " ORDER BY device.app, device.platform, device.id"
        " RETURNING id, user_id, next_attempt_at)"
        " SELECT written.id, written.next_attempt_at, written.user_id,"
        "   prefs.quiet_start, prefs.quiet_end, prefs.timezone"
        f" FROM written LEFT JOIN {_table(UserPreferences)} AS prefs"
        "   ON %s AND prefs.user_id = written.user_id AND prefs.quiet_start IS NOT NULL"
        " ORDER BY written.id"
    )
    params = [notification.pk, now, now, now, id_array(user_ids)]
    if notification.app:
        params.append(notification.app)
    params += [
        held_until,
        id_array(held_users),
        id_array(device_only),
        id_array(notification.target.get("devices") or []),
        quiet_hours,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    quiet_ends = _quiet_hours_ends_of(rows, now)
    if not quiet_ends:
        return [(pk, at) for pk, at, *_ in rows]
    later: dict[int, datetime] = {}
    for pk, at, user_id, *_ in rows:
        if user_id in quiet_ends:
            later[pk] = max(at, quiet_ends[user_id]) if at is not None else quiet_ends[user_id]
    _not_before_write(later)
    return [(pk, later.get(pk, at)) for pk, at, *_ in rows]


def _quiet_hours_ends_of(rows, now: datetime) -> dict[int, datetime]:
    """user id → end of quiet hours, for the users of these rows in them now."""
    ends: dict[int, datetime] = {}
    for _pk, _at, user_id, start, end, zone in rows:
        if start is None or user_id in ends:
            continue
        prefs = UserPreferences(user_id=user_id, quiet_start=start, quiet_end=end, timezone=zone)
        moment = quiet_hours_end(prefs, now)
        if moment is not None:
            ends[user_id] = moment
    return ends


def _not_before_write(not_before: dict[int, datetime]) -> None:
    """Hold these deliveries (id → not before) until then: their users are in quiet hours."""
    sql = (
        f"UPDATE {_table(Delivery)} AS delivery SET next_attempt_at = later.at, enqueued_at = later.at"
        " FROM unnest(%s::bigint[], %s::timestamptz[]) AS later(id, at) WHERE delivery.id = later.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [id_array(not_before), list(not_before.values())])
