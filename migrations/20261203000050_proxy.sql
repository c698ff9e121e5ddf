-- A proxy per session (issue 14): the session's browser connects through `proxy_url`
-- (http://, https:// or socks5://, credentials in the URL's user part). The runner never logs the
-- password. A URL it cannot use ends the session with `proxy_invalid`; a proxy that refuses the
-- connection or the credentials with `proxy_failed`.
alter table wa_session add column proxy_url text
  constraint wa_session_proxy_url_scheme check (proxy_url ~* '^(http|https|socks5)://[^/?#]');

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
  'proxy_invalid', 'proxy_failed',
  -- command rows
  'invalid_command', 'command_failed', 'command_timeout', 'command_interrupted'
));
