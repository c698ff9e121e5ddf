# wa_event gains typed kinds: reaction, poll_vote, edit, revoke, call, group_update
# (migrations/20261204000001_event_kinds.sql). Unmanaged: this only brings Django's state in step.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('wa_outbox', '0010_session_proxy_url'),
    ]

    operations = [
        migrations.AlterField(
            model_name='event',
            name='kind',
            field=models.CharField(choices=[('message', 'Incoming message'), ('ack', 'Ack'), ('session_status', 'Session status'), ('reaction', 'Reaction'), ('poll_vote', 'Poll vote'), ('edit', 'Edit'), ('revoke', 'Revoke'), ('call', 'Call'), ('group_update', 'Group update')], max_length=16),
        ),
    ]
