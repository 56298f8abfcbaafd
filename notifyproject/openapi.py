"""The OpenAPI schema as integrators read it (drf-spectacular): one place for its policy.

- every operation names the one credential it takes (end-user token, API key, or none);
- every operation lists the errors it can answer, all in the contract's error shape;
- operation ids and descriptions read like the reference in docs/api.md;
- the realtime endpoints (plain async Django views, not DRF) are described by hand.
A test (tests/test_api_reference.py) keeps this schema and docs/api.md in step.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from notifyproject.identities.permissions import CanRead, CanSend, IsEndUser

END_USER_TOKEN = "endUserToken"
API_KEY = "apiKey"


class EndUserTokenScheme(OpenApiAuthenticationExtension):
    target_class = "notifyproject.identities.authentication.EndUserTokenAuthentication"
    name = END_USER_TOKEN

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "End-user token: `Authorization: Token <key>`, minted by /api/v1/client-tokens/ "
            "or /api/v1/auth/token/. A page of this site may use its session instead.",
        }


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "notifyproject.identities.authentication.ApiKeyAuthentication"
    name = API_KEY

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A product backend's API key, scopes `send` and/or `read`. "
            "A staff user's session may do the same.",
        }


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "notifyproject.api.CsrfSessionAuthentication"
    name = "session"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "This site's session (CSRF enforced).",
        }


# The credential each permission policy is written for (the session alternative is in the
# schemes' descriptions, so a generated client offers the credential an integrator holds).
SCHEME_FOR_PERMISSION = {IsEndUser: END_USER_TOKEN, CanSend: API_KEY, CanRead: API_KEY}


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable snake_case code, e.g. `validation_error`, `not_found`.")
    message = serializers.CharField(help_text="A sentence for a human.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Validation errors only: messages per field (nested fields as `a.b`).",
    )


class ErrorSerializer(serializers.Serializer):
    """Every 4xx/5xx answer under /api/."""

    error = ErrorDetailSerializer()


# (path, method) -> (operation id, description). Paths as the schema spells them.
OPERATIONS = {
    ("/api/v1/auth/token/", "POST"): (
        "createTokenFromPassword",
        "Exchange the username and password of a user who has one for an end-user token (30 days).",
    ),
    ("/api/v1/client-tokens/", "POST"): (
        "mintClientToken",
        "A product backend mints an end-user token for one of its users (created if unknown), "
        "valid `ttl` seconds. Refused (403) for staff and superuser accounts. Scope `send`.",
    ),
    ("/api/v1/devices/", "GET"): ("listDevices", "The caller's devices, newest first."),
    ("/api/v1/devices/", "POST"): (
        "registerDevice",
        "Register an FCM, APNs or Web Push device: 201 when new, 200 when that token or endpoint "
        "was already registered. A token registered by another user moves to the caller.",
    ),
    ("/api/v1/devices/{device_id}/", "DELETE"): (
        "deleteDevice",
        "Remove one of the caller's devices; another user's device is 404.",
    ),
    ("/api/v1/topics/", "GET"): ("listTopicSubscriptions", "The topics the caller is subscribed to."),
    ("/api/v1/topics/{name}/subscription/", "PUT"): ("subscribeToTopic", "Subscribe the caller to a topic."),
    ("/api/v1/topics/{name}/subscription/", "DELETE"): (
        "unsubscribeFromTopic",
        "Unsubscribe the caller from a topic.",
    ),
    ("/api/v1/me/preferences/", "GET"): ("getPreferences", "The caller's quiet hours and muted topics."),
    ("/api/v1/me/preferences/", "PUT"): (
        "setPreferences",
        "Replace the caller's quiet hours and muted topics. During quiet hours `normal` push waits "
        "until they end; a muted topic reaches the caller on no channel.",
    ),
    ("/api/v1/me/test-notification/", "POST"): (
        "sendTestNotificationToSelf",
        "A signed-in user sends a notification to themselves (the demo page's button).",
    ),
    ("/api/v1/notifications/", "POST"): (
        "sendNotification",
        "Send to users, devices, a topic or everyone: 202 at once, fan-out and sends run in the "
        "background. The same `Idempotency-Key` from the same sender within 24 h returns the first "
        "notification (200) and sends nothing again. Scope `send`.",
    ),
    ("/api/v1/notifications/{notification_id}/", "GET"): (
        "getNotification",
        "A notification with its status and delivery counts. Scope `read`.",
    ),
    ("/api/v1/notifications/{notification_id}/deliveries/", "GET"): (
        "listDeliveries",
        "The delivery log of a notification: one row per user, device and channel. Scope `read`.",
    ),
    ("/api/v1/notifications/{notification_id}/cancel/", "POST"): (
        "cancelNotification",
        "Cancel a notification that is still scheduled or queued; 409 once it was sent. Scope `send`.",
    ),
    ("/api/v1/inbox/", "GET"): (
        "getInbox",
        "The caller's messages after a cursor, oldest first; pass the answer's `cursor` to continue.",
    ),
    ("/api/v1/inbox/{notification_id}/ack/", "POST"): (
        "acknowledgeMessage",
        "Mark the caller's deliveries of a notification `delivered` (mobile apps call it on receipt); "
        "the caller's other clients get a `read` event.",
    ),
    ("/api/v1/webhooks/", "POST"): ("createWebhook", "Subscribe a URL to delivery events. Scope `send`."),
    ("/api/v1/webhooks/", "GET"): ("listWebhooks", "The caller's webhooks (no secrets). Scope `send`."),
    ("/api/v1/webhooks/{webhook_id}/", "DELETE"): ("deleteWebhook", "Delete one of the caller's webhooks."),
    ("/api/v1/webhooks/{webhook_id}/attempts/", "GET"): (
        "listWebhookAttempts",
        "Every delivery attempt of a webhook, newest first.",
    ),
}
# Errors an operation answers beyond what its shape implies (see ClarionAutoSchema._error_codes).
EXTRA_ERRORS = {
    ("/api/v1/auth/token/", "POST"): [("401", "Wrong username or password.")],
    ("/api/v1/notifications/{notification_id}/cancel/", "POST"): [
        ("409", "Already sent (or finished): too late to cancel.")
    ],
}
# Query parameters of paginated lists: a bad cursor is a 404 (DRF), not a validation error.
PAGINATION_PARAMETERS = {"cursor", "limit"}
_VERBS = {"GET": "get", "POST": "create", "PUT": "set", "PATCH": "update", "DELETE": "delete"}


def _camel(words: list[str]) -> str:
    parts = [part for word in words for part in word.replace("-", "_").split("_") if part]
    return parts[0] + "".join(part.title() for part in parts[1:]) if parts else "root"


class ClarionAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema with the policy in this module's docstring."""

    def get_operation_id(self) -> str:
        known = OPERATIONS.get((self.path, self.method))
        if known:
            return known[0]
        verb = "list" if self.method == "GET" and self._is_list_view() else _VERBS[self.method]
        return _camel([verb, *self._tokenize_path()])

    def get_description(self) -> str:
        known = OPERATIONS.get((self.path, self.method))
        return known[1] if known else super().get_description()

    def get_auth(self) -> list[dict]:
        schemes = super().get_auth()  # registers the security schemes' components
        permissions = self.view.get_permissions()
        if not self.view.get_authenticators() or any(isinstance(p, AllowAny) for p in permissions):
            return []
        named = {SCHEME_FOR_PERMISSION.get(type(p)) for p in permissions} - {None}
        if len(named) == 1:
            return [{named.pop(): []}]
        return schemes

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        error_ref = self.resolve_serializer(ErrorSerializer, "response").ref
        for code, description in self._error_codes(operation):
            operation["responses"].setdefault(code, {"description": description})
            operation["responses"][code]["content"] = {"application/json": {"schema": dict(error_ref)}}
        if "429" in operation["responses"]:
            operation["responses"]["429"]["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}
            }
        return operation

    def _error_codes(self, operation: dict) -> list[tuple[str, str]]:
        parameters = operation.get("parameters", [])
        has_body = "requestBody" in operation
        queries = {p["name"] for p in parameters if p["in"] == "query"} - PAGINATION_PARAMETERS
        path_types = {p["schema"].get("type") for p in parameters if p["in"] == "path"}
        codes = []
        if has_body or queries or "string" in path_types:
            codes.append(("400", "Invalid input; `fields` says which and why."))
        if operation.get("security"):
            codes.append(("401", "No credentials, or invalid or expired ones."))
            codes.append(("403", "These credentials may not do this (wrong kind, or a missing scope)."))
        if "integer" in path_types or "cursor" in {p["name"] for p in parameters}:
            not_found = "Not found, or not yours." if "integer" in path_types else "Invalid cursor."
            codes.append(("404", not_found))
        codes += EXTRA_ERRORS.get((self.path, self.method), [])
        if has_body:
            codes.append(("413", "The request body is larger than 256 KB."))
        if self.view.get_throttles() and self.method != "GET":  # the rate limits are on writes
            codes.append(("429", "Rate limited; retry after `Retry-After` seconds."))
        codes.append(("503", "The database is unavailable; retry shortly."))
        return sorted(codes)


