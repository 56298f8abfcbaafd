"""The sweeper's partial index on the queued push deliveries' `enqueued_at` replaces
`delivery_queued_due` (on `next_attempt_at`), which nothing reads any more.

CREATE and DROP INDEX CONCURRENTLY on PostgreSQL (no lock on writes to the delivery table while
the index builds, so the migration is not atomic); plain CREATE and DROP INDEX elsewhere. If
the build fails, PostgreSQL leaves an invalid index behind:
`DROP INDEX CONCURRENTLY delivery_push_enqueued` before migrating again.
"""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class _ConcurrentlyOnPostgreSQL:
    """The CONCURRENTLY operation on PostgreSQL, `plain` (its ordinary form) elsewhere."""

    plain: type[migrations.operations.base.Operation]

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return self.plain.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return self.plain.database_backwards(self, app_label, schema_editor, from_state, to_state)


class AddIndexConcurrentlyOnPostgreSQL(_ConcurrentlyOnPostgreSQL, AddIndexConcurrently):
    plain = migrations.AddIndex


class RemoveIndexConcurrentlyOnPostgreSQL(_ConcurrentlyOnPostgreSQL, RemoveIndexConcurrently):
    plain = migrations.RemoveIndex


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("delivery", "0012_fan_out_rows_without_db_foreign_keys"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(("status", "queued"), models.Q(("channel", "realtime"), _negated=True)),
                fields=["enqueued_at"],
                name="delivery_push_enqueued",
            ),
        ),
        RemoveIndexConcurrentlyOnPostgreSQL(model_name="delivery", name="delivery_queued_due"),
    ]
