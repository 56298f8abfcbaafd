"""Cross-cutting API policy: the contract's error shape, pagination and session auth."""

import logging
from collections.abc import Mapping

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import DatabaseError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, pagination, serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response

logger = logging.getLogger(__name__)

MAX_ID = 2**63 - 1  # PostgreSQL bigint: the largest primary key a cursor can point past


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A backing service is unavailable; try again shortly."
    default_code = "service_unavailable"


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    error = {"code": code, "message": message}
    if fields is not None:
        error["fields"] = fields
    return {"error": error}


def database_unavailable_body() -> dict:
    """The 503 every API path answers while PostgreSQL is down: a retry, not a 500 page."""
    return error_body("service_unavailable", "The database is unavailable; try again shortly.")


def _field_errors(detail) -> dict:
    """Flatten DRF's nested ValidationError detail into {"field": ["message", ...]}."""
    if isinstance(detail, list):
        return {"non_field_errors": [str(item) for item in _flatten(detail)]}
    fields = {}
    for name, value in detail.items():
        if isinstance(value, dict):
            for sub_name, messages in _field_errors(value).items():
                key = name if sub_name == "non_field_errors" else f"{name}.{sub_name}"
                fields.setdefault(key, []).extend(messages)
        else:
            fields[name] = [str(item) for item in _flatten(value)]
    return fields


def _flatten(value):
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _flatten(item)
    else:
        yield value


def exception_handler(exc, context):
    """DRF exception handler answering every error in the contract's shape."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, DatabaseError):
        logger.exception("database error while serving %s", context["request"].path)
        exc = ServiceUnavailable()

    if not isinstance(exc, exceptions.APIException):
        return None  # a real bug: Django's handler500 answers it (in the same shape)
    status_code, body, headers = api_error(exc)
    return Response(body, status=status_code, headers=headers)


def api_error(exc: exceptions.APIException) -> tuple[int, dict, dict]:
    """The status, body and headers of a DRF error in the contract's shape."""
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(int(exc.wait) + 1)

    if isinstance(exc, exceptions.ValidationError):
        body = error_body("validation_error", "The request has invalid fields.", _field_errors(exc.detail))
    else:
        detail = exc.detail
        if isinstance(detail, (list, dict)):
            message = " ".join(str(item) for item in _flatten(detail))
            code = next(iter(_flatten(exc.get_codes())), exc.default_code)
        else:
            message = str(detail)
            code = getattr(detail, "code", None) or exc.default_code
        body = error_body(str(code), message)
    return exc.status_code, body, headers


# Codes for errors raised outside DRF (URL resolution, CSRF, Django's own 400/413/500).
HTTP_ERROR_CODES = {
    400: ("bad_request", "The request could not be understood."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    413: ("payload_too_large", "The request body is too large."),
    500: ("server_error", "An unexpected error occurred; it has been logged."),
}


class ApiErrorShapeMiddleware:
    """Answers every /api/ error that did not come from DRF in the contract's error shape.

    Async-capable, so under ASGI a waiting long-poll or SSE request holds no thread here.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self._shaped(request, self.get_response(request))

    async def __acall__(self, request):
        return self._shaped(request, await self.get_response(request))

    @staticmethod
    def _shaped(request, response):
        if (
            request.path.startswith("/api/")
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            code, message = HTTP_ERROR_CODES.get(
                response.status_code, ("error", response.reason_phrase or "Error.")
            )
            shaped = JsonResponse(error_body(code, message), status=response.status_code)
            # Retry-After, Allow, WWW-Authenticate and the security middleware's headers stay.
            for header, value in response.items():
                if header.lower() not in ("content-type", "content-length"):
                    shaped[header] = value
            return shaped
        return response

    def process_exception(self, request, exception):
        """A database outage under /api/ is a 503 the client can retry, not a 500 page."""
        if request.path.startswith("/api/") and isinstance(exception, DatabaseError):
            logger.error("database unavailable while serving %s: %s", request.path, type(exception).__name__)
            return JsonResponse(database_unavailable_body(), status=503)
        return None


class CsrfSessionAuthentication(SessionAuthentication):
    """Session auth for this site's own pages (CSRF enforced, as DRF does)."""


class CursorPagination(pagination.CursorPagination):
    """Stable, count-free pages: cheap on large tables and safe while rows are added."""

    ordering = "-id"
    page_size_query_param = "limit"
    max_page_size = 200

    def decode_cursor(self, request):
        """DRF checks a cursor's offset but not its position; ours are ids, so a position that
        is not one (hand-edited, or NUL) is the same 404 as any invalid cursor, not a 500."""
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            position = cursor.position
            if not (position.isascii() and position.isdigit() and int(position) <= MAX_ID):
                raise exceptions.NotFound(self.invalid_cursor_message)
        return cursor


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of coercing them to text."""

    default_error_messages = {"invalid": "Not a valid string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# A request body whose optional fields take `null` as "not given". JSON clients serialise unset
# fields as null; to them `{"ttl": null}` and `{}` say the same. So an optional field's null is
# dropped before validation (its default then applies), and the field is marked nullable so the
# OpenAPI schema says so. Required fields still refuse null. (A comment, not a docstring: the
# schema generator would show a base class's docstring as every request body's description.)
class InputSerializer(serializers.Serializer):
    def get_fields(self):
        fields = super().get_fields()
        for field in fields.values():
            if not field.required and not field.read_only:
                field.allow_null = True
        return fields

    def to_internal_value(self, data):
        if isinstance(data, Mapping) and None in data.values():
            optional = {name for name, field in self.fields.items() if not field.required}
            data = {key: value for key, value in data.items() if value is not None or key not in optional}
        return super().to_internal_value(data)
