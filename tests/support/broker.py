"""What waits in the real Redis broker, read the way a worker would find it."""

import base64
import json

import redis

from notifyproject.celery import app

QUEUE = app.conf.task_default_queue  # every task of ours is routed to the default queue


def queued_tasks(url: str) -> list[tuple[str, list]]:
    """(task name, positional args) of each message in the queue, oldest first."""
    return [(name, args) for name, args, _kwargs in _messages(url)]


def queued_tasks_with_kwargs(url: str) -> list[tuple[str, list, dict]]:
    """(task name, positional args, keyword args) of each message in the queue, oldest first."""
    return _messages(url)


def _messages(url: str) -> list[tuple[str, list, dict]]:
    """(task name, args, kwargs) of each message in the queue, oldest first.

    kombu's Redis transport LPUSHes and a worker BRPOPs, so the list holds the newest first.
    """
    client = redis.Redis.from_url(url)
    try:
        raw = client.lrange(QUEUE, 0, -1)
    finally:
        client.close()
    messages = []
    for item in reversed(raw):
        message = json.loads(item)
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
        messages.append((message["headers"]["task"], args, kwargs))
    return messages


def queued_calls(url: str) -> list[tuple[str, list]]:
    """(task name, positional args) of each call the queued messages make, oldest first: a
    message of several tasks (Celery's starmap, notifyproject/task_queue.py) makes one per slice."""
    calls = []
    for name, args, kwargs in _messages(url):
        if name == "celery.starmap":
            calls += [(kwargs["task"]["task"], list(item)) for item in kwargs["it"]]
        else:
            calls.append((name, args))
    return calls
