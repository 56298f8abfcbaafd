"""What waits in the real Redis broker, read the way a worker would find it."""

import base64
import json

import redis

QUEUE = "celery"  # Celery's default queue; every task of ours is routed there


def queued_tasks(url: str) -> list[tuple[str, list]]:
    """(task name, positional args) of each message in the queue, oldest first.

    kombu's Redis transport LPUSHes and a worker BRPOPs, so the list holds the newest first.
    """
    client = redis.Redis.from_url(url)
    try:
        raw = client.lrange(QUEUE, 0, -1)
    finally:
        client.close()
    tasks = []
    for item in reversed(raw):
        message = json.loads(item)
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        tasks.append((message["headers"]["task"], args))
    return tasks
