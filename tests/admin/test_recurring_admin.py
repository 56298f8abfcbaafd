"""Recurring notifications are reachable from the admin's home page and their pages render.

How a definition becomes a beat task, and fires, is tested in tests/delivery/test_recurring.py.
"""

import pytest

from delivery.models import RecurringNotification
from delivery.recurring import recurring_save

pytestmark = pytest.mark.django_db


def test_reachable_from_the_admin_home_and_listed(staff_client):
    home = staff_client.get("/admin/").content.decode()
    assert "/admin/delivery/recurringnotification/" in home
    recurring_save(
        RecurringNotification(name="digest", crontab="0 9 * * 1", target_topic="news", title="Digest")
    )
    page = staff_client.get("/admin/delivery/recurringnotification/").content.decode()
    assert "digest" in page and "cron 0 9 * * 1 (UTC)" in page and "topic news" in page
    assert staff_client.get("/admin/delivery/recurringnotification/add/").status_code == 200


def test_the_home_page_links_every_part_of_the_product_admin(staff_client):
    home = staff_client.get("/admin/").content.decode()
    for url in (
        "/admin/delivery/notification/",
        "/admin/delivery/delivery/",
        "/admin/delivery/audience/",
        "/admin/delivery/deliverydashboard/",
        "/admin/identities/apikey/",
        "/admin/devices/device/",
    ):
        assert url in home, url
