"""The OpenAPI schema is usable by a generator: a client built from it works against a live server."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from notifyproject.identities.api_keys import api_key_create

BIN = Path(sys.executable).parent
PACKAGE = "clarion_generated_client"


@pytest.fixture
def generated_client(start_web, tmp_path, monkeypatch):
    """openapi-python-client's package for the schema a live daphne serves, importable."""
    web = start_web()
    schema = httpx.get(
        f"{web.url}/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}, timeout=10
    ).json()
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    result = subprocess.run(
        [str(BIN / "openapi-python-client"), "generate", "--path", "schema.json"]
        + ["--output-path", PACKAGE, "--meta", "none"],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},  # it formats with ruff
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    yield web, importlib.import_module(PACKAGE)
    for name in [name for name in sys.modules if name.startswith(PACKAGE)]:
        del sys.modules[name]


def test_a_generated_client_mints_sends_reads_and_gets_errors_in_the_contract_shape(generated_client):
    web, package = generated_client
    api = importlib.import_module(f"{PACKAGE}.api")
    models = importlib.import_module(f"{PACKAGE}.models")
    _key, key = api_key_create(name="generated", scopes=["send", "read"])
    backend = package.AuthenticatedClient(base_url=web.url, token=key)

    mint = importlib.import_module(f"{api.__name__}.client_tokens.mint_client_token")
    minted = mint.sync_detailed(client=backend, body=models.ClientTokenRequestRequest(user="alice"))
    assert minted.status_code == 201 and minted.parsed.token

    send = importlib.import_module(f"{api.__name__}.notifications.send_notification")
    accepted = send.sync(
        client=backend,
        body=models.NotificationCreateRequest(to=models.TargetRequest(users=["alice"]), title="generated"),
        idempotency_key="generated-1",
    )
    assert accepted.recipients == 1

    get = importlib.import_module(f"{api.__name__}.notifications.get_notification")
    assert get.sync(client=backend, notification_id=accepted.id).title == "generated"
    missing = get.sync_detailed(client=backend, notification_id=accepted.id + 1000)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Error) and missing.parsed.error.code == "not_found"

    alice = package.AuthenticatedClient(base_url=web.url, token=minted.parsed.token, prefix="Token")
    inbox = importlib.import_module(f"{api.__name__}.inbox.get_inbox")
    assert [message.title for message in inbox.sync(client=alice).results] == ["generated"]
