"""The request body limit inside daphne, which reads a whole body before the application runs.

daphne's request (a Twisted `http.Request`) writes every body byte into a buffer, a temporary
file past 100 KB, and only calls the ASGI application once the body is complete: a client
declaring 2 GB held a connection, a file and disk space until it had sent 2 GB. Here the body
is refused as soon as it is known to be too large, declared (Content-Length over the limit:
before reading any of it) or actual (chunked or understated: when the running total passes
the limit). The client gets a 413 in the API's error shape, the connection is half-closed,
anything more it sends is read and dropped for a few seconds (so it sees the answer rather
than a reset), then the connection is cut.

Twisted's request hooks used here (gotLength, handleContentChunk, requestReceived) are not a
public API; they are used in this module only, and `install` checks they exist, leaving
notifyproject.request_guards to enforce the limit (after buffering) if they do not.
"""

import io
import logging

from notifyproject.request_guards import payload_too_large_body

logger = logging.getLogger(__name__)

# How long a refused connection keeps draining the client's body before it is cut: long enough
# for the 413 to reach a client still sending, short enough that it holds nothing for long.
REFUSED_LINGER_SECS = 5.0


def _discard(data: bytes) -> None:
    pass


def body_limited_request_class(base, max_body_bytes: int):
    """A subclass of daphne's request class that refuses bodies over `max_body_bytes`."""

    from twisted.web.http import HTTPChannel

    class BodyLimitedRequest(base):
        def gotLength(self, length):  # noqa: N802 - Twisted's name
            self._body_bytes = 0
            self._body_refused = False
            # HTTP/1.1 only: an HTTP/2 stream (daphne over TLS with ALPN) is answered through
            # its own framing, which the raw answer below would break; there the ASGI layer's
            # limit applies, after buffering.
            self._body_limited = isinstance(self.channel, HTTPChannel)
            if self._body_limited and length is not None and length > max_body_bytes:
                self.content = io.BytesIO()
                # Twisted answers `Expect: 100-continue` right after this call; a refused body
                # must not be invited.
                self.requestHeaders.removeHeader(b"expect")
                self._refuse_body()
                return
            super().gotLength(length)

        def handleContentChunk(self, data):  # noqa: N802 - Twisted's name
            if not self._body_limited:
                return super().handleContentChunk(data)
            if self._body_refused:
                return None
            self._body_bytes += len(data)
            if self._body_bytes > max_body_bytes:
                self._refuse_body()
                return None
            return super().handleContentChunk(data)

        def requestReceived(self, command, path, version):  # noqa: N802 - Twisted's name
            if getattr(self, "_body_refused", False):
                return  # answered already; the application never sees this request
            super().requestReceived(command, path, version)

        def _refuse_body(self) -> None:
            from twisted.internet import reactor

            self._body_refused = True
            channel = self.channel
            transport = channel.transport
            if self.content is not None and not isinstance(self.content, io.BytesIO):
                self.content.close()  # a temporary file: give its disk space back now
            self.content = io.BytesIO()
            body = payload_too_large_body(max_body_bytes)
            transport.write(
                b"HTTP/1.1 413 Payload Too Large\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                b"Connection: close\r\n\r\n" + body
            )
            # What the client still sends is read and dropped (Twisted does the same for data
            # after a non-persistent request), so it is not buffered and it does not reset the
            # connection before the client has read the answer.
            channel.dataReceived = _discard
            channel.setTimeout(None)
            half_close = getattr(transport, "loseWriteConnection", None)
            if half_close is not None:
                half_close()
                cut = reactor.callLater(REFUSED_LINGER_SECS, transport.abortConnection)
                self.notifyFinish().addBoth(lambda _result: cut.active() and cut.cancel())
            else:
                transport.loseConnection()

    return BodyLimitedRequest


def install(max_body_bytes: int) -> bool:
    """Make daphne's HTTP factory build body-limited requests; False (logged) if it cannot."""
    try:
        from daphne import http_protocol
        from twisted.web import http
    except ImportError:
        return False  # not served by daphne: request_guards alone applies the limit
    base = getattr(http_protocol, "WebRequest", None)
    hooks = ("gotLength", "handleContentChunk", "requestReceived", "notifyFinish")
    if base is None or not all(hasattr(http.Request, hook) for hook in hooks):
        logger.warning("daphne's request class has changed; request bodies are limited only after buffering")
        return False
    if getattr(base, "max_body_bytes_installed", None) == max_body_bytes:
        return True
    limited = body_limited_request_class(getattr(base, "unlimited_base", base), max_body_bytes)
    limited.max_body_bytes_installed = max_body_bytes
    limited.unlimited_base = getattr(base, "unlimited_base", base)
    http_protocol.WebRequest = limited
    return True
