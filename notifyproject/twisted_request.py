"""Twisted's Content-Type parse, remembered per header value.

Twisted's `Request.requestReceived` parses the Content-Type of every POST through
`email.message.EmailMessage` (to find form bodies, whose arguments daphne never reads): a
twentieth of a send's CPU in daphne (docs/benchmarks.md, "A send to one user"). Clients send
the same few values over and over, and the parse is a pure function of the header's bytes,
so its answers are remembered (a bounded cache: the header is the client's to choose).

`twisted.web.http._parseContentType` is not a public API; it is used in this module only, and
`install` leaves Twisted as it is if the function is missing or not the one-argument function
this was written against.
"""

import functools
import inspect
import logging

logger = logging.getLogger(__name__)

CACHED_CONTENT_TYPES = 256


def install() -> bool:
    """Remember Twisted's Content-Type parses; False (Twisted unchanged) where it cannot."""
    try:
        from twisted.web import http
    except ImportError:
        return False
    parse = getattr(http, "_parseContentType", None)
    if getattr(parse, "cache_info", None) is not None:
        return True  # already installed
    if not callable(parse) or list(inspect.signature(parse).parameters) != ["line"]:
        logger.warning("Twisted's Content-Type parse is not the expected function; left as it is")
        return False
    http._parseContentType = functools.lru_cache(maxsize=CACHED_CONTENT_TYPES)(parse)
    return True
