"""Secrets never reach a log line: credentials in logged URLs are masked.

Two writers put request paths in logs. daphne's access log is written by its action logger
straight to a stream (the HTTP line carries the query string: `GET /api/v1/poll/?token=…`),
so the server's `log_action` is wrapped to mask the path first. Everything else (Django,
Channels, Celery in the web process, ours) goes through `logging`, whose console formatter
masks the finished line, tracebacks included. See docs/security.md.
"""

import functools
import logging
import re

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
# `name=value` pairs whose name says credential (ours is `token`, end-user tokens in `?token=`
# from older clients; `access_token`, `api_key`, `csrftoken`, `sig` ... are common in URLs that
# third parties hand us, such as webhooks), wherever they stand in a line: in a query string,
# or in a message.
_SECRET_PAIR = re.compile(
    r"(?i)(?<![\w.-])((?:[\w.-]*(?:token|key|secret|password|passwd|signature|sessionid)|sig|auth)=)[^&;#\s\"'<>,)]*"
)


def redact_secrets(text: str) -> str:
    """`text` with the value of every credential `name=value` pair replaced by [redacted]."""
    if "=" not in text:
        return text
    return _SECRET_PAIR.sub(lambda match: match.group(1) + REDACTED, text)


class RedactingFormatter(logging.Formatter):
    """The console formatter: the whole formatted record (message and traceback) is masked."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_secrets(super().format(record))


def redact_daphne_access_log() -> bool:
    """Mask the path daphne hands its access log (and `runserver`'s) for every request.

    daphne has no hook for this, so `Server.log_action`, its one dispatch point to action
    loggers, is wrapped; if a daphne release drops it, this says so in the log at start-up
    (tests/test_log_redaction.py fails on the same release).
    """
    try:
        from daphne.server import Server
    except ImportError:  # served by something else: nothing of daphne's to mask
        return False
    original = getattr(Server, "log_action", None)
    if original is None:
        logger.warning("daphne.server.Server.log_action is gone: daphne's access log is not redacted")
        return False
    if getattr(original, "redacts_secrets", False):
        return True

    @functools.wraps(original)
    def log_action(self, protocol, action, details):
        if not self.action_logger:
            return None  # no access log (no --access-log): nothing to mask, per request
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact_secrets(details["path"])}
        return original(self, protocol, action, details)

    log_action.redacts_secrets = True
    Server.log_action = log_action
    return True


def drop_twisted_access_log() -> bool:
    """Twisted's own access line per request (HTTPFactory.log), which daphne discards.

    daphne points Twisted's log at nothing (verbosity 0-1, as deployed) or at `logging`
    unredacted (2+); its own access log (`--access-log`, masked above) is the one to use. The
    discarded line's formatting was 3 % of a long-poll's CPU (docs/benchmarks.md, W8). If daphne's
    factory is gone, this says so and changes nothing.
    """
    try:
        from daphne.http_protocol import HTTPFactory
    except ImportError:  # served by something else
        return False
    if not callable(getattr(HTTPFactory, "log", None)):
        logger.warning("daphne's HTTPFactory.log is gone: Twisted's access line is left as it is")
        return False
    HTTPFactory.log = _no_access_line
    return True


def _no_access_line(self, request) -> None:
    """daphne.http_protocol.HTTPFactory.log: daphne's action logger writes the access log."""
