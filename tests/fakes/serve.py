"""Run the FCM, APNs and Web Push fakes until Ctrl-C or SIGTERM; print the env that points Clarion at them.

    .venv/bin/python -m tests.fakes.serve --env-file var/fakes.env
    # in another shell:
    set -a; . var/fakes.env; set +a; make run

Ports are ephemeral and printed; credentials, keys and the CA live in temp files removed on exit.
What each fake receives is printed as it arrives. See docs/providers.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
from pathlib import Path

from .apns import FakeAPNs
from .fcm import FakeFCM
from .webpush import FakePushService, generate_vapid_keypair

REPORT_INTERVAL_SECS = 1.0  # how often new arrivals are printed
VAPID_SUBJECT = "mailto:ops@clarion.invalid"
EXAMPLE_APNS_TOKEN = "a1" * 32


def environment(fcm: FakeFCM, apns: FakeAPNs, push: FakePushService, vapid: tuple[str, str]) -> dict:
    private, public = vapid
    return {
        "FCM_CREDENTIALS": str(fcm.write_service_account()),
        "FCM_ENDPOINT": fcm.h2_url,  # Clarion sends over HTTP/2; the OAuth token_uri is fcm.url
        "APNS_KEY": str(apns.key_path),
        "APNS_KEY_ID": apns.key_id,
        "APNS_TEAM_ID": apns.team_id,
        "APNS_TOPIC": apns.topic,
        "APNS_ENDPOINT": apns.url,
        "APNS_SANDBOX_ENDPOINT": apns.url,
        "APNS_CA_BUNDLE": str(apns.ca_path),
        "VAPID_PRIVATE_KEY": private,
        "VAPID_PUBLIC_KEY": public,
        "VAPID_SUBJECT": VAPID_SUBJECT,
        "WEBPUSH_ALLOW_PRIVATE_ENDPOINTS": "1",  # the fake push service is http://127.0.0.1
    }


def report(fcm: FakeFCM, apns: FakeAPNs, push: FakePushService, seen: dict) -> None:
    """Print whatever arrived since the last call (attempts include refusals and programmed errors)."""
    for name, records, describe in (
        ("fcm", fcm.messages, lambda m: f"token={m.message.get('token')} {json.dumps(m.message)[:200]}"),
        ("apns", apns.notifications, lambda n: f"token={n.token[:12]}… {json.dumps(n.payload)[:200]}"),
        ("webpush", push.messages, lambda m: f"ttl={m.ttl} urgency={m.urgency} {m.plaintext[:200].decode()}"),
    ):
        for record in records[seen.get(name, 0) :]:
            print(f"[{name}] {describe(record)}", flush=True)
        seen[name] = len(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, help="also write the variables here, for `set -a; . FILE`")
    args = parser.parse_args(argv)

    vapid = generate_vapid_keypair()
    with FakeFCM() as fcm, FakeAPNs() as apns, FakePushService() as push:
        env = environment(fcm, apns, push, vapid)
        lines = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
        print("# Clarion → fakes. Paste into the shell that runs `make run`:", *lines, sep="\n")
        if args.env_file:
            args.env_file.parent.mkdir(parents=True, exist_ok=True)
            args.env_file.write_text("\n".join(f"{n}={shlex.quote(v)}" for n, v in env.items()) + "\n")
            print(f"# also written to {args.env_file}")
        subscription = push.subscribe(application_server_key=vapid[1])
        print(
            "\n# Devices the fakes accept (POST /api/v1/devices/ with an end-user token):",
            json.dumps({"platform": "fcm", "token": "any-fcm-token-1"}),
            json.dumps({"platform": "apns", "token": EXAMPLE_APNS_TOKEN, "environment": "production"}),
            json.dumps({"platform": "webpush", "subscription": subscription}),
            "\n# Serving until Ctrl-C; arrivals are printed below.",
            sep="\n",
            flush=True,
        )
        stop, seen = threading.Event(), {}
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # `kill PID` also cleans up the temp files
        try:
            while not stop.wait(REPORT_INTERVAL_SECS):
                report(fcm, apns, push, seen)
        except KeyboardInterrupt:
            print("\nstopping the fakes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
