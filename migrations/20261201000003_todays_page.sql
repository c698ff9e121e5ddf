-- Today's WhatsApp Web (issue 10).

-- Codes for the page states a session cannot leave by itself, and for a page build the driver
-- cannot work with.
alter domain wa_error_code drop constraint wa_error_code_check;
alter domain wa_error_code add constraint wa_error_code_check check (value in (
  -- message rows
  'invalid_recipient', 'not_on_whatsapp', 'body_too_long', 'empty_message', 'media_missing',
  'media_invalid_url', 'media_fetch_failed', 'media_too_large', 'media_host_forbidden',
  'invalid_options', 'session_logged_out', 'send_timeout', 'send_failed', 'attempts_exhausted',
  -- session rows (and transient message causes)
  'qr_timeout', 'browser_crashed', 'browser_start_failed', 'page_load_failed', 'auth_restore_failed',
  'device_unlinked', 'invalid_pair_phone',
  'session_conflict', 'account_banned', 'proxy_blocked', 'web_version_unsupported'
));

-- Acks are matched by session and the bare message id: today's page may key a message we sent
-- under the contact's LID, the phone number, or with our JID appended for a group.
create index wa_message_bare_id_idx on wa_message (session_id, (split_part(wa_message_id, '_', 3)))
  where wa_message_id is not null;
