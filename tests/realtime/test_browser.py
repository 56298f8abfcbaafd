"""The demo page and clarion.js in real headless Chromium against a live daphne and worker."""

import json
import os

import pytest
from django.conf import settings as django_settings

from delivery.models import Notification
from delivery.services import inbox_ack
from tests.delivery.factories import device, send
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


# -- Read everywhere ----------------------------------------------------------------------------
@pytest.fixture
def push_service(settings):
    """The local fake push service (plain HTTP on loopback) with VAPID configured in this process."""
    from tests.fakes.webpush import FakePushService, generate_vapid_keypair

    settings.VAPID_PRIVATE_KEY, settings.VAPID_PUBLIC_KEY = generate_vapid_keypair()
    settings.VAPID_SUBJECT = "mailto:ops@example.com"
    settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = True
    with FakePushService() as fake:
        yield fake


SHOWN_NOTIFICATIONS_JS = """async () => {
  const registration = await navigator.serviceWorker.ready;
  return (await registration.getNotifications()).map(n => ({title: n.title, body: n.body, tag: n.tag}));
}"""


def test_clarion_js_clears_a_message_read_while_long_polling(
    start_web, start_worker, page, alice_with_password
):
    web = start_web()
    start_worker()
    sign_in(page, web, "?transport=poll")
    page.wait_for_function("window.clarionDemo.statuses.includes('polling')")
    wait_online(alice_with_password)
    notification = send({"users": ["alice"]}, title="read over long-polling")
    page.wait_for_function(f"window.clarionDemo.received.some(m => m.id === {notification.pk})")
    # The page acks what it receives; the read comes back in a poll answer and clears the item.
    page.wait_for_selector(f'#notifications li.read[data-id="{notification.pk}"]')
    assert page.evaluate("window.clarionDemo.client.transport") == "poll"


def _service_worker(web, browser):
    context = browser.new_context(bypass_csp=True)  # as the page fixture: the policy is tested elsewhere
    context.grant_permissions(["notifications"], origin=web.url)
    tab = context.new_page()
    tab.set_default_timeout(PAGE_TIMEOUT_MS)
    tab.goto(f"{web.url}/")
    scope = tab.evaluate(
        "navigator.serviceWorker.register('/sw.js')"
        ".then(() => navigator.serviceWorker.ready).then(r => r.scope)"
    )
    cdp = context.new_cdp_session(tab)
    registrations = {}
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda event: registrations.update(
            {r["scopeURL"]: r["registrationId"] for r in event["registrations"]}
        ),
    )
    cdp.send("ServiceWorker.enable")
    # Each evaluate lets Playwright dispatch the CDP events that arrived meanwhile.
    registration_id = wait_until(
        lambda: tab.evaluate("1") and registrations.get(scope), message="registration"
    )

    def deliver(plaintext: bytes) -> None:
        cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": web.url, "registrationId": registration_id, "data": plaintext.decode()},
        )

    return context, tab, deliver


