"""The embedded default: one process, SQLite, no Redis — sends, live and scheduled, still work."""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
from websockets.sync.client import connect

from tests.support.processes import ROOT, WebServer, process_env


def test_one_process_without_redis_delivers_live_and_scheduled_notifications(tmp_path):
    env = process_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'clarion.sqlite3'}", REDIS_URL="", CLARION_EMBEDDED_WORKER="1"
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
        assert httpx.get(f"{web.url}/healthz").json() == {
            "database": "ok",
            "channel_layer": "ok",
            "broker": "ok",
        }
        api = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        token = api.post("/api/v1/client-tokens/", json={"user": "alice"}).json()["token"]
        with connect(f"{web.ws_url}/ws/v1/notifications/?token={token}", open_timeout=10) as ws:
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
    finally:
        web.stop()
