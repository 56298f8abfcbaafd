"""Django requests under ASGI run their middleware chain and view in one thread hop.

Django's own ASGI handler adapts each sync middleware separately, so one API request made
~16 trips between the event loop and a thread; notifyproject.handler runs the chain sync.
"""

import asyncio

from asgiref import sync

from notifyproject.asgi import application

# request_started's receivers, the middleware chain + view, response.close (request_finished).
MAX_HOPS_PER_REQUEST = 3


def asgi_get(path: str) -> tuple[int, dict, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def run():
        sent_body = asyncio.Event()
        messages = []

        async def receive():
            if not messages:
                messages.append("request")
                return {"type": "http.request", "body": b"", "more_body": False}
            await sent_body.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            messages.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                sent_body.set()

        await asyncio.wait_for(application(scope, receive, send), 20)
        start = next(m for m in messages[1:] if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in messages[1:] if m["type"] == "http.response.body")
        return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body

    return asyncio.run(run())


def test_an_api_request_runs_its_middleware_and_view_in_one_thread_hop(monkeypatch, settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    hops = []
    original = sync.SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(sync.SyncToAsync, "__call__", counted)

    status, headers, body = asgi_get("/api/v1/no-such-endpoint/")

    # The whole chain ran: the error-shape middleware answered, the security middleware and
    # clickjacking middleware added their headers.
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert b'"not_found"' in body
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert len(hops) <= MAX_HOPS_PER_REQUEST, hops
