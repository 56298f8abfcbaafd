"""clarion.js in a reconnect storm, in headless Chromium against a live daphne: an established
socket dropped by a restart comes back within `reconnectWindowMs`, and failed handshakes after
that do not switch it to long-polling. The page's clock is Playwright's, so no test waits 10 s."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.realtime.test_browser import CHROMIUM, browser, page  # noqa: F401 - fixtures
from tests.support.processes import wait_until

pytestmark = [pytest.mark.django_db(transaction=True)]
assert CHROMIUM

RECONNECT_WINDOW_MS = 10_000
PAGE_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def statuses(page):  # noqa: F811 - the fixture's page
    return page.evaluate("window.statuses")


def seen(page, status: str, times: int = 1) -> None:  # noqa: F811
    """Wait (in real time: the page's own clock is the test's) until `status` was reported `times` times."""
    wait_until(
        lambda: [name for name, _ in statuses(page)].count(status) >= times,
        message=f"status {status!r} {times} times: {statuses(page)}",
    )


def test_a_dropped_established_socket_reconnects_within_the_window_and_stays_on_websockets(
    start_web,
    page,  # noqa: F811
    alice,
    client_for,
):
    # Given a page whose random numbers are all 0.9 and whose clock the test moves, with a
    # socket open for more than 10 s
    web = start_web()
    token = client_for(alice).token
    page.add_init_script("Math.random = () => 0.9;")
    page.clock.install(time=PAGE_EPOCH)
    page.goto(f"{web.url}/")
    page.clock.pause_at(PAGE_EPOCH + timedelta(seconds=1))  # from here timers fire only when run_for says
    page.evaluate(
        """([url, token]) => {
            window.statuses = [];
            const clarion = new Clarion({url, token, transport: "auto", autoAck: false});
            clarion.on("status", (status, detail) => window.statuses.push([status, detail.inMs ?? null]));
            clarion.connect();
        }""",
        [web.url, token],
    )
    seen(page, "open")
    page.clock.run_for(11_000)

    # When the server goes away without a close frame
    web.stop()

    # Then the first reconnect waits random(0, reconnectWindowMs), not the first back-off step
    seen(page, "reconnecting")
    assert statuses(page)[-1] == ["reconnecting", 0.9 * RECONNECT_WINDOW_MS]

    # and the handshakes that fail while the server is down back off and stay on WebSockets
    page.clock.run_for(0.9 * RECONNECT_WINDOW_MS)
    seen(page, "reconnecting", 2)
    page.clock.run_for(500)
    seen(page, "reconnecting", 4)
    delays = [in_ms for status, in_ms in statuses(page) if status == "reconnecting" and in_ms is not None]
    assert delays == [0.9 * RECONNECT_WINDOW_MS, 0.9 * 500, 0.9 * 1000]
    assert "polling" not in [status for status, _ in statuses(page)]

    # and once the server is back, the socket opens again
    start_web(port=web.port)
    page.clock.run_for(1_000)
    seen(page, "open", 2)
