"""What deploy/ ships works: the nginx site in front of two web processes, and the environment file."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from notifyproject.identities.api_keys import api_key_create
from realtime.views import LONGPOLL_MAX_WAIT_SECS, SSE_HEARTBEAT_MAX_SECS, SSE_IDLE_TIMEOUT_SECS
from tests.support.processes import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "deploy" / "nginx" / "clarion.conf"
ENV_EXAMPLE = ROOT / "deploy" / "clarion.env.example"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _substitute(pattern: str, replacement: str, text: str, flags=0) -> str:
    rendered, count = re.subn(pattern, replacement, text, flags=flags)
    assert count, f"deploy/nginx/clarion.conf no longer has {pattern!r}; update this test's rendering"
    return rendered


def render_site(listen_port: int, web_ports: list[int], log_dir: Path) -> str:
    """The shipped site, as an operator would edit it: this machine's ports, no TLS, logs in a tmpdir."""
    site = SITE.read_text()
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in web_ports)
    upstream = r"(upstream clarion_web \{\n(?:\s*#.*\n)*)(?:\s*server [^\n]+\n)+"
    site = _substitute(upstream, rf"\g<1>{servers}", site)
    site = _substitute(r"\n# Plain HTTP only redirects.*", "\n", site, re.DOTALL)  # no port 80 here
    site = _substitute(r"listen 443 ssl http2;", f"listen 127.0.0.1:{listen_port};", site)
    site = _substitute(r"\n\s*listen \[::\]:443[^\n]*", "", site)
    site = _substitute(r"\n\s*ssl_certificate(_key)? [^\n]*", "", site)
    return _substitute(r"/var/log/nginx/", f"{log_dir}/", site)


def nginx_conf(site: str, prefix: Path) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers would otherwise drop to nobody
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "".join(f"    {kind}_temp_path {prefix}/{kind};\n" for kind in kinds)
    return (
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
        f"events {{ worker_connections 1024; }}\nhttp {{\n{temp}{site}\n}}\n"
    )


class Proxy:
    def __init__(self, port: int, prefix: Path):
        self.url, self.ws_url, self.prefix = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", prefix

    def access_log(self) -> str:
        return (self.prefix / "clarion.access.log").read_text()


