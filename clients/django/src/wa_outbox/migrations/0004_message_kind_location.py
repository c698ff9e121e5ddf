# wa_message.kind gains `location` (migrations/20261202000006_location.sql). Unmanaged: this
# only brings Django's state in step with the choices.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('wa_outbox', '0003_command'),
    ]

    operations = [
        migrations.AlterField(
            model_name='message',
            name='kind',
            field=models.CharField(blank=True, choices=[('text', 'Text'), ('image', 'Image'), ('video', 'Video'), ('audio', 'Audio'), ('voice', 'Voice note'), ('document', 'Document'), ('location', 'Location')], db_default='text', max_length=16),
        ),
    ]
