"""A web process's PostgreSQL connections are bounded by its pool, however many requests run at once.

Under ASGI each request's sync code runs in a thread of its own; with per-thread persistent
connections a burst of requests left one connection per thread (the soak run exhausted
PostgreSQL's max_connections that way).
"""

import asyncio

import httpx
import pytest
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)
POOL_SIZE = 3
CONCURRENT_REQUESTS = 40
FD_SETSIZE = 1024  # select()'s descriptor limit


def connections_to_this_database() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_a_burst_of_requests_shares_a_bounded_pool(start_web, alice, client_for):
    token = client_for(alice).token
    before = connections_to_this_database()
    web = start_web(DB_POOL_MAX_SIZE=POOL_SIZE)

    async def burst():
        headers = {"Authorization": f"Token {token}"}
        async with httpx.AsyncClient(base_url=web.url, headers=headers, timeout=60) as client:
            return await asyncio.gather(*(client.get("/api/v1/devices/") for _ in range(CONCURRENT_REQUESTS)))

    responses = asyncio.run(burst())

    assert [r.status_code for r in responses] == [200] * CONCURRENT_REQUESTS
    assert connections_to_this_database() - before <= POOL_SIZE


def backend_gone(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0] == 0


def checked_pool():
    """A one-connection pool to the test database, checked at checkout as Django's pool is."""
    from psycopg_pool import ConnectionPool

    from notifyproject.db_pool import connection_check

    params = {**connection.get_connection_params(), "autocommit": True}
    return ConnectionPool(kwargs=params, min_size=1, max_size=1, check=connection_check)


def test_a_connection_the_server_closed_is_replaced_at_checkout():
    """The checkout check makes no round trip on a quiet socket, so it must still notice a close."""
    with checked_pool() as pool:
        with pool.connection() as conn:
            pid = conn.info.backend_pid
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        for _ in range(1000):  # the backend exits after the signal; wait for it, not for a time
            if backend_gone(pid):
                break
        assert backend_gone(pid)

        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != pid


def test_a_quiet_connection_passes_the_checkout_check_as_it_is():
    with checked_pool() as pool:
        with pool.connection() as conn:
            pid = conn.info.backend_pid
        with pool.connection() as conn:
            assert conn.info.backend_pid == pid


def test_django_s_pool_uses_the_quiet_checkout_check():
    from notifyproject.db_pool import connection_check

    connection.ensure_connection()
    assert connection.pool is not None, "the suite runs on PostgreSQL with Django's pool"
    assert connection.pool._check is connection_check


def test_the_checkout_check_holds_for_a_connection_past_selects_descriptor_limit():
    """A web process holding thousands of sockets gives its database connections descriptors
    above 1,024 (select()'s FD_SETSIZE): the check must pass them, not fail every checkout."""
    import os
    import resource

    wanted = FD_SETSIZE + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted + 256), hard))
    null = os.open(os.devnull, os.O_RDONLY)
    fillers = [os.dup(null) for _ in range(wanted)]
    try:
        with checked_pool() as pool:
            with pool.connection() as conn:
                pid = conn.info.backend_pid
                assert conn.fileno() > FD_SETSIZE
            with pool.connection(timeout=5) as conn:
                assert conn.info.backend_pid == pid  # the same connection, checked and kept
    finally:
        for fd in [*fillers, null]:
            os.close(fd)
