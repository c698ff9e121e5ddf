-- Commands as rows, groups (issue 14): group_create and group_leave change the world, so a row
-- left `running` is settled by asking the page instead of being run again; group_info and
-- group_invite_link only read.
alter table wa_command drop constraint wa_command_kind_check;
alter table wa_command add constraint wa_command_kind_check check (kind in (
  'check_numbers', 'mark_read', 'presence',
  'contact_info', 'profile_picture',
  'chats', 'history',
  'group_create', 'group_info', 'group_invite_link', 'group_leave'
));

-- An interrupted command that changes the world, which the page could not settle.
alter domain wa_error_code drop constraint wa_error_code_check;
alter domain wa_error_code add constraint wa_error_code_check check (value in (
  -- message rows
  'invalid_recipient', 'not_on_whatsapp', 'body_too_long', 'empty_message', 'media_missing',
  'media_invalid_url', 'media_fetch_failed', 'media_too_large', 'media_host_forbidden',
  'invalid_options', 'session_logged_out', 'send_timeout', 'send_failed', 'attempts_exhausted',
  -- session rows (and transient message causes)
  'qr_timeout', 'browser_crashed', 'browser_start_failed', 'page_load_failed', 'auth_restore_failed',
  'device_unlinked', 'invalid_pair_phone',
  'session_conflict', 'account_banned', 'proxy_blocked', 'web_version_unsupported',
  -- command rows
  'invalid_command', 'command_failed', 'command_timeout', 'command_interrupted'
));
