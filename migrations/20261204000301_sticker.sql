-- Kind `sticker` (issue 13): an image (media_url or media_data, as an image's) that the page
-- converts to WhatsApp's 512x512 WebP sticker and sends as one; no caption. A sticker whose bytes
-- are not an image the page can read fails with the new code `media_invalid`.
alter table wa_message drop constraint wa_message_kind_check;
alter table wa_message add constraint wa_message_kind_check
  check (kind in ('text', 'image', 'video', 'audio', 'voice', 'document', 'location',
                  'contact', 'poll', 'reaction', 'edit', 'revoke', 'forward', 'sticker'));

alter domain wa_error_code drop constraint wa_error_code_check;
alter domain wa_error_code add constraint wa_error_code_check check (value in (
  -- message rows
  'invalid_recipient', 'not_on_whatsapp', 'body_too_long', 'empty_message', 'media_missing',
  'media_invalid_url', 'media_fetch_failed', 'media_too_large', 'media_host_forbidden',
  'media_invalid',
  'invalid_options', 'session_logged_out', 'send_timeout', 'send_failed', 'attempts_exhausted',
  -- session rows (and transient message causes)
  'qr_timeout', 'browser_crashed', 'browser_start_failed', 'page_load_failed', 'auth_restore_failed',
  'device_unlinked', 'invalid_pair_phone',
  'session_conflict', 'account_banned', 'proxy_blocked', 'web_version_unsupported',
  'proxy_invalid', 'proxy_failed',
  -- command rows
  'invalid_command', 'command_failed', 'command_timeout', 'command_interrupted'
));
