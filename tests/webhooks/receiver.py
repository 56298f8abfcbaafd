"""A webhook receiver on loopback for tests: records every request, answers as programmed.

A real HTTP/1.1 server (keep-alive, Content-Length) on 127.0.0.1 in a thread of the test, so
Clarion's real client, connection pool and signatures are what gets exercised.
"""

import collections
import http.server
import threading
from dataclasses import dataclass

HANG_LIMIT_SECS = 60  # a hung answer is released by the test, or gives up after this


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.connections = 0
        self.default = 200
        self._rules: collections.deque = collections.deque()  # per request, in order: answers
        self._lock = threading.Lock()
        self.released = threading.Event()
        self.arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                with receiver._lock:
                    receiver.connections += 1
                super().setup()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.arrived:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    rule = receiver._rules.popleft() if receiver._rules else receiver.default
                    receiver.arrived.notify_all()
                if rule == "hang":
                    receiver.released.wait(HANG_LIMIT_SECS)
                    rule = 200
                headers = {}
                if isinstance(rule, tuple):  # ("redirect", status, location)
                    _, rule, headers["Location"] = rule
                answer = b'{"ok": true}'
                try:
                    self.send_response(rule)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def program(self, *rules) -> None:
        """Answers for the next requests, in order: a status code, "hang", or ("redirect", 307, url)."""
        with self._lock:
            self._rules.extend(rules)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Block until at least `count` requests arrived; the requests so far."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(
                    f"{len(self.requests)} of {count} webhook requests arrived in {timeout} s"
                )
            return list(self.requests)

    def start(self) -> "Receiver":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