def _error_responses(*codes: tuple[str, str]) -> dict:
    return {
        code: {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code, description in codes
    }


_REALTIME_AUTH = (
    "An end-user token as `Authorization: Token <key>` or as `?token=` (for EventSource and "
    "cross-origin pages, which cannot set headers), or this site's session."
)
_TOKEN_PARAMETER = {
    "name": "token",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "The end-user token, when the client cannot send an `Authorization` header.",
}
_AFTER_PARAMETER = {
    "name": "after",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "The cursor of the last message the client has; omitted, only new messages.",
}
_UNAUTHENTICATED = ("401", "No credentials, or invalid or expired ones.")
_UNAVAILABLE = ("503", "The database is unavailable; retry shortly.")
_INVALID = ("400", "Invalid `after` or `timeout`; `fields` says which.")


def add_realtime_paths(result, generator, request, public):
    """Postprocessing hook: long-polling, server-sent events and the Web Push key."""
    paths = result.setdefault("paths", {})
    paths["/api/v1/poll/"] = {
        "get": {
            "operationId": "pollMessages",
            "description": "Long-polling: answers as soon as a message after the cursor exists, else "
            "after `timeout` seconds with no results. " + _REALTIME_AUTH,
            "tags": ["realtime"],
            "parameters": [
                _AFTER_PARAMETER,
                {
                    "name": "timeout",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "number", "minimum": 0, "maximum": 60, "default": 30},
                    "description": "Seconds to wait for a message (at most 60).",
                },
                _TOKEN_PARAMETER,
            ],
            "security": [{END_USER_TOKEN: []}],
            "responses": {
                "200": {
                    "description": "Messages after the cursor (up to 100), oldest first, and the cursor "
                    "to poll with next.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InboxPage"}}},
                },
                **_error_responses(_INVALID, _UNAUTHENTICATED, _UNAVAILABLE),
            },
        }
    }
    paths["/api/v1/events/"] = {
        "get": {
            "operationId": "streamEvents",
            "description": "Server-sent events: `event: notification` with `id:` the cursor and `data:` "
            "the message; `event: read` when the user acknowledged a message elsewhere. "
            "`Last-Event-ID` (or `?after=`) resumes after a cursor. A comment every 15-25 s keeps "
            "proxies from closing the stream; after 5 minutes without a message the stream ends and "
            "the browser reconnects. " + _REALTIME_AUTH,
            "tags": ["realtime"],
            "parameters": [
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "Sent by EventSource on reconnect: resume after this cursor.",
                },
                _AFTER_PARAMETER,
                _TOKEN_PARAMETER,
            ],
            "security": [{END_USER_TOKEN: []}],
            "responses": {
                "200": {
                    "description": "An event stream.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_error_responses(
                    ("400", "Invalid `Last-Event-ID` or `after`."), _UNAUTHENTICATED, _UNAVAILABLE
                ),
            },
        }
    }
    paths["/api/v1/webpush/key/"] = {
        "get": {
            "operationId": "getWebPushKey",
            "description": "The VAPID public key browsers subscribe with (`applicationServerKey`). "
            "No credentials needed.",
            "tags": ["webpush"],
            "responses": {
                "200": {
                    "description": "The key, base64url.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"public_key": {"type": "string"}},
                                "required": ["public_key"],
                            }
                        }
                    },
                },
                **_error_responses(("404", "Web Push is not configured on this server.")),
            },
        }
    }
    result["paths"] = dict(sorted(paths.items()))
    return result
