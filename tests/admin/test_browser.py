"""The admin in a real browser against real processes: headless Chromium, daphne, a Celery worker.

A staff user composes a notification to alice, whose live test client (a WebSocket on the same
daphne, with her token) receives it and acknowledges it; the delivery log then shows it
delivered, and the dashboard counts it. Screenshots land in tests/artifacts/screenshots/.
"""

import json
from pathlib import Path

import pytest
from websockets.sync.client import connect

from delivery.models import Delivery, Notification
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# Written where `git status` does not see them (tests/artifacts/ is ignored); docs/screenshots/
# holds the copies docs/admin.md shows.
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BROWSER_TIMEOUT_MS = 20_000
RECV_TIMEOUT_SECS = 20


@pytest.fixture
def browser_page(monkeypatch):
    """A Chromium page. Playwright's sync API keeps an event loop running on this thread, so
    Django's guard against ORM calls from async code must be told these calls are synchronous."""
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        yield page
        browser.close()


def log_in(page, web, next_url: str) -> None:
    page.goto(f"{web.url}/admin/login/?next={next_url}")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "ops-password-123")
    page.click("input[type=submit]")
    page.wait_for_url(f"{web.url}{next_url}")


def users_online(user_id: int) -> bool:
    from realtime.presence import users_online

    return user_id in users_online([user_id])


def test_compose_reaches_a_live_client_whose_ack_shows_as_delivered(
    start_web, start_worker, superuser, alice, alice_client, browser_page
):
    from playwright.sync_api import expect

    web = start_web()
    start_worker()
    page = browser_page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    with connect(f"{web.ws_url}/ws/v1/notifications/?token={alice_client.token}", open_timeout=10) as ws:
        wait_until(lambda: users_online(alice.pk), message="alice's client to be online")

        # Compose: the live preview counts alice before anything is sent.
        log_in(page, web, "/admin/delivery/notification/compose/")
        page.fill("#id_users", "alice")
        page.fill("#id_title", "Lunch at noon?")
        page.fill("#id_body", "Bob: the usual place.")
        page.fill("#id_data", '{"thread": "42"}')
        expect(page.locator("#clarion-preview-count")).to_have_text("1")
        page.screenshot(path=SCREENSHOTS / "compose.png", full_page=True)
        page.click("input[name=_send]")
        page.wait_for_url("**/admin/delivery/notification/*/change/")
        notification = Notification.objects.get(title="Lunch at noon?")
        assert notification.sender_user_id == superuser.pk
        expect(page.locator(".messagelist")).to_contain_text(f"Notification #{notification.pk} queued")

        # The live client receives it and acknowledges it.
        message = json.loads(ws.recv(timeout=RECV_TIMEOUT_SECS))
        assert (message["type"], message["id"], message["title"], message["data"]) == (
            "notification",
            notification.pk,
            "Lunch at noon?",
            {"thread": "42"},
        )
        ws.send(json.dumps({"type": "ack", "id": notification.pk}))
        wait_until(
            lambda: (
                list(Delivery.objects.filter(notification=notification).values_list("channel", "status"))
                == [("realtime", "delivered")]
            ),
            message="the ack to be recorded",
        )

    # The delivery log shows it delivered; so does the notification's own page.
    page.goto(f"{web.url}/admin/delivery/delivery/?notification={notification.pk}")
    row = page.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td.field-status")).to_have_text("Delivered")
    expect(row.locator("td.field-user")).to_have_text("alice")
    expect(row.locator("td.field-channel")).to_have_text("Realtime")
    page.screenshot(path=SCREENSHOTS / "delivery-log.png", full_page=True)

    page.goto(f"{web.url}/admin/delivery/notification/{notification.pk}/change/")
    expect(page.locator("#clarion-delivery-log .clarion-status")).to_have_text(["delivered"])
    page.screenshot(path=SCREENSHOTS / "notification.png", full_page=True)

    # The dashboard counts it in both windows, with a chart per figure.
    page.goto(f"{web.url}/admin/delivery/deliverydashboard/")
    for window in ("24h", "7d"):
        realtime = page.locator(f"#window-{window} .clarion-channel-table tr[data-channel=realtime] td")
        expect(realtime.first).to_have_text("1")
    expect(page.locator("svg.clarion-chart")).to_have_count(10)
    expect(page.locator("#clarion-connected .clarion-tile-value")).not_to_be_empty()
    page.screenshot(path=SCREENSHOTS / "dashboard.png", full_page=True)
