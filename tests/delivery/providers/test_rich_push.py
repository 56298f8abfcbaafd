"""Rich push fields and overrides: from POST /api/v1/notifications/ to what each fake decodes on the wire."""

import json

import pytest

from delivery.models import Delivery, Notification
from tests.conftest import assert_error
from tests.delivery.factories import device, send

pytestmark = pytest.mark.django_db
URL = "/api/v1/notifications/"
IMAGE = "https://cdn.example/picture.png"
PUSH = {
    "badge": 3,
    "sound": "default",
    "image": IMAGE,
    "thread_id": "thread-42",
    "category": "MESSAGE",
    "channel_id": "messages",
    "interruption_level": "time-sensitive",
}


@pytest.fixture
def sender_client(api_key_client):
    return api_key_client("send", "read")


@pytest.fixture
def post_and_send(sender_client, eager_tasks, fan_out):
    """POST a send to alice (push only) through the API, then run its fan-out and sends in-process."""

    def run(**fields) -> Notification:
        body = {"to": {"users": ["alice"]}, "title": "Lunch?", "body": "Bob asks", "route": "push", **fields}
        response = sender_client.post(URL, body, format="json")
        assert response.status_code == 202, response.content
        fan_out(response.json()["id"])
        return Notification.objects.get(pk=response.json()["id"])

    return run


def web_push_device(user, fake, public_key):
    subscription = fake.subscribe(application_server_key=public_key)
    keys = subscription["keys"]
    return device(user, "webpush", token=subscription["endpoint"], p256dh=keys["p256dh"], auth=keys["auth"])


# -- every field where the contract puts it ------------------------------------------------------
def test_fcm_carries_every_rich_field_in_the_v1_message(fake_fcm, alice, post_and_send):
    device(alice, "fcm", token="fcm-token-1")
    notification = post_and_send(push=PUSH)

    (sent,) = fake_fcm.messages
    message = sent.message
    assert message["notification"] == {"title": "Lunch?", "body": "Bob asks", "image": IMAGE}
    assert message["android"]["notification"] == {
        "notification_count": 3,
        "sound": "default",
        "tag": "thread-42",
        "click_action": "MESSAGE",
        "channel_id": "messages",
    }
    assert notification.push == PUSH  # stored as sent
    assert Delivery.objects.get().status == "sent"


def test_apns_carries_every_rich_field_in_aps_and_the_payload(fake_apns, alice, post_and_send):
    device(alice, "apns", token="a1" * 32, environment="production")
    post_and_send(push=PUSH)

    (sent,) = fake_apns.notifications
    assert sent.payload["aps"] == {
        "alert": {"title": "Lunch?", "body": "Bob asks"},
        "badge": 3,
        "sound": "default",
        "thread-id": "thread-42",
        "category": "MESSAGE",
        "interruption-level": "time-sensitive",
        "mutable-content": 1,
    }
    assert sent.payload["image"] == IMAGE
    assert sent.headers["apns-push-type"] == "alert"


def test_web_push_carries_badge_count_image_and_tag(fake_push_service, vapid_keys, alice, post_and_send):
    web_push_device(alice, fake_push_service, vapid_keys[1])
    post_and_send(push=PUSH)

    (sent,) = fake_push_service.messages
    payload = json.loads(sent.plaintext)
    assert (payload["badge_count"], payload["image"], payload["tag"]) == (3, IMAGE, "thread-42")
    assert payload["title"] == "Lunch?"
    assert not {"sound", "category", "channel_id", "interruption_level"} & set(payload)


def test_absent_options_are_not_sent(fake_fcm, fake_apns, alice, post_and_send):
    device(alice, "fcm", token="fcm-token-1")
    device(alice, "apns", token="a1" * 32, environment="production")
    notification = post_and_send(push={"badge": None, "sound": None})

    # Only the tag a withdrawal names (docs/providers.md), none of the options.
    assert fake_fcm.messages[0].message["android"]["notification"] == {"tag": f"clarion-{notification.pk}"}
    assert fake_apns.notifications[0].payload["aps"] == {"alert": {"title": "Lunch?", "body": "Bob asks"}}


