"""GET /api/v1/poll/ and /api/v1/events/ served beside Django's request handler, not through it.

Django's ASGI handler gives every request a thread of its own for the request's whole life
(its sync middleware and signal receivers run there), so 2,000 waiting long-polls held 2,000
threads. These two views are async and need none of that middleware: this app checks the
host, attaches the session the way the middleware would (for session-authenticated pages),
calls the view and sends its response, and cancels the view when the client goes away.
Every other request goes to Django as before. See docs/realtime.md (Long-polling and SSE).
"""

import asyncio
import contextlib
import io
import logging
from importlib import import_module

from django.conf import settings
from django.contrib.auth.middleware import auser
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.db import DatabaseError
from django.http import JsonResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware

from notifyproject.api import HTTP_ERROR_CODES, error_body
from realtime import views

logger = logging.getLogger(__name__)

LONG_WAIT_VIEWS = {"/api/v1/poll/": views.poll, "/api/v1/events/": views.events}


class LongWaitEndpoints:
    """An ASGI app: the long-wait paths served here, everything else by `django_app`."""

    def __init__(self, django_app):
        self.django_app = django_app
        self.session_store = import_module(settings.SESSION_ENGINE).SessionStore
        # Their response halves only set headers (no I/O): the same headers as Django's pages.
        self.header_middleware = [SecurityMiddleware(_unused), XFrameOptionsMiddleware(_unused)]

    async def __call__(self, scope, receive, send):
        view = LONG_WAIT_VIEWS.get(scope.get("path")) if scope["type"] == "http" else None
        if view is None:
            return await self.django_app(scope, receive, send)
        if not await _skip_body(receive):
            return  # the client went away
        request = ASGIRequest(scope, io.BytesIO())
        respond = asyncio.ensure_future(self._respond(view, request, send))
        gone = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({respond, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (respond, gone):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _respond(self, view, request, send) -> None:
        try:
            request.get_host()
        except DisallowedHost:
            response = JsonResponse(error_body(*HTTP_ERROR_CODES[400]), status=400)
        else:
            request.session = self.session_store(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
            request.auser = lambda: auser(request)
            response = await self._call_view(view, request)
        for middleware in self.header_middleware:
            response = middleware.process_response(request, response)
        await self.django_app.send_response(response, send)

    @staticmethod
    async def _call_view(view, request):
        try:
            return await view(request)
        except DatabaseError as error:  # as ApiErrorShapeMiddleware answers it on other paths
            logger.error("database unavailable while serving %s: %s", request.path, type(error).__name__)
            return JsonResponse(
                error_body("service_unavailable", "The database is unavailable; try again shortly."),
                status=503,
            )
        except Exception:
            logger.exception("%s failed", request.path)
            return JsonResponse(error_body(*HTTP_ERROR_CODES[500]), status=500)


def _unused(request):
    raise AssertionError("only process_response is used")


async def _skip_body(receive) -> bool:
    """Read the request to its end, keeping nothing (GET and OPTIONS use no body); False if
    the client left first."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        if not message.get("more_body"):
            return True


async def _wait_for_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
