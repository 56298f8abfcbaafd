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
    context = browser.new_context()
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


def demo_token(page) -> str:
    return page.evaluate("localStorage.getItem('clarion-demo:token')")


def assert_token_in_no_url_or_log(token: str, urls: list[str], web) -> None:
    assert urls and not [url for url in urls if token in url]
    assert token not in "".join(web.output)  # daphne's access log and every other line


def test_the_demo_page_receives_a_notification_live(start_web, start_worker, page, alice_with_password):
    web = start_web()
    start_worker()
    urls = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda socket: urls.append(socket.url))
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
    # The socket carried its token in Sec-WebSocket-Protocol, not in its URL.
    assert_token_in_no_url_or_log(demo_token(page), urls, web)


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
    urls = []
    page.on("request", lambda request: urls.append(request.url))
    sign_in(page, web)
    with page.expect_request(lambda request: "/api/v1/poll/" in request.url) as first_poll:
        page.wait_for_function("window.clarionDemo.statuses.includes('polling')")
    wait_online(alice_with_password)  # the waiting poll counts as online
    notification = send({"users": ["alice"]}, title="over long-polling")
    page.wait_for_function(f"window.clarionDemo.received.some(m => m.id === {notification.pk})")
    transports = page.evaluate("window.clarionDemo.received.map(m => m.transport)")
    assert transports == ["poll"]
    assert received_ids(page) == [notification.pk]
    token = demo_token(page)
    assert first_poll.value.all_headers()["authorization"] == f"Token {token}"
    assert_token_in_no_url_or_log(token, urls, web)


@pytest.mark.parametrize("transport", ["websocket", "poll"])
def test_a_product_page_on_another_origin_receives_with_the_token_out_of_every_url(
    start_web, start_worker, page, alice, client_for, transport
):
    web = start_web()
    start_worker()
    token = client_for(alice).token
    urls = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda socket: urls.append(socket.url))
    # Another origin than the server's URL (localhost, not 127.0.0.1), as a product's own web
    # app would be: the demo page there loads clarion.js; the client then talks cross-origin.
    page.goto(f"http://localhost:{web.port}/")
    page.evaluate(
        """([url, token, transport]) => {
            window.received = [];
            window.statuses = [];
            const clarion = new Clarion({url, token, transport, autoAck: false});
            clarion.on("notification", (message, info) => window.received.push([message.id, info.transport]));
            clarion.on("status", (status) => window.statuses.push(status));
            clarion.connect();
        }""",
        [web.url, token, transport],
    )
    page.wait_for_function("window.statuses.includes('open') || window.statuses.includes('polling')")
    wait_online(alice)
    notification = send({"users": ["alice"]}, title="cross-origin")
    page.wait_for_function(f"window.received.some(([id]) => id === {notification.pk})")
    assert page.evaluate("window.received") == [[notification.pk, transport]]
    assert_token_in_no_url_or_log(token, urls, web)
