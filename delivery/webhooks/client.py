"""Posting webhook events: one pooled aiohttp session per process on a background event loop.

Celery worker threads call `post_all()` synchronously; the POSTs of a batch run concurrently
on this module's `BackgroundLoop` over kept-alive HTTP/1.1 connections, as the Web Push
provider does. Every address is checked when it is connected to (notifyproject.outbound):
a name cannot resolve to a refused address between registration and send. Redirects are
never followed: a 3xx is an answer like any other non-2xx. What is recorded of an answer is
its status and phrase, never the receiver's own text (outbound.response_error).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import aiohttp

from delivery.providers.transport import BackgroundLoop, ca_bundle_from_env, client_ssl_context
from notifyproject import outbound

MAX_CONNECTIONS = 100  # concurrent POSTs (= connections) per process
MAX_CONNECTIONS_PER_ENDPOINT = 20  # so one slow receiver cannot hold every connection
KEEPALIVE_SECS = 60  # idle connections are kept this long for the next batch
BATCH_MARGIN_SECS = 5  # a whole batch may take the per-attempt timeout plus this


@dataclass(frozen=True)
class Post:
    event_id: int
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    event_id: int
    status_code: int | None  # None: no HTTP answer (refused, timed out, connection error)
    error: str
    duration_ms: int
    retry: bool = True  # False: trying again cannot help (an address the outbound policy refuses)

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookClient:
    def __init__(self) -> None:
        self._loop = BackgroundLoop("clarion-webhooks")

    def post_all(self, posts: list[Post], *, allow_private: bool, timeout_secs: float) -> list[Answer]:
        """POST each concurrently; an answer for every post, in order, within about `timeout_secs`."""
        if not posts:
            return []
        try:
            return self._loop.run(
                self._post_all(posts, allow_private, timeout_secs), timeout_secs + BATCH_MARGIN_SECS
            )
        except TimeoutError as exc:
            millis = int((timeout_secs + BATCH_MARGIN_SECS) * 1000)
            return [Answer(post.event_id, None, f"TIMEOUT: {exc}", millis) for post in posts]

    def close(self) -> None:
        self._loop.close(_close_sessions)

    async def _post_all(self, posts: list[Post], allow_private: bool, timeout_secs: float) -> list[Answer]:
        session = self._session(allow_private)
        timeout = aiohttp.ClientTimeout(total=timeout_secs)
        return list(await asyncio.gather(*(_post(session, post, timeout) for post in posts)))

    def _session(self, allow_private: bool) -> aiohttp.ClientSession:
        """The pooled session of this process; connections made while private addresses were
        allowed are never reused once they are not."""
        key = "session:any-address" if allow_private else "session:public-only"
        session = self._loop.resources.get(key)
        if session is None:
            connector = outbound.guarded_connector(
                allow_private=allow_private,
                ssl=client_ssl_context(ca_file=ca_bundle_from_env()),
                limit=MAX_CONNECTIONS,
                limit_per_host=MAX_CONNECTIONS_PER_ENDPOINT,
                keepalive_timeout=KEEPALIVE_SECS,
            )
            session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
            self._loop.resources[key] = session
        return session


async def _post(session: aiohttp.ClientSession, post: Post, timeout: aiohttp.ClientTimeout) -> Answer:
    started = time.monotonic()

    def answer(status_code: int | None, error: str = "", retry: bool = True) -> Answer:
        return Answer(post.event_id, status_code, error, int((time.monotonic() - started) * 1000), retry)

    try:
        async with outbound.post(
            session, post.url, data=post.body, headers=post.headers, timeout=timeout
        ) as response:
            content = await outbound.read_answer(response)
    except TimeoutError:
        return answer(None, f"TIMEOUT: no answer within {timeout.total:g} s")
    except aiohttp.InvalidURL:
        return answer(None, "INVALID_URL: the URL cannot be requested", retry=False)
    except aiohttp.ClientError as exc:  # refused address, connection refused/reset, DNS, TLS, bad answer
        reason = outbound.refused_reason(exc)
        if reason:
            return answer(None, f"PRIVATE_ADDRESS: {reason}", retry=False)
        return answer(None, f"CONNECTION_ERROR: {outbound.transport_error(exc)}")
    if 200 <= response.status < 300:
        return answer(response.status)
    # Only the status and a reason token are recorded, never the receiver's free text.
    return answer(response.status, outbound.response_error(response.status, content))


async def _close_sessions(resources: dict) -> None:
    for name, session in resources.items():
        if name.startswith("session:"):
            await session.close()


_client: WebhookClient | None = None
_client_lock = threading.Lock()


def webhook_client() -> WebhookClient:
    """The process's client, built on first use (never at import time)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = WebhookClient()
        return _client


def reset_webhook_client() -> None:
    """Close the process's pooled connections (tests; a deployment never needs to)."""
    global _client
    with _client_lock:
        client, _client = _client, None
    if client is not None:
        client.close()
