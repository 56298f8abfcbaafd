"""PostgreSQL goes away and comes back: clear 503s meanwhile, full recovery, no accepted send lost."""

import subprocess
import sys

import httpx
import pytest

from tests.support.processes import ROOT, process_env, wait_until
from tests.support.servers import PrivatePostgres

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def postgres():
    server = PrivatePostgres().start()
    yield server
    server.cleanup()


def test_postgres_outage_gives_503s_then_recovers_without_losing_an_accepted_send(
    postgres, start_web, start_worker, recorder
):
    env = {"DATABASE_URL": postgres.url, "CLARION_STALE_WORK_SECS": 2}
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=process_env(**env), cwd=ROOT, check=True, timeout=120)
    key = subprocess.run(
        [*manage, "create_api_key", "faults"],
        env=process_env(**env),
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    web = start_web(**env)
    worker = start_worker(**env)
    api = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {key}"}, timeout=15)
    token = api.post("/api/v1/client-tokens/", json={"user": "alice"}).json()["token"]
    phone = httpx.post(
        f"{web.url}/api/v1/devices/",
        json={"platform": "fcm", "token": "alice-phone"},
        headers={"Authorization": f"Token {token}"},
    ).json()
    assert phone["active"] is True

    def send(title):
        return api.post(
            "/api/v1/notifications/", json={"to": {"users": ["alice"]}, "title": title, "route": "push"}
        )

    def titles():
        return sorted(s["title"] for s in recorder.sent())

    assert send("before").status_code == 202
    wait_until(lambda: titles() == ["before"], message="the first push")

    worker.stop()
    assert send("accepted just before the outage").status_code == 202  # committed; its task waits in Redis
    postgres.stop()

    refused = send("during")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "service_unavailable"
    poll_url = f"{web.url}/api/v1/poll/?timeout=0"  # a token poll, served without Django's handler
    polled = httpx.get(poll_url, headers={"Authorization": f"Token {token}"}, timeout=30)
    assert polled.status_code == 503
    assert polled.json()["error"]["code"] == "service_unavailable"
    health = httpx.get(f"{web.url}/healthz", timeout=15)
    assert health.status_code == 503
    assert health.json()["database"].startswith("error") and health.json()["broker"] == "ok"

    worker2 = start_worker(**env)  # takes the waiting task while the database is down; it fails
    postgres.start()
    wait_until(
        lambda: httpx.get(f"{web.url}/healthz", timeout=15).status_code == 200,
        timeout=30,
        message="healthz to recover",
    )
    assert send("after").status_code == 202
    try:
        wait_until(
            lambda: titles() == ["accepted just before the outage", "after", "before"],
            timeout=60,
            message="every accepted send delivered",
        )
    except AssertionError:
        print("TITLES", titles())
        print("".join(line for line in worker2.output if "Beat" in line or "sweep" in line)[-6000:])
        raise
    assert len(recorder.sent()) == 3  # none twice, and the refused one never
