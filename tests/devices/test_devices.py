"""Device registration, listing, deletion and the one-token-one-owner rule."""

import pytest
from django.test import override_settings

from devices.models import Device, DeviceOwnershipChange
from tests.conftest import assert_error, webpush_keys

pytestmark = pytest.mark.django_db
URL = "/api/v1/devices/"
APNS_TOKEN = "a1" * 32
DEVICE_FIELDS = {"id", "platform", "name", "active", "created_at", "last_seen_at"}


def webpush_body(endpoint="https://push.example.net/send/abc123", **keys):
    return {
        "platform": "webpush",
        "subscription": {"endpoint": endpoint, "keys": {**webpush_keys(), **keys}},
        "name": "Firefox",
    }


class TestRegister:
    def test_fcm_device_is_created(self, alice_client, alice):
        response = alice_client.post(
            URL, {"platform": "fcm", "token": "fcm:tok-1", "name": "Pixel 8"}, format="json"
        )
        assert response.status_code == 201
        body = response.json()
        assert set(body) == DEVICE_FIELDS
        assert body["platform"] == "fcm" and body["name"] == "Pixel 8" and body["active"] is True
        assert Device.objects.get(pk=body["id"]).user == alice

    def test_apns_device_keeps_its_environment(self, alice_client):
        response = alice_client.post(
            URL, {"platform": "apns", "token": APNS_TOKEN.upper(), "environment": "sandbox"}, format="json"
        )
        assert response.status_code == 201
        device = Device.objects.get(pk=response.json()["id"])
        assert device.environment == "sandbox" and device.token == APNS_TOKEN

    def test_apns_environment_defaults_to_production(self, alice_client):
        response = alice_client.post(URL, {"platform": "apns", "token": APNS_TOKEN}, format="json")
        assert Device.objects.get(pk=response.json()["id"]).environment == "production"

    def test_webpush_device_stores_its_keys(self, alice_client):
        body = webpush_body()
        response = alice_client.post(URL, body, format="json")
        assert response.status_code == 201
        device = Device.objects.get(pk=response.json()["id"])
        assert device.token == body["subscription"]["endpoint"]
        assert device.p256dh == body["subscription"]["keys"]["p256dh"]

    def test_same_token_again_is_200_and_refreshes_last_seen(self, alice_client):
        first = alice_client.post(URL, {"platform": "fcm", "token": "fcm:tok-1"}, format="json").json()
        again = alice_client.post(
            URL, {"platform": "fcm", "token": "fcm:tok-1", "name": "New"}, format="json"
        )
        assert again.status_code == 200
        assert again.json()["id"] == first["id"]
        assert again.json()["last_seen_at"] > first["last_seen_at"]
        assert again.json()["name"] == "New"
        assert Device.objects.count() == 1

    def test_same_token_on_another_platform_is_another_device(self, alice_client):
        alice_client.post(URL, {"platform": "fcm", "token": "a1" * 32}, format="json")
        response = alice_client.post(URL, {"platform": "apns", "token": "a1" * 32}, format="json")
        assert response.status_code == 201

    def test_re_registration_reactivates_a_deactivated_device(self, alice_client):
        device_id = alice_client.post(URL, {"platform": "fcm", "token": "t"}, format="json").json()["id"]
        Device.objects.filter(pk=device_id).update(active=False, deactivated_reason="UNREGISTERED")
        assert (
            alice_client.post(URL, {"platform": "fcm", "token": "t"}, format="json").json()["active"] is True
        )


class TestOneTokenOneOwner:
    def test_token_registered_by_another_user_moves_to_them(self, alice_client, bob_client, alice, bob):
        alice_client.post(URL, {"platform": "fcm", "token": "shared-phone"}, format="json")
        response = bob_client.post(URL, {"platform": "fcm", "token": "shared-phone"}, format="json")
        assert response.status_code == 200
        assert alice_client.get(URL).json()["results"] == []
        assert [d["id"] for d in bob_client.get(URL).json()["results"]] == [response.json()["id"]]
        move = DeviceOwnershipChange.objects.get()
        assert (move.previous_user, move.new_user) == (alice, bob)

    def test_webpush_endpoint_moves_too(self, alice_client, bob_client):
        body = webpush_body()
        alice_client.post(URL, body, format="json")
        assert bob_client.post(URL, body, format="json").status_code == 200
        assert alice_client.get(URL).json()["results"] == []