# -- silent --------------------------------------------------------------------------------------
def test_silent_is_data_only_on_fcm_background_on_apns_and_skipped_on_web_push(
    fake_fcm, fake_apns, fake_push_service, vapid_keys, alice, post_and_send
):
    device(alice, "fcm", token="fcm-token-1")
    device(alice, "apns", token="a1" * 32, environment="production")
    browser = web_push_device(alice, fake_push_service, vapid_keys[1])
    notification = post_and_send(push={**PUSH, "silent": True}, priority="high", data={"sync": "1"})

    fcm_message = fake_fcm.messages[0].message
    assert "notification" not in fcm_message and "notification" not in fcm_message["android"]
    assert fcm_message["data"]["sync"] == "1"
    (apns,) = fake_apns.notifications
    assert apns.payload["aps"] == {"content-available": 1}
    assert (apns.headers["apns-push-type"], apns.headers["apns-priority"]) == ("background", "5")
    assert fake_push_service.attempts == []
    web = Delivery.objects.get(notification=notification, device=browser)
    assert web.status == "skipped" and "silent" in web.error


# -- overrides -----------------------------------------------------------------------------------
def test_overrides_are_deep_merged_last_into_each_providers_message(
    fake_fcm, fake_apns, fake_push_service, vapid_keys, alice, post_and_send
):
    device(alice, "fcm", token="fcm-token-1")
    device(alice, "apns", token="a1" * 32, environment="production")
    web_push_device(alice, fake_push_service, vapid_keys[1])
    post_and_send(
        push={"badge": 3, "thread_id": "thread-42"},
        overrides={
            "fcm": {"android": {"notification": {"color": "#ff0000", "tag": "override-tag"}}},
            "apns": {"aps": {"badge": 9, "relevance-score": 0.5}, "deep_link": "app://t/42"},
            "webpush": {"actions": [{"action": "reply", "title": "Reply"}], "tag": "override-tag"},
        },
    )

    android = fake_fcm.messages[0].message["android"]["notification"]
    assert android == {"notification_count": 3, "tag": "override-tag", "color": "#ff0000"}
    aps = fake_apns.notifications[0].payload["aps"]
    assert (aps["badge"], aps["relevance-score"], aps["thread-id"]) == (9, 0.5, "thread-42")
    assert aps["alert"] == {"title": "Lunch?", "body": "Bob asks"}  # kept: merged, not replaced
    assert fake_apns.notifications[0].payload["deep_link"] == "app://t/42"
    web = json.loads(fake_push_service.messages[0].plaintext)
    assert web["actions"] == [{"action": "reply", "title": "Reply"}]
    assert (web["tag"], web["badge_count"], web["title"]) == ("override-tag", 3, "Lunch?")


# -- refused at the API --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("push", "field"),
    [
        ({"badge": "3"}, "push.badge"),
        ({"badge": -1}, "push.badge"),
        ({"badge": True}, "push.badge"),
        ({"sound": 5}, "push.sound"),
        ({"image": "http://cdn.example/p.png"}, "push.image"),
        ({"image": "not a url"}, "push.image"),
        ({"interruption_level": "urgent"}, "push.interruption_level"),
        ({"silent": "yes"}, "push.silent"),
        ({"silent": 1}, "push.silent"),
        ({"thread_id": ["a"]}, "push.thread_id"),
        ({"colour": "red"}, "push.colour"),
    ],
)
def test_a_value_a_provider_would_refuse_is_a_400_naming_the_field(sender_client, alice, push, field):
    response = sender_client.post(
        URL, {"to": {"users": ["alice"]}, "title": "x", "push": push}, format="json"
    )
    error = assert_error(response, 400, "validation_error")
    assert field in error["fields"], error
    assert not Notification.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"fcm": {"token": "someone-else"}}, "overrides.fcm.token"),
        ({"fcm": {"data": {"n": 1}}}, "overrides.fcm.data"),
        ({"fcm": {"android": "x"}}, "overrides.fcm.android"),
        ({"apns": {"aps": "x"}}, "overrides.apns.aps"),
        ({"webpush": []}, "overrides.webpush"),
        ({"gcm": {}}, "overrides.gcm"),
        ({"webpush": {"n": 2**70}}, "overrides.webpush.n"),
    ],
)
def test_overrides_a_provider_would_refuse_are_a_400_naming_the_field(sender_client, alice, overrides, field):
    body = {"to": {"users": ["alice"]}, "title": "x", "overrides": overrides}
    error = assert_error(sender_client.post(URL, body, format="json"), 400, "validation_error")
    assert field in error["fields"], error


