"""API keys now live in notifyproject/identities (same table, `delivery_apikey`): state only."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("delivery", "0008_merge_0007_admin_field_labels_0007_merge_apps_order"),
        ("identities", "0001_api_keys_from_delivery"),
        ("webhooks", "0002_api_key_moves_to_identities"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="notification",
                    name="sender_key",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="notifications",
                        to="identities.apikey",
                        verbose_name="sender API key",
                    ),
                ),
                migrations.DeleteModel(name="ApiKey"),
            ],
            database_operations=[],
        ),
    ]