class TestListAndDelete:
    def test_list_shows_only_own_devices(self, alice_client, bob_client):
        alice_client.post(URL, {"platform": "fcm", "token": "a-tok"}, format="json")
        bob_client.post(URL, {"platform": "fcm", "token": "b-tok"}, format="json")
        results = alice_client.get(URL).json()["results"]
        assert len(results) == 1 and set(results[0]) == DEVICE_FIELDS

    def test_delete_own_device(self, alice_client):
        device_id = alice_client.post(URL, {"platform": "fcm", "token": "t"}, format="json").json()["id"]
        assert alice_client.delete(f"{URL}{device_id}/").status_code == 204
        assert not Device.objects.filter(pk=device_id).exists()

    def test_deleting_another_users_device_is_404_and_keeps_it(self, alice_client, bob_client):
        device_id = alice_client.post(URL, {"platform": "fcm", "token": "t"}, format="json").json()["id"]
        assert_error(bob_client.delete(f"{URL}{device_id}/"), 404, "not_found")
        assert Device.objects.filter(pk=device_id).exists()

    def test_deleting_a_missing_device_is_404(self, alice_client):
        assert_error(alice_client.delete(f"{URL}999999/"), 404)

    def test_unauthenticated_is_401(self, anon):
        assert_error(anon.get(URL), 401, "not_authenticated")
        assert_error(anon.post(URL, {"platform": "fcm", "token": "t"}, format="json"), 401)


PRIVATE_ENDPOINTS = [
    "https://127.0.0.1/push",
    "https://localhost:8443/push",
    "https://10.1.2.3/push",
    "https://192.168.0.10/push",
    "https://172.16.5.4/push",
    "https://169.254.169.254/latest/meta-data",
    "https://[::1]/push",
    "https://[fe80::1]/push",
    "https://[::ffff:10.0.0.1]/push",
    "https://intranet/push",
    "https://printer.local/push",
    "https://0.0.0.0/push",
]


