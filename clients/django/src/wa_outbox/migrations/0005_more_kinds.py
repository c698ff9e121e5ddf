# wa_message.kind gains `contact`, `poll` (migrations/20261203000001_contact_poll.sql) and
# `reaction`, `edit`, `revoke` (migrations/20261203000002_reaction.sql, …03_edit.sql,
# …04_revoke.sql).
# Unmanaged: this only brings Django's state in step with the choices.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('wa_outbox', '0004_message_kind_location'),
    ]

    operations = [
        migrations.AlterField(
            model_name='message',
            name='kind',
            field=models.CharField(blank=True, choices=[('text', 'Text'), ('image', 'Image'), ('video', 'Video'), ('audio', 'Audio'), ('voice', 'Voice note'), ('document', 'Document'), ('location', 'Location'), ('contact', 'Contact card'), ('poll', 'Poll'), ('reaction', 'Reaction'), ('edit', 'Edit'), ('revoke', 'Delete for everyone')], db_default='text', max_length=16),
        ),
    ]
