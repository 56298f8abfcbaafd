"""W8's baseline: long-polling with a stock Channels `AsyncHttpConsumer` (bench only).

GET /api/v1/poll/?token=…&timeout=30, the same token authentication as Clarion's view; the
request joins the user's group `user.<id>` on the channel layer and is answered with the first
message a `group_send` brings, or with no message at the timeout. Nothing is buffered between
two polls: a message sent while the client is between requests is lost (the client counts it).

`AsyncHttpConsumer.http_request` stops the consumer as soon as `handle()` returns, which makes
the long-poll example in the Channels docs unreachable by the channel layer (django/channels
#1747); the usual workaround is used: `handle()` only subscribes, and the consumer stops after
it has answered.
"""

import asyncio
import os

import orjson
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.realtime_baseline_settings")
django_asgi_app = get_asgi_application()

from channels.exceptions import StopConsumer  # noqa: E402
from channels.generic.http import AsyncHttpConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from realtime.auth import authenticate_scope, query_param  # noqa: E402

MAX_WAIT_SECS = 60
JSON_HEADERS = [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-store")]


class LongPollConsumer(AsyncHttpConsumer):
    group = None
    timer = None
    answered = False

    async def http_request(self, message):
        if "body" in message:
            self.body.append(message["body"])
        if not message.get("more_body"):
            await self.handle(b"".join(self.body))

    async def handle(self, body):
        user, _token = await authenticate_scope(self.scope)
        if user is None:
            await self.finish(401, {"error": {"code": "not_authenticated", "message": "No valid token."}})
        try:
            wait = min(float(query_param(self.scope, "timeout") or 30), MAX_WAIT_SECS)
        except ValueError:
            await self.finish(400, {"error": {"code": "validation_error", "message": "Bad timeout."}})
        self.group = f"user.{user.pk}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        # The timeout arrives as a channel message, so it is handled in the consumer's own loop.
        self.timer = asyncio.get_running_loop().call_later(
            wait,
            lambda: asyncio.ensure_future(
                self.channel_layer.send(self.channel_name, {"type": "poll.timeout"})
            ),
        )

    async def notification_message(self, event):
        message = event["message"]
        await self.finish(200, {"results": [message], "cursor": message["cursor"]})

    async def poll_timeout(self, event):
        await self.finish(200, {"results": [], "cursor": None})

    async def finish(self, status: int, body: dict):
        if not self.answered:
            self.answered = True
            await self.send_response(status, orjson.dumps(body), headers=JSON_HEADERS)
        await self.disconnect()
        raise StopConsumer()

    async def disconnect(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.group:
            group, self.group = self.group, None
            await self.channel_layer.group_discard(group, self.channel_name)


application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [path("api/v1/poll/", LongPollConsumer.as_asgi()), path("healthz", django_asgi_app)]
        ),
    }
)
