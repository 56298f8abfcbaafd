import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("delivery", "0008_merge_0007_admin_field_labels_0007_merge_apps_order"),
    ]

    operations = [
        migrations.AddField(
            model_name="notification",
            name="audience",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="notifications",
                to="delivery.audience",
                verbose_name="saved audience",
            ),
        ),
        migrations.AddField(
            model_name="notification",
            name="audience_conditions",
            field=models.JSONField(blank=True, null=True, verbose_name="audience conditions"),
        ),
        migrations.AddField(
            model_name="recurringnotification",
            name="audience",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="recurring_notifications",
                to="delivery.audience",
                verbose_name="saved audience",
            ),
        ),
    ]
