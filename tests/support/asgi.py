"""One HTTP request through the ASGI application in this process, as a server would make it."""

import asyncio


def asgi_request(
    path: str,
    *,
    method: str = "GET",
    query_string: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body_messages: list[dict] | None = None,
    app=None,
) -> tuple[int, dict, bytes, int]:
    """Returns (status, headers, body, body messages the application read). `app`: another
    ASGI application than the project's (one of its inner layers)."""
    from notifyproject.asgi import application

    app = app or application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("latin1"),
        "query_string": query_string,
        "root_path": "",
        "headers": headers if headers is not None else [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def run():
        pending = list(body_messages or [{"type": "http.request", "body": b"", "more_body": False}])
        received = 0
        answered = asyncio.Event()
        sent = []

        async def receive():
            nonlocal received
            if pending:
                received += 1
                return pending.pop(0)
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()

        await asyncio.wait_for(app(scope, receive, send), 20)
        start = next(m for m in sent if m["type"] == "http.response.start")
        response_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], response_headers, body, received

    return asyncio.run(run())
