"""Two apps at once, through the real SDKs against the protocol fakes: each device is sent with its own
app's credentials only (FCM project and OAuth identity, APNs topic and JWT key id, VAPID key)."""

import io
import json

import jwt
import pytest
from django.core.management import CommandError, call_command

from delivery.models import Delivery, Notification
from delivery.providers import get_provider
from delivery.push_apps import app_create, app_save
from devices.models import App, Device
from notifyproject.encryption import decrypt, generate_key
from tests.conftest import assert_error
from tests.delivery.providers.conftest import VAPID_SUBJECT
from tests.fakes.apns import FakeAPNs
from tests.fakes.fcm import FakeFCM
from tests.fakes.webpush import generate_vapid_keypair

pytestmark = pytest.mark.django_db
SEND_URL = "/api/v1/notifications/"
DEVICES_URL = "/api/v1/devices/"
DEFAULT_APNS_TOKEN, RIDER_APNS_TOKEN = "a1" * 32, "b2" * 32


@pytest.fixture(scope="module")
def _rider_fcm_server():
    with FakeFCM(project_id="rider-project") as fake:
        yield fake


@pytest.fixture
def encryption_key(settings):
    settings.CLARION_ENCRYPTION_KEYS = [generate_key()]
    return settings.CLARION_ENCRYPTION_KEYS[0]


@pytest.fixture
def rider(_rider_fcm_server, fake_fcm, fake_apns, fake_push_service, encryption_key, settings, tmp_path):
    """A second app, `rider`, with its own FCM project, APNs key/topic and VAPID keys, made by create_app.

    The `default` app is the environment's (the fake_fcm, fake_apns and vapid_keys fixtures).
    """
    _rider_fcm_server.reset()
    with FakeAPNs(topic="com.example.rider", team_id="RIDERTEAM1", key_id="RIDERKEY01") as rider_apns:
        bundle = tmp_path / "apns-cas.pem"  # APNS_CA_BUNDLE is the instance's: trust both fakes' CAs
        bundle.write_bytes(fake_apns.ca_path.read_bytes() + rider_apns.ca_path.read_bytes())
        settings.APNS_CA_BUNDLE = str(bundle)
        private, public = generate_vapid_keypair()
        out = io.StringIO()
        call_command(
            "create_app",
            "rider",
            "--name=Rider",
            f"--fcm-credentials={_rider_fcm_server.write_service_account()}",
            f"--fcm-endpoint={_rider_fcm_server.h2_url}",
            f"--apns-key={rider_apns.key_path}",
            "--apns-key-id=RIDERKEY01",
            "--apns-team-id=RIDERTEAM1",
            "--apns-topic=com.example.rider",
            f"--apns-endpoint={rider_apns.url}",
            f"--apns-sandbox-endpoint={rider_apns.url}",
            f"--vapid-private-key={private}",
            f"--vapid-public-key={public}",
            f"--vapid-subject={VAPID_SUBJECT}",
            stdout=out,
        )
        assert "Created app rider (fcm, apns, webpush)" in out.getvalue()
        yield {"fcm": _rider_fcm_server, "apns": rider_apns, "vapid_public": public}


@pytest.fixture
def sender_client(api_key_client):
    return api_key_client("send", "read")


def register_all(client, fake_push_service, vapid_public: str, app: str | None, tag: str) -> dict:
    """Register one device of each platform through the API, in `app` (None: left out)."""
    subscription = fake_push_service.subscribe(application_server_key=vapid_public)
    apns_token = DEFAULT_APNS_TOKEN if app is None else RIDER_APNS_TOKEN
    bodies = {
        "fcm": {"platform": "fcm", "token": f"{tag}-fcm-token"},
        "apns": {"platform": "apns", "token": apns_token, "environment": "production"},
        "webpush": {"platform": "webpush", "subscription": subscription},
    }
    devices = {}
    for platform, body in bodies.items():
        if app is not None:
            body["app"] = app
        response = client.post(DEVICES_URL, body, format="json")
        assert response.status_code == 201, response.content
        assert response.json()["app"] == (app or "default")
        devices[platform] = Device.objects.get(pk=response.json()["id"])
    devices["subscription_id"] = fake_push_service.subscription_id(subscription)
    return devices


@pytest.fixture
def alice_devices(rider, fake_push_service, vapid_keys, alice_client) -> dict:
    """Alice's devices, one of each platform in each app, by app: {"default": {...}, "rider": {...}}."""
    return {
        "default": register_all(alice_client, fake_push_service, vapid_keys[1], None, "default"),
        "rider": register_all(alice_client, fake_push_service, rider["vapid_public"], "rider", "rider"),
    }


