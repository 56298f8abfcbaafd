"""Who is waiting for a lock in the test database, read the way a test can rely on.

A fresh autocommit connection per read: inside one transaction PostgreSQL answers
pg_stat_activity from a snapshot taken at the first read, so a test polling it from its own
open transaction would never see a wait that began after that read.
"""

import psycopg

from tests.support.processes import database_url


def lock_waits(query_like: str = "%") -> int:
    """Backends of the test database waiting for a lock while running a query LIKE `query_like`."""
    with psycopg.connect(database_url(), autocommit=True) as probe:
        return probe.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE %s",
            [query_like],
        ).fetchone()[0]
