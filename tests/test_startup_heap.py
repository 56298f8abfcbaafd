"""Web and worker processes freeze what startup built, so the collector's full passes skip it
(notifyproject/startup_heap.py): the objects a full pass still walks are few beside those."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Print how many objects are frozen, and how many a full collection would walk now.
HEAP = "import gc; print(gc.get_freeze_count(), len(gc.get_objects()))"
STARTS = {
    "web": "import notifyproject.asgi",
    # As a prefork child, then a solo worker's main process, are told they may start.
    "worker child": (
        "import django; django.setup(); from notifyproject.celery import app;"
        " from celery.signals import worker_process_init; worker_process_init.send(sender=None)"
    ),
    "worker main": (
        "import django; django.setup(); from notifyproject.celery import app;"
        " from celery.signals import worker_ready; worker_ready.send(sender=None)"
    ),
}


@pytest.mark.parametrize("start", STARTS)
def test_a_started_process_leaves_its_startup_objects_to_no_full_collection(start):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "notifyproject.settings", "SECRET_KEY": "x"}
    result = subprocess.run(
        [sys.executable, "-c", f"{STARTS[start]}; {HEAP}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    frozen, walked = map(int, result.stdout.split()[-2:])
    assert frozen > 50_000  # Django's, DRF's, Celery's (and for the web, Twisted's) objects
    assert walked < frozen / 10
