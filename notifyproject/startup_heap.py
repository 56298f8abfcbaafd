"""Keep the objects a process builds at startup out of the cyclic garbage collector's full passes.

Django, DRF, Channels and Twisted leave a couple of hundred thousand long-lived objects
(modules, classes, URL patterns, settings) behind after startup. CPython's full collection
walks every one of them whenever it runs: about 65 ms a pass in the web process, a stall that
every request and socket frame in flight waits out (the W5 p99 in docs/benchmarks.md). Frozen,
they are skipped by every later pass (`gc.freeze`); the collector still runs as before for
everything created after.
"""

import gc


def freeze_startup_heap() -> None:
    """Collect what startup left as garbage, then freeze everything that is left."""
    gc.collect()
    gc.freeze()
