"""No secret reaches a log line: daphne's access log and our logging mask `token=` values."""

import logging
import sys

import httpx
import pytest
from websockets.sync.client import connect

from notifyproject.logredact import RedactingFormatter
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_daphnes_access_log_never_shows_a_token(start_web, alice, client_for):
    web = start_web()
    token = client_for(alice).token
    assert httpx.get(f"{web.url}/api/v1/poll/?after=0&timeout=0&token={token}").status_code == 200
    assert httpx.get(f"{web.url}/api/v1/poll/?token=ct_{'0' * 64}").status_code == 401
    assert httpx.get(f"{web.url}/api/v1/inbox/?token={token}&after=0").status_code == 401  # header-only
    assert httpx.get(f"{web.url}/api/v1/nowhere/?token={token}").status_code == 404
    with connect(f"{web.ws_url}/ws/v1/notifications/?token={token}&after=0", open_timeout=10) as ws:
        ws.send('{"type": "ping"}')
        ws.recv(timeout=10)

    def logged() -> str:
        return "".join(web.output)

    wait_until(lambda: "/api/v1/nowhere/" in logged(), message="the access log lines")
    wait_until(lambda: "WSCONNECT" in logged(), message="the WebSocket's access log line")
    log = logged()
    assert token not in log and "0" * 64 not in log
    assert "GET /api/v1/poll/?after=0&timeout=0&token=[redacted]" in log


def test_the_console_formatter_masks_messages_and_tracebacks(settings):
    root_formatters = [handler.formatter for handler in logging.getLogger().handlers]
    formatter = next(f for f in root_formatters if isinstance(f, RedactingFormatter))  # from settings.LOGGING
    try:
        raise ValueError("GET https://hooks.example/p?sig=abc123 failed")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "django.request",
        logging.ERROR,
        __file__,
        1,
        "Error: %s",
        ("/api/v1/poll/?token=ct_secret1",),
        exc_info,
    )
    line = formatter.format(record)
    assert "ct_secret1" not in line and "abc123" not in line
    assert "/api/v1/poll/?token=[redacted]" in line and "?sig=[redacted]" in line
