"""A webhook's API key is now `identities.ApiKey` (same table): state only, the FK is unchanged."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("identities", "0001_api_keys_from_delivery"),
        ("webhooks", "0001_webhooks"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="webhook",
                    name="api_key",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="webhooks",
                        to="identities.apikey",
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
