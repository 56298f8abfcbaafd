"""The Celery app; its configuration is the CELERY_* names in settings."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifyproject.settings")

app = Celery("clarion")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery's Django fixup closes every database connection before and after each task unless
# this is set: a new PostgreSQL connection per task capped our workers near 100 tasks/s
# (bench/pipeline.py). Connections are reused instead, and recycled by the hooks below.
app.conf["CELERY_DB_REUSE_MAX"] = 1_000_000
app.autodiscover_tasks()


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
