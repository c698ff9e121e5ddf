# wa_message.kind gains `forward` (migrations/20261203000030_forward.sql).
# Unmanaged: this only brings Django's state in step with the choices.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('wa_outbox', '0007_group_commands'),
    ]

    operations = [
        migrations.AlterField(
            model_name='message',
            name='kind',
            field=models.CharField(blank=True, choices=[('text', 'Text'), ('image', 'Image'), ('video', 'Video'), ('audio', 'Audio'), ('voice', 'Voice note'), ('document', 'Document'), ('location', 'Location'), ('contact', 'Contact card'), ('poll', 'Poll'), ('reaction', 'Reaction'), ('edit', 'Edit'), ('revoke', 'Delete for everyone'), ('forward', 'Forward')], db_default='text', max_length=16),
        ),
    ]
