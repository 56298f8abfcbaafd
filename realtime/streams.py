"""The frames of a user's stream as clients receive them, where a client resumes, and the
thread pool realtime reads the database in. The rows themselves are read through
delivery/streams_api.py; this module imports nothing of delivery/, since publishing uses it."""

import orjson
from channels.db import database_sync_to_async


def db(fn):
    """`fn` run in the shared thread pool: thread_sensitive=True would serialise every socket's
    queries on one thread (or park one thread per long-lived request)."""
    return database_sync_to_async(fn, thread_sensitive=False)


def notification_frame(message: dict) -> str:
    """A message as the WebSocket frame (and SSE data) clients receive; serialised once."""
    return orjson.dumps({"type": "notification", **message}).decode()


def read_frame(notification_id: int, read_cursor: int) -> str:
    """`read_cursor` is the user's read position: a client resumes reads from it (`read_after`)."""
    return orjson.dumps({"type": "read", "id": notification_id, "read_cursor": read_cursor}).decode()


def start_cursor(after: int | None, position: int) -> int:
    """Where a client resumes: its cursor, or the stream's end when it gave none or one past
    the end (another server's, a reset database), so a foreign cursor cannot mute it."""
    return position if after is None else min(after, position)
