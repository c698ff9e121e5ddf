# The runner's schema (migrations/20261202000004_backfill.sql): next_start_at is gone, and
# last_inbound_at records where the backfill of incoming messages starts. The tables are
# unmanaged, so this only moves Django's model state.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("wa_outbox", "0001_initial"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="session",
            name="next_start_at",
        ),
        migrations.AddField(
            model_name="session",
            name="last_inbound_at",
            field=models.DateTimeField(
                blank=True,
                help_text="The newest incoming message recorded; backfill after a reconnect starts here.",
                null=True,
            ),
        ),
    ]
