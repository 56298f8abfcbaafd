"""HTTP side of realtime: long-polling, server-sent events, the Web Push key, the service
worker, the demo page and "send myself a test". Thin: parse, call, format.
See docs/realtime.md.
"""

import asyncio
import contextlib
import random
import time
from functools import cache
from typing import NamedTuple

import orjson
from django.conf import settings
from django.contrib.staticfiles import finders
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from delivery.streams_api import (
    NotificationAcceptedSerializer,
    NotificationRequest,
    Route,
    Sender,
    accepted_body,
    live_messages_after,
    notification_send,
    reads_after,
)
from devices.models import DEFAULT_APP
from devices.selectors import apps_by_slug
from notifyproject.api import InputSerializer, error_body
from notifyproject.identities.permissions import IsEndUser
from realtime.auth import authenticate_request
from realtime.consumers import parse_cursor
from realtime.node import CLOSE_UNAUTHENTICATED, get_node
from realtime.presence import POLL_LINGER_SECS
from realtime.streams import db, message_json, start_cursor
from realtime.subscriber import Subscriber

# Long-polling: wait 30 s by default, at most 60 (proxies commonly cut idle requests at 60-100 s).
LONGPOLL_DEFAULT_WAIT_SECS = 30
LONGPOLL_MAX_WAIT_SECS = 60
POLL_PAGE = 100  # messages per poll answer; the client polls again at once for more
# SSE: a comment every 15-25 s (random, so thousands of streams do not wake in step) keeps
# proxies from closing the stream; a stream with no message for 5 minutes ends and the
# browser's EventSource reconnects with Last-Event-ID (cheap, and rebalances instances).
SSE_HEARTBEAT_MIN_SECS = 15
SSE_HEARTBEAT_MAX_SECS = 25
SSE_IDLE_TIMEOUT_SECS = 300
SSE_RETRY_MILLIS = 2000  # the browser's reconnect delay after a stream ends
SSE_QUEUE_CHUNKS = 64  # events between the writer and the HTTP response, per stream
# Cross-origin pages (the product's own web app) authenticate with `Authorization: Token`
# (or `?token=` from older clients), so they need CORS, preflight included (cached 10 min);
# session requests never get it.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Authorization, Last-Event-ID",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Max-Age": "600",
}


def _setting(name: str, default: float) -> float:
    """Timing knobs tests shorten; deployments keep the defaults above."""
    return getattr(settings, name, default)


def _error(status_code: int, code: str, message: str, fields: dict | None = None, **headers) -> JsonResponse:
    response = JsonResponse(error_body(code, message, fields), status=status_code)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


UNAUTHENTICATED = ("not_authenticated", "Authentication credentials were not provided or are invalid.")


def _unauthenticated() -> JsonResponse:
    return _error(401, *UNAUTHENTICATED, WWW_Authenticate="Token")


def _preflight() -> HttpResponse:
    response = HttpResponse(status=204)
    for name, value in CORS_HEADERS.items():
        response[name] = value
    return response


async def _long_wait_caller(request) -> tuple | HttpResponse:
    """What poll and events do before they wait: a CORS preflight is answered, only GET goes on,
    and the caller is (user, token) by a token (any origin) or this site's session (token None);
    else the response that refuses the request."""
    if request.method == "OPTIONS":
        return _preflight()
    if request.method != "GET":
        return _error(405, "method_not_allowed", "Method not allowed.", Allow="GET, OPTIONS")
    user, token = await authenticate_request(request)
    if user is None:
        return _unauthenticated()
    return user, token


def _cursor(raw: str | None, field: str, message: str, problems: dict) -> int | None:
    """A cursor parameter; a malformed one adds `message` to `problems` under `field`."""
    try:
        return parse_cursor(raw)
    except ValueError:
        problems[field] = [message]
        return None


def _invalid(problems: dict) -> JsonResponse:
    return _error(400, "validation_error", "The request has invalid fields.", problems)


def _for_caller(response, token):
    """A token caller may be another origin's page (CORS); a session caller is this site's own."""
    if token is not None:
        response["Access-Control-Allow-Origin"] = "*"
    return response


