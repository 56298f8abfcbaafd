"""The PostgreSQL pool's check of a connection at checkout, without a round trip when nothing happened.

psycopg_pool's own check (`ConnectionPool.check_connection`, what Django's CONN_HEALTH_CHECKS
installs) sends an empty query on every checkout: one round trip per request, a send's
included, before any work. A connection the server closed (restart, pg_terminate_backend,
idle timeout) has something to read on its socket: the server's FATAL notice, or the end of
the stream; an idle connection nobody closed has nothing. So the round trip is made only when
the socket is readable; a peer that vanished without a word is found by the first statement,
as it would be by the empty query.

Django passes the pool its check itself (not through OPTIONS["pool"]), so the check is swapped
on the pool Django made, through psycopg_pool's private `_check`; where that attribute is not
the stock check (another psycopg_pool), the stock check stays.
"""

import select

from django.db.backends.signals import connection_created
from django.dispatch import receiver
from psycopg import OperationalError
from psycopg_pool import ConnectionPool


def connection_check(conn) -> None:
    """Raise if `conn` is unusable (the pool then discards it and takes another)."""
    if conn.closed or conn.broken:
        raise OperationalError("the connection is closed")
    # poll, not select: a process holding thousands of sockets gives its database connections
    # descriptors above select()'s limit of 1,024, where select() raises (and every checkout
    # failed its check).
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    if poller.poll(0):  # the server said something to an idle connection: ask it properly
        ConnectionPool.check_connection(conn)


@receiver(connection_created, dispatch_uid="clarion_pool_checkout_check")
def pool_check_install(sender, connection, **kwargs) -> None:
    """On a checkout from Django's pool: from the next checkout on, the check above."""
    pool = getattr(connection, "pool", None)
    if pool is not None and getattr(pool, "_check", None) is ConnectionPool.check_connection:
        pool._check = connection_check
