# wa_command.kind gains group_participants (migrations/20261203000031_group_participants.sql).
# Unmanaged: this only brings Django's state in step with the choices.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('wa_outbox', '0008_forward'),
    ]

    operations = [
        migrations.AlterField(
            model_name='command',
            name='kind',
            field=models.CharField(choices=[('check_numbers', 'Check numbers'), ('mark_read', 'Mark read'), ('presence', 'Presence'), ('contact_info', 'Contact info'), ('profile_picture', 'Profile picture'), ('chats', 'Chats'), ('history', 'History'), ('group_create', 'Group create'), ('group_info', 'Group info'), ('group_invite_link', 'Group invite link'), ('group_leave', 'Group leave'), ('group_participants', 'Group participants')], max_length=32),
        ),
    ]
