"""Identities: client tokens only for end users; staff powers only with this site's session."""

from datetime import timedelta

import pytest
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from notifyproject.identities import credentials
from notifyproject.identities.client_tokens import end_user_token_create
from tests.conftest import assert_error
from tests.delivery.factories import send

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "flags", [{"is_staff": True}, {"is_superuser": True}, {"is_staff": True, "is_superuser": True}]
)
def test_a_send_key_cannot_mint_a_client_token_for_a_staff_or_superuser_account(
    api_key_client, make_user, flags
):
    make_user("ops", password="pw-for-ops-1", **flags)
    response = api_key_client("send").post("/api/v1/client-tokens/", {"user": "ops"}, format="json")
    error = assert_error(response, 403, "permission_denied")
    assert "end users" in error["message"]
    assert AuthToken.objects.count() == 0


def test_a_staff_session_cannot_mint_a_client_token_for_staff_either(make_user):
    make_user("root", is_superuser=True)
    client = APIClient()
    client.force_login(make_user("ops", is_staff=True))
    assert_error(client.post("/api/v1/client-tokens/", {"user": "root"}, format="json"), 403)
    assert AuthToken.objects.count() == 0


def test_an_end_user_token_of_a_staff_account_carries_no_staff_powers(make_user, client_for, alice):
    staff = make_user("ops", password="pw-for-ops-1", is_staff=True, is_superuser=True)
    notification = send({"users": ["alice"]}, title="for alice only")
    urls = [
        f"/api/v1/notifications/{notification.pk}/",
        f"/api/v1/notifications/{notification.pk}/deliveries/",
    ]

    by_token = client_for(staff)  # e.g. from /api/v1/auth/token/, or minted before this rule
    for url in urls:
        assert_error(by_token.get(url), 403, "permission_denied")
    assert_error(
        by_token.post("/api/v1/notifications/", {"to": {"broadcast": True}, "title": "x"}, format="json"), 403
    )
    assert_error(by_token.post(f"/api/v1/notifications/{notification.pk}/cancel/"), 403)
    assert_error(by_token.post("/api/v1/client-tokens/", {"user": "eve"}, format="json"), 403)
    assert by_token.get("/api/v1/devices/").status_code == 200  # still an end user of its own

    by_session = APIClient()
    by_session.force_login(staff)
    for url in urls:
        assert by_session.get(url).status_code == 200


def test_a_password_token_of_a_staff_account_is_an_end_user_token(make_user, alice):
    make_user("ops", password="pw-for-ops-1", is_staff=True)
    notification = send({"users": ["alice"]}, title="x")
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "ops", "password": "pw-for-ops-1"}, format="json"
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert_error(client.get(f"/api/v1/notifications/{notification.pk}/"), 403)


class TestTokenParsing:
    """One parser for every transport (notifyproject/identities/credentials.py)."""

    token = "ct_" + "ab" * 32

    @pytest.mark.parametrize(
        "scope",
        [
            {"subprotocols": ["clarion.v1", f"clarion.token.{token}"]},
            {"headers": [(b"authorization", f"Token {token}".encode())]},
            {"query_string": f"after=3&token={token}".encode()},
            {"subprotocols": [f"clarion.token.{token}"], "query_string": b"token=ct_other"},
        ],
        ids=["subprotocol", "header", "query", "subprotocol first"],
    )
    def test_a_websocket_presents_its_token_on_any_transport(self, scope):
        assert credentials.scope_token(scope) == self.token

    def test_the_server_selects_its_subprotocol_never_the_token(self):
        offered = {"subprotocols": [f"clarion.token.{self.token}", "clarion.v1"]}
        assert credentials.selected_subprotocol(offered) == "clarion.v1"
        assert credentials.selected_subprotocol({"subprotocols": [f"clarion.token.{self.token}"]}) is None

    @pytest.mark.parametrize("header", ["Token", "Token a b", "token  "])
    def test_a_malformed_token_header_is_refused_not_ignored(self, header):
        with pytest.raises(credentials.MalformedCredentialsError):
            credentials.authorization_credentials(header, credentials.TOKEN_SCHEME)
        assert credentials.scope_token({"headers": [(b"authorization", header.encode())]}) is None

    def test_other_schemes_are_left_to_their_authenticator(self):
        assert credentials.authorization_credentials(f"Bearer {self.token}", credentials.TOKEN_SCHEME) is None
        assert (
            credentials.authorization_credentials(f"bearer {self.token}", credentials.API_KEY_SCHEME)
            == self.token
        )


@pytest.mark.django_db(transaction=True)
def test_against_a_running_server_a_send_key_gets_no_staff_token(start_web, api_key_client, make_user, alice):
    import httpx

    web = start_web()
    ops = make_user("ops", password="pw-for-ops-1", is_staff=True, is_superuser=True)
    notification = send({"users": ["alice"]}, title="for alice only")
    key = {"Authorization": f"Bearer {api_key_client('send').key}"}
    refused = httpx.post(f"{web.url}/api/v1/client-tokens/", json={"user": "ops"}, headers=key, timeout=10)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    staff_token, _ = end_user_token_create(user=ops, ttl=None)  # e.g. one minted before the rule
    as_ops = {"Authorization": f"Token {staff_token}"}
    read = httpx.get(f"{web.url}/api/v1/notifications/{notification.pk}/", headers=as_ops, timeout=10)
    assert read.status_code == 403


def test_the_token_recheck_names_exactly_the_digests_that_no_longer_authenticate(make_user):
    """What a realtime node asks every re-check round (realtime/node.py), with every way a
    token stops authenticating, on the database the tests run on."""
    live_user, gone_user = make_user("live"), make_user("gone")
    live, _ = AuthToken.objects.create(user=live_user, expiry=timedelta(days=1))
    forever, _ = AuthToken.objects.create(user=live_user, expiry=None)
    expired, _ = AuthToken.objects.create(user=live_user, expiry=timedelta(days=1))
    AuthToken.objects.filter(digest=expired.digest).update(expiry=timezone.now() - timedelta(seconds=1))
    deleted, _ = AuthToken.objects.create(user=live_user, expiry=timedelta(days=1))
    deleted_digest = deleted.digest
    deleted.delete()
    inactive, _ = AuthToken.objects.create(user=gone_user, expiry=timedelta(days=1))
    gone_user.is_active = False
    gone_user.save(update_fields=["is_active"])
    not_hex = ["", "a,b", '{"x"}', "\\", "NULL", "é" * 4, "f" * 127 + "}"]

    asked = [live.digest, forever.digest, expired.digest, deleted_digest, inactive.digest, *not_hex]
    invalid = credentials.invalid_token_digests(asked)

    assert invalid == {expired.digest, deleted_digest, inactive.digest, *not_hex}
    assert credentials.invalid_token_digests([]) == set()
    assert credentials.invalid_token_digests([live.digest, forever.digest]) == set()