def test_the_service_worker_closes_a_notification_read_on_another_device(
    start_web,
    browser,
    alice,
    push_service,
    eager_tasks,
    fan_out,
    django_capture_on_commit_callbacks,
):
    web = start_web()
    subscription = push_service.subscribe(application_server_key=django_settings.VAPID_PUBLIC_KEY)
    keys = subscription["keys"]
    device(alice, "webpush", token=subscription["endpoint"], p256dh=keys["p256dh"], auth=keys["auth"])
    read = send({"users": ["alice"]}, route="push", title="Lunch?", body="Bob asks")
    kept = send({"users": ["alice"]}, route="push", title="Still here", body="unread")
    fan_out(read.pk)
    fan_out(kept.pk)
    with django_capture_on_commit_callbacks(execute=True):
        assert inbox_ack(user=alice, notification_id=read.pk)  # on another device: withdrawn here
    # What the browser would get from its push service, decrypted by the fake with its keys.
    shown_read, shown_kept, withdrawal = (message.plaintext for message in push_service.messages)
    assert json.loads(withdrawal) == {"type": "read", "id": read.pk}

    context, tab, deliver = _service_worker(web, browser)
    try:
        # DevTools sometimes drops a push delivered while the idle worker is being started; a
        # re-delivery replaces rather than duplicates (one tag per message), so deliver until shown.
        def shown_after(payload: bytes, count: int):
            for _ in range(5):
                deliver(payload)
                try:
                    return wait_until(
                        lambda: (now := tab.evaluate(SHOWN_NOTIFICATIONS_JS)) and len(now) == count and now,
                        timeout=4,
                        message=f"{count} notifications shown",
                    )
                except AssertionError:
                    continue
            raise AssertionError(f"the service worker never showed {count} notifications")

        shown_after(shown_read, 1)
        shown = shown_after(shown_kept, 2)
        assert sorted(n["tag"] for n in shown) == sorted([f"clarion-{read.pk}", f"clarion-{kept.pk}"])

        remaining = shown_after(withdrawal, 1)  # closing again is harmless
        assert remaining == [{"title": "Still here", "body": "unread", "tag": f"clarion-{kept.pk}"}]
    finally:
        context.close()


def test_the_service_worker_shows_a_web_push_with_its_image_and_thread_tag(start_web, browser):
    """The payload the Web Push provider encrypts, delivered to the real sw.js through DevTools."""
    import json

    from django.utils import timezone

    from delivery.providers import PushMessage, PushOptions
    from delivery.providers.webpush import web_push_payload

    web = start_web()
    context = browser.new_context()
    context.grant_permissions(["notifications"], origin=web.url)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto(f"{web.url}/")
        cdp = context.new_cdp_session(page)
        registrations: list[dict] = []
        cdp.on(
            "ServiceWorker.workerRegistrationUpdated",
            lambda event: registrations.extend(event["registrations"]),
        )
        cdp.send("ServiceWorker.enable")
        page.evaluate("navigator.serviceWorker.register('/sw.js', {scope: '/'}).then(() => true)")
        page.evaluate("navigator.serviceWorker.ready.then(() => true)")

        def registered() -> bool:
            page.evaluate("0")  # lets Playwright dispatch the DevTools events that arrived
            return any(r["scopeURL"] == f"{web.url}/" for r in registrations)

        wait_until(registered, 30, message="the service worker's registration")
        registration_id = next(r["registrationId"] for r in registrations if r["scopeURL"] == f"{web.url}/")
        message = PushMessage(
            notification_id=7,
            title="Lunch?",
            body="Bob asks",
            data={"thread": "42"},
            url="",
            icon="",
            priority="normal",
            expires_at=timezone.now(),
            collapse_key="",
            options=PushOptions(badge=3, image="https://cdn.example/p.png", thread_id="thread-42"),
        )
        payload = web_push_payload(message).decode()
        assert json.loads(payload)["badge_count"] == 3
        shown_js = (
            "navigator.serviceWorker.ready.then(r => r.getNotifications())"
            ".then(ns => ns.map(n => ({title: n.title, body: n.body, tag: n.tag, image: n.image})))"
        )
        # DevTools sometimes drops a push that races the idle worker's start-up: deliver until shown
        # (a re-delivery replaces, one tag per thread).
        for _ in range(5):
            cdp.send(
                "ServiceWorker.deliverPushMessage",
                {"origin": web.url, "registrationId": registration_id, "data": payload},
            )
            try:
                wait_until(lambda: page.evaluate(shown_js), 4, message="the notification")
                break
            except AssertionError:
                continue
        (shown,) = page.evaluate(shown_js)
        assert shown == {
            "title": "Lunch?",
            "body": "Bob asks",
            "tag": "thread-42",
            "image": "https://cdn.example/p.png",
        }
    finally:
        context.close()
