"""The baseline for the realtime benchmarks: a stock Channels consumer, as in the Channels docs.

The same token check as Clarion's (notifyproject/identities.py), made the stock way: one
`database_sync_to_async` query per connection; then `group_add("user.<id>")` on the configured
channel layer, and one `group_send` per user to reach it (what realtime/publish.py did before
the node channels). With `?broadcast=1` the consumer also joins the one group "broadcast", so
a single `group_send` reaches every socket (W1 in bench/realtime_throughput.py).
Run by bench/realtime_memory.py, bench/realtime_latency.py and bench/realtime_throughput.py.
"""

import os

import orjson
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifyproject.settings")
django_asgi_app = get_asgi_application()

from channels.db import database_sync_to_async  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import CookieMiddleware, SessionMiddleware  # noqa: E402
from django.urls import path  # noqa: E402

from notifyproject.identities import credentials  # noqa: E402
from realtime.auth import query_param  # noqa: E402

BROADCAST_GROUP = "broadcast"


async def authenticate(scope):
    """The token's user, or None."""
    token = credentials.scope_token(scope)
    identity = await database_sync_to_async(credentials.authenticate_token)(token) if token else None
    return identity.user if identity is not None else None


class StockConsumer(AsyncWebsocketConsumer):
    group = None
    groups_joined = ()

    async def connect(self):
        user = await authenticate(self.scope)
        await self.accept()
        if user is None:
            await self.close(code=4401)
            return
        self.group = f"user.{user.pk}"
        self.groups_joined = [self.group]
        if query_param(self.scope, "broadcast") == "1":
            self.groups_joined.append(BROADCAST_GROUP)
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)

    async def disconnect(self, code):
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data='{"type":"pong"}')

    async def notification_message(self, event):
        await self.send(text_data=orjson.dumps({"type": "notification", **event["message"]}).decode())


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": CookieMiddleware(
            SessionMiddleware(URLRouter([path("ws/v1/notifications/", StockConsumer.as_asgi())]))
        ),
    }
)