@pytest.fixture
def send(sender_client, eager_tasks, fan_out):
    """Send to alice through the API and fan out in-process; returns the Notification."""

    def post_and_send(**fields) -> Notification:
        body = {"to": {"users": ["alice"]}, "title": "Hello", "route": "push", **fields}
        response = sender_client.post(SEND_URL, body, format="json")
        assert response.status_code == 202, response.content
        fan_out(response.json()["id"])
        return Notification.objects.get(pk=response.json()["id"])

    return post_and_send


def kid(provider_token: str) -> str:
    return jwt.get_unverified_header(provider_token)["kid"]


def test_each_device_is_sent_with_its_own_apps_credentials_only(
    rider, alice_devices, fake_fcm, fake_apns, fake_push_service, vapid_keys, send
):
    default, riders = alice_devices["default"], alice_devices["rider"]

    notification = send(push={"badge": 2, "image": "https://cdn.example/i.png"})

    assert set(Delivery.objects.filter(notification=notification).values_list("status", flat=True)) == {
        "sent"
    }
    # FCM: each project got only its app's token, with an access token from its own OAuth identity.
    ((default_fcm,), (rider_fcm,)) = fake_fcm.messages, rider["fcm"].messages
    assert (default_fcm.project_id, default_fcm.message["token"]) == ("clarion-test", "default-fcm-token")
    assert (rider_fcm.project_id, rider_fcm.message["token"]) == ("rider-project", "rider-fcm-token")
    assert {claims["iss"] for claims in fake_fcm.assertions} == {fake_fcm.client_email}
    assert {claims["iss"] for claims in rider["fcm"].assertions} == {rider["fcm"].client_email}
    assert fake_fcm.client_email != rider["fcm"].client_email
    assert rider_fcm.message["android"]["notification"]["notification_count"] == 2
    # APNs: each host got only its app's device, under its topic and signed with its key id.
    ((default_apns,), (rider_apns,)) = fake_apns.notifications, rider["apns"].notifications
    assert (default_apns.token, default_apns.headers["apns-topic"]) == (
        DEFAULT_APNS_TOKEN,
        "com.example.clarion",
    )
    assert (rider_apns.token, rider_apns.headers["apns-topic"]) == (RIDER_APNS_TOKEN, "com.example.rider")
    assert (kid(default_apns.provider_token), kid(rider_apns.provider_token)) == ("KEY1234567", "RIDERKEY01")
    assert rider_apns.payload["image"] == "https://cdn.example/i.png"
    # Web Push: each subscription was pushed with the VAPID key (k) it subscribed with.
    pushed = {message.subscription_id: message.vapid_key for message in fake_push_service.messages}
    assert pushed == {
        default["subscription_id"]: vapid_keys[1],
        riders["subscription_id"]: rider["vapid_public"],
    }
    assert json.loads(fake_push_service.messages[0].plaintext)["badge_count"] == 2


def test_a_send_for_one_app_reaches_only_that_apps_devices(
    rider, alice_devices, fake_fcm, fake_apns, fake_push_service, send
):
    riders = alice_devices["rider"]

    notification = send(app="rider")

    assert notification.app == "rider"
    reached = set(Delivery.objects.filter(notification=notification).values_list("device_id", flat=True))
    assert reached == {riders["fcm"].pk, riders["apns"].pk, riders["webpush"].pk}
    assert (fake_fcm.messages, fake_apns.notifications) == ([], [])
    assert (
        len(rider["fcm"].messages),
        len(rider["apns"].notifications),
        len(fake_push_service.messages),
    ) == (1, 1, 1)


def test_a_platform_an_app_has_no_credentials_for_is_skipped_with_the_reason(
    encryption_key, alice_client, send
):
    call_command("create_app", "bare", stdout=io.StringIO())
    alice_client.post(DEVICES_URL, {"platform": "fcm", "token": "bare-token", "app": "bare"}, format="json")

    notification = send()

    delivery = Delivery.objects.get(notification=notification)
    assert delivery.status == "skipped"
    assert delivery.error == "fcm provider is not configured for app 'bare': the app has no FCM credentials"


def test_an_apps_clients_are_rebuilt_when_the_app_changes(rider, alice_client, send):
    alice_client.post(
        DEVICES_URL, {"platform": "fcm", "token": "rider-fcm-token", "app": "rider"}, format="json"
    )
    send()
    assert [m.project_id for m in rider["fcm"].messages] == ["rider-project"]

    with FakeFCM(project_id="rider-moved") as moved:
        app = App.objects.get(slug="rider")
        app.fcm_endpoint = moved.h2_url
        app_save(app=app, secrets={"fcm_credentials": json.dumps(moved.service_account_info())})
        send()
        assert [m.project_id for m in moved.messages] == ["rider-moved"]
    assert len(rider["fcm"].messages) == 1


