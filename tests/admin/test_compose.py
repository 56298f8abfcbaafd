"""Composing in the admin: the API's rules, the same service, nothing sent inside the request."""

from datetime import timedelta

import pytest
from django.utils import timezone

from delivery.models import Audience, Delivery, InboxMessage, Notification
from devices.models import MutedTopic, TopicSubscription
from tests.delivery.factories import device

pytestmark = pytest.mark.django_db

COMPOSE_URL = "/admin/delivery/notification/compose/"
PREVIEW_URL = "/admin/delivery/notification/compose/preview/"


def compose_form(**overrides) -> dict:
    data = {
        "send_to": "users",
        "users": "",
        "topic": "",
        "devices": "",
        "audience": "",
        "title": "Lunch?",
        "body": "Bob: lunch?",
        "data": '{"thread": "42"}',
        "url": "",
        "icon": "",
        "route": "auto",
        "priority": "normal",
        "ttl": "3600",
        "collapse_key": "",
        "send_at": "",
        "idempotency_key": "form-1",
        "_send": "Send",
    }
    data.update(overrides)
    return data


def nothing_written() -> bool:
    return not (Notification.objects.exists() or Delivery.objects.exists() or InboxMessage.objects.exists())


class TestPermission:
    def test_staff_without_the_send_permission_gets_403(self, viewer_client, alice):
        assert viewer_client.get(COMPOSE_URL).status_code == 403
        assert viewer_client.post(COMPOSE_URL, compose_form(users="alice")).status_code == 403
        assert viewer_client.get(PREVIEW_URL, {"send_to": "broadcast"}).status_code == 403
        assert nothing_written()

    def test_the_add_button_leads_to_compose_only_for_senders(self, viewer_client, staff_client):
        page = viewer_client.get("/admin/delivery/notification/")
        assert page.status_code == 200 and b"/admin/delivery/notification/add/" not in page.content
        response = staff_client.get("/admin/delivery/notification/add/")
        assert response.status_code == 302 and response["Location"] == COMPOSE_URL

    def test_a_user_with_only_the_send_permission_may_compose(self, sender_client, alice):
        assert sender_client.get(COMPOSE_URL).status_code == 200
        assert sender_client.post(COMPOSE_URL, compose_form(users="alice")).status_code == 302


