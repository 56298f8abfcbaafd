"""End-user tokens, client tokens and API keys, on success and error paths."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from notifyproject.identities.client_tokens import end_user_token_create
from notifyproject.identities.models import ApiKey
from tests.conftest import assert_error

User = get_user_model()
pytestmark = pytest.mark.django_db


class TestPasswordToken:
    url = "/api/v1/auth/token/"

    def test_given_a_password_user_when_signing_in_then_the_token_authenticates(self, make_user):
        make_user("carol", password="correct horse battery")
        response = APIClient().post(
            self.url, {"username": "carol", "password": "correct horse battery"}, format="json"
        )
        assert response.status_code == 200
        token = response.json()["token"]
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert client.get("/api/v1/devices/").status_code == 200

    def test_wrong_password_is_401(self, make_user):
        make_user("carol", password="correct horse battery")
        response = APIClient().post(self.url, {"username": "carol", "password": "nope"}, format="json")
        assert_error(response, 401, "authentication_failed")
        assert AuthToken.objects.count() == 0

    def test_user_without_password_cannot_sign_in(self, make_user):
        make_user("dave")  # created by a product backend: unusable password
        response = APIClient().post(self.url, {"username": "dave", "password": ""}, format="json")
        assert response.status_code == 400  # blank password is a validation error
        response = APIClient().post(self.url, {"username": "dave", "password": "x"}, format="json")
        assert_error(response, 401)

    def test_missing_fields_are_reported_per_field(self):
        error = assert_error(APIClient().post(self.url, {}, format="json"), 400, "validation_error")
        assert set(error["fields"]) == {"username", "password"}

    def test_malformed_json_is_400(self):
        response = APIClient().post(self.url, "{nope", content_type="application/json")
        assert_error(response, 400, "parse_error")

    def test_tokens_are_stored_hashed(self, alice):
        token, _ = end_user_token_create(user=alice, ttl=None)
        stored = AuthToken.objects.get(user=alice)
        assert token not in (stored.digest, stored.token_key)
        assert len(stored.digest) == 128  # sha512 hex


class TestClientTokens:
    url = "/api/v1/client-tokens/"

    def test_a_send_key_mints_a_token_for_a_new_user(self, api_key_client):
        client = api_key_client("send")
        before = timezone.now()
        response = client.post(self.url, {"user": "ext-42", "ttl": 3600}, format="json")
        assert response.status_code == 201
        body = response.json()
        expires_at = timezone.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
        assert before + timedelta(seconds=3590) < expires_at < before + timedelta(seconds=3700)
        user = User.objects.get(username="ext-42")
        assert not user.has_usable_password()

        end_user = APIClient()
        end_user.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
        assert end_user.get("/api/v1/devices/").status_code == 200

    def test_existing_user_is_reused(self, api_key_client, alice):
        response = api_key_client("send").post(self.url, {"user": "alice"}, format="json")
        assert response.status_code == 201
        assert User.objects.filter(username="alice").count() == 1
        assert AuthToken.objects.get().user == alice

    def test_read_only_key_is_403(self, api_key_client):
        response = api_key_client("read").post(self.url, {"user": "x"}, format="json")
        assert_error(response, 403, "permission_denied")
        assert not User.objects.filter(username="x").exists()

    def test_no_credentials_is_401(self, anon):
        response = anon.post(self.url, {"user": "x"}, format="json")
        assert_error(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"] == "Token"

    def test_wrong_key_is_401(self, db):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Bearer abcdefgh.notthekey")
        assert_error(client.post(self.url, {"user": "x"}, format="json"), 401, "authentication_failed")

    def test_revoked_key_is_401(self, api_key_client):
        client = api_key_client("send")
        ApiKey.objects.update(revoked=True)
        assert_error(client.post(self.url, {"user": "x"}, format="json"), 401)

    def test_end_user_token_cannot_mint(self, alice_client):
        assert_error(alice_client.post(self.url, {"user": "x"}, format="json"), 403)

    @pytest.mark.parametrize(
        "body, field",
        [
            ({"user": "x", "ttl": 10}, "ttl"),
            ({"user": "x", "ttl": "soon"}, "ttl"),
            ({"user": "x", "ttl": 10**9}, "ttl"),
            ({"user": ""}, "user"),
            ({"user": "has space"}, "user"),
            ({"user": "x" * 151}, "user"),
            ({"user": ["x"]}, "user"),
            ({}, "user"),
        ],
    )
    def test_bad_input_is_400_and_writes_nothing(self, api_key_client, body, field):
        client = api_key_client("send")
        error = assert_error(client.post(self.url, body, format="json"), 400, "validation_error")
        assert field in error["fields"]
        assert User.objects.count() == 0
        assert AuthToken.objects.count() == 0

    def test_staff_session_may_mint(self, make_user):
        staff = make_user("ops", password="pw-for-ops-1", is_staff=True)
        client = APIClient()
        client.force_login(staff)
        assert client.post(self.url, {"user": "x"}, format="json").status_code == 201

    def test_expired_token_is_refused(self, alice):
        token, _ = end_user_token_create(user=alice, ttl=timedelta(seconds=-1))
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert_error(client.get("/api/v1/devices/"), 401, "authentication_failed")


class TestApiKeys:
    def test_last_used_at_is_recorded(self, api_key_client):
        client = api_key_client("send")
        assert ApiKey.objects.get().last_used_at is None
        client.post("/api/v1/client-tokens/", {"user": "x"}, format="json")
        assert ApiKey.objects.get().last_used_at is not None

    def test_api_key_cannot_act_as_end_user(self, api_key_client):
        assert_error(api_key_client("send", "read").get("/api/v1/devices/"), 403)

    def test_create_api_key_prints_the_key_once_and_stores_a_hash(self, capsys):
        call_command("create_api_key", "billing", "--scopes", "send")
        key = capsys.readouterr().out.strip()
        api_key = ApiKey.objects.get()
        assert api_key.name == "billing" and api_key.scopes == ["send"]
        assert key.startswith(api_key.prefix + ".")
        for value in (api_key.id, api_key.hashed_key, api_key.prefix):
            assert key not in value
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        assert client.post("/api/v1/client-tokens/", {"user": "x"}, format="json").status_code == 201

    def test_create_api_key_refuses_unknown_scopes(self):
        with pytest.raises(CommandError):
            call_command("create_api_key", "x", "--scopes", "send,admin")
        assert ApiKey.objects.count() == 0

    def test_malformed_authorization_header_is_401(self, db):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Bearer a b")
        assert_error(client.post("/api/v1/client-tokens/", {}, format="json"), 401)
        client.credentials(HTTP_AUTHORIZATION="Token")
        assert_error(client.get("/api/v1/devices/"), 401)
