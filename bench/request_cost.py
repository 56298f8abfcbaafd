"""Server CPU per HTTP request: what bounds W5's sends (and every API call) — Clarion's request
handler against Django's stock ASGI handler, the same project on the same daphne.

    python -m bench.request_cost [--requests 300] [--runs 3]

Each system is a fresh daphne: Clarion's `notifyproject.asgi:application` (the middleware chain
and view in one thread hop, notifyproject/handler.py; the send without a Django request,
delivery/send_endpoint.py) and `bench.stock_django_asgi:application` (Django's
`get_asgi_application()`: every sync middleware adapted on its own, the view for the send). For each request
kind, a warm-up of 30 requests, then `--requests` sent one after another from one keep-alive
client; reported: the p50 time of one request and the server's CPU per request (utime + stime
of the daphne process from /proc over the run). Median of the runs (min–max).

Request kinds: an unknown path (404: middleware only), an authenticated read
(GET /api/v1/notifications/<missing>/: API key lookup, 404), and a send to one user
(POST /api/v1/notifications/: API key, rate limit, rows, commit, inline fan-out).
"""

import argparse
import asyncio
import os
import statistics
import time

from bench.harness import (
    bench_env,
    drop_database,
    migrate,
    purge_redis,
    record,
    scratch_database,
    setup_django,
)
from bench.realtime_common import REALTIME_REDIS_URL, percentile, start_daphne, users_with_tokens

DATABASE = os.environ.get("BENCH_REQUEST_COST_DATABASE", "clarion_bench_request_cost")
WARM_UP_REQUESTS = 30
SYSTEMS = {
    "clarion": "notifyproject.asgi:application",
    "stock Django ASGIHandler": "bench.stock_django_asgi:application",
}
KINDS = ("404, no auth", "GET, API key, 404", "POST send, one user")


async def measure(port: int, proc, api_key: str, username: str, count: int) -> dict[str, tuple[float, float]]:
    import httpx

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    ) as client:
        send = {"to": {"users": [username]}, "title": "cost"}
        requests = {  # kind → (the call, the status it must answer)
            KINDS[0]: (lambda: client.get("/no-such-page/", headers={"Authorization": ""}), 404),
            KINDS[1]: (lambda: client.get("/api/v1/notifications/999999999/"), 404),
            KINDS[2]: (lambda: client.post("/api/v1/notifications/", json=send), 202),
        }
        results = {}
        for kind, (call, expected) in requests.items():
            for _ in range(WARM_UP_REQUESTS):
                await call()
            durations = []
            cpu_before = proc.cpu_secs()
            for _ in range(count):
                started = time.perf_counter()
                response = await call()
                durations.append(time.perf_counter() - started)
                if response.status_code != expected:
                    raise RuntimeError(f"{kind}: {response.status_code} {response.text[:200]}")
            cpu_ms = (proc.cpu_secs() - cpu_before) / count * 1000
            results[kind] = (percentile(durations, 0.5) * 1000, cpu_ms)
        return results


def tenths(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    # The send rate limit (3,000/min per key) is not what is measured here.
    env = bench_env(scratch_database(DATABASE), REDIS_URL=REALTIME_REDIS_URL, CLARION_SEND_RATE="1000000/min")
    purge_redis(env["REDIS_URL"])
    migrate(env)
    setup_django(env)
    from notifyproject.identities.api_keys import api_key_create

    _key, api_key = api_key_create(name="bench", scopes=["send", "read"])
    ((_user_id, username, _token),) = users_with_tokens(1, "cost")
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {name: {k: [] for k in KINDS} for name in SYSTEMS}
    for run in range(args.runs):
        for name, app in SYSTEMS.items():
            proc, port = start_daphne(env, app)
            try:
                measured = asyncio.run(measure(port, proc, api_key, username, args.requests))
                for kind, figures in measured.items():
                    runs[name][kind].append(figures)
            finally:
                proc.stop()
        print(f"run {run + 1} of {args.runs} done", flush=True)

    print(f"\nServer CPU per request, {args.requests} one at a time, {args.runs} runs: median (min–max)")
    print(f"{'request':<22}{'system':<28}{'p50 ms':<22}{'server CPU ms/request':<24}")
    for kind in KINDS:
        for name in SYSTEMS:
            p50s = [p50 for p50, _ in runs[name][kind]]
            cpus = [cpu for _, cpu in runs[name][kind]]
            print(f"{kind:<22}{name:<28}{tenths(p50s):<22}{tenths(cpus):<24}")
        ours = statistics.median(cpu for _, cpu in runs["clarion"][kind])
        stock = statistics.median(cpu for _, cpu in runs["stock Django ASGIHandler"][kind])
        record(
            "W5",
            f"server CPU ms per request: {kind}",
            ours,
            {"stock Django ASGIHandler": stock},
            higher_is_better=False,
            note="same project, same daphne; bounds W5's send latency",
        )


if __name__ == "__main__":
    try:
        main()
    finally:
        drop_database(DATABASE)
