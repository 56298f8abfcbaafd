"""A calm first run: housekeeping stays out of the log, the admin password can be found and replaced,
and the commands the README and the demo page show work as written on a fresh checkout."""

import logging
import os
import re
import shlex
import stat
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

from delivery.models import Notification
from notifyproject.logfilters import HousekeepingAtDebug
from tests.delivery.factories import send
from tests.support.processes import wait_until

ROOT = Path(__file__).resolve().parent.parent


def test_the_sweeper_runs_without_a_log_line_while_sends_are_still_logged(start_worker, alice):
    worker = start_worker()
    scheduled = send({"users": ["alice"]}, route="realtime", send_at=timezone.now() + timedelta(seconds=1))
    # Only the sweeper releases a scheduled send, so this proves sweeps ran (every 0.5 s here).
    wait_until(lambda: Notification.objects.get(pk=scheduled.pk).status != "scheduled", 30, message="release")
    wait_until(lambda: any("notification_dispatch" in line for line in worker.output), 30)
    logged = [line for line in worker.output if re.search(r"due_work_sweep\[|due task clarion-sweep", line)]
    assert not logged


def test_housekeeping_lines_remain_at_debug_when_debug_logging_is_on():
    logger = logging.getLogger("celery.app.trace")
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, "Task %(name)s[%(id)s] succeeded", None, None
    )
    record.args = {"name": "delivery.tasks.due_work_sweep", "id": "x"}
    previous = logger.level
    try:
        logger.setLevel(logging.INFO)
        assert HousekeepingAtDebug().filter(record) is False
        logger.setLevel(logging.DEBUG)
        assert HousekeepingAtDebug().filter(record) is True
        assert record.levelname == "DEBUG"
    finally:
        logger.setLevel(previous)


@pytest.mark.django_db
def test_first_admin_password_is_printed_and_kept_in_a_file_only_its_owner_reads(tmp_path):
    password_file = tmp_path / "var" / "admin-password.txt"
    out = StringIO()
    call_command("ensure_admin", password_file=password_file, stdout=out)
    password = re.search(r"password: (\S+)", out.getvalue())[1]
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert f"password: {password}" in password_file.read_text()
    assert "make admin-password" in out.getvalue()

    again = StringIO()
    call_command("ensure_admin", password_file=password_file, stdout=again)
    assert again.getvalue() == ""  # an admin exists: nothing changes


@pytest.mark.django_db
def test_reset_gives_the_admin_a_new_password(tmp_path):
    password_file = tmp_path / "admin-password.txt"
    with pytest.raises(CommandError, match="no superuser"):
        call_command("ensure_admin", reset=True, password_file=password_file, stdout=StringIO())
    call_command("ensure_admin", password_file=password_file, stdout=StringIO())
    first = password_file.read_text()
    password_file.chmod(0o644)
    out = StringIO()
    call_command("ensure_admin", reset=True, password_file=password_file, stdout=out)
    password = re.search(r"password: (\S+)", out.getvalue())[1]
    assert password_file.read_text() != first
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert get_user_model().objects.get(username="admin").check_password(password)


def shown_manage_commands() -> list[str]:
    """Every `manage.py` command line the README and the demo page show."""
    commands = []
    for page in (ROOT / "README.md", ROOT / "templates/realtime/demo.html"):
        found = re.findall(r"((?:[A-Z_]+=[^\s$]+ )*\S*python3? manage\.py [^`)<#\n]*)", page.read_text())
        commands += [command.strip() for command in found]
    return commands


def test_manage_commands_shown_to_a_new_user_work_as_written(tmp_path):
    """From a fresh checkout: `.venv/bin/python` is the project's venv; no SECRET_KEY is set."""
    commands = shown_manage_commands()
    assert any("create_api_key" in command for command in commands)
    skipped = {"SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE"}
    env = {k: v for k, v in os.environ.items() if k not in skipped and "PYTEST" not in k}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", REDIS_URL="")
    migrate = [sys.executable, "manage.py", "migrate", "-v0"]
    subprocess.run(migrate, cwd=ROOT, env={**env, "DEBUG": "1"}, check=True, timeout=120)
    subprocess.run(
        [sys.executable, "manage.py", "ensure_admin", "--password-file", str(tmp_path / "pw")],
        cwd=ROOT,
        env={**env, "DEBUG": "1"},
        check=True,
        timeout=60,
        capture_output=True,
    )
    for command in commands:
        words = shlex.split(command)
        assignments = dict(word.split("=", 1) for word in words if re.fullmatch(r"[A-Z_]+=.*", word))
        argv = [word for word in words if not re.fullmatch(r"[A-Z_]+=.*", word)]
        assert argv[0] == ".venv/bin/python", f"{command!r}: run it with the project's venv"
        if "ensure_admin" in argv:
            argv += ["--password-file", str(tmp_path / "pw")]
        result = subprocess.run(
            [sys.executable, *argv[1:]],
            cwd=ROOT,
            env={**env, **assignments},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (command, result.stderr[-2000:])