# -- credentials at rest -------------------------------------------------------------------------
def test_credentials_are_stored_encrypted_and_keys_rotate(rider, settings):
    app = App.objects.get(slug="rider")
    for stored in (app.fcm_credentials, app.apns_key, app.vapid_private_key):
        assert stored.startswith("gAAAA")  # a Fernet token
    assert "PRIVATE KEY" not in app.fcm_credentials + app.apns_key
    assert json.loads(decrypt(app.fcm_credentials))["project_id"] == "rider-project"

    old = settings.CLARION_ENCRYPTION_KEYS[0]
    settings.CLARION_ENCRYPTION_KEYS = [generate_key(), old]  # a new key first, the old still decrypts
    call_command("reencrypt_app_credentials", stdout=io.StringIO())
    settings.CLARION_ENCRYPTION_KEYS = settings.CLARION_ENCRYPTION_KEYS[:1]  # the old one dropped
    app.refresh_from_db()
    assert json.loads(decrypt(app.fcm_credentials))["project_id"] == "rider-project"
    provider, reason = get_provider("apns", app)
    assert provider is not None, reason


def test_credentials_are_not_stored_without_a_key_outside_debug(settings, tmp_path):
    settings.CLARION_ENCRYPTION_KEYS, settings.DEBUG = [], False
    private, public = generate_vapid_keypair()
    with pytest.raises(CommandError, match="CLARION_ENCRYPTION_KEYS"):
        call_command(
            "create_app", "rider", f"--vapid-private-key={private}", f"--vapid-subject={VAPID_SUBJECT}"
        )
    assert not App.objects.exists()