class TestSend:
    def test_a_send_records_the_notification_and_sends_nothing_in_the_request(
        self, staff_client, superuser, alice, django_capture_on_commit_callbacks
    ):
        device(alice)
        with django_capture_on_commit_callbacks() as callbacks:
            response = staff_client.post(
                COMPOSE_URL,
                compose_form(users="alice\nnobody", route="all", priority="high", collapse_key="t-42"),
            )
        notification = Notification.objects.get()
        assert response.status_code == 302
        assert response["Location"] == f"/admin/delivery/notification/{notification.pk}/change/"
        assert notification.sender_user == superuser and notification.sender_label == f"user:{superuser.pk}"
        assert notification.target == {"users": ["alice", "nobody"], "broadcast": False}
        assert notification.unknown == {"users": ["nobody"], "devices": []}
        assert (notification.title, notification.data, notification.route, notification.priority) == (
            "Lunch?",
            {"thread": "42"},
            "all",
            "high",
        )
        assert (notification.ttl, notification.collapse_key, notification.status) == (3600, "t-42", "queued")
        # The fan-out is enqueued for after the commit; nothing was delivered inside the request.
        assert callbacks and not Delivery.objects.exists() and not InboxMessage.objects.exists()

    def test_the_common_push_options_are_stored_on_the_notification(self, staff_client, alice):
        response = staff_client.post(
            COMPOSE_URL,
            compose_form(
                users="alice", badge="4", sound="default", image="https://cdn.example/p.png", silent="on"
            ),
        )
        assert response.status_code == 302
        assert Notification.objects.get().push == {
            "badge": 4,
            "sound": "default",
            "image": "https://cdn.example/p.png",
            "silent": True,
        }

    @pytest.mark.parametrize(
        ("fields", "field_in_error"),
        [({"image": "http://cdn.example/p.png"}, "image"), ({"badge": "-1"}, "badge")],
    )
    def test_a_push_option_a_provider_would_refuse_is_a_form_error(
        self, staff_client, alice, fields, field_in_error
    ):
        response = staff_client.post(COMPOSE_URL, compose_form(users="alice", **fields))
        assert list(response.context["form"].errors) == [field_in_error], response.context["form"].errors
        assert nothing_written()

    def test_a_resubmitted_form_sends_once(self, staff_client, alice):
        staff_client.post(COMPOSE_URL, compose_form(users="alice"))
        again = staff_client.post(COMPOSE_URL, compose_form(users="alice"), follow=True)
        assert Notification.objects.count() == 1
        assert b"already sent as" in again.content

    def test_a_send_at_in_the_future_is_scheduled(self, staff_client, alice):
        send_at = (timezone.now() + timedelta(hours=2)).replace(second=0, microsecond=0)
        staff_client.post(
            COMPOSE_URL, compose_form(users="alice", send_at=send_at.strftime("%Y-%m-%dT%H:%M"))
        )
        notification = Notification.objects.get()
        assert notification.status == "scheduled" and notification.send_at == send_at

    @pytest.mark.parametrize(
        ("fields", "field_in_error"),
        [
            ({"users": ""}, "users"),
            ({"send_to": "topic", "topic": "no spaces allowed"}, "topic"),
            ({"title": "", "body": "", "data": "{}"}, "__all__"),
            ({"title": "t" * 1000, "body": "b" * 3500}, "__all__"),  # over the providers' 4 KB together
            ({"body": "x" * 5000}, "body"),
            ({"data": "[1, 2]"}, "data"),
            ({"ttl": "99999999"}, "ttl"),
            ({"url": "not a url"}, "url"),
            ({"send_to": "devices", "devices": "1, two"}, "devices"),
        ],
    )
    def test_the_api_rules_apply_and_a_refused_form_writes_nothing(
        self, staff_client, alice, fields, field_in_error
    ):
        response = staff_client.post(COMPOSE_URL, compose_form(**{"users": "alice", **fields}))
        assert response.status_code == 200 and b"errornote" in response.content
        assert list(response.context["form"].errors) == [field_in_error], response.context["form"].errors
        assert nothing_written()

    def test_a_broadcast_and_a_topic_send(self, staff_client, alice, bob):
        TopicSubscription.objects.create(user=alice, topic="news")
        staff_client.post(COMPOSE_URL, compose_form(send_to="topic", topic="news", idempotency_key="a"))
        staff_client.post(COMPOSE_URL, compose_form(send_to="broadcast", idempotency_key="b"))
        topic, everyone = Notification.objects.order_by("pk")
        assert (topic.target["topic"], topic.recipients) == ("news", 1)
        assert (everyone.target["broadcast"], everyone.recipients) == (True, 3)  # alice, bob and ops


