"""Request parsing and response shapes for notifications, deliveries and the inbox."""

import orjson
from django.utils import timezone
from rest_framework import serializers

from delivery.models import Delivery, DeliveryStatus, Notification, Priority, Route
from delivery.providers.base import INTERRUPTION_LEVELS
from delivery.services import (
    DEFAULT_TTL_SECS,
    MAX_PAYLOAD_BYTES,
    MAX_SCHEDULE_AHEAD,
    MAX_TTL_SECS,
    NotificationRequest,
    payload_size,
)
from devices.serializers import TOPIC_NAME_PATTERN, validate_app_slug
from notifyproject.api import InputSerializer, PayloadTooLarge, StrictCharField
from notifyproject.strict_json import json_value_problems

MAX_TARGETS = 10_000  # users or devices named in one request; larger audiences use topics
MAX_BADGE = 2**31 - 1  # FCM's notification_count is an int32
MAX_PUSH_TEXT_CHARS = 255  # sound, thread id, category, channel id: names, never prose
# Fields of the FCM v1 message that choose the recipient: Clarion sets them per device.
FCM_TARGET_FIELDS = ("token", "topic", "condition", "fid")


class _StrictIntegerField(serializers.IntegerField):
    """An IntegerField that refuses strings, floats and booleans (a provider would refuse them)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class _StrictBooleanField(serializers.BooleanField):
    """true or false only: "yes", 1 or "false" are errors, not guesses."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


def _name_field() -> StrictCharField:
    return StrictCharField(max_length=MAX_PUSH_TEXT_CHARS, required=False, allow_null=True)


class PushOptionsSerializer(InputSerializer):
    """The rich push fields; mapped onto each platform in delivery/providers (docs/providers.md)."""

    badge = _StrictIntegerField(min_value=0, max_value=MAX_BADGE, required=False, allow_null=True)
    sound = _name_field()
    image = serializers.URLField(max_length=2048, required=False, allow_null=True)
    thread_id = _name_field()
    category = _name_field()
    channel_id = _name_field()
    interruption_level = serializers.ChoiceField(choices=INTERRUPTION_LEVELS, required=False, allow_null=True)
    silent = _StrictBooleanField(required=False, allow_null=True)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Not a push option."] for name in unknown})
        return super().to_internal_value(data)

    def validate_image(self, value):
        if value is not None and not value.startswith("https://"):
            raise serializers.ValidationError(
                "The image must be an https:// URL (FCM and APNs fetch only https)."
            )
        return value

    def validate(self, attrs):
        # Only what is set is stored and sent; silent=false is the same as leaving it out.
        return {key: value for key, value in attrs.items() if value is not None and value is not False}


class OverridesSerializer(InputSerializer):
    """Per-provider JSON deep-merged last into each provider's own message."""

    fcm = serializers.DictField(required=False, allow_null=True)
    apns = serializers.DictField(required=False, allow_null=True)
    webpush = serializers.DictField(required=False, allow_null=True)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: ["Overrides are for fcm, apns or webpush."] for name in unknown}
                )
        return super().to_internal_value(data)

    def validate_fcm(self, value):
        if not value:
            return value
        errors = {
            name: ["Clarion sets the recipient; it cannot be overridden."]
            for name in FCM_TARGET_FIELDS
            if name in value
        }
        data = value.get("data")
        if data is not None and not (
            isinstance(data, dict) and all(isinstance(v, str) for v in data.values())
        ):
            errors["data"] = ["FCM data is an object of strings."]
        for name in ("notification", "android", "apns", "webpush", "fcm_options"):
            if name in value and not isinstance(value[name], dict):
                errors[name] = ["Must be an object, as in the FCM v1 message."]
        if errors:
            raise serializers.ValidationError(errors)
        return value

    def validate_apns(self, value):
        if value and "aps" in value and not isinstance(value["aps"], dict):
            raise serializers.ValidationError({"aps": ["aps must be an object."]})
        return value

    def validate(self, attrs):
        for name, value in attrs.items():
            try:
                orjson.dumps(value)
            except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits, which no provider takes
                raise serializers.ValidationError({name: ["Numbers must fit in 64 bits."]}) from None
        return {key: value for key, value in attrs.items() if value}


