"""POST/GET/DELETE /api/v1/webhooks/ and GET .../attempts/: ownership, validation, the secret once."""

import base64

import pytest

from delivery.webhooks.models import Webhook
from tests.conftest import assert_error

pytestmark = pytest.mark.django_db

URL = "/api/v1/webhooks/"


def register(client, url="https://hooks.example.com/clarion", events=("delivery.failed",), **extra):
    return client.post(URL, {"url": url, "events": list(events), **extra}, format="json")


class TestRegistration:
    def test_created_with_a_usable_secret_shown_once(self, api_key_client):
        client = api_key_client("send")
        response = register(client, events=["delivery.failed", "notification.read"], description="ops")
        assert response.status_code == 201, response.content
        body = response.json()
        assert set(body) == {"id", "url", "events", "description", "secret", "created_at"}
        assert body["url"] == "https://hooks.example.com/clarion"
        assert body["events"] == ["delivery.failed", "notification.read"]
        assert body["description"] == "ops"
        assert body["secret"].startswith("whsec_")
        assert len(base64.b64decode(body["secret"].removeprefix("whsec_"))) >= 24
        listed = client.get(URL).json()["results"]
        assert [w["id"] for w in listed] == [body["id"]]
        assert "secret" not in listed[0]
        assert body["secret"] not in client.get(URL).content.decode()

    def test_unknown_or_missing_events_are_400_naming_the_field(self, api_key_client):
        client = api_key_client("send")
        assert list(assert_error(register(client, events=["delivery.lost"]), 400)["fields"]) == ["events.0"]
        assert "events" in assert_error(register(client, events=[]), 400)["fields"]
        assert (
            "url"
            in assert_error(client.post(URL, {"events": ["delivery.sent"]}, format="json"), 400)["fields"]
        )
        assert Webhook.objects.count() == 0

    def test_needs_the_send_scope(self, api_key_client, anon):
        assert_error(register(api_key_client("read")), 403)
        assert_error(register(anon), 401)

    def test_end_users_cannot_register(self, alice_client):
        assert_error(register(alice_client), 403)


class TestPrivateUrls:
    @pytest.mark.parametrize(
        "url",
        [
            "https://127.0.0.1/hook",
            "https://localhost/hook",
            "https://10.0.0.8/hook",
            "https://[::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://127.1/hook",
            "https://0x7f.0.0.1/hook",
            "https://１２７.０.０.１/hook",
            "http://hooks.example.com/hook",
        ],
    )
    def test_refused_unless_allowed(self, api_key_client, url):
        error = assert_error(register(api_key_client("send"), url=url), 400)
        assert "url" in error["fields"]
        assert Webhook.objects.count() == 0

    def test_allowed_with_webhook_allow_private_urls(self, api_key_client, private_urls_allowed):
        response = register(api_key_client("send"), url="http://127.0.0.1:9/hook")
        assert response.status_code == 201, response.content


class TestOwnership:
    def test_a_key_sees_and_deletes_only_its_own(self, api_key_client):
        mine, theirs = api_key_client("send"), api_key_client("send")
        own = register(mine).json()["id"]
        other = register(theirs).json()["id"]
        assert [w["id"] for w in mine.get(URL).json()["results"]] == [own]
        assert_error(mine.delete(f"{URL}{other}/"), 404)
        assert_error(mine.get(f"{URL}{other}/attempts/"), 404)
        assert Webhook.objects.filter(pk=other).exists()
        assert mine.delete(f"{URL}{own}/").status_code == 204
        assert_error(mine.delete(f"{URL}{own}/"), 404)
        assert [w["id"] for w in theirs.get(URL).json()["results"]] == [other]

    def test_attempts_of_a_new_webhook_are_an_empty_page(self, api_key_client):
        client = api_key_client("send")
        webhook = register(client).json()["id"]
        response = client.get(f"{URL}{webhook}/attempts/")
        assert response.status_code == 200 and response.json()["results"] == []


def test_staff_register_instance_wide_webhooks_of_their_own(admin_client, api_key_client):
    response = admin_client.post(
        URL,
        {"url": "https://hooks.example.com/staff", "events": ["delivery.sent"]},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    webhook = Webhook.objects.get(pk=response.json()["id"])
    assert webhook.api_key is None and webhook.all_notifications
    assert [w["id"] for w in admin_client.get(URL).json()["results"]] == [webhook.pk]
    assert api_key_client("send").get(URL).json()["results"] == []
