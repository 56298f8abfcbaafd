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