class TargetSerializer(InputSerializer):
    users = serializers.ListField(
        child=StrictCharField(max_length=150), required=False, max_length=MAX_TARGETS
    )
    devices = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=MAX_TARGETS
    )
    topic = serializers.RegexField(TOPIC_NAME_PATTERN, required=False)
    broadcast = serializers.BooleanField(required=False, default=False)

    def validate(self, attrs):
        if not (attrs.get("users") or attrs.get("devices") or attrs.get("topic") or attrs.get("broadcast")):
            raise serializers.ValidationError(
                "Name at least one of users, devices, topic, or set broadcast to true."
            )
        return attrs


class NotificationCreateSerializer(InputSerializer):
    to = TargetSerializer()
    title = StrictCharField(max_length=1024, required=False, allow_blank=True, default="")
    body = StrictCharField(max_length=MAX_PAYLOAD_BYTES, required=False, allow_blank=True, default="")
    data = serializers.DictField(required=False, default=dict)
    url = serializers.URLField(max_length=2048, required=False, allow_blank=True, default="")
    icon = serializers.URLField(max_length=2048, required=False, allow_blank=True, default="")
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    ttl = serializers.IntegerField(min_value=0, max_value=MAX_TTL_SECS, default=DEFAULT_TTL_SECS)
    collapse_key = StrictCharField(max_length=64, required=False, allow_blank=True, default="")
    send_at = serializers.DateTimeField(required=False, default=None)
    route = serializers.ChoiceField(choices=Route.choices, default=Route.AUTO)
    push = PushOptionsSerializer(required=False, allow_null=True)
    overrides = OverridesSerializer(required=False, allow_null=True)
    app = StrictCharField(max_length=40, required=False, allow_null=True, allow_blank=True, default="")

    def validate_app(self, value):
        return validate_app_slug(value) if value else ""

    def validate_data(self, value):
        # The API's parser applies these rules to the whole body; the admin builds `data` itself.
        problems = json_value_problems(value, "data")
        if problems:
            raise serializers.ValidationError(
                [f"{where}: {message}" for where, messages in problems.items() for message in messages]
            )
        return value

    def validate_send_at(self, value):
        if value is not None and value > timezone.now() + MAX_SCHEDULE_AHEAD:
            raise serializers.ValidationError(
                f"A send may be scheduled at most {MAX_SCHEDULE_AHEAD.days} days ahead."
            )
        return value

    def validate(self, attrs):
        attrs["push"] = attrs.get("push") or {}
        attrs["overrides"] = attrs.get("overrides") or {}
        if not (attrs["title"] or attrs["body"] or attrs["data"]):
            raise serializers.ValidationError("A notification needs a title, a body or data.")
        if payload_size(attrs["title"], attrs["body"], attrs["data"]) > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(
                f"title, body and data together exceed {MAX_PAYLOAD_BYTES} bytes, the push providers' limit."
            )
        return attrs

    def to_request(self) -> NotificationRequest:
        fields = dict(self.validated_data)
        target = fields.pop("to")
        return NotificationRequest(target=target, **fields)


# The send body most product backends post — named users, text, data, and at most the priority,
# ttl, collapse key and route — checked without building NotificationCreateSerializer: DRF
# deep-copies a serializer's declared fields (and its nested serializers') for every instance,
# most of a send's validation CPU. It takes only bodies the serializer certainly accepts and
# returns what the serializer would; anything else (an error to report, another field, a value
# DRF would coerce) goes through the serializer, so every answer but the common one is its own.
# tests/delivery/test_send_body.py compares both over valid and invalid bodies.
_COMMON_SEND_KEYS = frozenset({"to", "title", "body", "data", "priority", "ttl", "collapse_key", "route"})
_COMMON_TEXT_MAX_CHARS = {"title": 1024, "body": MAX_PAYLOAD_BYTES, "collapse_key": 64}
_USERNAME_MAX_CHARS = 150
_PRIORITIES = frozenset(Priority.values)
_ROUTES = frozenset(Route.values)


def _plain_text(value, max_chars: int, *, allow_blank: bool) -> str | None:
    """The value as StrictCharField validates it (whitespace trimmed), or None for anything it
    refuses or might refuse (not a string, too long, blank when not allowed, NUL, a surrogate)."""
    if type(value) is not str:
        return None
    text = value.strip()
    if len(text) > max_chars or (not text and not allow_blank) or "\x00" in text:
        return None
    try:
        text.encode()  # a lone surrogate does not encode; CharField refuses it
    except UnicodeEncodeError:
        return None
    return text


