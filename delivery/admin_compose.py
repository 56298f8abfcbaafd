"""Composing a notification in the admin: the form, its dry run, and test sends.

The form checks its input with the API's own serializer (NotificationCreateSerializer), so
the admin accepts exactly what POST /api/v1/notifications/ accepts, and builds the same
NotificationRequest for `notification_send`. Nothing here sends: `notification_send`
records the notification and enqueues the fan-out when the request's transaction commits.
"""

import dataclasses
import uuid
from dataclasses import dataclass

from django import forms
from django.db.models import Count, Q
from django.forms.fields import InvalidJSONInput
from rest_framework.exceptions import APIException

from delivery.audiences import audience_users, usernames_parse
from delivery.models import Audience, Notification, Priority, Route
from delivery.selectors import recipients_count, recipients_queryset, unknown_targets
from delivery.serializers import NotificationCreateSerializer
from delivery.services import (
    DEFAULT_TTL_SECS,
    MAX_TTL_SECS,
    NotificationRequest,
    PayloadTooLargeError,
    Sender,
    notification_send,
    payload_size,
    push_payload_check,
)
from devices.models import Device

# A test send is for a handful of devices picked in the admin, not a way around compose.
MAX_TEST_DEVICES = 100


class SendTo:
    USERS = "users"
    TOPIC = "topic"
    DEVICES = "devices"
    AUDIENCE = "audience"
    BROADCAST = "broadcast"
    CHOICES = [
        (USERS, "Users"),
        (TOPIC, "A topic's subscribers"),
        (DEVICES, "Devices"),
        (AUDIENCE, "A saved audience"),
        (BROADCAST, "Everyone (broadcast)"),
    ]


class ComposeAction:
    SEND = "send"
    TEST = "test"
    DRY_RUN = "dry_run"


def device_ids_parse(text: str) -> list[int]:
    parts = [part.strip() for part in text.replace(",", " ").split()]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise forms.ValidationError("Device ids are whole numbers, separated by commas or spaces.")
    return list(dict.fromkeys(int(part) for part in parts))


class DataJSONField(forms.JSONField):
    """Django's JSONField, with runaway nesting a form error rather than a RecursionError."""

    def to_python(self, value):
        try:
            return super().to_python(value)
        except RecursionError:
            raise forms.ValidationError("The data is nested too deeply.", code="invalid") from None

    def bound_data(self, data, initial):
        try:
            return super().bound_data(data, initial)
        except RecursionError:
            return InvalidJSONInput(data)  # shown back as typed, as Django does for broken JSON


