"""Django's ASGI handler with the middleware chain and the view run in one thread hop.

Under ASGI, Django adapts each sync middleware on its own: every MiddlewareMixin runs its
process_request and process_response through sync_to_async, so a request made ~16 trips
between the event loop and a thread (5 ms of CPU for a plain 404 on the 2-core bench
machine). Every view behind this handler is sync (the async long-wait views are served by
realtime.longwait), so here the whole chain runs sync in the request's thread, as it would
under WSGI, in a single hop. Request parsing, disconnect handling and streaming stay Django's.
"""

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler


class OneHopASGIHandler(ASGIHandler):
    def __init__(self):
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)

    async def get_response_async(self, request):
        # The request's own thread (Django runs each request in a ThreadSensitiveContext),
        # so its database connection is the one request_finished returns to the pool.
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
