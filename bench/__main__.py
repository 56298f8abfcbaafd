"""`make bench`: every benchmark in turn, each printing Clarion and its baselines side by side.

python -m bench            # full sizes (long: tens of minutes)
python -m bench --quick    # reduced sizes
python -m bench pipeline   # just one
python -m bench --million  # the million-recipient fan-out (pipeline_million), only run when asked
"""

import os
import subprocess
import sys
import tempfile

from bench.harness import RESULTS_ENV, format_table, read_records

# name → (arguments for a full run, arguments for --quick)
BENCHMARKS = {
    "pipeline": ([], ["--quick"]),
    "webhooks": ([], ["--quick"]),  # W9 with/without a delivery.sent webhook; events/s to a loopback receiver
    "providers": ([], ["--quick"]),  # bulk, W6 and W7 through the whole pipeline, beside the peers
    # provider CPU per message, each provider's send() alone beside the previous transports
    "provider_cpu": ([], ["--messages", "5000", "--runs", "3"]),
    "admin_bench": ([], ["--runs", "3"]),  # 1,000,000 deliveries either way
    "soak": ([], ["--quick"]),  # 10 min, 500 clients, Redis restart + worker SIGKILL; quick: 2 min, 100
    # W3: 10,000 idle sockets for 10 min (one run); quick: 2,000 for 1 min, one run per server
    "realtime_memory": ([], ["--clients", "2000", "--minutes", "1", "--runs", "1"]),
    "reconnect_storm": ([], ["--quick"]),  # W4: 10,000 clients drop and reconnect; quick 2,000
    "realtime_latency": ([], ["--users", "200", "--rounds", "3", "--w5-users", "100", "--w5-secs", "5"]),
    "longpoll": ([], ["--clients", "500", "--secs", "5"]),
    "realtime_throughput": ([], ["--quick"]),  # W1 broadcast, W2 per-user; quick: 500 clients
    "handshake": ([], ["--quick"]),  # what bounds W1/W3/W4 connects: 1,000 sockets; quick 500
    "request_cost": ([], ["--runs", "1"]),  # what bounds W5's sends: CPU per request vs stock Django
}

# Run only when named or asked with --million: name → (module, arguments)
ON_REQUEST = {
    # one broadcast to 1,000,000 users: fan-out/s, peak RSS, bytes per recipient, the retention delete
    "pipeline_million": (
        "pipeline",
        ["--recipients", "1000000", "--runs", "1", "--skip-orm", "--skip-stock", "--retention"],
    ),
}


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    named = [name for name in sys.argv[1:] if not name.startswith("-")]
    if "--million" in sys.argv[1:]:
        named.append("pipeline_million")
    chosen = named or list(BENCHMARKS)
    failed = []
    handle, results = tempfile.mkstemp(prefix="clarion-bench-", suffix=".jsonl")
    os.close(handle)
    env = {**os.environ, RESULTS_ENV: results}
    for name in chosen:
        if name in ON_REQUEST:
            module, arguments = ON_REQUEST[name]
            args = [sys.executable, "-m", f"bench.{module}", *arguments]
        else:
            full, reduced = BENCHMARKS[name]
            args = [sys.executable, "-m", f"bench.{name}", *(reduced if quick else full)]
        print(f"\n== {' '.join(args[2:])}", flush=True)
        if subprocess.run(args, env=env).returncode:
            failed.append(name)
    print(
        f"\n== Clarion against its baselines ({'--quick' if quick else 'full size'}; "
        "ratio > 1: Clarion ahead)"
    )
    print(format_table(read_records(results)))
    os.unlink(results)
    if failed:
        print("\nfailed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
