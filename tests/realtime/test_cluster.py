"""Two web instances sharing Redis and PostgreSQL, with a separate worker: node-to-node delivery."""

import httpx
import pytest

from realtime.presence import get_presence
from tests.realtime.conftest import open_socket, recv_type, wait_online
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_user_on_one_instance_gets_what_another_instance_accepted(
    start_web, start_worker, alice, bob, token_for, api_key_client
):
    instance_a, instance_b = start_web(), start_web()
    start_worker()
    key = api_key_client("send").key
    alice_token, bob_token = token_for(alice), token_for(bob)
    with open_socket(instance_a, alice_token) as alice_ws, open_socket(instance_b, bob_token) as bob_ws:
        wait_online(alice, bob)
        nodes = get_presence().nodes_for_users([alice.pk, bob.pk])
        assert len(nodes) == 2  # one node per instance, each holding one user

        def send_through(instance, username: str, title: str) -> int:
            response = httpx.post(
                f"{instance.url}/api/v1/notifications/",
                json={"to": {"users": [username]}, "title": title},
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            assert response.status_code == 202, response.text
            return response.json()["id"]

        for_alice = send_through(instance_b, "alice", "via B")
        for_bob = send_through(instance_a, "bob", "via A")
        assert recv_type(alice_ws, "notification")["id"] == for_alice
        assert recv_type(bob_ws, "notification")["id"] == for_bob
        # An ack on instance A reaches Alice's other tab on instance B.
        with open_socket(instance_b, alice_token) as alice_tab_b:
            wait_until(
                lambda: len(get_presence().nodes_for_users([alice.pk])) == 2, message="alice on both nodes"
            )
            alice_ws.send(f'{{"type": "ack", "id": {for_alice}}}')
            assert recv_type(alice_tab_b, "read") == {"type": "read", "id": for_alice, "read_cursor": 1}
