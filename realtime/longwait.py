"""GET /api/v1/poll/ and /api/v1/events/ served beside Django's request handler, not through it.

Django's ASGI handler gives every request a thread of its own for the request's whole life
(its sync middleware and signal receivers run there), so 2,000 waiting long-polls held 2,000
threads. These two views are async and need none of that middleware: this app checks the
host, attaches the session the way the middleware would (for session-authenticated pages),
calls the view and sends its response, and cancels the view when the client goes away.
Every other request goes to Django as before. See docs/realtime.md (Long-polling and SSE).

A long-poll with a token (every client but this site's own pages) goes further: no Django
request at all. Its host, token and parameters are read from the ASGI scope, its answer is
the JSON bytes cut from the published frames, sent with headers made once; a long-poll with a
session, a preflight or a refusal for a method is served by the view as above. With 2,000
clients polling once a second, building and tearing down Django's request and response was
a third of the web process's CPU (docs/benchmarks.md, W8).
"""

import asyncio
import contextlib
import io
import logging
from importlib import import_module
from urllib.parse import parse_qsl

import orjson
from django.conf import settings
from django.contrib.auth.middleware import auser
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.db import DatabaseError
from django.http import JsonResponse

from notifyproject.api import HTTP_ERROR_CODES, database_unavailable_body, error_body
from notifyproject.identities import credentials
from notifyproject.scope_answers import ScopeAnswers, send_answer, site_scheme
from realtime import views
from realtime.auth import token_caller

logger = logging.getLogger(__name__)

POLL_PATH = "/api/v1/poll/"
LONG_WAIT_VIEWS = {POLL_PATH: views.poll, "/api/v1/events/": views.events}
CLOSE_CLIENT_GONE = 4499  # a waiting poll whose client left (never sent: the answer has no reader)


class LongWaitEndpoints:
    """An ASGI app: the long-wait paths served here, everything else by `django_app`."""

    def __init__(self, django_app):
        self.django_app = django_app
        self.session_store = import_module(settings.SESSION_ENGINE).SessionStore
        self.answers = ScopeAnswers()

    async def __call__(self, scope, receive, send):
        view = LONG_WAIT_VIEWS.get(scope.get("path")) if scope["type"] == "http" else None
        if view is None:
            return await self.django_app(scope, receive, send)
        if view is views.poll and scope["method"] == "GET":
            try:
                token = _header_or_query_token(scope)
            except credentials.MalformedCredentialsError:
                token = ""  # refused as the view refuses it: 401
            if token is not None:
                return await self._token_poll(scope, receive, send, token)
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

    async def _token_poll(self, scope, receive, send, token: str) -> None:
        """GET /api/v1/poll/ with a token, answered as the view would answer it, without a
        Django request or response: the same statuses, error shapes and headers."""
        if not await _skip_body(receive):
            return  # the client went away
        secure = site_scheme(scope) == "https"
        if not self.answers.host_allowed(scope):
            return await self._send_json(send, 400, error_body(*HTTP_ERROR_CODES[400]), secure)
        query_string = scope.get("query_string", b"").decode("utf-8", "replace")
        query = dict(parse_qsl(query_string, keep_blank_values=True))  # the last value wins, as in GET
        try:
            status, body = await self._token_poll_answer(receive, token, query)
        except DatabaseError as error:  # as _call_view answers it
            logger.error("database unavailable while serving %s: %s", POLL_PATH, type(error).__name__)
            status, body = 503, _SERVICE_UNAVAILABLE
        except Exception:
            logger.exception("%s failed", POLL_PATH)
            status, body = 500, error_body(*HTTP_ERROR_CODES[500])
        if status is None:
            return  # the client left while its poll waited
        if status == 200:
            return await send_answer(send, 200, body, self.answers.headers(secure, cors=True, no_store=True))
        extra = _WWW_AUTHENTICATE if status == 401 else ()
        await self._send_json(send, status, body, secure, extra)

    @staticmethod
    async def _token_poll_answer(receive, token: str, query: dict) -> tuple[int | None, bytes | dict]:
        """(200, the answer's JSON) or (4xx, the error body); (None, b"") if the client left."""
        user, identity = await token_caller(token) if token else (None, None)
        if user is None:
            return 401, _UNAUTHENTICATED
        params = views.poll_params(query.get)
        if not isinstance(params, views.PollParams):
            return 400, error_body("validation_error", "The request has invalid fields.", params)
        waiter = views.PollWaiter(user, identity)
        gone = asyncio.ensure_future(_close_when_gone(receive, waiter))
        try:
            body = await views.poll_answer(waiter, params)
        finally:
            gone.cancel()
        if waiter.close_code == CLOSE_CLIENT_GONE:
            return None, b""
        if body is None:  # its token expired or was revoked while it waited
            return 401, _UNAUTHENTICATED
        return 200, body

    async def _send_json(self, send, status: int, body: dict, secure: bool, extra=()) -> None:
        await send_answer(send, status, orjson.dumps(body), self.answers.headers(secure, extra=extra))

    async def _respond(self, view, request, send) -> None:
        try:
            request.get_host()
        except DisallowedHost:
            response = JsonResponse(error_body(*HTTP_ERROR_CODES[400]), status=400)
        else:
            request.session = self.session_store(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
            request.auser = lambda: auser(request)
            response = await self._call_view(view, request)
        await self.django_app.send_response(self.answers.finish(request, response), send)

    @staticmethod
    async def _call_view(view, request):
        try:
            return await view(request)
        except DatabaseError as error:  # as ApiErrorShapeMiddleware answers it on other paths
            logger.error("database unavailable while serving %s: %s", request.path, type(error).__name__)
            return JsonResponse(database_unavailable_body(), status=503)
        except Exception:
            logger.exception("%s failed", request.path)
            return JsonResponse(error_body(*HTTP_ERROR_CODES[500]), status=500)


async def _skip_body(receive) -> bool:
    """Read the request to its end, keeping nothing (GET and OPTIONS use no body); False if
    the client left first."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        if not message.get("more_body"):
            return True


def _header_or_query_token(scope) -> str | None:
    """The request's end-user token as credentials.request_token reads it (the Authorization
    header, else ?token=); raises MalformedCredentialsError as it does."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            token = credentials.authorization_credentials(value, credentials.TOKEN_SCHEME)
            if token:
                return token
            break
    return credentials.token_from_query(scope.get("query_string", b""))


_UNAUTHENTICATED = error_body(*views.UNAUTHENTICATED)
_WWW_AUTHENTICATE = (("WWW-Authenticate", "Token"),)
_SERVICE_UNAVAILABLE = database_unavailable_body()


async def _close_when_gone(receive, waiter) -> None:
    """Ends a waiting poll whose client left, so it holds no registration until its timeout."""
    await _wait_for_disconnect(receive)
    waiter.close(CLOSE_CLIENT_GONE)


async def _wait_for_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
