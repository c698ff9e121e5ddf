-- Commands as rows (issue 14, first slice): a row asks a runner to do something with a session's
-- page that is not a message (check numbers, mark a chat read, show typing), the runner does it
-- and writes the answer back. Same semantics as wa_message: claimed with SKIP LOCKED only by the
-- runner that owns the session, every completion fenced on that ownership.

-- Codes for command rows: a bad argument, and a page that could not do it.
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
  'invalid_command', 'command_failed', 'command_timeout'
));

create table wa_command (
  id               bigint generated always as identity primary key,
  session_id       text not null references wa_session (id) on delete cascade,
  kind             text not null check (kind in ('check_numbers', 'mark_read', 'presence')),
  args             jsonb not null default '{}'::jsonb,
  status           text not null default 'queued'
                   check (status in ('queued', 'running', 'done', 'failed', 'cancelled')),
  result           jsonb,
  error_code       wa_error_code,
  error            text,
  idempotency_key  text unique,
  not_before       timestamptz not null default now(),
  attempts         integer not null default 0 check (attempts >= 0),
  runner_id        uuid,
  started_at       timestamptz,
  finished_at      timestamptz,
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now()
);

-- Claim: the next due command of an owned session, in id order.
create index wa_command_queued_idx on wa_command (session_id, id) where status = 'queued';
-- Recovery of rows a dead runner left running.
create index wa_command_running_idx on wa_command (session_id, id) where status = 'running';
-- Retention pruning of finished rows.
create index wa_command_finished_idx on wa_command (finished_at) where finished_at is not null;

create trigger wa_command_touch before update on wa_command for each row execute function wa_touch_updated_at();

-- Only a queued command can be cancelled; a cancel finishes it.
create or replace function wa_command_guard() returns trigger language plpgsql as $$
begin
  if new.status = 'cancelled' and old.status <> 'cancelled' and old.status <> 'queued' then
    raise exception 'wa_command %: only a queued command can be cancelled (it is %)', old.id, old.status
      using errcode = 'check_violation';
  end if;
  if new.status = 'cancelled' and old.status = 'queued' then
    new.finished_at := now();
  end if;
  return new;
end $$;
create trigger wa_command_guard before update of status on wa_command
  for each row execute function wa_command_guard();

-- A command for a logged-out session fails at once, like a message.
create or replace function wa_command_on_insert() returns trigger language plpgsql as $$
begin
  if exists (select 1 from wa_session s where s.id = new.session_id and s.status = 'logged_out') then
    new.status := 'failed';
    new.error_code := 'session_logged_out';
    new.error := 'session ' || new.session_id || ' is logged out';
    new.finished_at := now();
  end if;
  return new;
end $$;
create trigger wa_command_on_insert before insert on wa_command
  for each row execute function wa_command_on_insert();

-- Runners LISTEN wa_outbox (a new command wakes its owner, or the reconciler for a hibernated
-- session); callers LISTEN wa_command for completions.
create or replace function wa_notify_command() returns trigger language plpgsql as $$
begin
  if tg_op = 'INSERT' then
    perform pg_notify('wa_outbox', json_build_object('kind', 'command', 'session_id', new.session_id, 'id', new.id)::text);
  end if;
  if new.status in ('done', 'failed', 'cancelled') and (tg_op = 'INSERT' or old.status is distinct from new.status) then
    perform pg_notify('wa_command', json_build_object('session_id', new.session_id, 'id', new.id, 'status', new.status)::text);
  end if;
  return null;
end $$;
create trigger wa_command_notify after insert or update of status on wa_command
  for each row execute function wa_notify_command();
