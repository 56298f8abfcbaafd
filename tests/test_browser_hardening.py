"""The demo page, the API docs and the admin work in real headless Chromium under the
Content-Security-Policy, load nothing from outside the instance, and report no violation."""

import os
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from notifyproject.csp import HEADER
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
PAGE_TIMEOUT_MS = 60_000
# Every violation the page sees, whether or not Chromium also logs it to the console.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop runs on this thread
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_context().new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.add_init_script(RECORD_VIOLATIONS)
            yield page
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class Watch:
    """What a page asked for, and what the browser refused or complained about."""

    def __init__(self, page, web):
        self.page, self.web = page, web
        self.console_errors: list[str] = []
        self.foreign_requests: list[str] = []
        self.documents_without_csp: list[str] = []
        self.failed_loads: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console_errors.append(f"pageerror: {error}"))
        page.on("request", self._request)
        page.on("response", self._response)

    def _console(self, message):
        # A failed load is reported by _response, with its URL.
        if message.text.startswith("Failed to load resource"):
            return
        if message.type == "error" or "Content Security Policy" in message.text:
            self.console_errors.append(message.text)

    def _request(self, request):
        if urlsplit(request.url).scheme in ("data", "blob"):
            return
        if not request.url.startswith((self.web.url, self.web.ws_url)):
            self.foreign_requests.append(request.url)

    def _response(self, response):
        # The browser's own favicon probe is the only request a page does not make itself.
        if response.status >= 400 and urlsplit(response.url).path != "/favicon.ico":
            self.failed_loads.append(f"{response.status} {response.url}")
        if response.request.resource_type == "document" and HEADER.lower() not in response.headers:
            self.documents_without_csp.append(response.url)

    def assert_clean(self):
        violations = self.page.evaluate("window.__cspViolations")
        assert violations == [], violations
        assert self.console_errors == [], self.console_errors
        assert self.foreign_requests == [], self.foreign_requests
        assert self.documents_without_csp == [], self.documents_without_csp
        assert self.failed_loads == [], self.failed_loads


def test_the_demo_page_signs_in_and_receives_under_the_policy(start_web, browser_page, alice):
    alice.set_password("correct horse battery")
    alice.save()
    web = start_web()
    page = browser_page
    watch = Watch(page, web)
    page.goto(f"{web.url}/")
    page.fill("#username", "alice")
    page.fill("#password", "correct horse battery")
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#live:not(.hidden)")
    # Not wait_for_function: its in-page polling evaluates a string, which the policy refuses.
    wait_until(lambda: page.evaluate("window.clarionDemo.statuses.includes('open')"), message="socket open")
    page.click("#send-test")
    page.wait_for_selector("#notifications li")
    watch.assert_clean()


def test_the_api_docs_render_from_the_instance_under_the_policy(start_web, browser_page):
    from playwright.sync_api import expect

    web = start_web()
    page = browser_page
    watch = Watch(page, web)
    page.goto(f"{web.url}/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Clarion API")
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible()
    operations.first.locator(".opblock-summary").click()  # expanding one runs more of the UI
    expect(page.locator(".opblock.is-open")).to_have_count(1)
    watch.assert_clean()


def test_the_admin_works_under_the_policy(start_web, browser_page, make_user, alice):
    from playwright.sync_api import expect

    make_user("ops", is_staff=True, is_superuser=True, password="ops-password-123")
    web = start_web()
    page = browser_page
    watch = Watch(page, web)
    page.goto(f"{web.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "ops-password-123")
    page.click("input[type=submit]")
    page.wait_for_url(f"{web.url}/admin/")
    # Compose: its live preview (a script of ours fetching from the instance) counts alice.
    page.goto(f"{web.url}/admin/delivery/notification/compose/")
    page.fill("#id_users", "alice")
    expect(page.locator("#clarion-preview-count")).to_have_text("1")
    page.fill("#id_title", "Under the policy")
    page.click("input[name=_send]")
    page.wait_for_url("**/admin/delivery/notification/*/change/")
    for path in (
        "/admin/delivery/notification/",
        "/admin/delivery/delivery/",
        "/admin/devices/device/",
        "/admin/delivery/deliverydashboard/",
        "/admin/auth/user/add/",
    ):
        response = page.goto(f"{web.url}{path}")
        assert response.status == 200, path
    watch.assert_clean()


def test_pages_carry_the_policy_and_the_service_worker_does_not(client):
    for path in ("/", "/api/docs/", "/admin/login/"):
        assert client.get(path)[HEADER] == settings.CLARION_CONTENT_SECURITY_POLICY, path
    assert HEADER not in client.get("/sw.js")
