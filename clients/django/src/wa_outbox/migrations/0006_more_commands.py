# wa_command.kind gains contact_info, profile_picture, chats and history
# (migrations/20261203000010_contact_commands.sql, 20261203000011_chat_commands.sql). Unmanaged:
# this only brings Django's state in step with the choices.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('wa_outbox', '0005_more_kinds'),
    ]

    operations = [
        migrations.AlterField(
            model_name='command',
            name='kind',
            field=models.CharField(choices=[('check_numbers', 'Check numbers'), ('mark_read', 'Mark read'), ('presence', 'Presence'), ('contact_info', 'Contact info'), ('profile_picture', 'Profile picture'), ('chats', 'Chats'), ('history', 'History')], max_length=32),
        ),
    ]
