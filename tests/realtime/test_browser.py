"""The demo page and clarion.js in real headless Chromium against a live daphne and worker."""

import os

import pytest

from delivery.models import Notification
from tests.delivery.factories import send
from tests.realtime.conftest import wait_online
from tests.support.processes import wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="needs Debian's chromium"),
]
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
PAGE_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, which makes Django
    # refuse ORM calls from the test body; the test body is still plain synchronous code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    # wait_for_function polls by evaluating its string in the page, which the demo page's
    # Content-Security-Policy (no 'unsafe-eval') refuses; tests/test_browser_hardening.py
    # drives the page under the policy.
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    yield page
    context.close()


@pytest.fixture
def alice_with_password(alice):
    alice.set_password("correct horse battery")
    alice.save()
    return alice


def sign_in(page, web, query: str = ""):
    page.goto(f"{web.url}/{query}")
    page.fill("#username", "alice")
    page.fill("#password", "correct horse battery")
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#live:not(.hidden)")


def received_ids(page) -> list[int]:
    return page.evaluate("window.clarionDemo.received.map(m => m.id)")


def test_the_demo_page_receives_a_notification_live(start_web, start_worker, page, alice_with_password):
    web = start_web()
    start_worker()
    sign_in(page, web)
    page.wait_for_function("window.clarionDemo.statuses.includes('open')")
    page.click("#send-test")
    page.wait_for_selector("#notifications li")
    [item_id] = received_ids(page)
    notification = Notification.objects.get(pk=item_id)
    assert notification.target == {"users": ["alice"]}
    assert page.inner_text("#notifications li .title") == notification.title
    # auto-ack: the ack reached the server and came back as `read`
    page.wait_for_selector(f'#notifications li.read[data-id="{item_id}"]')


def test_the_page_reconnects_after_a_server_restart_and_gets_what_it_missed_once(
    start_web, start_worker, page, alice_with_password
):
    web = start_web()
    start_worker()
    sign_in(page, web)
    page.wait_for_function("window.clarionDemo.statuses.includes('open')")
    wait_online(alice_with_password)
    before = send({"users": ["alice"]}, title="before")
    page.wait_for_function(f"window.clarionDemo.received.some(m => m.id === {before.pk})")

    web.stop()
    missed = [send({"users": ["alice"]}, title=f"missed {n}", route="all").pk for n in range(3)]
    wait_until(
        lambda: Notification.objects.filter(pk__in=missed, status="dispatched").count() == 3,
        message="the missed sends dispatched",
    )
    start_web(port=web.port)
    page.wait_for_function(
        f"{missed}.every(id => window.clarionDemo.received.some(m => m.id === id))", timeout=90_000
    )
    after = send({"users": ["alice"]}, title="after")
    page.wait_for_function(f"window.clarionDemo.received.some(m => m.id === {after.pk})", timeout=90_000)
    ids = received_ids(page)
    assert sorted(ids) == sorted([before.pk, *missed, after.pk])  # each exactly once


def test_with_websockets_refused_long_polling_delivers(start_web, start_worker, page, alice_with_password):
    web = start_web()
    start_worker()
    page.route_web_socket("**/ws/v1/notifications/**", lambda socket: socket.close(code=1011))
    sign_in(page, web)
    page.wait_for_function("window.clarionDemo.statuses.includes('polling')")
    wait_online(alice_with_password)  # the waiting poll counts as online
    notification = send({"users": ["alice"]}, title="over long-polling")
    page.wait_for_function(f"window.clarionDemo.received.some(m => m.id === {notification.pk})")
    transports = page.evaluate("window.clarionDemo.received.map(m => m.transport)")
    assert transports == ["poll"]
    assert received_ids(page) == [notification.pk]
