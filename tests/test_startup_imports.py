"""Starting a process (web, worker, beat) imports no push SDK: the admin, which every process loads,
must not pull them in; a provider imports its SDK when it is first built."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDKS = ("firebase_admin", "httpcore", "http_ece")


def test_django_setup_imports_no_push_sdk():
    script = (
        "import django, sys; django.setup(); "
        f"print(','.join(name for name in {SDKS!r} if name in sys.modules))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "notifyproject.settings", "SECRET_KEY": "x"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", f"imported at startup: {result.stdout.strip()}"
