"""The Celery app; its configuration is the CELERY_* names in settings."""

import os

from celery import Celery
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifyproject.settings")

app = Celery("clarion")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery's Django fixup closes every database connection before and after each task unless
# this is set: a new PostgreSQL connection per task capped our workers near 100 tasks/s
# (bench/pipeline.py). Connections are reused instead, and recycled by the hooks below.
app.conf["CELERY_DB_REUSE_MAX"] = 1_000_000
app.autodiscover_tasks()

# Pools inherited through fork (prefork children, embedded beat) belong to the parent: their
# background threads did not survive the fork and their sockets are the parent's. A child
# starts pools of its own; the inherited ones are kept referenced so that collecting them
# cannot close the parent's connections.
_inherited_pools: list = []


def _forget_inherited_db_pools() -> None:
    from django.db.backends.postgresql.base import DatabaseWrapper

    _inherited_pools.extend(DatabaseWrapper._connection_pools.values())
    DatabaseWrapper._connection_pools.clear()


os.register_at_fork(after_in_child=_forget_inherited_db_pools)


@task_prerun.connect
@task_postrun.connect
def _recycle_unusable_db_connections(task=None, **kwargs) -> None:
    """Drop connections that broke (e.g. PostgreSQL restarted) or outlived CONN_MAX_AGE, as requests do.

    Not for eager tasks: they run inside the caller's transaction, on the caller's connection.
    """
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@worker_ready.connect
@worker_process_init.connect
def _freeze_startup_heap(**kwargs) -> None:
    """Once startup is done, where tasks run: each prefork child, or the main process of the
    solo and threads pools (in a prefork parent it costs one collection and changes nothing)."""
    from notifyproject.startup_heap import freeze_startup_heap

    freeze_startup_heap()


@worker_process_shutdown.connect
def _flush_metrics(**kwargs) -> None:
    """Prefork children leave through os._exit, past atexit: write their last counts first."""
    from notifyproject import metrics

    metrics.flush()
