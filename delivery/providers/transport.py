"""Plumbing the push providers share: a background event loop, Retry-After, CA bundles, base64url.

APNs and Web Push keep pooled HTTP/2 connections, which need an event loop; `send()` is
synchronous (Celery worker threads), so each of those providers owns one `BackgroundLoop`
per process and submits coroutines to it. See docs/providers.md.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import email.utils
import os
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LOOP_STOP_TIMEOUT_SECS = 10  # close() waits this long for in-flight requests and the thread
MAX_RETRY_AFTER_SECS = 24 * 3600  # ignore absurd Retry-After values rather than park a delivery forever


class BackgroundLoop:
    """An asyncio event loop on a daemon thread that any thread can run coroutines on.

    Objects bound to the loop (connection pools, semaphores) belong in `resources`; it is
    emptied whenever the loop is (re)created, e.g. in a forked child, where the parent's
    loop thread does not exist.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.resources: dict[str, Any] = {}  # touched only from coroutines on this loop
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coroutine` on the loop and wait for it; cancels it and raises TimeoutError after `timeout`."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._running_loop())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"{self.name}: no answer within {timeout} s") from None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True)
                self._thread.start()
                self._pid = os.getpid()
                self.resources = {}
            return self._loop

    def close(self, cleanup: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> None:
        """Run `cleanup(resources)` on the loop, cancel what is left, stop and join the thread."""
        with self._lock:
            loop, thread, owned = self._loop, self._thread, self._pid == os.getpid()
            resources, self.resources = self.resources, {}
            self._loop = self._thread = None
        if loop is None or not owned:
            return
        try:
            shutdown = asyncio.run_coroutine_threadsafe(_shutdown(resources, cleanup), loop)
            shutdown.result(LOOP_STOP_TIMEOUT_SECS)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(LOOP_STOP_TIMEOUT_SECS)
            loop.close()


async def _shutdown(resources: dict, cleanup: Callable[[dict], Awaitable[None]] | None) -> None:
    if cleanup is not None:
        await cleanup(resources)
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    loop = asyncio.get_running_loop()
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()  # getaddrinfo's worker threads


def parse_retry_after(value: str | bytes | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECS)


def ca_bundle_from_env() -> str | None:
    """The CA file the environment names for outgoing TLS (REQUESTS_CA_BUNDLE, then SSL_CERT_FILE)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or None


def client_ssl_context(extra_ca: str | None = None, ca_file: str | None = None) -> ssl.SSLContext:
    """Verifying client context: `ca_file` instead of the system CAs if given, plus `extra_ca`."""
    context = ssl.create_default_context(cafile=ca_file)
    if extra_ca:
        context.load_verify_locations(cafile=extra_ca)
    return context


def b64url_encode(raw: bytes) -> str:
    """Unpadded base64url, the encoding Web Push and JOSE use."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding (browsers differ)."""
    text = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