class TestBadInput:
    @pytest.mark.parametrize(
        "body, field",
        [
            ({"platform": "blackberry", "token": "t"}, "platform"),
            ({"platform": ["fcm"], "token": "t"}, "platform"),
            ({"token": "t"}, "platform"),
            ({"platform": "fcm"}, "token"),
            ({"platform": "fcm", "token": 12345}, "token"),
            ({"platform": "fcm", "token": "has spaces in it"}, "token"),
            ({"platform": "fcm", "token": "x" * 4097}, "token"),
            ({"platform": "fcm", "token": "t", "name": "n" * 101}, "name"),
            ({"platform": "apns", "token": "abc"}, "token"),
            ({"platform": "apns", "token": "zz" * 32}, "token"),
            ({"platform": "apns", "token": "a" * 63}, "token"),
            ({"platform": "apns", "token": APNS_TOKEN, "environment": "staging"}, "environment"),
            ({"platform": "webpush"}, "subscription"),
            ({"platform": "webpush", "subscription": "https://push.example.net/x"}, "subscription"),
            (
                {"platform": "webpush", "subscription": {"endpoint": "https://push.example.net/x"}},
                "subscription.keys",
            ),
        ],
    )
    def test_invalid_registration_is_400_and_writes_nothing(self, alice_client, body, field):
        error = assert_error(alice_client.post(URL, body, format="json"), 400, "validation_error")
        assert field in error["fields"], error
        assert Device.objects.count() == 0

    @pytest.mark.parametrize(
        "keys, field",
        [
            ({"p256dh": "!!!not-base64!!!"}, "subscription.keys.p256dh"),
            ({"p256dh": "AAAA"}, "subscription.keys.p256dh"),
            # 65 bytes starting 0x04 but not a point on the curve
            ({"p256dh": "BA" + "A" * 85}, "subscription.keys.p256dh"),
            ({"auth": "c2hvcnQ"}, "subscription.keys.auth"),
            ({"auth": "###"}, "subscription.keys.auth"),
        ],
    )
    def test_bad_webpush_keys_are_400(self, alice_client, keys, field):
        error = assert_error(alice_client.post(URL, webpush_body(**keys), format="json"), 400)
        assert field in error["fields"], error
        assert Device.objects.count() == 0

    @pytest.mark.parametrize("endpoint", PRIVATE_ENDPOINTS)
    def test_private_webpush_endpoints_are_refused(self, alice_client, endpoint):
        error = assert_error(alice_client.post(URL, webpush_body(endpoint), format="json"), 400)
        assert "subscription.endpoint" in error["fields"]
        assert Device.objects.count() == 0

    @pytest.mark.parametrize(
        "endpoint, why",
        [
            ("https://１２７.０.０.１:8443/push", "ASCII digits"),  # IDNA maps fullwidth digits to 127.0.0.1
            ("https://127.1/push", "four decimal numbers"),
            ("https://0177.0.0.1/push", "four decimal numbers"),
            ("https://0x7f.0.0.1/push", "four decimal numbers"),
            ("https://2130706433/push", "four decimal numbers"),
            ("https://[::ffff:127.0.0.1]/push", "loopback address"),
            ("https://localhost./push", "loopback or private-network host"),
            ("https://localhost/push", "loopback or private-network host"),
            ("https://push.localhost/push", "loopback or private-network host"),  # resolves to 127.0.0.1
        ],
    )
    def test_disguised_loopback_endpoints_are_refused_naming_the_field(self, alice_client, endpoint, why):
        response = alice_client.post(URL, webpush_body(endpoint), format="json")
        error = assert_error(response, 400, "validation_error")
        (message,) = error["fields"]["subscription.endpoint"]
        assert why in message
        assert Device.objects.count() == 0

    @override_settings(WEBPUSH_ALLOW_PRIVATE_ENDPOINTS=True)
    @pytest.mark.parametrize("endpoint", ["http://127.1:9999/push", "http://１２７.０.０.１:9999/push"])
    def test_non_canonical_addresses_are_refused_even_when_private_ones_are_allowed(
        self, alice_client, endpoint
    ):
        error = assert_error(alice_client.post(URL, webpush_body(endpoint), format="json"), 400)
        assert "subscription.endpoint" in error["fields"]
        assert Device.objects.count() == 0

    def test_the_endpoint_is_stored_with_the_host_the_client_will_connect_to(self, alice_client):
        response = alice_client.post(URL, webpush_body("https://PUSH.Bücher.example/send/1"), format="json")
        assert response.status_code == 201
        assert Device.objects.get().token == "https://push.xn--bcher-kva.example/send/1"

    @pytest.mark.parametrize(
        "endpoint",
        [
            "http://push.example.net/x",
            "ftp://push.example.net/x",
            "not a url",
            "https:///x",
            "https://user:pw@push.example.net/x",
            "https://push.example.net:99999/x",
        ],
    )
    def test_malformed_or_insecure_endpoints_are_refused(self, alice_client, endpoint):
        assert_error(alice_client.post(URL, webpush_body(endpoint), format="json"), 400)
        assert Device.objects.count() == 0

    @override_settings(WEBPUSH_ALLOW_PRIVATE_ENDPOINTS=True)
    def test_private_endpoints_allowed_when_configured(self, alice_client):
        response = alice_client.post(URL, webpush_body("http://127.0.0.1:9999/push/1"), format="json")
        assert response.status_code == 201

    def test_malformed_json_writes_nothing(self, alice_client):
        response = alice_client.post(URL, '{"platform": "fcm", "token": ', content_type="application/json")
        assert_error(response, 400, "parse_error")
        assert Device.objects.count() == 0

    def test_non_json_body_is_415(self, alice_client):
        response = alice_client.post(URL, "platform=fcm", content_type="application/x-www-form-urlencoded")
        assert_error(response, 415, "unsupported_media_type")

    def test_body_over_the_limit_is_413(self, alice_client):
        body = '{"platform": "fcm", "token": "t", "name": "' + "x" * 300_000 + '"}'
        response = alice_client.post(URL, body, content_type="application/json")
        assert_error(response, 413, "payload_too_large")
        assert Device.objects.count() == 0
