"""Errors outside DRF (routing, methods) also answer in the contract's shape."""

import pytest

from tests.conftest import assert_error

pytestmark = pytest.mark.django_db


def test_unknown_api_path_is_a_json_404(anon):
    assert_error(anon.get("/api/v1/no-such-thing/"), 404, "not_found")


def test_wrong_method_is_405_in_shape(alice_client):
    assert_error(alice_client.patch("/api/v1/devices/", {}, format="json"), 405, "method_not_allowed")


def test_pages_outside_the_api_are_not_rewritten(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_database_errors_outside_drf_views_are_503_in_shape(rf):
    """Non-DRF views under /api/ (async poll/SSE) get the same 503 as DRF ones on a database outage."""
    import json

    from django.db import OperationalError

    from notifyproject.api import ApiErrorShapeMiddleware

    middleware = ApiErrorShapeMiddleware(lambda request: None)
    response = middleware.process_exception(rf.get("/api/v1/poll/"), OperationalError("connection refused"))
    assert response.status_code == 503
    assert json.loads(response.content)["error"]["code"] == "service_unavailable"
    assert middleware.process_exception(rf.get("/admin/"), OperationalError("x")) is None