def test_null_push_and_overrides_mean_none(sender_client, alice):
    body = {"to": {"users": ["alice"]}, "title": "x", "push": None, "overrides": None}
    assert sender_client.post(URL, body, format="json").status_code == 202
    notification = Notification.objects.get()
    assert (notification.push, notification.overrides) == ({}, {})


@pytest.mark.parametrize(
    ("fields", "platform"),
    [
        # title, body and data fit in 4 KB, but APNs also carries the image and the overrides.
        ({"data": {"blob": "x" * 3000}, "overrides": {"apns": {"extra": "y" * 1100}}}, "APNs"),
        ({"data": {"blob": "x" * 3000}, "overrides": {"fcm": {"data": {"extra": "y" * 1100}}}}, "FCM"),
        # Web Push's limit is on the encrypted body: 103 bytes more than the JSON.
        ({"data": {"blob": "x" * 3950}}, "Web Push"),
    ],
)
def test_a_payload_too_large_for_a_platform_is_refused_before_any_provider_call(
    sender_client, fake_fcm, fake_apns, fake_push_service, vapid_keys, alice, eager_tasks, fields, platform
):
    device(alice, "fcm", token="fcm-token-1")
    device(alice, "apns", token="a1" * 32, environment="production")
    web_push_device(alice, fake_push_service, vapid_keys[1])
    body = {"to": {"users": ["alice"]}, "title": "x", "route": "push", **fields}
    error = assert_error(sender_client.post(URL, body, format="json"), 413, "payload_too_large")
    assert platform in error["message"], error
    assert not Notification.objects.exists()
    assert (fake_fcm.attempts, fake_apns.attempts, fake_push_service.attempts) == ([], [], [])


def test_the_web_push_size_bound_matches_what_is_written_and_http_ece_decrypts_it():
    import os

    import http_ece
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from delivery.providers.webpush import web_push_encrypt, web_push_encrypted_size

    receiver = ec.generate_private_key(ec.SECP256R1())
    point = receiver.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    auth = os.urandom(16)
    for size in (1, 100, 3993, 3994, 4079, 4080, 9000):
        plaintext = os.urandom(size)
        body = web_push_encrypt(plaintext, point, auth)
        assert web_push_encrypted_size(size) == len(body), size
        decrypted = http_ece.decrypt(
            body, private_key=receiver, dh=None, auth_secret=auth, version="aes128gcm"
        )
        assert decrypted == plaintext, size


def test_a_payload_that_grows_too_large_at_send_time_fails_that_delivery_with_the_reason(
    fake_apns, alice, eager_tasks, fan_out
):
    device(alice, "apns", token="a1" * 32, environment="production")
    # Recorded without the push-size check (a realtime send), then turned into a push send.
    notification = send({"users": ["alice"]}, route="realtime")
    Notification.objects.filter(pk=notification.pk).update(
        route="push", overrides={"apns": {"blob": "z" * 5000}}
    )
    fan_out(notification.pk)

    delivery = Delivery.objects.get(notification=notification, channel="apns")
    assert delivery.status == "failed" and delivery.error.startswith("PAYLOAD_TOO_LARGE: the APNs payload is")
    assert fake_apns.attempts == []
