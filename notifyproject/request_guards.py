"""The outermost ASGI layer: refuses, before anything reads it, what no endpoint may receive.

- A request body over CLARION_MAX_BODY_BYTES: a declared Content-Length over the limit is
  answered 413 without reading a byte of the body; an undeclared (chunked) or understated
  body is cut off as soon as the running total passes the limit. Django's handler would
  otherwise spool any body, whatever its size, to a temporary file before a view runs.
  (daphne buffers bodies itself before calling the application: notifyproject/daphne_body_limit.py
  applies the same limit there.)
- A NUL character in the path or query string (`?token=%00`): PostgreSQL refuses NUL in text,
  so a lookup with it failed as a 503 or a 500 in every view, consumer and admin page that
  reads a query parameter. HTTP answers 400; a WebSocket handshake is refused (403).
"""

import orjson

from notifyproject.api import HTTP_ERROR_CODES, error_body

PAYLOAD_TOO_LARGE = 413


def payload_too_large_body(max_bytes: int) -> bytes:
    return orjson.dumps(
        error_body(HTTP_ERROR_CODES[413][0], f"The request body is larger than {max_bytes} bytes.")
    )


def _declared_length(scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _has_nul(scope) -> bool:
    query = scope.get("query_string", b"")
    return "\x00" in scope.get("path", "") or b"\x00" in query or b"%00" in query


async def _answer(send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Wraps the application for the `http` and `websocket` protocols."""

    def __init__(self, inner, max_body_bytes: int):
        self.inner = inner
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and _has_nul(scope):
            await receive()  # websocket.connect; closing before accept refuses the handshake
            await send({"type": "websocket.close"})
            return None
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        if _has_nul(scope):
            message = "NUL characters are not allowed in the URL."
            return await _answer(send, 400, orjson.dumps(error_body("bad_request", message)))
        declared = _declared_length(scope)
        if declared is not None:
            if declared > self.max_body_bytes:
                return await _answer(send, PAYLOAD_TOO_LARGE, payload_too_large_body(self.max_body_bytes))
            # The server frames the body by its Content-Length: it cannot grow past it.
            return await self.inner(scope, receive, send)
        limited = _LimitedBody(receive, send, self.max_body_bytes)
        return await self.inner(scope, limited.receive, limited.send)


class _LimitedBody:
    """Counts body bytes as the application reads them; past the limit, answers 413 itself
    and tells the application the client left (Django then stops without a response)."""

    def __init__(self, receive, send, max_bytes: int):
        self._receive, self._send, self.max_bytes = receive, send, max_bytes
        self.received = 0
        self.refused = False

    async def receive(self):
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.max_bytes:
                self.refused = True
                await _answer(self._send, PAYLOAD_TOO_LARGE, payload_too_large_body(self.max_bytes))
                return {"type": "http.disconnect"}
        return message

    async def send(self, message):
        if not self.refused:
            await self._send(message)
