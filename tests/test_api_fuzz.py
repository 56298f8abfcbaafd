"""Property-based requests over the whole OpenAPI schema: no input produces a 5xx.

schemathesis generates valid and invalid requests for every operation from the schema the
service itself publishes; every answer must be < 500 and, when an error, in the contract's
shape. Derandomised, so a run is reproducible.
"""

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings

from notifyproject.identities.api_keys import api_key_create
from notifyproject.identities.client_tokens import end_user_token_create

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())
SENDER_PATHS = ("/api/v1/notifications", "/api/v1/client-tokens", "/api/v1/webhooks")


@pytest.fixture
def in_test_transaction(db):
    """Requests through the raw WSGI app stay inside the test's transaction, as the test Client's do."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def credentials(in_test_transaction, make_user):
    user = make_user("fuzz-user")
    make_user("alice")
    _key, api_key = api_key_create(name="fuzz", scopes=["send", "read"])
    token, _ = end_user_token_create(user=user, ttl=None)
    return {"key": f"Bearer {api_key}", "token": f"Token {token}"}


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_produces_a_server_error(case, credentials):
    sender = case.path.startswith(SENDER_PATHS)
    response = case.call(headers={"Authorization": credentials["key" if sender else "token"]})
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body


def with_nul(value):
    """The same value with a NUL character in every string and every key."""
    if isinstance(value, str):
        return value[: len(value) // 2] + "\x00" + value[len(value) // 2 :]
    if isinstance(value, dict):
        return {with_nul(key) if isinstance(key, str) else key: with_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_nul(item) for item in value]
    return value


def has_string(value) -> bool:
    if isinstance(value, str):
        return True
    if isinstance(value, dict):
        return bool(value) and (
            any(isinstance(key, str) for key in value) or any(map(has_string, value.values()))
        )
    if isinstance(value, list):
        return any(map(has_string, value))
    return False


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_nul_in_any_generated_string_is_a_4xx_never_a_server_error(case, credentials):
    """PostgreSQL refuses NUL in text and jsonb: every string the schema allows, with a NUL in
    it, in bodies, keys, query and path parameters, is refused before it reaches a query."""
    if isinstance(case.body, dict | list | str):
        case.body = with_nul(case.body)
    if case.query:
        case.query = {name: with_nul(value) for name, value in case.query.items()}
    if case.path_parameters:
        case.path_parameters = {name: with_nul(value) for name, value in case.path_parameters.items()}
    sender = case.path.startswith(SENDER_PATHS)
    response = case.call(headers={"Authorization": credentials["key" if sender else "token"]})
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
    if case.method.upper() in ("POST", "PUT", "PATCH") and has_string(case.body):
        assert 400 <= response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
