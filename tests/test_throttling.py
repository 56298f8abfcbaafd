"""Throttles count against the real client: X-Forwarded-For only as far as proxies are trusted;
failed sign-ins per address and per username (API and admin); client tokens per API key."""

import pytest
from django.test import Client
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.conftest import assert_error

pytestmark = pytest.mark.django_db
TOKEN_URL = "/api/v1/auth/token/"


def sign_in(client, password: str, username: str = "carol", forwarded_for: str | None = None):
    extra = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
    return client.post(TOKEN_URL, {"username": username, "password": password}, format="json", **extra)


class TestClientAddress:
    def test_a_forged_forwarded_for_does_not_escape_the_limit_without_trusted_proxies(self, settings, db):
        settings.CLARION_LOGIN_RATE = "3/min"
        client = APIClient()
        codes = [sign_in(client, "nope", forwarded_for=f"203.0.113.{n}").status_code for n in range(4)]
        assert codes == [401, 401, 401, 429]

    def test_behind_one_trusted_proxy_the_address_it_saw_is_the_client(self, settings, db):
        settings.CLARION_LOGIN_RATE = "3/min"
        settings.CLARION_TRUSTED_PROXIES = 1
        client = APIClient()
        # The client forges the left part; the proxy appends the address it really saw.
        codes = [
            sign_in(client, "nope", forwarded_for=f"203.0.113.{n}, 198.51.100.7").status_code
            for n in range(4)
        ]
        assert codes == [401, 401, 401, 429]
        assert (
            sign_in(client, "nope", forwarded_for="203.0.113.1, 198.51.100.8").status_code == 401
        )  # another client

    def test_two_trusted_proxies_read_the_second_address_from_the_right(self, settings, db):
        settings.CLARION_LOGIN_RATE = "1/min"
        settings.CLARION_TRUSTED_PROXIES = 2
        client = APIClient()
        assert sign_in(client, "x", forwarded_for="1.1.1.1, 198.51.100.7, 10.0.0.2").status_code == 401
        assert sign_in(client, "x", forwarded_for="2.2.2.2, 198.51.100.7, 10.0.0.3").status_code == 429
        assert sign_in(client, "x", forwarded_for="2.2.2.2, 198.51.100.9, 10.0.0.2").status_code == 401


class TestFailedSignIns:
    @pytest.fixture(autouse=True)
    def carol(self, make_user, settings):
        settings.CLARION_SIGNIN_FAILURE_LIMIT = 3
        settings.CLARION_TRUSTED_PROXIES = 1
        return make_user("carol", password="correct horse battery", is_staff=True)

    def test_failures_from_many_addresses_lock_the_username_for_the_window(self):
        client = APIClient()
        for n in range(3):
            assert_error(sign_in(client, "wrong", forwarded_for=f"198.51.100.{n}"), 401)
        refused = sign_in(client, "correct horse battery", forwarded_for="198.51.100.99")
        error = assert_error(refused, 429, "throttled")
        assert "Too many failed sign-ins" in error["message"]
        assert int(refused["Retry-After"]) > 60
        assert AuthToken.objects.count() == 0
        assert sign_in(client, "anything", username="dave", forwarded_for="198.51.100.99").status_code == 401

    def test_failures_from_one_address_over_many_usernames_lock_the_address(self):
        client = APIClient()
        for name in ("a", "b", "c"):
            assert_error(sign_in(client, "wrong", username=name, forwarded_for="198.51.100.5"), 401)
        assert_error(sign_in(client, "correct horse battery", forwarded_for="198.51.100.5"), 429)
        assert sign_in(client, "correct horse battery", forwarded_for="198.51.100.6").status_code == 200

    def test_the_admin_login_page_shares_the_limit_and_says_why(self):
        client = Client()
        for n in range(3):
            page = client.post(
                "/admin/login/",
                {"username": "carol", "password": "wrong"},
                HTTP_X_FORWARDED_FOR=f"198.51.100.{n}",
            )
            assert page.status_code == 200 and "_auth_user_id" not in client.session
        page = client.post(
            "/admin/login/",
            {"username": "carol", "password": "correct horse battery", "next": "/admin/"},
            HTTP_X_FORWARDED_FOR="198.51.100.77",
        )
        assert page.status_code == 429  # the form again, not the redirect of a sign-in
        assert int(page["Retry-After"]) > 60
        assert "Too many failed sign-ins" in page.content.decode()
        assert "_auth_user_id" not in client.session
        assert_error(sign_in(APIClient(), "correct horse battery", forwarded_for="198.51.100.78"), 429)


def test_client_token_minting_is_limited_per_api_key(api_key_client, settings):
    settings.CLARION_CLIENT_TOKEN_RATE = "2/min"
    busy, other = api_key_client("send"), api_key_client("send")
    codes = [
        busy.post("/api/v1/client-tokens/", {"user": f"u{n}"}, format="json").status_code for n in range(3)
    ]
    assert codes == [201, 201, 429]
    limited = busy.post("/api/v1/client-tokens/", {"user": "u9"}, format="json")
    assert_error(limited, 429, "throttled")
    assert 1 <= int(limited["Retry-After"]) <= 61
    assert other.post("/api/v1/client-tokens/", {"user": "u9"}, format="json").status_code == 201
    assert AuthToken.objects.count() == 3
