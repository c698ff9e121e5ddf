# wa_command.kind gains group_create, group_info, group_invite_link and group_leave, wa_error_code gains command_interrupted
# (migrations/20261203000012_group_commands.sql). Unmanaged: this only brings Django's state in
# step with the choices.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('wa_outbox', '0006_more_commands'),
    ]

    operations = [
        migrations.AlterField(
            model_name='command',
            name='kind',
            field=models.CharField(choices=[('check_numbers', 'Check numbers'), ('mark_read', 'Mark read'), ('presence', 'Presence'), ('contact_info', 'Contact info'), ('profile_picture', 'Profile picture'), ('chats', 'Chats'), ('history', 'History'), ('group_create', 'Group create'), ('group_info', 'Group info'), ('group_invite_link', 'Group invite link'), ('group_leave', 'Group leave')], max_length=32),
        ),
        migrations.AlterField(
            model_name='command',
            name='error_code',
            field=models.CharField(blank=True, choices=[('invalid_recipient', 'Invalid Recipient'), ('not_on_whatsapp', 'Not On Whatsapp'), ('body_too_long', 'Body Too Long'), ('empty_message', 'Empty Message'), ('media_missing', 'Media Missing'), ('media_invalid_url', 'Media Invalid Url'), ('media_fetch_failed', 'Media Fetch Failed'), ('media_too_large', 'Media Too Large'), ('media_host_forbidden', 'Media Host Forbidden'), ('invalid_options', 'Invalid Options'), ('session_logged_out', 'Session Logged Out'), ('send_timeout', 'Send Timeout'), ('send_failed', 'Send Failed'), ('attempts_exhausted', 'Attempts Exhausted'), ('qr_timeout', 'Qr Timeout'), ('browser_crashed', 'Browser Crashed'), ('browser_start_failed', 'Browser Start Failed'), ('page_load_failed', 'Page Load Failed'), ('auth_restore_failed', 'Auth Restore Failed'), ('device_unlinked', 'Device Unlinked'), ('invalid_pair_phone', 'Invalid Pair Phone'), ('session_conflict', 'Session Conflict'), ('account_banned', 'Account Banned'), ('proxy_blocked', 'Proxy Blocked'), ('web_version_unsupported', 'Web Version Unsupported'), ('invalid_command', 'Invalid Command'), ('command_failed', 'Command Failed'), ('command_timeout', 'Command Timeout'), ('command_interrupted', 'Command Interrupted')], max_length=32, null=True),
        ),
        migrations.AlterField(
            model_name='message',
            name='error_code',
            field=models.CharField(blank=True, choices=[('invalid_recipient', 'Invalid Recipient'), ('not_on_whatsapp', 'Not On Whatsapp'), ('body_too_long', 'Body Too Long'), ('empty_message', 'Empty Message'), ('media_missing', 'Media Missing'), ('media_invalid_url', 'Media Invalid Url'), ('media_fetch_failed', 'Media Fetch Failed'), ('media_too_large', 'Media Too Large'), ('media_host_forbidden', 'Media Host Forbidden'), ('invalid_options', 'Invalid Options'), ('session_logged_out', 'Session Logged Out'), ('send_timeout', 'Send Timeout'), ('send_failed', 'Send Failed'), ('attempts_exhausted', 'Attempts Exhausted'), ('qr_timeout', 'Qr Timeout'), ('browser_crashed', 'Browser Crashed'), ('browser_start_failed', 'Browser Start Failed'), ('page_load_failed', 'Page Load Failed'), ('auth_restore_failed', 'Auth Restore Failed'), ('device_unlinked', 'Device Unlinked'), ('invalid_pair_phone', 'Invalid Pair Phone'), ('session_conflict', 'Session Conflict'), ('account_banned', 'Account Banned'), ('proxy_blocked', 'Proxy Blocked'), ('web_version_unsupported', 'Web Version Unsupported'), ('invalid_command', 'Invalid Command'), ('command_failed', 'Command Failed'), ('command_timeout', 'Command Timeout'), ('command_interrupted', 'Command Interrupted')], max_length=32, null=True),
        ),
        migrations.AlterField(
            model_name='session',
            name='error_code',
            field=models.CharField(blank=True, choices=[('invalid_recipient', 'Invalid Recipient'), ('not_on_whatsapp', 'Not On Whatsapp'), ('body_too_long', 'Body Too Long'), ('empty_message', 'Empty Message'), ('media_missing', 'Media Missing'), ('media_invalid_url', 'Media Invalid Url'), ('media_fetch_failed', 'Media Fetch Failed'), ('media_too_large', 'Media Too Large'), ('media_host_forbidden', 'Media Host Forbidden'), ('invalid_options', 'Invalid Options'), ('session_logged_out', 'Session Logged Out'), ('send_timeout', 'Send Timeout'), ('send_failed', 'Send Failed'), ('attempts_exhausted', 'Attempts Exhausted'), ('qr_timeout', 'Qr Timeout'), ('browser_crashed', 'Browser Crashed'), ('browser_start_failed', 'Browser Start Failed'), ('page_load_failed', 'Page Load Failed'), ('auth_restore_failed', 'Auth Restore Failed'), ('device_unlinked', 'Device Unlinked'), ('invalid_pair_phone', 'Invalid Pair Phone'), ('session_conflict', 'Session Conflict'), ('account_banned', 'Account Banned'), ('proxy_blocked', 'Proxy Blocked'), ('web_version_unsupported', 'Web Version Unsupported'), ('invalid_command', 'Invalid Command'), ('command_failed', 'Command Failed'), ('command_timeout', 'Command Timeout'), ('command_interrupted', 'Command Interrupted')], max_length=32, null=True),
        ),
    ]
