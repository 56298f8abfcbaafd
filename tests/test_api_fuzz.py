"""Property-based requests over the whole OpenAPI schema: no input produces a 5xx.

schemathesis generates valid and invalid requests for every operation from the schema the
service itself publishes; every answer must be < 500 and, when an error, in the contract's
shape. Derandomised, so a run is reproducible.
"""

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings

from delivery.services import api_key_create
from devices.services import end_user_token_create

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
