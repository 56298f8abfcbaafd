"""Multi-row INSERT … VALUES and UPDATE … FROM (VALUES …) for the outbox's hot paths.

Django's bulk_create and bulk_update cost about 0.2 ms of Python per row (model instances,
and for bulk_update a CASE WHEN per row and field); with a webhook on `delivery.sent` that
was a fifth of a broadcast's send time (bench/webhooks.py). One statement per chunk instead;
works on PostgreSQL and SQLite (≥ 3.35: UPDATE FROM, RETURNING).
"""

from datetime import datetime

from django.db import connection
from django.db.models import Model

ROWS_PER_STATEMENT = 1000  # ≤ 12 parameters a row: within SQLite's 32,766


def adapt(value):
    if isinstance(value, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    return value


def insert_rows(
    model: type[Model], columns: dict[str, str], rows: list[tuple], *, where: str = ""
) -> list[int]:
    """INSERT the rows (values in `columns` order; `columns` maps a column to its SQL type).

    `where` keeps only the rows it holds for, as a condition on `v`, the rows' alias (e.g.
    that the webhook they name still exists). Returns the new ids.
    """
    table = connection.ops.quote_name(model._meta.db_table)
    names = list(columns)
    row = _values_row(list(columns.values()))
    ids: list[int] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            params = [adapt(value) for values in chunk for value in values]
            cursor.execute(
                f"WITH v({', '.join(names)}) AS (VALUES {', '.join([row] * len(chunk))}) "
                f"INSERT INTO {table} ({', '.join(connection.ops.quote_name(c) for c in names)}) "
                f"SELECT {', '.join(f'v.{c}' for c in names)} FROM v"
                + (f" WHERE {where}" if where else "")
                + " RETURNING id",
                params,
            )
            ids += [found[0] for found in cursor.fetchall()]
    return ids


def _values_row(types: list[str]) -> str:
    """One row of a VALUES list: typed on PostgreSQL (a bare parameter there is text or unknown)."""
    if connection.vendor == "postgresql":
        return "(" + ", ".join(f"CAST(%s AS {sql_type})" for sql_type in types) + ")"
    return "(" + ", ".join(["%s"] * len(types)) + ")"


def update_rows(
    model: type[Model], columns: dict[str, str], rows: list[tuple], *, where: str = "", where_params=()
) -> int:
    """UPDATE each row by id: `columns` maps a column to its SQL type; rows are (id, *values).

    `where` adds a condition on the table, named `{table}` in it (e.g. that a claim is still ours).
    """
    table = connection.ops.quote_name(model._meta.db_table)
    row = _values_row(["bigint", *columns.values()])
    names = ["id", *columns]
    assignments = ", ".join(f"{connection.ops.quote_name(c)} = v.{c}" for c in columns)
    updated = 0
    with connection.cursor() as cursor:
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            params = [adapt(value) for values in chunk for value in values]
            sql = (
                f"WITH v({', '.join(names)}) AS (VALUES {', '.join([row] * len(chunk))}) "
                f"UPDATE {table} SET {assignments} FROM v WHERE {table}.id = v.id"
                + (f" AND {where.format(table=table)}" if where else "")
            )
            cursor.execute(sql, [*params, *where_params])
            updated += cursor.rowcount
    return updated