class PollWaiter:
    """A waiting long-poll request: woken by the node; answers with the frames it was offered
    when they continue the stream right after its cursor, else reads the database.

    One of the node's connections (realtime.node.Connection), like a WebSocket or SSE stream.
    """

    kind = "poll"
    linger_secs = POLL_LINGER_SECS
    heartbeat = False
    silent_tick = None

    def __init__(self, user, token=None):
        self.user = user
        self.user_id = user.pk
        self.last_seen = self.connected_at = time.monotonic()
        self.woken = asyncio.Event()
        self.read_offered = False  # a `read` frame came: the answer reads the reads from the database
        self.closed = False
        self.close_code: int | None = None
        self.node = None
        self.cursor: int | None = None  # where this poll answers from, once known
        self.frames: dict[int, str] = {}  # cursor → frame, at most POLL_PAGE
        self.token_digest = token.digest if token is not None else None
        self.token_expires_at = token.expires_at if token is not None else None

    def offer(self, cursor, frame) -> None:
        if len(self.frames) < POLL_PAGE:
            self.frames[cursor] = frame
        self.woken.set()

    def messages_after(self, cursor: int) -> list[tuple[int, bytes]]:
        """[(cursor, message JSON)] offered after `cursor` if none is missing between them
        (cursors are consecutive per user, so a gap means a message only the database has);
        else []. The JSON is cut from the published frame, not decoded and encoded again."""
        ahead = sorted(position for position in self.frames if position > cursor)
        if not ahead or ahead[-1] != cursor + len(ahead):
            return []
        return [(position, message_json(self.frames[position])) for position in ahead]

    def offer_read(self, frame) -> None:
        self.read_offered = True
        self.woken.set()

    def resync(self) -> None:
        self.woken.set()

    def repair(self, position: int) -> None:
        """The user's stream is at `position`: a publish this poll waits for may have been
        lost, so wake it to read the database (a gap in `frames` makes it do so)."""
        if self.cursor is None or position > self.cursor:
            self.woken.set()

    def close(self, code: int) -> None:
        self.closed = True
        self.close_code = code
        self.woken.set()
        if self.node is not None:
            self.node.unregister(self)


class PollParams(NamedTuple):
    after: int | None
    read_after: int | None
    wait: float  # seconds, already capped


def poll_params(get) -> PollParams | dict:
    """The poll's query parameters (`get(name) -> str | None`), or {field: [problem]}."""
    problems = {}
    after = _cursor(get("after"), "after", "A cursor is a non-negative integer.", problems)
    read_message = "A read position is a non-negative integer."
    read_after = _cursor(get("read_after"), "read_after", read_message, problems)
    try:
        wait = float(get("timeout") or LONGPOLL_DEFAULT_WAIT_SECS)
        if not 0 <= wait < float("inf"):
            raise ValueError
    except ValueError:
        problems["timeout"] = [f"Seconds to wait, 0 to {LONGPOLL_MAX_WAIT_SECS}."]
    if problems:
        return problems
    most = _setting("CLARION_LONGPOLL_MAX_WAIT_SECS", LONGPOLL_MAX_WAIT_SECS)
    return PollParams(after, read_after, min(wait, most))


