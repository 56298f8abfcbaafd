"""The embedded default: a Celery worker and beat inside the web process.

With no REDIS_URL, Celery's broker is kombu's in-memory transport, which only carries
messages between threads of one process. So the ASGI process starts a worker (thread
pool) and beat (database scheduler) in daemon threads, and the same task code runs here
as in the Procfile's separate `worker` and `beat` processes. Scheduled sends live in the
database, so a restart loses none of them; queued-but-unstarted tasks of the in-memory
broker are re-enqueued at start-up by the sweeper task (see delivery/tasks.py).
"""

import logging
import threading

from django.conf import settings

from notifyproject.celery import app

logger = logging.getLogger(__name__)

EMBEDDED_WORKER_THREADS = 4  # provider sends are I/O-bound; 4 overlap them on 2 cores
_started = threading.Event()
_lock = threading.Lock()


def start_embedded_worker() -> bool:
    """Start the in-process worker and beat once per process; False if already running."""
    with _lock:
        if _started.is_set():
            return False
        _started.set()
    threading.Thread(target=_run_worker, name="clarion-worker", daemon=True).start()
    threading.Thread(target=_run_beat, name="clarion-beat", daemon=True).start()
    logger.info("embedded Celery worker and beat started (in-memory broker)")
    return True


def embedded_worker_running() -> bool:
    return _started.is_set() and any(
        t.name == "clarion-worker" and t.is_alive() for t in threading.enumerate()
    )


def _run_worker() -> None:
    worker = app.WorkController(
        pool_cls="threads",
        concurrency=EMBEDDED_WORKER_THREADS,
        hostname="embedded@clarion",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel=settings.LOGGING["root"]["level"],
    )
    worker.start()


def _run_beat() -> None:
    from celery.beat import Service

    Service(app, scheduler_cls=settings.CELERY_BEAT_SCHEDULER).start()
