"""`manage.py generate_vapid_keys` prints a key pair the Web Push provider accepts."""

import io

import pytest
from django.core.management import CommandError, call_command

from delivery.providers import Outcome
from delivery.providers.transport import b64url_decode
from tests.delivery.providers.conftest import provider, push_message, subscription_target


def generate(*args) -> dict[str, str]:
    out = io.StringIO()
    call_command("generate_vapid_keys", *args, stdout=out)
    return dict(line.split("=", 1) for line in out.getvalue().splitlines())


def test_prints_env_lines_for_a_working_key_pair(fake_push_service, settings):
    env = generate("--subject", "mailto:ops@example.com")
    assert set(env) == {"VAPID_PRIVATE_KEY", "VAPID_PUBLIC_KEY", "VAPID_SUBJECT"}
    public = b64url_decode(env["VAPID_PUBLIC_KEY"])
    assert len(public) == 65 and public[0] == 4  # uncompressed P-256 point, as browsers want
    assert len(b64url_decode(env["VAPID_PRIVATE_KEY"])) == 32
    for name, value in env.items():
        setattr(settings, name, value)

    subscription = fake_push_service.subscribe(application_server_key=env["VAPID_PUBLIC_KEY"])
    (result,) = provider("webpush").send(push_message(), [subscription_target(subscription)])
    assert result.outcome == Outcome.SENT


def test_every_run_is_a_new_pair():
    assert generate()["VAPID_PRIVATE_KEY"] != generate()["VAPID_PRIVATE_KEY"]


def test_refuses_a_subject_that_is_not_a_uri():
    with pytest.raises(CommandError):
        generate("--subject", "ops@example.com")
