"""Request parsing for device registration, topics and end-user tokens."""

from django.conf import settings
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from devices import validation
from devices.models import ApnsEnvironment, Device, Platform
from devices.services import PushAddress
from notifyproject.api import InputSerializer, StrictCharField

TOPIC_NAME_PATTERN = r"^[A-Za-z0-9_.~-]{1,64}$"


def _run(cleaner, value):
    try:
        return cleaner(value)
    except DjangoValidationError as exc:
        raise serializers.ValidationError(exc.messages) from None


class WebPushKeysSerializer(InputSerializer):
    p256dh = StrictCharField(max_length=200)
    auth = StrictCharField(max_length=100)

    def validate_p256dh(self, value):
        return _run(validation.clean_p256dh, value)

    def validate_auth(self, value):
        return _run(validation.clean_auth_secret, value)


class WebPushSubscriptionSerializer(InputSerializer):
    endpoint = StrictCharField(max_length=validation.WEBPUSH_ENDPOINT_MAX_CHARS)
    keys = WebPushKeysSerializer()
    expirationTime = serializers.IntegerField(required=False)  # noqa: N815 - the browser's name

    def validate_endpoint(self, value):
        return _run(validation.clean_webpush_endpoint, value)


class DeviceRegistrationSerializer(InputSerializer):
    platform = serializers.ChoiceField(choices=Platform.choices)
    token = StrictCharField(max_length=validation.FCM_TOKEN_MAX_CHARS, required=False, trim_whitespace=True)
    subscription = WebPushSubscriptionSerializer(required=False)
    name = StrictCharField(max_length=100, required=False, allow_blank=True, default="")
    environment = serializers.ChoiceField(
        choices=ApnsEnvironment.choices, required=False, default=ApnsEnvironment.PRODUCTION
    )

    def validate(self, attrs):
        platform = attrs["platform"]
        if platform == Platform.WEBPUSH:
            subscription = attrs.get("subscription")
            if not subscription:
                raise serializers.ValidationError(
                    {"subscription": ["A Web Push device needs the browser's subscription."]}
                )
            attrs["address"] = PushAddress(
                platform=platform,
                token=subscription["endpoint"],
                p256dh=subscription["keys"]["p256dh"],
                auth=subscription["keys"]["auth"],
            )
            return attrs
        token = attrs.get("token")
        if not token:
            raise serializers.ValidationError({"token": ["This field is required."]})
        if platform == Platform.FCM:
            attrs["address"] = PushAddress(
                platform=platform, token=self._clean("token", validation.clean_fcm_token, token)
            )
        else:
            attrs["address"] = PushAddress(
                platform=platform,
                token=self._clean("token", validation.clean_apns_token, token),
                environment=attrs["environment"],
            )
        return attrs

    @staticmethod
    def _clean(field, cleaner, value):
        try:
            return cleaner(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({field: exc.messages}) from None


class DeviceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Device
        fields = ["id", "platform", "name", "active", "created_at", "last_seen_at"]
        read_only_fields = fields


class TopicNameSerializer(serializers.Serializer):
    name = serializers.RegexField(
        TOPIC_NAME_PATTERN,
        error_messages={"invalid": "A topic name is 1-64 letters, digits or _.~-"},
    )


class TopicListSerializer(serializers.Serializer):
    results = serializers.ListField(child=StrictCharField())


class PasswordLoginSerializer(InputSerializer):
    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=4096, trim_whitespace=False)


class TokenSerializer(serializers.Serializer):
    token = StrictCharField()
    expires_at = serializers.DateTimeField(allow_null=True)


class ClientTokenRequestSerializer(InputSerializer):
    user = StrictCharField(max_length=150, validators=[UnicodeUsernameValidator()])
    ttl = serializers.IntegerField(
        min_value=60,
        max_value=settings.CLIENT_TOKEN_MAX_TTL_SECS,
        default=settings.CLIENT_TOKEN_DEFAULT_TTL_SECS,
    )


class QuietHoursSerializer(InputSerializer):
    start = serializers.TimeField(format="%H:%M", input_formats=["%H:%M"])
    end = serializers.TimeField(format="%H:%M", input_formats=["%H:%M"])
    timezone = StrictCharField(max_length=64, required=False, default="UTC")

    def validate_timezone(self, value):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise serializers.ValidationError("Not a known IANA time zone, e.g. Europe/Berlin.") from None
        return value


class PreferencesSerializer(InputSerializer):
    quiet_hours = QuietHoursSerializer(required=False, default=None)
    muted_topics = serializers.ListField(
        child=serializers.RegexField(TOPIC_NAME_PATTERN), required=False, default=list, max_length=500
    )
