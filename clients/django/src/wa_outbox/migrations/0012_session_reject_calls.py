# wa_session gains reject_calls (migrations/20261204000100_calls.sql). Unmanaged: this only brings
# Django's state in step.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('wa_outbox', '0011_event_kinds'),
    ]

    operations = [
        migrations.AddField(
            model_name='session',
            name='reject_calls',
            field=models.BooleanField(blank=True, db_default=False, help_text='The runner declines every incoming call (each call is still recorded as a `call` event, saying whether it was rejected). Read when a call comes in.'),
        ),
    ]
