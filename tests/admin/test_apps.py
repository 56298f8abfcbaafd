"""Apps in the admin: created with write-only secrets stored encrypted; devices, notifications,
deliveries and API keys shown and filtered by app."""

import pytest

from delivery.models import Delivery
from devices.models import App
from notifyproject.encryption import decrypt, generate_key
from notifyproject.identities.models import ApiKey
from tests.delivery.factories import device, send
from tests.fakes.webpush import generate_vapid_keypair

pytestmark = pytest.mark.django_db
APP_ADD_URL = "/admin/devices/app/add/"
SUBJECT = "mailto:ops@example.com"


@pytest.fixture(autouse=True)
def encryption_key(settings):
    settings.CLARION_ENCRYPTION_KEYS = [generate_key()]


def app_form(**fields) -> dict:
    data = {
        "slug": "rider",
        "name": "Rider",
        "fcm_credentials": "",
        "fcm_endpoint": "",
        "apns_key": "",
        "apns_key_id": "",
        "apns_team_id": "",
        "apns_topic": "",
        "apns_endpoint": "",
        "apns_sandbox_endpoint": "",
        "vapid_private_key": "",
        "vapid_public_key": "",
        "vapid_subject": "",
    }
    data.update(fields)
    return data


def test_an_app_is_created_with_its_secret_encrypted_and_never_shown_again(staff_client):
    private, public = generate_vapid_keypair()
    response = staff_client.post(APP_ADD_URL, app_form(vapid_private_key=private, vapid_subject=SUBJECT))
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""

    app = App.objects.get(slug="rider")
    assert app.vapid_private_key != private and decrypt(app.vapid_private_key) == private
    assert app.vapid_public_key == public  # derived from the private key
    page = staff_client.get(f"/admin/devices/app/{app.pk}/change/").content.decode()
    assert private not in page and app.vapid_private_key not in page

    # Saving again with the secret left empty keeps it.
    staff_client.post(f"/admin/devices/app/{app.pk}/change/", app_form(name="Renamed", vapid_subject=SUBJECT))
    app.refresh_from_db()
    assert app.name == "Renamed" and decrypt(app.vapid_private_key) == private


@pytest.mark.parametrize(
    ("fields", "field_in_error"),
    [
        ({"slug": "Bad Slug"}, "slug"),
        ({"slug": "default"}, "slug"),
        ({"vapid_private_key": "bm90IGEga2V5", "vapid_subject": SUBJECT}, "vapid_private_key"),
        ({"fcm_credentials": '{"type": "service_account"}'}, "fcm_credentials"),
        ({"apns_topic": "com.example.rider"}, "apns_key"),
    ],
)
def test_credentials_a_provider_would_refuse_are_form_errors(staff_client, fields, field_in_error):
    response = staff_client.post(APP_ADD_URL, app_form(**fields))
    assert response.status_code == 200
    assert field_in_error in response.context["adminform"].form.errors
    assert not App.objects.exists()


def test_without_an_encryption_key_outside_debug_nothing_is_stored(staff_client, settings):
    settings.CLARION_ENCRYPTION_KEYS, settings.DEBUG = [], False
    private, _public = generate_vapid_keypair()
    response = staff_client.post(APP_ADD_URL, app_form(vapid_private_key=private, vapid_subject=SUBJECT))
    assert response.status_code == 200 and b"CLARION_ENCRYPTION_KEYS" in response.content
    assert not App.objects.exists()


def test_devices_notifications_and_deliveries_are_shown_and_filtered_by_app(staff_client, alice):
    App.objects.create(slug="rider")
    default_phone, rider_phone = device(alice, "fcm"), device(alice, "fcm", app="rider")
    everyone, riders_only = send({"users": ["alice"]}), send({"users": ["alice"]}, app="rider")
    Delivery.objects.create(notification=everyone, user=alice, device=default_phone, channel="fcm")
    Delivery.objects.create(notification=riders_only, user=alice, device=rider_phone, channel="fcm")

    devices = staff_client.get("/admin/devices/device/?app=rider")
    assert [d.pk for d in devices.context["cl"].result_list] == [rider_phone.pk]
    notifications = staff_client.get("/admin/delivery/notification/?app=rider")
    assert [n.pk for n in notifications.context["cl"].result_list] == [riders_only.pk]
    deliveries = staff_client.get("/admin/delivery/delivery/?app=default")
    assert [d.device_id for d in deliveries.context["cl"].result_list] == [default_phone.pk]
    for page in (devices, notifications, deliveries):
        assert b"By app" in page.content


def test_an_api_key_is_bound_to_an_app_in_the_admin(staff_client):
    App.objects.create(slug="rider")
    response = staff_client.post(
        "/admin/identities/apikey/add/", {"name": "rider-backend", "scopes": ["send"], "app": "rider"}
    )
    assert response.status_code == 302
    assert ApiKey.objects.get(name="rider-backend").app == "rider"
    refused = staff_client.post(
        "/admin/identities/apikey/add/", {"name": "x", "scopes": ["send"], "app": "nope"}
    )
    assert refused.status_code == 200 and not ApiKey.objects.filter(name="x").exists()
