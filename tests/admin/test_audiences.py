"""Audiences: saved filters over users, their conditions, the admin form and its live count."""

import pytest

from delivery.audiences import audience_summary, audience_users, usernames_parse
from delivery.models import Audience
from tests.delivery.factories import audience_population

pytestmark = pytest.mark.django_db


def names(audience: Audience) -> list[str]:
    return sorted(audience_users(audience).values_list("username", flat=True))


@pytest.fixture
def people(make_user):
    return audience_population(make_user)


class TestConditions:
    def test_each_condition(self, people):
        assert names(Audience(usernames="ann, dan\ngone, nobody")) == ["ann", "dan"]  # only active users
        assert names(Audience(topic="news")) == ["ann", "ben"]  # cat muted it
        assert names(Audience(platform="fcm")) == ["ann"]  # dan's phone is inactive
        assert names(Audience(seen_within_days=30)) == ["ann"]  # ben's phone was last seen 40 days ago
        assert names(Audience(staff="staff")) == ["ben"]
        assert names(Audience(staff="non_staff")) == ["ann", "cat", "dan"]
        assert names(Audience(group=people)) == ["ann", "dan"]

    def test_conditions_combine_with_and(self, people):
        assert names(Audience(topic="news", group=people)) == ["ann"]
        assert names(Audience(platform="apns", seen_within_days=60)) == ["ben"]
        assert names(Audience(platform="apns", seen_within_days=30)) == []

    def test_summary_and_usernames_parsing(self, people):
        audience = Audience(usernames="a, b", topic="news", platform="fcm", seen_within_days=7, group=people)
        assert audience_summary(audience) == (
            "2 named users, subscribed to “news”, on FCM, seen in the last 7 days, in group “editors”"
        )
        assert usernames_parse(" a,b\n\nc , a ") == ["a", "b", "c"]


class TestAdmin:
    ADD_URL = "/admin/delivery/audience/add/"
    PREVIEW_URL = "/admin/delivery/audience/preview/"

    def test_created_with_at_least_one_condition(self, staff_client, superuser, people):
        refused = staff_client.post(self.ADD_URL, {"name": "everyone", "staff": ""})
        assert refused.status_code == 200 and b"at least one condition" in refused.content
        response = staff_client.post(self.ADD_URL, {"name": "news", "topic": "news", "staff": ""})
        assert response.status_code == 302
        audience = Audience.objects.get()
        assert audience.created_by == superuser
        page = staff_client.get(f"/admin/delivery/audience/{audience.pk}/change/").content.decode()
        assert "2 users" in page  # "Matches now"

    def test_the_live_count_follows_the_form_as_typed(self, staff_client, people):
        assert staff_client.get(self.PREVIEW_URL, {"topic": "news"}).json() == {
            "recipients": 2,
            "message": "subscribed to “news”",
        }
        both = staff_client.get(self.PREVIEW_URL, {"topic": "news", "group": people.pk}).json()
        assert both["recipients"] == 1
        assert (
            staff_client.get(self.PREVIEW_URL, {"platform": "fcm", "seen_within_days": "x"}).json()[
                "recipients"
            ]
            == 1
        )  # the bad number is left out, the rest still previews

    def test_the_list_links_to_compose_for_the_audience(self, staff_client, people):
        audience = Audience.objects.create(name="news", topic="news")
        page = staff_client.get("/admin/delivery/audience/").content.decode()
        assert f"/admin/delivery/notification/compose/?send_to=audience&amp;audience={audience.pk}" in page
        assert "subscribed to “news”" in page
