"""Real Clarion processes for tests: a Celery worker (with beat) and a daphne web server.

They run against the test database and the test Redis, exactly as the Procfile would run
them in production.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from django.conf import settings

from tests.support.recording import RECORDING_PROVIDERS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_SECS = 60


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, message: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def database_url() -> str:
    db = settings.DATABASES["default"]
    return (
        f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )


def process_env(**overrides) -> dict:
    # Not DJANGO_ALLOW_ASYNC_UNSAFE: browser tests set it for Playwright's loop, never for servers.
    skipped = ("PYTEST", "DJANGO_ALLOW_ASYNC_UNSAFE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skipped)}
    env.update(
        DJANGO_SETTINGS_MODULE="notifyproject.settings",
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        SECRET_KEY="clarion-test-secret-key",
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        CLARION_EMBEDDED_WORKER="0",
        CLARION_PROVIDERS=json.dumps(RECORDING_PROVIDERS),
        CLARION_SWEEP_INTERVAL="0.5",
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class _Process:
    def __init__(self, args: list[str], env: dict, ready_marker: str | None):
        self.args, self.env, self.ready_marker = args, env, ready_marker
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []
        self._ready = threading.Event()

    def start(self):
        self._ready.clear()
        self.proc = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        return self

    def _pump(self, proc):
        for line in proc.stdout:
            self.output.append(line)
            if self.ready_marker and self.ready_marker in line:
                self._ready.set()

    def wait_ready(self):
        if not self._ready.wait(STARTUP_TIMEOUT_SECS):
            raise AssertionError(f"{self.args[0]} did not become ready:\n{''.join(self.output[-40:])}")

    def kill(self):
        """SIGKILL the whole process group: no chance to ack or clean up."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class Worker(_Process):
    """`celery worker -B`: the Procfile's worker and beat in one process."""

    def __init__(self, concurrency: int = 4, **env):
        super().__init__(
            [
                str(BIN / "celery"),
                "-A",
                "notifyproject",
                "worker",
                "-B",
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--schedule",
                "/dev/null",
            ],
            process_env(**env),
            ready_marker="ready.",
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


LISTEN_BACKLOG = 1024  # as the Procfile and the systemd unit listen


class WebServer(_Process):
    """daphne serving the ASGI app, as the Procfile's `web` (an endpoint string with its backlog)."""

    def __init__(
        self,
        port: int | None = None,
        ping_interval: int | None = None,
        ping_timeout: int | None = None,
        **env,
    ):
        self.port = port or free_port()
        options = ["--ping-interval", str(ping_interval)] if ping_interval else []
        options += ["--ping-timeout", str(ping_timeout)] if ping_timeout else []
        super().__init__(
            [str(BIN / "daphne"), "-e", f"tcp:port={self.port}:interface=127.0.0.1:backlog={LISTEN_BACKLOG}"]
            + options
            + ["notifyproject.asgi:application"],
            process_env(**env),
            ready_marker=None,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def wait_ready(self):
        def up():
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(up, STARTUP_TIMEOUT_SECS, 0.1, "daphne /healthz")
        except AssertionError:
            raise AssertionError("daphne did not start:\n" + "".join(self.output[-40:])) from None