def test_app_create_encrypts_the_secrets_and_refuses_one_given_as_a_field(encryption_key):
    private, public = generate_vapid_keypair()
    with pytest.raises(TypeError, match="vapid_private_key"):
        app_create(slug="web", secrets={}, vapid_private_key=private, vapid_subject=VAPID_SUBJECT)
    assert not App.objects.exists()

    app_create(slug="web", secrets={"vapid_private_key": private}, name="Web", vapid_subject=VAPID_SUBJECT)

    app = App.objects.get(slug="web")
    assert (app.name, decrypt(app.vapid_private_key)) == ("Web", private)
    assert app.vapid_public_key == public  # derived from the private key, as the admin does
    provider, reason = get_provider("webpush", app)
    assert provider is not None, reason


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Not A Slug"], "slug"),
        (["default"], "defined by the environment"),
        (["x", "--vapid-private-key=bm90IGEga2V5", f"--vapid-subject={VAPID_SUBJECT}"], "VAPID_PRIVATE_KEY"),
        (["x", "--apns-key-id=K"], "set an APNs key, APNS_TEAM_ID, APNS_TOPIC"),
    ],
)
def test_create_app_refuses_what_a_provider_would_refuse(encryption_key, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_app", *args, stdout=io.StringIO())
    assert not App.objects.exists()


# -- devices and the VAPID key per app -----------------------------------------------------------
def test_an_unknown_app_is_a_400_naming_app(alice_client, sender_client):
    response = alice_client.post(DEVICES_URL, {"platform": "fcm", "token": "t", "app": "nope"}, format="json")
    assert "app" in assert_error(response, 400)["fields"]
    response = sender_client.post(
        SEND_URL, {"to": {"users": ["alice"]}, "title": "x", "app": "nope"}, format="json"
    )
    assert "app" in assert_error(response, 400)["fields"]


def test_one_token_one_owner_holds_within_an_app(rider, alice_client, bob_client, alice, bob):
    first = alice_client.post(DEVICES_URL, {"platform": "fcm", "token": "shared"}, format="json")
    other_app = alice_client.post(
        DEVICES_URL, {"platform": "fcm", "token": "shared", "app": "rider"}, format="json"
    )
    assert (first.status_code, other_app.status_code) == (201, 201)  # a separate address in each app
    moved = bob_client.post(
        DEVICES_URL, {"platform": "fcm", "token": "shared", "app": "rider"}, format="json"
    )
    assert moved.status_code == 200 and moved.json()["id"] == other_app.json()["id"]
    assert Device.objects.get(pk=other_app.json()["id"]).user == bob
    assert Device.objects.get(pk=first.json()["id"]).user == alice


def test_the_webpush_key_endpoint_answers_per_app(rider, vapid_keys, anon):
    assert anon.get("/api/v1/webpush/key/").json() == {"public_key": vapid_keys[1]}
    assert anon.get("/api/v1/webpush/key/?app=default").json() == {"public_key": vapid_keys[1]}
    assert anon.get("/api/v1/webpush/key/?app=rider").json() == {"public_key": rider["vapid_public"]}
    assert_error(anon.get("/api/v1/webpush/key/?app=nope"), 404)


# -- API keys bound to an app --------------------------------------------------------------------
@pytest.fixture
def rider_key_client(rider):
    from rest_framework.test import APIClient

    out = io.StringIO()
    call_command("create_api_key", "rider-backend", "--scopes=send,read", "--app=rider", stdout=out)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {out.getvalue().strip()}")
    return client


def test_a_bound_key_sends_only_to_its_apps_devices(
    rider_key_client, alice_devices, fake_fcm, eager_tasks, fan_out
):
    riders = alice_devices["rider"]

    response = rider_key_client.post(
        SEND_URL, {"to": {"users": ["alice"]}, "title": "Hi", "route": "push"}, format="json"
    )
    assert response.status_code == 202 and response.json()["app"] == "rider"
    fan_out(response.json()["id"])
    notification = Notification.objects.get(pk=response.json()["id"])

    assert notification.app == "rider"
    assert rider_key_client.get(f"{SEND_URL}{notification.pk}/").json()["app"] == "rider"
    reached = set(Delivery.objects.filter(notification=notification).values_list("device_id", flat=True))
    assert reached == {riders["fcm"].pk, riders["apns"].pk, riders["webpush"].pk}
    assert fake_fcm.messages == []
    body = {"to": {"users": ["alice"]}, "title": "x", "app": "default"}
    assert_error(rider_key_client.post(SEND_URL, body, format="json"), 403)


def test_a_bound_key_reads_and_cancels_only_what_it_sent(
    rider_key_client, sender_client, api_key_client, alice
):
    from datetime import timedelta

    from django.utils import timezone

    later = (timezone.now() + timedelta(days=1)).isoformat()
    future = {"send_at": later, "to": {"users": ["alice"]}, "title": "later"}
    theirs = sender_client.post(SEND_URL, future, format="json").json()["id"]
    mine = rider_key_client.post(SEND_URL, future, format="json").json()["id"]

    for path in (f"{SEND_URL}{theirs}/", f"{SEND_URL}{theirs}/deliveries/"):
        assert_error(rider_key_client.get(path), 404)
    assert_error(rider_key_client.post(f"{SEND_URL}{theirs}/cancel/"), 404)
    assert Notification.objects.get(pk=theirs).status == "scheduled"

    assert rider_key_client.get(f"{SEND_URL}{mine}/").status_code == 200
    assert rider_key_client.get(f"{SEND_URL}{mine}/deliveries/").status_code == 200
    assert rider_key_client.post(f"{SEND_URL}{mine}/cancel/").json()["status"] == "cancelled"
    # An unbound key stays instance-wide.
    reader = api_key_client("read")
    assert reader.get(f"{SEND_URL}{mine}/").status_code == 200
    assert sender_client.post(f"{SEND_URL}{theirs}/cancel/").status_code == 200


def test_create_api_key_refuses_an_unknown_app(db):
    with pytest.raises(CommandError, match="No app named 'nope'"):
        call_command("create_api_key", "k", "--app=nope", stdout=io.StringIO())


def test_the_providers_and_the_devices_app_name_the_same_default_app():
    from delivery.providers import credentials
    from devices import models

    assert credentials.DEFAULT_APP == models.DEFAULT_APP == "default"


def test_a_withdrawal_reaches_each_device_through_its_own_apps_credentials(
    rider,
    alice_devices,
    fake_apns,
    fake_push_service,
    vapid_keys,
    alice_client,
    send,
    django_capture_on_commit_callbacks,
):
    default, riders = alice_devices["default"], alice_devices["rider"]
    notification = send()

    with django_capture_on_commit_callbacks(execute=True):
        assert alice_client.post(f"/api/v1/inbox/{notification.pk}/ack/").status_code == 204

    def withdrawals(fake_notifications):
        return [
            (n.token, n.headers["apns-topic"]) for n in fake_notifications if n.payload.get("type") == "read"
        ]

    assert withdrawals(fake_apns.notifications) == [(DEFAULT_APNS_TOKEN, "com.example.clarion")]
    assert withdrawals(rider["apns"].notifications) == [(RIDER_APNS_TOKEN, "com.example.rider")]
    assert [m.message["data"].get("clarion_type") for m in rider["fcm"].messages] == [None, "read"]
    read_pushes = {
        m.subscription_id: m.vapid_key
        for m in fake_push_service.messages
        if json.loads(m.plaintext).get("type")
    }
    assert read_pushes == {
        default["subscription_id"]: vapid_keys[1],
        riders["subscription_id"]: rider["vapid_public"],
    }
    for phone in (*default.values(), *riders.values()):
        if isinstance(phone, Device):
            phone.refresh_from_db()
            assert phone.active, phone.deactivated_reason
