-- A proxy's password does not stay in plain text (issue 14's proxy per session): when a runner
-- starts a session whose `proxy_url` carries a password, it seals the password (AES-256-GCM under
-- WA_AUTH_KEY, like the stored login, bound to the session and to the URL it belongs to) into
-- `proxy_password_sealed` and leaves `user:***@host:port` in `proxy_url`. Writing the URL again
-- with a password replaces it. The sealed value opens only with the same session and the same
-- redacted URL, so changing the host while keeping `***` does not hand the password to it.
alter table wa_session add column proxy_password_sealed text;