async def poll_answer(waiter: PollWaiter, params: PollParams) -> bytes | None:
    """Wait as GET /api/v1/poll/ does and return the answer's JSON body; None when the
    caller's token expired or was revoked while it waited (a 401). Closing the waiter (its
    client left) ends the wait early."""
    user = waiter.user
    node = get_node()
    # Registered before the stream's position is read: a message committed (or read) after the
    # read wakes us, so a client that is up to date waits without reading the database again.
    await node.register(waiter)
    waiter.frames.update(node.frames_since_last_poll(user.pk))
    try:
        # Read with the node's other concurrent callers: one thread hop and query per batch.
        position, read_position = await node.position_lookup.get(user.pk) or (0, 0)
        cursor = waiter.cursor = start_cursor(params.after, position)
        read_cursor = start_cursor(params.read_after, read_position)
        deadline = time.monotonic() + params.wait
        behind, reads_behind = cursor < position, read_cursor < read_position
        messages, reads = [], []
        while not waiter.closed:
            if behind or reads_behind:
                waiter.woken.clear()  # before the read: a frame offered after it wakes the wait below
                waiter.read_offered = False
                if behind:
                    # Published since the client's last poll (so already marked sent), else the database.
                    messages = waiter.messages_after(cursor) or [
                        (message["cursor"], orjson.dumps(message))
                        for message in await db(live_messages_after)(user.pk, cursor, POLL_PAGE)
                    ]
                if reads_behind:
                    reads = await db(reads_after)(user.pk, read_cursor, POLL_PAGE)
                if messages or reads:
                    break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):  # no task per wait, unlike wait_for
                    await waiter.woken.wait()
            except TimeoutError:
                break
            # Published after commit, so already marked sent: no query needed to answer them.
            messages = waiter.messages_after(cursor)
            if messages and not waiter.read_offered:
                break
            behind = not messages  # woken by a gap or a resync: the database has the rest
            reads_behind = True  # a read, or a resync that may have lost one: reads are few, look
    finally:
        node.unregister(waiter)
    if waiter.close_code == CLOSE_UNAUTHENTICATED:
        return None  # its token expired or was revoked while it waited
    return orjson.dumps(
        {
            "results": [orjson.Fragment(message) for _cursor, message in messages],
            "cursor": messages[-1][0] if messages else cursor,
            "read": [notification_id for _position, notification_id in reads],
            "read_cursor": reads[-1][0] if reads else read_cursor,
        }
    )