class TestTestToMe:
    def test_it_goes_to_the_staff_user_only(
        self, staff_client, superuser, alice, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks() as callbacks:
            response = staff_client.post(
                COMPOSE_URL, {**compose_form(send_to="broadcast"), "_test": "Send a test to me"}
            )
        notification = Notification.objects.get()
        assert response.status_code == 200  # the form again, filled in, for the real send
        assert notification.target == {"users": ["ops"], "broadcast": False}
        assert notification.recipients == 1 and notification.sender_user == superuser
        assert b"queued for you (ops)" in response.content and b'value="Lunch?"' in response.content
        assert callbacks and not Delivery.objects.exists()


class TestDryRun:
    def test_a_dry_run_reports_and_writes_nothing(
        self, staff_client, alice, bob, django_capture_on_commit_callbacks
    ):
        device(alice, "fcm")
        device(alice, "apns")
        device(bob, "fcm", active=False)
        with django_capture_on_commit_callbacks() as callbacks:
            response = staff_client.post(
                COMPOSE_URL, {**compose_form(users="alice, bob, ghost"), "_dry_run": "Dry run"}
            )
        assert response.status_code == 200
        assert response.context["dry_run"].recipients == 2
        assert response.context["dry_run"].push_devices == {"apns": 1, "fcm": 1}
        assert response.context["dry_run"].unknown_users == ["ghost"]
        assert b"nothing was written or sent" in response.content
        assert nothing_written() and callbacks == []

    def test_a_realtime_only_dry_run_counts_no_push_devices(self, staff_client, alice):
        device(alice)
        response = staff_client.post(
            COMPOSE_URL, {**compose_form(users="alice", route="realtime"), "_dry_run": "Dry run"}
        )
        assert response.context["dry_run"].push_devices == {}
        assert nothing_written()


class TestAudiences:
    @pytest.fixture
    def android_news(self, make_user):
        readers = [make_user(f"reader{i}") for i in range(4)]
        for reader in readers:
            TopicSubscription.objects.create(user=reader, topic="news")
        device(readers[0], "fcm")
        device(readers[1], "fcm")
        device(readers[2], "apns")
        device(readers[3], "fcm")
        MutedTopic.objects.create(user=readers[3], topic="news")
        return Audience.objects.create(name="Android news readers", topic="news", platform="fcm")

    def test_an_audience_send_records_the_audience_and_its_conditions(
        self, staff_client, android_news, fan_out
    ):
        response = staff_client.post(COMPOSE_URL, compose_form(send_to="audience", audience=android_news.pk))
        assert response.status_code == 302
        notification = Notification.objects.get()
        assert notification.target == {} and notification.audience == android_news
        assert notification.audience_conditions["topic"] == "news"
        assert notification.audience_conditions["platform"] == "fcm"
        # reader2 is on APNs only; reader3 muted the topic.
        assert notification.recipients == 2
        fan_out(notification.pk)
        reached = InboxMessage.objects.filter(notification=notification).values_list("user__username")
        assert sorted(name for (name,) in reached) == ["reader0", "reader1"]
        page = staff_client.get(f"/admin/delivery/notification/{notification.pk}/change/").content.decode()
        assert "saved audience “Android news readers”" in page

    def test_an_audience_dry_run_counts_its_users_and_devices(self, staff_client, android_news):
        response = staff_client.post(
            COMPOSE_URL, {**compose_form(send_to="audience", audience=android_news.pk), "_dry_run": "Dry run"}
        )
        assert response.context["dry_run"].recipients == 2
        assert response.context["dry_run"].push_devices == {"fcm": 2}
        assert nothing_written()

    def test_an_empty_audience_is_refused(self, staff_client):
        empty = Audience.objects.create(name="nobody", topic="nothing-here")
        response = staff_client.post(COMPOSE_URL, compose_form(send_to="audience", audience=empty.pk))
        assert b"matches no users right now" in response.content and nothing_written()

    def test_the_live_preview_counts_each_kind_of_target(self, staff_client, android_news, alice):
        def count(**params):
            return staff_client.get(PREVIEW_URL, params).json()

        assert count(send_to="users", users="alice, reader0, ghost") == {
            "recipients": 2,
            "message": "1 unknown",
        }
        assert count(send_to="topic", topic="news")["recipients"] == 3  # the muted reader is left out
        assert count(send_to="broadcast")["recipients"] == 6  # four readers, alice, ops
        assert count(send_to="audience", audience=android_news.pk)["recipients"] == 2
        assert count(send_to="devices", devices="x")["recipients"] is None
        assert nothing_written()

    def test_the_compose_page_can_be_prefilled_for_an_audience(self, staff_client, android_news):
        response = staff_client.get(COMPOSE_URL, {"send_to": "audience", "audience": android_news.pk})
        assert response.context["form"].initial["audience"] == str(android_news.pk)
