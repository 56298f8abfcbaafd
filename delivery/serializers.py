"""Request parsing and response shapes for notifications, deliveries and the inbox."""

from django.utils import timezone
from rest_framework import serializers

from delivery.models import Delivery, DeliveryStatus, Notification, Priority, Route
from delivery.services import (
    DEFAULT_TTL_SECS,
    MAX_PAYLOAD_BYTES,
    MAX_SCHEDULE_AHEAD,
    MAX_TTL_SECS,
    NotificationRequest,
    payload_size,
)
from devices.serializers import TOPIC_NAME_PATTERN
from notifyproject.api import InputSerializer, PayloadTooLarge, StrictCharField
from notifyproject.strict_json import json_value_problems

MAX_TARGETS = 10_000  # users or devices named in one request; larger audiences use topics


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


class NotificationAcceptedSerializer(serializers.ModelSerializer):
    class Meta:
        model = Notification
        fields = ["id", "status", "recipients", "created_at", "unknown"]


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
