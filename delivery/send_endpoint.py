"""POST /api/v1/notifications/ served beside Django's request handler for the common send.

Half of a send's server CPU was Django and DRF around the view (docs/benchmarks.md, "A send
to one user"): the request object, a new thread per request, the middleware chain, content
negotiation, the authenticators, the throttle classes and the response's rendering. The
common send (an API key in `Authorization: Bearer`, a JSON body of named users that
`serializers.common_send_request` takes) is answered here from the ASGI scope, in threads
of its own, by the calls the view makes: the key (`api_key_caller`), its scope, the send
rate limit, `services.notification_send`, `accepted_body`. Any other request, and every
refusal made before the rate limit counted the send, goes to Django with its body, so its
answer is the view's. From the rate limit on, this module answers what the view would (429,
413) in the contract's shape, with the headers Django's answer carries, and so a database
failure wherever it happens (503).
"""

import logging
from concurrent.futures import ThreadPoolExecutor

from channels.db import database_sync_to_async
from django.db import DatabaseError
from django.urls import reverse
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer

from delivery import services
from delivery.serializers import accepted_body, common_send_request
from delivery.views import IDEMPOTENCY_KEY_MAX_CHARS, NotificationCreateView
from notifyproject.api import HTTP_ERROR_CODES, PayloadTooLarge, ServiceUnavailable, api_error, error_body
from notifyproject.identities import credentials
from notifyproject.identities.authentication import api_key_caller
from notifyproject.scope_answers import ScopeAnswers, send_answer, site_scheme
from notifyproject.strict_json import strict_body
from notifyproject.throttling import SendRateThrottle

logger = logging.getLogger(__name__)

# Sends run here, each holding a database connection while it runs; a burst beyond them waits
# its turn rather than taking every connection of the process's pool.
SEND_THREADS = 4
_send_executor = ThreadPoolExecutor(max_workers=SEND_THREADS, thread_name_prefix="send")

# The request headers a send reads; a request repeating one of them goes to Django, which
# joins repeated values.
_READ_HEADERS = frozenset(
    {b"authorization", b"content-type", b"content-length", b"accept", b"idempotency-key"}
)
_JSON_TYPES = frozenset({"application/json", "application/json;charset=utf-8"})
# Accept values under which DRF's negotiation picks the JSON renderer, with no parameters.
_JSON_ACCEPTED = frozenset({"*/*", "application/*", "application/json"})


class DirectSends:
    """An ASGI app: a common send answered here, everything else by `django_app`."""

    def __init__(self, django_app):
        self.django_app = django_app
        self.answers = ScopeAnswers()
        self.path = reverse("notifications")  # where the view is routed
        # DRF's APIView adds this to every answer of the view (finalize_response).
        self.view_headers = (("Allow", ", ".join(NotificationCreateView().allowed_methods)),)
        self._answer = database_sync_to_async(send_answered, thread_sensitive=False, executor=_send_executor)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            return await self.django_app(scope, receive, send)
        read = _send_headers(scope)
        body = await _body(receive)
        if body is None:
            return  # the client went away
        if read is not None and self.answers.host_allowed(scope):
            answer = await self._answer(*read, body)
            if answer is not None:
                status, content, extra = answer
                secure = site_scheme(scope) == "https"
                headers = self.answers.headers(secure, extra=self.view_headers + extra)
                return await send_answer(send, status, content, headers)
        await self.django_app(scope, _replayed(body, receive), send)


def send_answered(key: str, idempotency_key: str | None, body: bytes) -> tuple[int, bytes, tuple] | None:
    """(status, body, extra headers) as the view answers this send, or None where Django must
    answer it (any refusal before the rate limit, any body off the common shape)."""
    try:
        api_key = api_key_caller(key)
        if not api_key.has_scope("send"):
            return None
        try:
            data = strict_body(body)
        except exceptions.APIException:  # the parser's 400, from the view
            return None
        request = common_send_request(data)
        if request is None:
            return None
        throttle = SendRateThrottle()
        allowed = throttle.allow_key(throttle.key_of_api_key(api_key))
        if allowed is None:
            return None
        if not allowed:
            return _error(exceptions.Throttled(throttle.wait()))
        try:
            notification, created = services.notification_send(
                sender=services.Sender.for_api_key(api_key), request=request, idempotency_key=idempotency_key
            )
        except services.PayloadTooLargeError as exc:  # a provider's own framing past its limit
            return _error(PayloadTooLarge(str(exc)))
    except exceptions.AuthenticationFailed:
        return None
    except DatabaseError:
        logger.exception("database error while serving a send")
        return _error(ServiceUnavailable())
    except Exception:
        logger.exception("a send failed")
        return 500, _JSON.render(error_body(*HTTP_ERROR_CODES[500])), ()
    return (202 if created else 200), _JSON.render(accepted_body(notification)), ()


_JSON = JSONRenderer()


def _error(exc: exceptions.APIException) -> tuple[int, bytes, tuple]:
    status, body, headers = api_error(exc)
    return status, _JSON.render(body), tuple(headers.items())


def _send_headers(scope) -> tuple[str, str | None] | None:
    """(the API key, the Idempotency-Key) of a request this module may answer, else None."""
    found: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", ()):
        if name in _READ_HEADERS:
            if name in found:
                return None
            found[name] = value
    length = found.get(b"content-length", b"")
    if not (length.isdigit() and int(length) > 0):
        return None  # DRF reads no body then
    if scope.get("query_string"):
        return None  # DRF reads ?format=; the view ignores the rest, but none is usual
    content_type = found.get(b"content-type", b"").decode("latin1").lower().replace(" ", "")
    if content_type not in _JSON_TYPES:
        return None
    accept = found.get(b"accept")
    if accept is not None and not _json_accepted(accept.decode("latin1")):
        return None
    try:
        key = credentials.authorization_credentials(found.get(b"authorization"), credentials.API_KEY_SCHEME)
    except credentials.MalformedCredentialsError:
        return None
    if not key:
        return None
    # As the view reads it: Django decodes header values as latin-1.
    idempotency_key = found.get(b"idempotency-key", b"").decode("latin1").strip() or None
    if idempotency_key and (len(idempotency_key) > IDEMPOTENCY_KEY_MAX_CHARS or "\x00" in idempotency_key):
        return None
    return key, idempotency_key


def _json_accepted(accept: str) -> bool:
    """DRF would answer JSON, unparameterised (a parameter such as `indent` changes it)."""
    ranges = [media_range.strip() for media_range in accept.split(",")]
    return all(";" not in media_range for media_range in ranges) and any(
        media_range.lower() in _JSON_ACCEPTED for media_range in ranges
    )


async def _body(receive) -> bytes | None:
    """The request's whole body, or None if the client left first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replayed(body: bytes, receive):
    """`receive` for Django, giving it the body already read, then the client's own messages."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay
