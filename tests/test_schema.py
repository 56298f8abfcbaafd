"""The OpenAPI schema: valid, complete, one credential per operation, errors in the contract's shape."""

import re

import pytest
from drf_spectacular.validation import validate_schema
from openapi_spec_validator import validate as validate_openapi_spec

pytestmark = pytest.mark.django_db

CONTRACT_PATHS = {
    "/api/v1/auth/token/": {"post"},
    "/api/v1/client-tokens/": {"post"},
    "/api/v1/devices/": {"get", "post"},
    "/api/v1/devices/{device_id}/": {"delete"},
    "/api/v1/topics/": {"get"},
    "/api/v1/topics/{name}/subscription/": {"put", "delete"},
    "/api/v1/notifications/": {"post"},
    "/api/v1/notifications/{notification_id}/": {"get"},
    "/api/v1/notifications/{notification_id}/deliveries/": {"get"},
    "/api/v1/notifications/{notification_id}/cancel/": {"post"},
    "/api/v1/inbox/": {"get"},
    "/api/v1/inbox/{notification_id}/ack/": {"post"},
    "/api/v1/me/preferences/": {"get", "put"},
    "/api/v1/poll/": {"get"},
    "/api/v1/events/": {"get"},
    "/api/v1/webpush/key/": {"get"},
    "/api/v1/webhooks/": {"get", "post"},
    "/api/v1/webhooks/{webhook_id}/": {"delete"},
    "/api/v1/webhooks/{webhook_id}/attempts/": {"get"},
}
# Whoever may call without credentials: signing in with a password, and the VAPID public key.
PUBLIC_OPERATIONS = {"createTokenFromPassword", "getWebPushKey"}


@pytest.fixture
def schema(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_schema_is_valid_openapi(schema):
    validate_schema(schema)
    validate_openapi_spec(schema)


def test_schema_lists_every_endpoint(schema):
    for path, methods in CONTRACT_PATHS.items():
        assert path in schema["paths"], path
        assert methods <= set(schema["paths"][path]), (path, set(schema["paths"][path]))


def test_operations_have_readable_unique_ids_and_descriptions(schema):
    ids = [operation["operationId"] for _path, _method, operation in operations(schema)]
    assert len(ids) == len(set(ids))
    for path, method, operation in operations(schema):
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)+", operation["operationId"]), (path, method, operation)
        assert len(operation.get("description", "")) > 20, (path, method)


def test_every_error_answer_has_the_contract_shape(schema):
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    detail = schema["components"]["schemas"][error["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
    assert set(detail["required"]) == {"code", "message"}
    assert "fields" in detail["properties"]
    shape = {"$ref": "#/components/schemas/Error"}
    for path, method, operation in operations(schema):
        errors = {code: answer for code, answer in operation["responses"].items() if code >= "400"}
        assert errors, (path, method)
        for code, answer in errors.items():
            assert answer["content"]["application/json"]["schema"] == shape, (path, method, code)
        if operation.get("security"):
            assert {"401", "403"} & set(errors) and "401" in errors, (path, method)
        if "{" in path and re.search(r"_id}", path):
            assert "404" in errors, (path, method)
    cancel = schema["paths"]["/api/v1/notifications/{notification_id}/cancel/"]["post"]
    assert "409" in cancel["responses"]
    assert "Retry-After" in schema["paths"]["/api/v1/notifications/"]["post"]["responses"]["429"]["headers"]


def test_each_operation_names_one_credential(schema):
    schemes = set(schema["components"]["securitySchemes"])
    for path, method, operation in operations(schema):
        if operation["operationId"] in PUBLIC_OPERATIONS:
            assert not operation.get("security"), (path, method)
            continue
        security = operation.get("security")
        assert security and len(security) == 1 and len(security[0]) == 1, (path, method, security)
        assert set(security[0]) <= schemes


def _call(client, method: str, path: str):
    path = re.sub(r"{[^}]+}", "1", path)
    if path == "/api/v1/poll/":
        path += "?timeout=0"
    return client.generic(method.upper(), path, "{}", content_type="application/json")


@pytest.mark.django_db(transaction=True)  # the realtime views read tokens on their own connections
def test_the_named_credential_is_the_one_the_endpoint_takes(schema, alice_client, api_key_client):
    """Each operation refuses the other kind of credential and accepts the one it names."""
    credentials = {"endUserToken": alice_client, "apiKey": api_key_client("send", "read")}
    for path, method, operation in operations(schema):
        if not operation.get("security"):
            continue
        (named,) = operation["security"][0]
        other = next(name for name in credentials if name != named)
        assert _call(credentials[other], method, path).status_code in (401, 403), (path, method, other)
        if path == "/api/v1/events/":
            continue  # an accepted stream never ends; refusing the other credential is checked above
        assert _call(credentials[named], method, path).status_code not in (401, 403), (path, method, named)


def test_interactive_docs_are_served(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
