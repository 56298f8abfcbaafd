"""API keys move here from delivery in state only: the table stays `delivery_apikey`, no row moves.

Their content type follows them, so permissions granted on API keys and admin history stay
attached (a fresh database has no content type yet; post_migrate creates this app's).
"""

from django.db import migrations, models


def content_type_follows(apps, schema_editor, old_label="delivery", new_label="identities"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    types = ContentType.objects.db_manager(schema_editor.connection.alias)
    if not types.filter(app_label=new_label, model="apikey").exists():
        types.filter(app_label=old_label, model="apikey").update(app_label=new_label)
    types.clear_cache()


def content_type_returns(apps, schema_editor):
    content_type_follows(apps, schema_editor, old_label="identities", new_label="delivery")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("delivery", "0008_merge_0007_admin_field_labels_0007_merge_apps_order"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApiKey",
                    fields=[
                        (
                            "id",
                            models.CharField(
                                editable=False, max_length=150, primary_key=True, serialize=False, unique=True
                            ),
                        ),
                        ("prefix", models.CharField(editable=False, max_length=8, unique=True)),
                        ("hashed_key", models.CharField(editable=False, max_length=150)),
                        ("created", models.DateTimeField(auto_now_add=True, db_index=True)),
                        (
                            "name",
                            models.CharField(
                                default=None,
                                help_text="A free-form name for the API key. Need not be unique. 50 characters max.",
                                max_length=50,
                            ),
                        ),
                        (
                            "revoked",
                            models.BooleanField(
                                blank=True,
                                default=False,
                                help_text="If the API key is revoked, clients cannot use it anymore. (This cannot be undone.)",
                            ),
                        ),
                        (
                            "expiry_date",
                            models.DateTimeField(
                                blank=True,
                                help_text="Once API key expires, clients cannot use it anymore.",
                                null=True,
                                verbose_name="Expires",
                            ),
                        ),
                        ("scopes", models.JSONField(blank=True, default=list)),
                        ("app", models.CharField(blank=True, db_default="", default="", max_length=40)),
                        ("last_used_at", models.DateTimeField(blank=True, null=True, verbose_name="last used")),
                    ],
                    options={
                        "verbose_name": "API key",
                        "verbose_name_plural": "API keys",
                        "db_table": "delivery_apikey",
                        "ordering": ("-created",),
                        "abstract": False,
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_follows, content_type_returns),
    ]
