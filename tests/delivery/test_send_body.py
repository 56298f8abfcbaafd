"""The common send body's lean check says what NotificationCreateSerializer says, body by body."""

import pytest
from rest_framework import serializers

from delivery.serializers import (
    NotificationCreateSerializer,
    common_send_request,
    notification_request_parse,
)
from notifyproject.api import PayloadTooLarge

USERS = {"users": ["alice", "bob"]}
COMMON_BODIES = [
    {"to": {"users": ["alice"]}, "title": "hi"},
    {"to": USERS, "title": "  padded  ", "body": "\tBob: lunch?\n"},
    {"to": USERS, "data": {"thread": "42", "n": [1, 2.5, None, True], "deep": {"a": {"b": "c"}}}},
    {
        "to": USERS,
        "title": "t",
        "priority": "high",
        "ttl": 0,
        "collapse_key": "thread-42",
        "route": "realtime",
    },
    {"to": USERS, "body": "b", "ttl": 28 * 24 * 3600, "route": "push", "priority": "normal"},
    {"to": {"users": ["a" * 150, "ünïcødé", "alice"]}, "title": "x" * 1024},
    {"to": USERS, "title": "", "body": "", "data": {"only": "data"}},
    {"to": {"users": ["alice", "alice"]}, "body": "twice named"},
    {"to": {"users": [" alice "]}, "title": "t"},
]
# Each either refused or outside the common shape: the lean check must pass them on.
OTHER_BODIES = [
    [],
    "text",
    None,
    {},
    {"title": "no one"},
    {"to": USERS},
    {"to": USERS, "title": "", "body": "   ", "data": {}},
    {"to": {"users": []}, "title": "t"},
    {"to": {"users": "alice"}, "title": "t"},
    {"to": {"users": [""]}, "title": "t"},
    {"to": {"users": ["   "]}, "title": "t"},
    {"to": {"users": [7]}, "title": "t"},
    {"to": {"users": ["a" * 151]}, "title": "t"},
    {"to": {"users": ["nul\x00"]}, "title": "t"},
    {"to": {"users": ["\ud800"]}, "title": "t"},
    {"to": {"users": ["alice"], "broadcast": False}, "title": "t"},
    {"to": {"users": ["alice"], "topic": "news"}, "title": "t"},
    {"to": {"users": ["alice"]}, "title": "x" * 1025},
    {"to": USERS, "title": 5},
    {"to": USERS, "title": True},
    {"to": USERS, "title": None},
    {"to": USERS, "title": "t", "ttl": None},
    {"to": USERS, "title": "t", "ttl": "3600"},
    {"to": USERS, "title": "t", "ttl": 3600.0},
    {"to": USERS, "title": "t", "ttl": True},
    {"to": USERS, "title": "t", "ttl": -1},
    {"to": USERS, "title": "t", "ttl": 28 * 24 * 3600 + 1},
    {"to": USERS, "title": "t", "priority": "urgent"},
    {"to": USERS, "title": "t", "priority": ["high"]},
    {"to": USERS, "title": "t", "route": "sms"},
    {"to": USERS, "title": "t", "route": None},
    {"to": USERS, "title": "t", "collapse_key": "k" * 65},
    {"to": USERS, "data": []},
    {"to": USERS, "data": {"nul": "a\x00b"}},
    {"to": USERS, "data": {"big": 2**64}},
    {"to": USERS, "data": {"x": "y" * 5000}},
    {"to": USERS, "title": "t" * 1000, "body": "b" * 3500},
    {"to": USERS, "title": "t", "url": "https://app.example/t/42"},
    {"to": USERS, "title": "t", "app": "default"},
    {"to": USERS, "title": "t", "push": {"badge": 3}},
    {"to": USERS, "title": "t", "send_at": "2030-01-01T00:00:00Z"},
    {"to": USERS, "title": "t", "unknown_field": 1},
]


def serializer_says(body):
    """The serializer's request, or the error it raises (as its type and detail)."""
    serializer = NotificationCreateSerializer(data=body)
    try:
        serializer.is_valid(raise_exception=True)
    except (serializers.ValidationError, PayloadTooLarge) as exc:
        return type(exc), exc.detail
    return serializer.to_request()


@pytest.mark.parametrize("body", COMMON_BODIES)
def test_a_common_body_is_read_as_the_serializer_reads_it(body):
    lean = common_send_request(body)

    assert lean is not None
    assert lean == serializer_says(body)


@pytest.mark.parametrize("body", OTHER_BODIES)
def test_any_other_body_gets_the_serializers_own_answer(body):
    assert common_send_request(body) is None
    try:
        parsed = notification_request_parse(body)
    except (serializers.ValidationError, PayloadTooLarge) as exc:
        parsed = (type(exc), exc.detail)
    assert parsed == serializer_says(body)
