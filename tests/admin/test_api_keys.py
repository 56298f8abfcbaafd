"""API keys in the admin: created with scopes and shown once, stored as a hash, revoked, last use shown."""

import pytest

from notifyproject.identities.models import ApiKey

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/identities/apikey/add/"
LIST_URL = "/admin/identities/apikey/"


def create_key(staff_client, name="shop", scopes=("send", "read")) -> tuple[ApiKey, str]:
    """Create a key in the admin and read it off the page it is shown on."""
    response = staff_client.post(
        ADD_URL, {"name": name, "scopes": list(scopes), "expiry_date": ""}, follow=True
    )
    assert response.redirect_chain and response.redirect_chain[-1][0] == LIST_URL, response.content[:2000]
    shown = [str(m) for m in response.context["messages"] if "Please store it somewhere safe" in str(m)]
    assert len(shown) == 1
    key = shown[0].split(" is: ")[1].split(". ")[0]
    return ApiKey.objects.get(name=name), key


def test_a_new_key_is_shown_once_and_only_its_hash_is_stored(staff_client):
    api_key, key = create_key(staff_client)
    assert api_key.scopes == ["read", "send"]
    assert ApiKey.objects.is_valid(key)
    prefix, secret = key.split(".", 1)
    assert prefix == api_key.prefix and secret not in api_key.hashed_key
    assert not ApiKey.objects.filter(hashed_key__contains=secret).exists()
    # Later pages never show the key again (the library's id is prefix.hash, never the secret).
    for url in (LIST_URL, f"/admin/identities/apikey/{api_key.pk}/change/"):
        assert secret not in staff_client.get(url).content.decode()


def test_the_key_works_with_its_scopes_and_last_use_is_shown(staff_client, api_key_client, alice):
    api_key, key = create_key(staff_client, scopes=["read"])
    assert api_key.last_used_at is None
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert (
        client.post(
            "/api/v1/notifications/", {"to": {"users": ["alice"]}, "title": "x"}, format="json"
        ).status_code
        == 403
    )
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None
    row = staff_client.get(LIST_URL).context["cl"].result_list[0]
    assert row.last_used_at == api_key.last_used_at
    page = staff_client.get(LIST_URL).content.decode()
    assert api_key.last_used_at.strftime("%Y") in page


def test_revoking_stops_the_key(staff_client):
    api_key, key = create_key(staff_client)
    staff_client.post(LIST_URL, {"action": "revoke", "_selected_action": [api_key.pk]})
    api_key.refresh_from_db()
    assert api_key.revoked
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/notifications/1/").status_code == 401


def test_a_key_in_use_is_refused_as_soon_as_it_is_revoked(staff_client):
    """The process remembers verified keys for a few seconds; a revoke here forgets them at once."""
    from rest_framework.test import APIClient

    api_key, key = create_key(staff_client)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/notifications/1/").status_code == 404  # verified, and remembered
    staff_client.post(LIST_URL, {"action": "revoke", "_selected_action": [api_key.pk]})
    assert client.get("/api/v1/notifications/1/").status_code == 401
    api_key.revoked = False
    api_key.save()
    assert client.get("/api/v1/notifications/1/").status_code == 404
    api_key.revoked = True
    api_key.save()  # a model save, as a shell or another admin form does
    assert client.get("/api/v1/notifications/1/").status_code == 401


def test_a_key_needs_a_scope(staff_client):
    response = staff_client.post(ADD_URL, {"name": "scopeless", "expiry_date": ""})
    assert response.status_code == 200 and not ApiKey.objects.filter(name="scopeless").exists()


def test_the_former_addresses_of_api_keys_lead_to_them(staff_client):
    api_key, _key = create_key(staff_client)
    for old, new in (
        ("/admin/delivery/apikey/", LIST_URL),
        ("/admin/delivery/apikey/?q=shop", f"{LIST_URL}?q=shop"),
        (f"/admin/delivery/apikey/{api_key.pk}/change/", f"{LIST_URL}{api_key.pk}/change/"),
    ):
        response = staff_client.get(old)
        assert response.status_code == 301 and response["Location"] == new, old
        assert staff_client.get(new).status_code == 200
