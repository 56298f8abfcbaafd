"""The background event loop and header parsing the providers share."""

import asyncio
import email.utils
import os
import threading

import pytest

from delivery.providers.transport import BackgroundLoop, parse_retry_after

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "value, expected",
    [
        ("7", 7.0),
        (b"120", 120.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),  # a date in the past: now
        ("999999999", 24 * 3600.0),  # capped
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_takes_seconds_or_an_http_date(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


class TestBackgroundLoop:
    @pytest.fixture
    def loop(self):
        background = BackgroundLoop("test-loop")
        yield background
        background.close()

    def test_runs_coroutines_from_many_threads_on_one_loop_thread(self, loop):
        seen, barrier = [], threading.Barrier(4)

        async def where():
            return threading.current_thread().name

        def caller():
            barrier.wait(5)
            seen.append(loop.run(where(), timeout=5))

        callers = [threading.Thread(target=caller) for _ in range(4)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join(5)
        assert seen == ["test-loop"] * 4

    def test_a_coroutine_that_overruns_is_cancelled(self, loop):
        cancelled = threading.Event()

        async def stuck():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with pytest.raises(TimeoutError):
            loop.run(stuck(), timeout=0.05)
        assert cancelled.wait(5)

    def test_close_runs_cleanup_with_the_resources_and_stops_the_thread(self, loop):
        async def remember():
            loop.resources["pool"] = "a connection pool"

        loop.run(remember(), timeout=5)
        thread, cleaned = loop._thread, []

        async def cleanup(resources):
            cleaned.append(dict(resources))

        loop.close(cleanup)
        assert cleaned == [{"pool": "a connection pool"}]
        assert not thread.is_alive()

    def test_a_forked_child_starts_its_own_loop_with_no_resources(self, loop, monkeypatch):
        async def remember():
            loop.resources["pool"] = "parent's pool"

        async def resources():
            return dict(loop.resources)

        loop.run(remember(), timeout=5)
        parent_loop, parent_thread, child_pid = loop._loop, loop._thread, os.getpid() + 1
        monkeypatch.setattr(os, "getpid", lambda: child_pid)  # what a child sees after fork()
        try:
            assert loop.run(resources(), timeout=5) == {}
            assert loop._thread is not parent_thread and loop._loop is not parent_loop
            loop.close()  # the child's own loop
        finally:
            parent_loop.call_soon_threadsafe(parent_loop.stop)  # in a real fork it is not in the child
            parent_thread.join(5)
            parent_loop.close()
