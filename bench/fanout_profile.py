"""Where a broadcast's fan-out spends its time: cProfile of notification_fan_out, both paths.

Runs the fan-out in this process (no worker, so the profile is the fan-out alone: recipient
query, row writes, enqueueing the send tasks) on the W9 audience, once with the ORM path
(CLARION_FANOUT_BULK=0) and once with the set-based one, and prints each one's top functions.

    python -m bench.fanout_profile --recipients 20000
"""

import argparse
import cProfile
import io
import pstats
import time

from bench import harness
from bench.pipeline import DB_NAME, load_audience, reset_sends


def profiled_fan_out(connection, bulk: bool, top: int) -> dict:
    from django.conf import settings

    from delivery.fanout import notification_fan_out
    from delivery.services import NotificationRequest, Sender, notification_send

    reset_sends(connection)
    settings.CLARION_FANOUT_BULK = bulk
    notification, _ = notification_send(
        sender=Sender(label="profile"),
        request=NotificationRequest(target={"broadcast": True}, title="W9", body="bench", route="push"),
    )
    harness.purge_redis()  # the dispatch task: this process fans out instead
    profiler = cProfile.Profile()
    began = time.monotonic()
    profiler.runcall(notification_fan_out, notification.pk)
    elapsed = time.monotonic() - began
    harness.purge_redis()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return {"elapsed": elapsed, "profile": out.getvalue()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--database", default=DB_NAME, help="scratch database (dropped and created)")
    args = parser.parse_args(argv)

    env = harness.bench_env(harness.scratch_database(args.database))
    harness.migrate(env)
    harness.setup_django(env)
    from django.db import connection

    load_audience(connection, args.recipients)
    try:
        results = {
            name: profiled_fan_out(connection, bulk, args.top)
            for name, bulk in (("orm", False), ("bulk", True))
        }
    finally:
        connection.close()
        harness.drop_database(args.database)
    for name, result in results.items():
        rate = args.recipients / result["elapsed"]
        took = f"{args.recipients:,} recipients in {result['elapsed']:.2f} s"
        print(f"\n== {name}: {took} ({rate:,.0f}/s, under cProfile)")
        print(result["profile"])
    print(f"ratio bulk/orm: {results['orm']['elapsed'] / results['bulk']['elapsed']:.1f}×")


if __name__ == "__main__":
    main()
