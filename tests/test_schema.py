"""The OpenAPI schema validates and lists every endpoint of the contract built so far."""

import pytest
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db

CONTRACT_PATHS = {
    "/api/v1/auth/token/": {"post"},
    "/api/v1/client-tokens/": {"post"},
    "/api/v1/devices/": {"get", "post"},
    "/api/v1/devices/{device_id}/": {"delete"},
    "/api/v1/topics/": {"get"},
    "/api/v1/topics/{name}/subscription/": {"put", "delete"},
    "/api/v1/webhooks/": {"get", "post"},
    "/api/v1/webhooks/{webhook_id}/": {"delete"},
    "/api/v1/webhooks/{webhook_id}/attempts/": {"get"},
}


@pytest.fixture
def schema(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_schema_is_valid_openapi(schema):
    validate_schema(schema)


def test_schema_lists_every_endpoint(schema):
    for path, methods in CONTRACT_PATHS.items():
        assert path in schema["paths"], path
        assert methods <= set(schema["paths"][path]), (path, set(schema["paths"][path]))


def test_interactive_docs_are_served(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
