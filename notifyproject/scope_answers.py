"""Answers made from the ASGI scope, beside Django's request handler: what such an answer must
check and carry so that a client cannot tell it from Django's.

The token long-poll (realtime/longwait.py) and the common send (delivery/send_endpoint.py)
are answered without a Django request, where building and tearing one down was much of their
CPU. They check the host as `request.get_host()` would, decide https as `request.is_secure()`
would, and send the headers Django's security middleware would add.
"""

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, JsonResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware

# Host headers already checked against ALLOWED_HOSTS (a client sends the same one each request);
# bounded, since the header is the client's to choose.
CHECKED_HOSTS_MAX = 1024


def header_value(scope, name: bytes) -> str | None:
    """The request's header `name` (lower case), the first if repeated."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin1")
    return None


def site_scheme(scope) -> str:
    """http or https, as Django's request.is_secure() decides it (SECURE_PROXY_SSL_HEADER)."""
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        value = header_value(scope, name.removeprefix("HTTP_").lower().replace("_", "-").encode())
        if value is not None:
            return "https" if value.split(",")[0].strip() == secure_value else "http"
    return "https" if scope.get("scheme") in ("wss", "https") else "http"


class ScopeAnswers:
    """The host check and the answer headers, each worked out once per distinct input."""

    def __init__(self):
        # Their response halves only set headers (no I/O): the same headers as Django's pages.
        self._header_middleware = [SecurityMiddleware(_unused), XFrameOptionsMiddleware(_unused)]
        self._checked_hosts: dict[tuple, bool] = {}
        self._made_headers: dict[tuple, list] = {}

    def host_allowed(self, scope) -> bool:
        """request.get_host() accepts the request's host: the same check, once per header value."""
        host, forwarded = None, None
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value
            elif name == b"x-forwarded-host":
                forwarded = value
        server = scope.get("server") or ("unknown", "0")  # as ASGIRequest fills META
        key = (host, forwarded, server[0], server[1])
        allowed = self._checked_hosts.get(key)
        if allowed is None:
            request = HttpRequest()
            request.META["SERVER_NAME"], request.META["SERVER_PORT"] = server[0], str(server[1])
            if host is not None:
                request.META["HTTP_HOST"] = host.decode("latin1")
            if forwarded is not None:
                request.META["HTTP_X_FORWARDED_HOST"] = forwarded.decode("latin1")
            try:
                request.get_host()
                allowed = True
            except DisallowedHost:
                allowed = False
            if len(self._checked_hosts) >= CHECKED_HOSTS_MAX:
                self._checked_hosts.clear()
            self._checked_hosts[key] = allowed
        return allowed

    def headers(self, secure: bool, *, cors: bool = False, no_store: bool = False, extra=()) -> list:
        """A JSON answer's headers as Django's would carry them (the security middleware's
        included), made once per kind. `extra`: (name, value) pairs of the kind, in order."""
        key = (secure, cors, no_store, tuple(extra))
        headers = self._made_headers.get(key)
        if headers is None:
            response = JsonResponse({})
            if no_store:
                response["Cache-Control"] = "no-store"
            if cors:
                response["Access-Control-Allow-Origin"] = "*"
            for name, value in extra:
                response[name] = value
            request = HttpRequest()
            request.is_secure = lambda: secure
            for middleware in self._header_middleware:
                response = middleware.process_response(request, response)
            headers = self._made_headers[key] = [
                (name.encode("latin1"), value.encode("latin1")) for name, value in response.items()
            ]
        return headers

    def finish(self, request, response):
        """Django's response to a bare request, with the headers the security middleware adds."""
        for middleware in self._header_middleware:
            response = middleware.process_response(request, response)
        return response


async def send_answer(send, status: int, body: bytes, headers: list) -> None:
    length = (b"Content-Length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})


def _unused(request):
    raise AssertionError("only process_response is used")
