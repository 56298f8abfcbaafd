"""The embedded default: one process, SQLite, no Redis — sends, live and scheduled, still work."""

import json
import subprocess
import sys
import threading
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.processes import ROOT, WebServer, process_env, wait_until

TOKEN_RECHECK_SECS = "0.3"  # the node's re-check of open tokens; production: every 30 s


@pytest.fixture
def embedded(tmp_path):
    """A migrated one-process Clarion on SQLite with an API key; yields (server, key)."""
    env = process_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'clarion.sqlite3'}",
        REDIS_URL="",
        CLARION_EMBEDDED_WORKER="1",
        # Recovery would re-dispatch a failed fan-out after this long; no test here may lean on it.
        CLARION_STALE_WORK_SECS="600",
        CLARION_TOKEN_RECHECK_SECS=TOKEN_RECHECK_SECS,
        WEBHOOK_ALLOW_PRIVATE_URLS="1",  # the loopback webhook receiver below
    )
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=ROOT, timeout=120)
    key = subprocess.run(
        [*manage, "create_api_key", "embedded"],
        env=env,
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    web = WebServer()
    web.env = env
    web.start()
    try:
        web.wait_ready()
        yield web, key
    finally:
        web.stop()
        print("".join(web.output))  # pytest shows it only when the test failed


@contextmanager
def _live_socket(web, api, user: str):
    token = api.post("/api/v1/client-tokens/", json={"user": user}).json()["token"]
    with connect(f"{web.ws_url}/ws/v1/notifications/?token={token}", open_timeout=10) as ws:
        # Frames are handled in order, so the pong proves the socket has finished connecting.
        ws.send('{"type": "ping"}')
        assert json.loads(ws.recv(timeout=10))["type"] == "pong"
        yield ws


def test_one_process_without_redis_delivers_live_and_scheduled_notifications(embedded):
    web, key = embedded
    assert httpx.get(f"{web.url}/healthz").json() == {
        "database": "ok",
        "channel_layer": "ok",
        "broker": "ok",
        "realtime_node": "ok",  # embedded: publishers hand frames to the node directly
    }
    api = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    with _live_socket(web, api, "alice") as ws:
        now = api.post("/api/v1/notifications/", json={"to": {"users": ["alice"]}, "title": "now"})
        assert now.status_code == 202
        assert json.loads(ws.recv(timeout=15))["title"] == "now"

        send_at = datetime.now(UTC) + timedelta(seconds=3)
        later = api.post(
            "/api/v1/notifications/",
            json={"to": {"users": ["alice"]}, "title": "later", "send_at": send_at.isoformat()},
        )
        assert later.json()["status"] == "scheduled"
        message = json.loads(ws.recv(timeout=15))
        arrived = datetime.now(UTC)
    assert message["title"] == "later"
    assert abs((arrived - send_at).total_seconds()) <= 2, (arrived, send_at)


def test_concurrent_live_and_scheduled_sends_all_arrive_first_time(embedded):
    """Requests, worker threads and beat write one SQLite file at once; no fan-out may fail on a lock.

    SQLite fails a transaction that read before another thread committed and then tries to
    write ("database is locked", at once, whatever the busy timeout). Such a fan-out was only
    re-dispatched by the sweeper, half a minute later.
    """
    web, key = embedded
    users, sends_each = [f"user{i}" for i in range(4)], 12
    api = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    stack = ExitStack()
    sockets = {user: stack.enter_context(_live_socket(web, api, user)) for user in users}
    received = {user: [] for user in users}

    def listen(user):
        while len(received[user]) < 2 * sends_each:
            frame = json.loads(sockets[user].recv(timeout=30))
            if "title" in frame:
                received[user].append(frame["title"])

    def send(user):
        client = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        for i in range(sends_each):
            live = client.post("/api/v1/notifications/", json={"to": {"users": [user]}, "title": f"now {i}"})
            send_at = datetime.now(UTC) + timedelta(seconds=1 + i % 3)
            scheduled = client.post(
                "/api/v1/notifications/",
                json={"to": {"users": [user]}, "title": f"later {i}", "send_at": send_at.isoformat()},
            )
            assert (live.status_code, scheduled.status_code) == (202, 202)

    listeners = [threading.Thread(target=listen, args=(user,), daemon=True) for user in users]
    senders = [threading.Thread(target=send, args=(user,)) for user in users]
    for thread in listeners + senders:
        thread.start()
    for thread in senders:
        thread.join()
    with stack:
        wait_until(
            lambda: all(len(titles) == 2 * sends_each for titles in received.values()),
            timeout=20,
            message="every notification to arrive",
        )
    expected = sorted([f"now {i}" for i in range(sends_each)] + [f"later {i}" for i in range(sends_each)])
    assert {user: sorted(titles) for user, titles in received.items()} == {user: expected for user in users}


def test_webhooks_are_signed_and_posted_from_the_embedded_default(embedded):
    """The outbox's multi-row statements and the webhook sender on SQLite and the in-process worker."""
    import standardwebhooks

    from tests.webhooks.receiver import Receiver

    web, key = embedded
    receiver = Receiver().start()
    try:
        api = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        hook = api.post(
            "/api/v1/webhooks/",
            json={
                "url": receiver.url,
                "events": ["delivery.sent", "delivery.delivered", "notification.read"],
            },
        ).json()
        with _live_socket(web, api, "alice") as ws:
            sent = api.post(
                "/api/v1/notifications/", json={"to": {"users": ["alice"]}, "title": "hooked"}
            ).json()
            assert json.loads(ws.recv(timeout=15))["id"] == sent["id"]
            ws.send(json.dumps({"type": "ack", "id": sent["id"]}))
            received = receiver.wait_for(3)
        verifier = standardwebhooks.Webhook(hook["secret"])
        bodies = [verifier.verify(r.body, r.headers) for r in received]
        assert sorted(b["type"] for b in bodies) == [
            "delivery.delivered",
            "delivery.sent",
            "notification.read",
        ]
        assert {b["data"]["notification"] for b in bodies} == {sent["id"]}
        attempts = wait_until(
            lambda: (
                len(found := api.get(f"/api/v1/webhooks/{hook['id']}/attempts/").json()["results"]) == 3
                and found
            ),
            message="the three attempts recorded",
        )
        assert [a["status_code"] for a in attempts] == [200, 200, 200]
    finally:
        receiver.stop()


def test_a_revoked_tokens_socket_is_closed_and_the_others_stay_open(embedded):
    """The node's token re-check on SQLite (the ORM query, not PostgreSQL's array statement)."""
    web, key = embedded
    api = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    with _live_socket(web, api, "alice") as kept, _live_socket(web, api, "bob") as revoked:
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "shell",
                "-c",
                "from knox.models import AuthToken; AuthToken.objects.filter(user__username='bob').delete()",
            ],
            env=web.env,
            check=True,
            cwd=ROOT,
            timeout=60,
        )
        with pytest.raises(ConnectionClosed) as closed:
            revoked.recv(timeout=15)
        assert closed.value.rcvd.code == 4401
        kept.send('{"type": "ping"}')
        assert json.loads(kept.recv(timeout=10))["type"] == "pong"
        sent = api.post("/api/v1/notifications/", json={"to": {"users": ["alice"]}, "title": "still here"})
        assert sent.status_code == 202
        assert json.loads(kept.recv(timeout=15))["title"] == "still here"