async def poll(request):
    """GET /api/v1/poll/?after=<cursor>&read_after=<read position>&timeout=30: answers as soon as
    a message exists after the cursor or a message was read after the read position.

    Token callers are served by realtime.longwait without a Django request; this view serves
    the rest (session callers, preflights, refusals) the same way."""
    caller = await _long_wait_caller(request)
    if isinstance(caller, HttpResponse):
        return caller
    user, token = caller
    params = poll_params(request.GET.get)
    if not isinstance(params, PollParams):
        return _invalid(params)
    body = await poll_answer(PollWaiter(user, token), params)
    if body is None:
        return _unauthenticated()
    response = HttpResponse(body, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return _for_caller(response, token)


class SseSubscriber(Subscriber):
    """An event stream: the writer formats events into a small queue the response reads."""

    kind = "sse"
    linger_secs = POLL_LINGER_SECS

    def __init__(self, user, token=None):
        super().__init__(user, token)
        self.chunks: asyncio.Queue = asyncio.Queue(SSE_QUEUE_CHUNKS)

    async def write(self, frame: str, cursor: int | None) -> None:
        if cursor is None:
            chunk = f"event: read\ndata: {frame}\n\n"
        else:
            chunk = f"id: {cursor}\nevent: notification\ndata: {frame}\n\n"
        await self.chunks.put(chunk.encode())

    def _close(self, code: int) -> None:
        # When full, the stream sees `closed` at its next heartbeat instead.
        with contextlib.suppress(asyncio.QueueFull):
            self.chunks.put_nowait(None)


async def _event_stream(subscriber: SseSubscriber, after: int | None):
    try:
        await subscriber.open(after)
        yield f"retry: {SSE_RETRY_MILLIS}\n: connected\n\n".encode()
        idle_timeout = _setting("CLARION_SSE_IDLE_TIMEOUT_SECS", SSE_IDLE_TIMEOUT_SECS)
        beat_min = _setting("CLARION_SSE_HEARTBEAT_MIN_SECS", SSE_HEARTBEAT_MIN_SECS)
        beat_max = _setting("CLARION_SSE_HEARTBEAT_MAX_SECS", SSE_HEARTBEAT_MAX_SECS)
        idle_until = time.monotonic() + idle_timeout
        while not subscriber.closed:
            try:
                chunk = await asyncio.wait_for(subscriber.chunks.get(), random.uniform(beat_min, beat_max))
            except TimeoutError:
                if time.monotonic() >= idle_until:
                    break
                yield b": heartbeat\n\n"
                continue
            if chunk is None:
                break
            chunks = [chunk]
            while not subscriber.chunks.empty():
                more = subscriber.chunks.get_nowait()
                if more is None:
                    break
                chunks.append(more)
            yield b"".join(chunks)
            idle_until = time.monotonic() + idle_timeout
    finally:
        subscriber.detach()


async def events(request):
    """GET /api/v1/events/: server-sent events; `id:` is the cursor, Last-Event-ID (or ?after=) resumes."""
    caller = await _long_wait_caller(request)
    if isinstance(caller, HttpResponse):
        return caller
    user, token = caller
    problems = {}
    raw_after = request.headers.get("Last-Event-ID") or request.GET.get("after")
    message = "Last-Event-ID / after is a cursor, a non-negative integer."
    after = _cursor(raw_after, "after", message, problems)
    if problems:
        return _invalid(problems)
    stream = _event_stream(SseSubscriber(user, token), after)
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache, no-transform"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return _for_caller(response, token)


@require_GET
def webpush_key(request):
    """The VAPID public key browsers subscribe with (`?app=` for an app's own); 404 without Web Push."""
    slug = request.GET.get("app") or DEFAULT_APP
    if slug == DEFAULT_APP:
        public_key = settings.VAPID_PUBLIC_KEY
        missing = "Web Push is not configured on this server (set VAPID_PUBLIC_KEY and VAPID_PRIVATE_KEY)."
    else:
        app = apps_by_slug([slug]).get(slug)
        if app is None:
            return _error(404, "not_found", f"No app named {slug[:40]!r}.")
        public_key = app.vapid_public_key if app.vapid_private_key else ""
        missing = f"Web Push is not configured for the app {slug!r}."
    if not public_key:
        return _error(404, "webpush_not_configured", missing)
    response = JsonResponse({"public_key": public_key})
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = "public, max-age=300"
    return response


@cache
def _service_worker_source() -> bytes:
    with open(finders.find("clarion/sw.js"), "rb") as source:
        return source.read()


@require_GET
def service_worker(request):
    """/sw.js at the site root, so it may control every page of this origin."""
    response = HttpResponse(_service_worker_source(), content_type="application/javascript; charset=utf-8")
    response["Service-Worker-Allowed"] = "/"
    response["Cache-Control"] = "no-cache"  # browsers re-check it; an update reaches users promptly
    return response


@ensure_csrf_cookie
@require_GET
def demo(request):
    """The page a new user opens after `make run`: sign in, watch notifications, enable Web Push."""
    session_user = request.user if request.user.is_authenticated else None
    return render(
        request,
        "realtime/demo.html",
        {"session_user": session_user, "webpush_configured": bool(settings.VAPID_PUBLIC_KEY)},
    )


class SelfTestRateThrottle(SimpleRateThrottle):
    """A person clicking "send myself a test", not a script sending through the demo."""

    scope = "self_test"
    rate = "10/min"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class SelfTestSerializer(InputSerializer):
    title = serializers.CharField(max_length=200, required=False, default="Hello from Clarion")
    body = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
    route = serializers.ChoiceField(choices=Route.choices, required=False, default=Route.AUTO)


class SelfTestNotificationView(APIView):
    """POST /api/v1/me/test-notification/: a signed-in user sends a notification to themselves."""

    permission_classes = [IsEndUser]
    throttle_classes = [SelfTestRateThrottle]

    @extend_schema(request=SelfTestSerializer, responses={202: NotificationAcceptedSerializer})
    def post(self, request):
        serializer = SelfTestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request.user
        notification, _created = notification_send(
            sender=Sender(label=f"user:{user.pk}", user=user),
            request=NotificationRequest(target={"users": [user.username]}, **serializer.validated_data),
        )
        return Response(accepted_body(notification), status=status.HTTP_202_ACCEPTED)