class ComposeForm(forms.Form):
    send_to = forms.ChoiceField(choices=SendTo.CHOICES, initial=SendTo.USERS, widget=forms.RadioSelect)
    users = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Usernames, one per line or comma-separated.",
    )
    topic = forms.CharField(required=False, max_length=64)
    devices = forms.CharField(required=False, help_text="Device ids, comma-separated.")
    audience = forms.ModelChoiceField(Audience.objects.all(), required=False)

    title = forms.CharField(required=False, max_length=1024, widget=forms.TextInput(attrs={"size": 60}))
    body = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 60}))
    data = DataJSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        initial=dict,
        help_text='A JSON object delivered to the app, e.g. {"thread": "42"}.',
    )
    url = forms.URLField(
        label="URL",
        required=False,
        max_length=2048,
        assume_scheme="https",
        widget=forms.URLInput(attrs={"size": 60}),
    )
    icon = forms.URLField(
        label="Icon URL",
        required=False,
        max_length=2048,
        assume_scheme="https",
        widget=forms.URLInput(attrs={"size": 60}),
    )

    badge = forms.IntegerField(
        required=False,
        min_value=0,
        help_text="App icon badge (APNs, Android's notification count, Web Push).",
    )
    sound = forms.CharField(required=False, max_length=255, help_text='e.g. "default" (APNs, Android).')
    image = forms.URLField(
        label="Image URL",
        required=False,
        max_length=2048,
        assume_scheme="https",
        widget=forms.URLInput(attrs={"size": 60}),
        help_text="https only; shown by FCM, APNs (with a notification service extension) and Web Push.",
    )
    silent = forms.BooleanField(
        required=False,
        help_text="Data-only background push (FCM data-only, APNs content-available); skipped on Web Push.",
    )

    route = forms.ChoiceField(choices=Route.choices, initial=Route.AUTO)
    priority = forms.ChoiceField(choices=Priority.choices, initial=Priority.NORMAL)
    ttl = forms.IntegerField(
        label="TTL (seconds)",
        min_value=0,
        max_value=MAX_TTL_SECS,
        initial=DEFAULT_TTL_SECS,
        help_text="Seconds it stays deliverable.",
    )
    collapse_key = forms.CharField(
        required=False,
        max_length=64,
        help_text="A newer notification with this key replaces an undelivered one.",
    )
    send_at = forms.DateTimeField(
        label="Send at (UTC)",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Leave empty to send now.",
    )
    # One per rendered form: a double click or a re-posted page sends once (the API's Idempotency-Key).
    idempotency_key = forms.CharField(widget=forms.HiddenInput, required=False, max_length=64)

    def __init__(self, *args, action: str = ComposeAction.SEND, test_username: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.action = action
        self.test_username = test_username
        self.fields["idempotency_key"].initial = uuid.uuid4().hex
        self.notification_request: NotificationRequest | None = None

    def clean_devices(self) -> list[int]:
        return device_ids_parse(self.cleaned_data.get("devices") or "")

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        audience = None
        if self.action == ComposeAction.TEST:
            target = {"users": [self.test_username]}
        else:
            target = self._target(cleaned)
            if target is None:
                return cleaned
            if cleaned["send_to"] == SendTo.AUDIENCE:
                audience = cleaned["audience"]
        payload = {
            # A saved audience is no API target: the serializer checks the rest of the message
            # with a stand-in recipient, and the request names the audience instead.
            "to": target if audience is None else {"broadcast": True},
            "title": cleaned.get("title") or "",
            "body": cleaned.get("body") or "",
            "data": cleaned.get("data") if cleaned.get("data") is not None else {},
            "url": cleaned.get("url") or "",
            "icon": cleaned.get("icon") or "",
            "priority": cleaned["priority"],
            "ttl": cleaned["ttl"],
            "collapse_key": cleaned.get("collapse_key") or "",
            "send_at": cleaned.get("send_at"),
            "route": cleaned["route"],
            "push": {
                "badge": cleaned.get("badge"),
                "sound": cleaned.get("sound") or None,
                "image": cleaned.get("image") or None,
                "silent": bool(cleaned.get("silent")),
            },
        }
        serializer = NotificationCreateSerializer(data=payload)
        try:
            valid = serializer.is_valid()
        except APIException as exc:  # the payload-size check answers 413 in the API
            self.add_error(None, str(exc.detail))
            return cleaned
        if not valid:
            self._add_serializer_errors(serializer.errors)
            return cleaned
        request = serializer.to_request()
        if audience is not None:
            request = dataclasses.replace(request, target={}, audience=audience)
        try:
            push_payload_check(request)
        except PayloadTooLargeError as exc:
            self.add_error(None, str(exc))
            return cleaned
        self.notification_request = request
        return cleaned

    def _target(self, cleaned) -> dict | None:
        send_to = cleaned["send_to"]
        if send_to == SendTo.USERS:
            names = usernames_parse(cleaned.get("users") or "")
            if not names:
                self.add_error("users", "Name at least one user.")
                return None
            return {"users": names}
        if send_to == SendTo.TOPIC:
            if not cleaned.get("topic"):
                self.add_error("topic", "Name the topic.")
                return None
            return {"topic": cleaned["topic"]}
        if send_to == SendTo.DEVICES:
            if not cleaned.get("devices"):
                self.add_error("devices", "Give at least one device id.")
                return None
            return {"devices": cleaned["devices"]}
        if send_to == SendTo.AUDIENCE:
            audience = cleaned.get("audience")
            if audience is None:
                self.add_error("audience", "Choose an audience.")
                return None
            if not audience_users(audience).exists():
                self.add_error("audience", f"The audience “{audience}” matches no users right now.")
                return None
            return {}  # the fan-out walks the audience itself, however large
        return {"broadcast": True}

    def _add_serializer_errors(self, errors: dict) -> None:
        for name, messages in errors.items():
            if name == "to":
                for sub_name, sub_messages in _as_dict(messages).items():
                    field = sub_name if sub_name in ("users", "topic", "devices") else None
                    for message in _flatten(sub_messages):
                        self.add_error(field, message)
                continue
            if name == "push":
                for sub_name, sub_messages in _as_dict(messages).items():
                    for message in _flatten(sub_messages):
                        self.add_error(sub_name if sub_name in self.fields else None, message)
                continue
            field = name if name in self.fields else None
            for message in _flatten(messages):
                self.add_error(field, message)


def _as_dict(detail) -> dict:
    return detail if isinstance(detail, dict) else {None: detail}


def _flatten(detail):
    if isinstance(detail, dict):
        for value in detail.values():
            yield from _flatten(value)
    elif isinstance(detail, list):
        for value in detail:
            yield from _flatten(value)
    else:
        yield str(detail)


@dataclass
class DryRun:
    """What a send would do, read without writing anything."""

    recipients: int
    unknown_users: list[str]
    unknown_devices: list[int]
    push_devices: dict[str, int]
    payload_bytes: int
    scheduled: bool


def notification_dry_run(request: NotificationRequest) -> DryRun:
    """The recipients and push devices a request would reach now, by the fan-out's rules."""
    target = request.target
    unknown = unknown_targets(target)
    audience_members = audience_users(request.audience) if request.audience is not None else None
    push_devices: dict[str, int] = {}
    if request.route != Route.REALTIME:
        if audience_members is not None:
            reach = Q(user__in=audience_members)
        else:
            named_users = recipients_queryset({**target, "devices": []})
            reach = Q(user__in=named_users) | Q(pk__in=target.get("devices") or [], user__is_active=True)
        devices = Device.objects.filter(reach, active=True)
        if request.app:
            devices = devices.filter(app=request.app)
        rows = devices.values_list("platform").annotate(n=Count("id")).order_by("platform")
        push_devices = dict(rows)
    return DryRun(
        recipients=(
            audience_members.count() if audience_members is not None else recipients_count(target, unknown)
        ),
        unknown_users=unknown["users"],
        unknown_devices=unknown["devices"],
        push_devices=push_devices,
        payload_bytes=payload_size(request.title, request.body, request.data),
        scheduled=request.send_at is not None,
    )


def compose_send(*, user, form: ComposeForm) -> tuple[Notification, bool]:
    """Send the composed notification as `user`; (notification, created) as notification_send."""
    key = form.cleaned_data.get("idempotency_key") or None
    return notification_send(
        sender=Sender.for_user(user),
        request=form.notification_request,
        idempotency_key=f"admin-compose:{key}" if key and form.action == ComposeAction.SEND else None,
    )


def devices_test_send(*, user, device_ids: list[int]) -> Notification:
    """A push-only test to these devices, high priority so quiet hours do not hold it back."""
    if len(device_ids) > MAX_TEST_DEVICES:
        raise ValueError(f"Send a test to at most {MAX_TEST_DEVICES} devices at a time.")
    notification, _ = notification_send(
        sender=Sender.for_user(user),
        request=NotificationRequest(
            target={"devices": device_ids},
            title="Test notification",
            body=f"Sent from the Clarion admin by {user.get_username()}.",
            data={"clarion_test": "1"},
            priority=Priority.HIGH,
            ttl=3600,
            route=Route.PUSH,
        ),
    )
    return notification
