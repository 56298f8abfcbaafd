"""The admin is Clarion's: its name, the product's models first, internals last, human labels,
and a delivery log that stays readable with long provider errors (in real Chromium)."""

import re

import pytest
from django.apps import apps

from tests.admin.test_browser import SCREENSHOTS as ARTIFACTS
from tests.admin.test_browser import browser_page, log_in  # noqa: F401 - fixture

LONG_ERROR = (
    'FCM answered 400 INVALID_ARGUMENT: {"error": {"code": 400, "message": "Request contains an invalid '
    'argument.", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", '
    '"errorCode": "INVALID_ARGUMENT"}]}} ' + "x" * 3000 + " " + "token-" * 400
)


@pytest.mark.django_db
def test_the_admin_is_named_clarion_and_lists_the_product_first_and_internals_last(staff_client):
    page = staff_client.get("/admin/").content.decode()
    assert "Django administration" not in page and "Django site admin" not in page
    assert 'id="site-name"><a href="/admin/">Clarion</a>' in page
    assert "<title>Push notifications | Clarion</title>" in page
    captions = re.findall(r'<caption>\s*<a href="[^"]*" class="section"[^>]*>([^<]+)</a>', page)
    assert captions[0] == "Notifications" and captions[-1] == "Internals", captions
    internals = page[page.index(">Internals</a>") :]
    for internal in ("Periodic tasks (beat)", "Crontabs (beat)", "Auth tokens (knox)"):
        assert internal in internals, internal
    notifications = page[page.index(">Notifications</a>") : page.index(">Internals</a>")]
    assert "Periodic tasks" not in notifications and "Auth tokens" not in notifications
    first_rows = re.findall(r"<th scope=\"row\"[^>]*>\s*<a href=\"[^\"]*\"[^>]*>([^<]+)</a>", notifications)
    assert first_rows[:2] == ["Notifications", "Deliveries"], first_rows


def test_fields_with_abbreviations_or_timestamps_have_human_labels():
    for app in ("delivery", "identities", "devices"):
        for model in apps.get_app_config(app).get_models():
            for field in model._meta.concrete_fields:
                default = field.name.replace("_", " ")
                if field.name in {"ttl", "url", "icon", "p256dh", "seq", "claim"} or (
                    field.name.endswith("_at") and field.name not in {"created_at", "updated_at"}
                ):
                    assert field.verbose_name != default, f"{model.__name__}.{field.name}: {default!r}"


@pytest.mark.django_db
def test_the_notification_page_labels_read_as_words(staff_client, delivery_rows):
    notification, _rows, _phones = delivery_rows(1)
    page = staff_client.get(f"/admin/delivery/notification/{notification.pk}/change/").content.decode()
    assert "TTL (seconds)" in page and ">Ttl" not in page and ">Url" not in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("width", [1280, 1920])
def test_delivery_log_rows_stay_short_with_long_errors(
    width,
    start_web,
    superuser,
    delivery_rows,
    browser_page,  # noqa: F811 - fixture
):
    _notification, rows, _phones = delivery_rows(4, status="failed", error=LONG_ERROR)
    web = start_web()
    page = browser_page
    page.set_viewport_size({"width": width, "height": 900})
    log_in(page, web, "/admin/delivery/delivery/")
    table_rows = page.locator("#result_list tbody tr")
    assert table_rows.count() >= len(rows)  # and the realtime rows of the send itself
    heights = [table_rows.nth(i).bounding_box()["height"] for i in range(table_rows.count())]
    assert max(heights) <= 90, heights  # three lines of error text at most
    cell = page.locator("#result_list tbody tr td.field-error_plain .clarion-error").first
    assert cell.get_attribute("title").startswith("FCM answered 400 INVALID_ARGUMENT")
    results = page.locator("#changelist .results")
    overflow = results.evaluate("element => element.scrollWidth - element.clientWidth")
    assert overflow <= 0, f"the log scrolls sideways by {overflow}px at {width}px"
    page.screenshot(path=ARTIFACTS / f"delivery-log-{width}.png", full_page=True)
