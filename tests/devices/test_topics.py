import pytest

from devices.models import TopicSubscription
from tests.conftest import assert_error

pytestmark = pytest.mark.django_db


def test_subscribe_list_unsubscribe(alice_client):
    assert alice_client.put("/api/v1/topics/news/subscription/").status_code == 204
    assert alice_client.put("/api/v1/topics/news/subscription/").status_code == 204  # idempotent
    assert alice_client.put("/api/v1/topics/sports.eu/subscription/").status_code == 204
    assert alice_client.get("/api/v1/topics/").json() == {"results": ["news", "sports.eu"]}
    assert alice_client.delete("/api/v1/topics/news/subscription/").status_code == 204
    assert alice_client.get("/api/v1/topics/").json() == {"results": ["sports.eu"]}


def test_subscriptions_are_per_user(alice_client, bob_client):
    alice_client.put("/api/v1/topics/news/subscription/")
    assert bob_client.get("/api/v1/topics/").json() == {"results": []}


def test_unsubscribing_from_an_unknown_topic_is_harmless(alice_client):
    assert alice_client.delete("/api/v1/topics/never/subscription/").status_code == 204


@pytest.mark.parametrize("name", ["a" * 65, "bad%20name", "emoji%F0%9F%98%80", "semi;colon"])
def test_invalid_topic_names_are_400(alice_client, name):
    assert_error(alice_client.put(f"/api/v1/topics/{name}/subscription/"), 400, "validation_error")
    assert TopicSubscription.objects.count() == 0


def test_topics_need_an_end_user(anon, api_key_client):
    assert_error(anon.get("/api/v1/topics/"), 401)
    assert_error(api_key_client("send").put("/api/v1/topics/news/subscription/"), 403)
