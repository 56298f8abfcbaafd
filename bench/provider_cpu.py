"""Provider CPU per message: each provider's send() against the fakes, in this process, no database.

The fakes run in their own process (bench.providers.Fakes), so what is measured here is only the
provider path: message building, encryption, signing, HTTP framing, parsing the answers.
Beside each provider runs the same provider as it was at BASELINE_REV (SDK + requests for FCM,
httpcore for APNs, http-ece + aiohttp for Web Push), loaded from git, in the same invocation.

    python -m bench.provider_cpu                    # 20,000 messages per provider, 3 runs
    python -m bench.provider_cpu --messages 5000 --runs 1 --profile var/profiles
    python -m bench.provider_cpu --only webpush --baseline-rev main   # against another revision
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench import harness

# The last revision whose providers sent through firebase-admin/requests, httpcore and http-ece.
BASELINE_REV = "94ff072"
BATCH = 500  # targets per send(), as the fan-out hands them to a worker
WARMUP_MESSAGES = 1000
GOAL_CPU_US = 250
PROVIDERS = {
    "fcm": "delivery.providers.fcm.FcmProvider",
    "apns": "delivery.providers.apns.ApnsProvider",
    "webpush": "delivery.providers.webpush.WebPushProvider",
}
MODULES = {"fcm": "fcm.py", "apns": "apns.py", "webpush": "webpush.py"}
CLASSES = {"fcm": "FcmProvider", "apns": "ApnsProvider", "webpush": "WebPushProvider"}


def baseline_class(platform: str, workdir: Path, rev: str = BASELINE_REV):
    """The provider class of `rev`, imported from `git show` under a module name of its own."""
    source = subprocess.run(
        ["git", "show", f"{rev}:delivery/providers/{MODULES[platform]}"],
        cwd=harness.ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = workdir / f"baseline_{platform}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"bench_baseline_{platform}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return getattr(module, CLASSES[platform])


def build(provider_class, platform: str, baseline: bool, fakes):
    """A provider for the default app; the baseline FCM (firebase-admin, requests) needs HTTP/1.1."""
    if not (baseline and platform == "fcm"):
        return provider_class()
    from delivery.providers.credentials import AppCredentials

    return provider_class(
        dataclasses.replace(AppCredentials.from_settings(), fcm_endpoint=fakes.fcm_http1_url)
    )


def message(platform: str):
    from django.utils import timezone

    from delivery.providers import PushMessage

    return PushMessage(
        notification_id=123456,
        title="Provider CPU",
        body="x" * 150,
        data={"bench": platform},
        url="https://app.example/n/1",
        icon="",
        priority="high",
        expires_at=timezone.now() + timedelta(hours=1),
        collapse_key="",
    )


def targets(platform: str, count: int, subscriptions: list[dict]):
    from delivery.providers import PushTarget

    if platform == "webpush":
        return [
            PushTarget(i, i, s["endpoint"], p256dh=s["keys"]["p256dh"], auth=s["keys"]["auth"])
            for i, s in enumerate(subscriptions[:count])
        ]
    token = (lambda i: f"fcm-token-{i}") if platform == "fcm" else (lambda i: f"{i:064x}")
    return [PushTarget(i, i, token(i), environment="production") for i in range(count)]


def timed(provider, msg, all_targets) -> tuple[float, float, int]:
    """(CPU seconds of this process, wall seconds, messages the fake accepted)."""
    cpu, wall = time.process_time(), time.perf_counter()
    sent = 0
    for start in range(0, len(all_targets), BATCH):
        results = provider.send(msg, all_targets[start : start + BATCH])
        sent += sum(r.outcome.value == "sent" for r in results)
    return time.process_time() - cpu, time.perf_counter() - wall, sent


def profiling(directory: str | None, name: str):
    """py-spy on this process during the timed runs, with --profile DIR."""
    if not directory:
        return contextlib.nullcontext()
    return harness.py_spy(os.getpid(), Path(directory) / f"provider-cpu-{name}.txt")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="fcm,apns,webpush")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--baseline-rev",
        default=BASELINE_REV,
        help="the revision whose provider runs beside ours (its module alone, on today's helpers)",
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy this process during the timed runs")
    args = parser.parse_args(argv)
    from bench.providers import Fakes

    workdir = Path(tempfile.mkdtemp(prefix="clarion-provider-cpu-"))
    fakes = Fakes(workdir, latency_ms=0, subscriptions=args.messages)
    try:
        os.environ.update(fakes.env)
        os.environ.update(SECRET_KEY="clarion-bench", DEBUG="0", LOG_LEVEL="WARNING")
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifyproject.settings")
        import django

        django.setup()
        from django.utils.module_loading import import_string

        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; loopback only", flush=True)
        rows = []
        for platform in args.only.split(","):
            variants = [("clarion", import_string(PROVIDERS[platform]))]
            if not args.no_baseline:
                variants.append(
                    (f"{args.baseline_rev} transport", baseline_class(platform, workdir, args.baseline_rev))
                )
            msg, all_targets = message(platform), targets(platform, args.messages, fakes.subscriptions)
            for name, provider_class in variants:
                sdk_baseline = name != "clarion" and args.baseline_rev == BASELINE_REV  # FCM over HTTP/1.1
                provider = build(provider_class, platform, baseline=sdk_baseline, fakes=fakes)
                assert not provider.not_configured_reason(), provider.not_configured_reason()
                try:
                    timed(provider, msg, all_targets[:WARMUP_MESSAGES])
                    fakes_cpu = fakes.cpu_secs()
                    with profiling(args.profile, f"{platform}-{name.split()[0]}"):
                        runs = [timed(provider, msg, all_targets) for _ in range(args.runs)]
                    fakes_cpu = fakes.cpu_secs() - fakes_cpu
                finally:
                    provider.close()
                cpu_us = [cpu / args.messages * 1e6 for cpu, _, _ in runs]
                rates = [args.messages / wall for _, wall, _ in runs]
                accepted = min(sent for _, _, sent in runs)
                rows.append(
                    (platform, name, cpu_us, rates, accepted, fakes_cpu / args.runs / args.messages * 1e6)
                )
                print(f"  {platform} {name}: {statistics.median(cpu_us):,.0f} µs/msg", flush=True)
    finally:
        fakes.stop()
    print(f"\nProvider CPU per message (N = {args.messages:,} per run; median of {args.runs}, min–max)")
    print(f"{'':<28}{'CPU µs/msg':>18}{'msg/s':>22}{'accepted':>10}{'fake µs/msg':>13}")
    for platform, name, cpu_us, rates, accepted, fake_us in rows:
        label = f"{platform} {name}"
        print(
            f"{label:<28}{harness.summary(cpu_us):>18}{harness.summary(rates):>22}{accepted:>10,}{fake_us:>13,.0f}"
        )
    for platform in dict.fromkeys(row[0] for row in rows):
        mine = [statistics.median(r[2]) for r in rows if r[0] == platform and r[1] == "clarion"]
        theirs = [statistics.median(r[2]) for r in rows if r[0] == platform and r[1] != "clarion"]
        if mine:
            harness.record(
                "provider CPU",
                f"clarion {platform} µs CPU/msg",
                mine[0],
                {f"{args.baseline_rev} transport": theirs[0]} if theirs else {},
                goal=f"≤ {GOAL_CPU_US} µs/msg",
                met=mine[0] <= GOAL_CPU_US,
                higher_is_better=False,
            )


if __name__ == "__main__":
    main()