@pytest.fixture
def proxy(start_web, tmp_path):
    """deploy/nginx/clarion.conf in nginx, in front of two daphne processes."""
    webs = [start_web(), start_web()]
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(render_site(port, [web.port for web in webs], tmp_path), tmp_path))
    nginx = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proxied = Proxy(port, tmp_path)

    def up():
        assert nginx.poll() is None, nginx.stdout.read()
        try:
            return httpx.get(f"{proxied.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 30, 0.1, "nginx in front of daphne")
        proxied.webs = webs
        yield proxied
    finally:
        nginx.send_signal(signal.SIGQUIT)  # graceful: access log lines of open streams are written
        try:
            nginx.wait(15)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait(5)


def test_api_websocket_sse_and_long_poll_pass_through_the_shipped_nginx_site(proxy, make_user):
    make_user("alice")
    _api_key, key = api_key_create(name="backend", scopes=["send", "read"])
    api = httpx.Client(base_url=proxy.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    minted = api.post("/api/v1/client-tokens/", json={"user": "alice"})
    assert minted.status_code == 201, minted.text
    token = minted.json()["token"]

    first = httpx.get(f"{proxy.url}/api/v1/poll/", params={"token": token, "timeout": 0}, timeout=10)
    assert first.status_code == 200 and first.json()["results"] == []
    polled = {}

    def long_poll():
        polled["answer"] = httpx.get(
            f"{proxy.url}/api/v1/poll/",
            params={"token": token, "after": first.json()["cursor"], "timeout": 30},
            timeout=40,
        )

    with (
        connect(f"{proxy.ws_url}/ws/v1/notifications/?token={token}", open_timeout=10) as ws,
        httpx.stream("GET", f"{proxy.url}/api/v1/events/", params={"token": token}, timeout=20) as sse,
    ):
        ws.send('{"type": "ping"}')
        assert json.loads(ws.recv(timeout=10))["type"] == "pong"
        assert sse.status_code == 200
        assert sse.headers["content-type"].startswith("text/event-stream")
        events = sse.iter_lines()
        assert next(line for line in events if line.startswith(": connected"))  # flushed, not buffered
        poller = threading.Thread(target=long_poll)
        poller.start()

        sent = api.post("/api/v1/notifications/", json={"to": {"users": ["alice"]}, "title": "via nginx"})
        assert sent.status_code == 202, sent.text

        assert json.loads(ws.recv(timeout=15))["title"] == "via nginx"
        data = next(line for line in events if line.startswith("data: "))
        assert json.loads(data[len("data: ") :])["title"] == "via nginx"
        poller.join(40)
        assert polled["answer"].status_code == 200
        assert [m["title"] for m in polled["answer"].json()["results"]] == ["via nginx"]

    assert api.get(f"/api/v1/notifications/{sent.json()['id']}/").json()["recipients"] == 1
    for _ in range(4):  # round robin: both web processes answer
        assert httpx.get(f"{proxy.url}/healthz", timeout=10).status_code == 200

    def logged():
        text = proxy.access_log()
        return text if all(f"127.0.0.1:{web.port}" in text for web in proxy.webs) else None

    log = wait_until(logged, 10, message="both web processes in nginx's access log")
    assert "GET /api/v1/poll/ " in log and "GET /api/v1/events/ " in log
    assert token not in log and "token=" not in log  # the path is logged, never the query string


def _block(site: str, location: str) -> str:
    return re.search(rf"location {re.escape(location)} \{{(.*?)\n    \}}", site, re.DOTALL)[1]


def _seconds(block: str, directive: str) -> int:
    return int(re.search(rf"{directive} (\d+)s;", block)[1])


def test_proxy_timeouts_outlast_the_long_poll_and_the_sse_stream():
    site = SITE.read_text()
    assert _seconds(_block(site, "= /api/v1/poll/"), "proxy_read_timeout") > LONGPOLL_MAX_WAIT_SECS
    events = _block(site, "= /api/v1/events/")
    assert _seconds(events, "proxy_read_timeout") > max(SSE_IDLE_TIMEOUT_SECS, SSE_HEARTBEAT_MAX_SECS)
    assert "proxy_buffering off;" in events
    websocket = _block(site, "/ws/")
    assert _seconds(websocket, "proxy_read_timeout") > 60
    forwarded = ("Upgrade $http_upgrade", "X-Forwarded-For $proxy_add_x_forwarded_for", "X-Forwarded-Proto")
    for header in forwarded:
        assert f"proxy_set_header {header}" in site


def test_access_log_format_never_holds_the_query_string():
    site = SITE.read_text()
    log_format = re.search(r"log_format clarion (.*?);", site, re.DOTALL)[1]
    assert "$uri" in log_format
    for leaky in ("$request_uri", "$request ", '$request"', "$args", "$query_string", "$arg_"):
        assert leaky not in log_format
    assert all(line.split()[-1] == "clarion;" for line in re.findall(r"access_log [^\n]+", site))


def variables_read_by_settings() -> set[str]:
    source = (ROOT / "notifyproject" / "settings.py").read_text()
    readers = r"(?:os\.environ\.get|os\.getenv|env_\w+)"
    reads = re.findall(readers + r"\(\s*\"([A-Z][A-Z0-9_]*)\"", source)
    return set(reads) | set(re.findall(r"os\.environ\[\"([A-Z][A-Z0-9_]*)\"\]", source))


def test_the_example_environment_file_lists_every_variable_the_settings_read():
    variables = variables_read_by_settings()
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DB_POOL_MAX_SIZE"} <= variables  # the scan works
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    missing = variables - listed
    assert not missing, f"add to deploy/clarion.env.example, with default and meaning: {sorted(missing)}"


def test_every_variable_in_the_example_file_comes_under_a_comment_saying_what_it_means():
    for paragraph in ENV_EXAMPLE.read_text().split("\n\n"):
        lines = paragraph.strip().splitlines()
        if any(re.match(r"^#? ?[A-Z][A-Z0-9_]*=", line) for line in lines):
            assert lines[0].startswith("# ") and not re.match(r"^# [A-Z][A-Z0-9_]*=", lines[0]), paragraph


UNITS = ROOT / "deploy" / "systemd"


def test_systemd_units_run_what_the_project_ships():
    """Every ExecStart names a program the venv installs and Python objects that import."""
    import importlib

    bin_dir = Path(sys.executable).parent
    commands = {}
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text()
        assert "EnvironmentFile=/etc/clarion/clarion.env" in text, unit.name
        (command,) = re.findall(r"^ExecStart=(.+)$", text, re.MULTILINE)
        commands[unit.name] = command.split()
    assert set(commands) == {"clarion-web@.service", "clarion-worker.service", "clarion-beat.service"}
    for name, argv in commands.items():
        program = Path(argv[0])
        assert program.parent == Path("/opt/clarion/.venv/bin"), name
        assert (bin_dir / program.name).exists(), f"{name}: the venv has no {program.name}"
    web = commands["clarion-web@.service"]
    assert web[web.index("-e") + 1] == "tcp:port=%i:interface=127.0.0.1:backlog=1024"
    assert "--proxy-headers" not in web
    module, attribute = web[-1].split(":")
    assert getattr(importlib.import_module(module), attribute)
    beat = commands["clarion-beat.service"]
    module, attribute = beat[beat.index("--scheduler") + 1].split(":")  # as the Procfile spells it
    assert getattr(importlib.import_module(module), attribute)
    # The site's upstream lists the ports the unit's own example enables.
    ports = re.findall(r"server 127\.0\.0\.1:(\d+);", SITE.read_text())
    example = re.search(r"systemctl enable --now (.+)", (UNITS / "clarion-web@.service").read_text())[1]
    assert [f"clarion-web@{port}" for port in ports] == example.split()


def test_a_web_process_listens_with_the_documented_backlog(start_web):
    """The Procfile's and the unit's endpoint string reach the listening socket: a reconnect
    storm's connects queue in the kernel rather than being dropped past Twisted's 50."""
    procfile_web = re.search(r"^web: (.+)$", (ROOT / "Procfile").read_text(), re.MULTILINE)[1]
    assert "tcp:port=${PORT:-8000}:interface=0.0.0.0:backlog=1024" in procfile_web.split()
    web = start_web()
    listening = subprocess.run(
        ["ss", "-Hltn", f"sport = :{web.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listening[0] == "LISTEN" and int(listening[2]) == 1024  # Send-Q of a listener: its backlog