def common_send_request(body) -> NotificationRequest | None:
    """The NotificationRequest NotificationCreateSerializer makes of a common send body, or None."""
    if type(body) is not dict or not body.keys() <= _COMMON_SEND_KEYS:
        return None
    to = body.get("to")
    if type(to) is not dict or to.keys() != {"users"}:
        return None
    names = to["users"]
    if type(names) is not list or not 0 < len(names) <= MAX_TARGETS:
        return None
    users = [_plain_text(name, _USERNAME_MAX_CHARS, allow_blank=False) for name in names]
    if None in users:
        return None
    fields = {}
    for name, max_chars in _COMMON_TEXT_MAX_CHARS.items():
        fields[name] = _plain_text(body.get(name, ""), max_chars, allow_blank=True)
        if fields[name] is None:
            return None
    data = body.get("data", {})
    if type(data) is not dict or json_value_problems(data, "data"):
        return None
    priority = body.get("priority", Priority.NORMAL.value)
    if type(priority) is not str or priority not in _PRIORITIES:
        return None
    route = body.get("route", Route.AUTO.value)
    if type(route) is not str or route not in _ROUTES:
        return None
    ttl = body.get("ttl", DEFAULT_TTL_SECS)
    if type(ttl) is not int or not 0 <= ttl <= MAX_TTL_SECS:  # null too (the serializer's default)
        return None
    if not (fields["title"] or fields["body"] or data):
        return None
    data = {str(key): value for key, value in data.items()}
    if payload_size(fields["title"], fields["body"], data) > MAX_PAYLOAD_BYTES:
        return None
    return NotificationRequest(
        target={"users": users, "broadcast": False},
        data=data,
        priority=priority,
        ttl=ttl,
        route=route,
        **fields,
    )


def notification_request_parse(body) -> NotificationRequest:
    """A send body as a NotificationRequest; serializers.ValidationError (or PayloadTooLarge)
    exactly as NotificationCreateSerializer raises them."""
    common = common_send_request(body)
    if common is not None:
        return common
    serializer = NotificationCreateSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    return serializer.to_request()


class NotificationAcceptedSerializer(serializers.ModelSerializer):
    class Meta:
        model = Notification
        fields = ["id", "status", "recipients", "created_at", "unknown", "app"]


_timestamp = serializers.DateTimeField()


def accepted_body(notification: Notification) -> dict:
    """NotificationAcceptedSerializer's output (the schema's source), built directly: a
    ModelSerializer builds its fields from the model on every instance, a tenth of a send's CPU."""
    return {
        "id": notification.pk,
        "status": str(notification.status),
        "recipients": notification.recipients,
        "created_at": _timestamp.to_representation(notification.created_at),
        "unknown": notification.unknown,
        "app": notification.app,
    }


class CountsSerializer(serializers.Serializer):
    queued = serializers.IntegerField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    failed = serializers.IntegerField()
    expired = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    skipped = serializers.IntegerField()


class NotificationDetailSerializer(serializers.ModelSerializer):
    to = serializers.JSONField(source="target")
    counts = CountsSerializer(read_only=True)

    class Meta:
        model = Notification
        fields = [
            "id",
            "status",
            "to",
            "title",
            "body",
            "data",
            "url",
            "icon",
            "priority",
            "ttl",
            "collapse_key",
            "send_at",
            "route",
            "push",
            "overrides",
            "app",
            "recipients",
            "unknown",
            "created_at",
            "dispatched_at",
            "expires_at",
            "counts",
        ]


class DeliverySerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username")
    device = serializers.IntegerField(source="device_id", allow_null=True)
    status = serializers.SerializerMethodField()

    class Meta:
        model = Delivery
        fields = ["id", "user", "device", "channel", "status", "attempts", "error", "updated_at"]

    def get_status(self, delivery) -> str:
        # `sending` is an internal claim state; to readers it is still queued.
        return DeliveryStatus.QUEUED if delivery.status == DeliveryStatus.SENDING else delivery.status


class MessageSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    cursor = serializers.IntegerField()
    title = serializers.CharField()
    body = serializers.CharField()
    data = serializers.DictField()
    url = serializers.CharField()
    icon = serializers.CharField()
    created_at = serializers.DateTimeField()
    read_at = serializers.DateTimeField(allow_null=True, help_text="When the user first acknowledged it.")


class InboxPageSerializer(serializers.Serializer):
    results = MessageSerializer(many=True)
    cursor = serializers.IntegerField()


class InboxQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, required=False, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=200, required=False, default=50)
