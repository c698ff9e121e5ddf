-- wa-outbox table contract (DESIGN.md §1). Names are fixed: columns may be added, never renamed.
-- Every status/kind column has a CHECK so a bad insert fails at Django's save() time.

create or replace function wa_touch_updated_at() returns trigger language plpgsql as $$
begin
  new.updated_at := now();
  return new;
end $$;

-- The closed, documented set of error codes (README "Error codes").
create domain wa_error_code as text check (value in (
  -- message rows
  'invalid_recipient', 'not_on_whatsapp', 'body_too_long', 'empty_message', 'media_missing',
  'media_invalid_url', 'media_fetch_failed', 'media_too_large', 'media_host_forbidden',
  'invalid_options', 'session_logged_out', 'send_timeout', 'send_failed', 'attempts_exhausted',
  -- session rows (and transient message causes)
  'qr_timeout', 'browser_crashed', 'browser_start_failed', 'page_load_failed', 'auth_restore_failed',
  'device_unlinked', 'invalid_pair_phone'
));

create table wa_runner (
  id            uuid primary key,
  host          text not null,
  pid           integer not null,
  version       text not null,
  capacity      integer not null check (capacity >= 0),
  draining      boolean not null default false,
  heartbeat_at  timestamptz not null default now(),
  started_at    timestamptz not null default now(),
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now()
);

create table wa_session (
  id              text primary key check (id ~ '^[A-Za-z0-9_-]{1,64}$'),
  user_id         bigint,
  desired_state   text not null default 'running'
                  check (desired_state in ('running', 'stopped', 'logged_out')),
  status          text not null default 'new'
                  check (status in ('new', 'starting', 'qr_pending', 'pairing', 'connected',
                                    'hibernated', 'stopped', 'logged_out', 'failed')),
  pair_phone      text check (pair_phone ~ '^\+?[0-9]{6,15}$'),
  qr_code         text,
  qr_image        text,
  qr_expires_at   timestamptz,
  pairing_code    text,
  phone_number    text,
  push_name       text,
  error_code      wa_error_code,
  error           text,
  runner_id       uuid,
  lease_until     timestamptz,
  last_active_at  timestamptz not null default now(),
  -- restart back-off after browser crashes (runner-owned)
  restart_count   integer not null default 0,
  next_start_at   timestamptz,
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now()
);

create table wa_message (
  id               bigint generated always as identity primary key,
  session_id       text not null references wa_session (id) on delete cascade,
  recipient        text not null check (length(recipient) between 1 and 128),
  kind             text not null default 'text'
                   check (kind in ('text', 'image', 'video', 'audio', 'voice', 'document')),
  body             text,
  media_url        text,
  media_data       bytea,
  media_mime       text,
  media_filename   text,
  options          jsonb not null default '{}'::jsonb check (jsonb_typeof(options) = 'object'),
  idempotency_key  text unique,
  priority         smallint not null default 0,
  not_before       timestamptz not null default now(),
  status           text not null default 'queued'
                   check (status in ('queued', 'sending', 'sent', 'delivered', 'read', 'played',
                                     'failed', 'cancelled')),
  attempts         integer not null default 0 check (attempts >= 0),
  max_attempts     integer not null default 5 check (max_attempts between 1 and 100),
  chat_id          text,
  wa_message_id    text,
  ack              smallint,
  error_code       wa_error_code,
  error            text,
  runner_id        uuid,
  sending_at       timestamptz,
  sent_at          timestamptz,
  delivered_at     timestamptz,
  read_at          timestamptz,
  played_at        timestamptz,
  finished_at      timestamptz,
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now(),
  constraint wa_message_one_media_source check (media_url is null or media_data is null)
);

create table wa_event (
  id             bigint generated always as identity primary key,
  session_id     text not null references wa_session (id) on delete cascade,
  kind           text not null check (kind in ('message', 'ack', 'session_status')),
  message_id     bigint references wa_message (id) on delete set null,
  wa_message_id  text,
  payload        jsonb not null default '{}'::jsonb,
  created_at     timestamptz not null default now(),
  updated_at     timestamptz not null default now()
);

-- The stored login of a session: an encrypted archive. Only runners read it.
create table wa_session_auth (
  session_id   text primary key references wa_session (id) on delete cascade,
  key_id       text not null,
  nonce        bytea not null,
  ciphertext   bytea not null,
  size_bytes   integer not null,
  sha256       text not null,
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now()
);

-- One named lease per cluster-wide duty (the maintenance leader). A row, not an advisory lock,
-- so it works behind PgBouncer in transaction mode.
create table wa_leader (
  name         text primary key,
  runner_id    uuid not null,
  lease_until  timestamptz not null,
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now()
);

-- Claim paths, each an index scan:
-- dispatcher: next due message of an owned session in (priority, id) order
create index wa_message_queued_idx on wa_message (session_id, priority, id) where status = 'queued';
-- recovery of rows a dead runner left in flight
create index wa_message_sending_idx on wa_message (session_id, id) where status = 'sending';
-- ack lookup by WhatsApp id
create unique index wa_message_wa_id_idx on wa_message (wa_message_id) where wa_message_id is not null;
-- retention pruning of finished rows
create index wa_message_finished_idx on wa_message (finished_at) where finished_at is not null;
-- reconciler: sessions without a live owner; lease renewal by owner
create index wa_session_runner_idx on wa_session (runner_id) where runner_id is not null;
create index wa_session_unowned_idx on wa_session (lease_until nulls first, id)
  where desired_state = 'running' or status not in ('stopped', 'logged_out');
create index wa_event_session_idx on wa_event (session_id, id);
create index wa_event_created_idx on wa_event (created_at);
-- an incoming message is recorded once even if the page reports it again after a reload
create unique index wa_event_incoming_uq on wa_event (session_id, wa_message_id) where kind = 'message';

create trigger wa_runner_touch before update on wa_runner for each row execute function wa_touch_updated_at();
create trigger wa_session_touch before update on wa_session for each row execute function wa_touch_updated_at();
create trigger wa_message_touch before update on wa_message for each row execute function wa_touch_updated_at();
create trigger wa_event_touch before update on wa_event for each row execute function wa_touch_updated_at();
create trigger wa_session_auth_touch before update on wa_session_auth for each row execute function wa_touch_updated_at();
create trigger wa_leader_touch before update on wa_leader for each row execute function wa_touch_updated_at();

-- Caller-side rules the CHECKs cannot express.
create or replace function wa_message_guard() returns trigger language plpgsql as $$
begin
  if new.status = 'cancelled' and old.status <> 'cancelled' and old.status <> 'queued' then
    raise exception 'wa_message %: only a queued message can be cancelled (it is %)', old.id, old.status
      using errcode = 'check_violation';
  end if;
  if new.status = 'cancelled' and old.status = 'queued' then
    new.finished_at := now();
  end if;
  return new;
end $$;
create trigger wa_message_guard before update of status on wa_message
  for each row execute function wa_message_guard();

-- Asking a failed/stopped/logged-out session to run again starts it afresh.
create or replace function wa_session_guard() returns trigger language plpgsql as $$
begin
  if new.desired_state = 'running' and old.status in ('failed', 'stopped', 'logged_out') then
    new.status := 'new';
    new.error_code := null;
    new.error := null;
    new.restart_count := 0;
    new.next_start_at := null;
  end if;
  return new;
end $$;
create trigger wa_session_guard before update of desired_state on wa_session
  for each row execute function wa_session_guard();

-- A message for a logged-out session fails at once with its code (nothing waits for a login
-- that will not come back by itself).
create or replace function wa_message_on_insert() returns trigger language plpgsql as $$
begin
  if exists (select 1 from wa_session s where s.id = new.session_id and s.status = 'logged_out') then
    new.status := 'failed';
    new.error_code := 'session_logged_out';
    new.error := 'session ' || new.session_id || ' is logged out';
    new.finished_at := now();
  end if;
  return new;
end $$;
create trigger wa_message_on_insert before insert on wa_message
  for each row execute function wa_message_on_insert();

-- Notifications: runners LISTEN wa_outbox, Django LISTENs wa_event.
create or replace function wa_notify_outbox() returns trigger language plpgsql as $$
begin
  if tg_table_name = 'wa_message' then
    perform pg_notify('wa_outbox', json_build_object('kind', 'message', 'session_id', new.session_id, 'id', new.id)::text);
  else
    perform pg_notify('wa_outbox', json_build_object('kind', 'session', 'session_id', new.id)::text);
  end if;
  return null;
end $$;
create trigger wa_message_notify after insert on wa_message
  for each row execute function wa_notify_outbox();
create trigger wa_session_notify after insert or update of desired_state on wa_session
  for each row execute function wa_notify_outbox();

create or replace function wa_notify_event() returns trigger language plpgsql as $$
begin
  perform pg_notify('wa_event', json_build_object('session_id', new.session_id, 'id', new.id, 'kind', new.kind)::text);
  return null;
end $$;
create trigger wa_event_notify after insert on wa_event
  for each row execute function wa_notify_event();

-- Inspection views.
create view wa_outbox_stats as
select s.id as session_id,
       s.status as session_status,
       count(m.id) filter (where m.status = 'queued')    as queued,
       count(m.id) filter (where m.status = 'sending')   as sending,
       count(m.id) filter (where m.status = 'sent')      as sent,
       count(m.id) filter (where m.status = 'delivered') as delivered,
       count(m.id) filter (where m.status = 'read')      as read,
       count(m.id) filter (where m.status = 'played')    as played,
       count(m.id) filter (where m.status = 'failed')    as failed,
       count(m.id) filter (where m.status = 'cancelled') as cancelled,
       now() - min(m.created_at) filter (where m.status = 'queued') as oldest_queued_age,
       (select m2.error_code from wa_message m2
         where m2.session_id = s.id and m2.error_code is not null
         order by m2.updated_at desc limit 1) as last_error_code,
       (select m2.error from wa_message m2
         where m2.session_id = s.id and m2.error_code is not null
         order by m2.updated_at desc limit 1) as last_error
from wa_session s
left join wa_message m on m.session_id = s.id
group by s.id, s.status;

create view wa_session_overview as
select s.id, s.user_id, s.desired_state, s.status, s.phone_number, s.push_name,
       s.qr_code is not null as has_qr, s.qr_expires_at, s.pairing_code,
       s.runner_id, r.host as runner_host,
       s.lease_until, (s.lease_until is not null and s.lease_until > now()) as lease_live,
       s.last_active_at, s.error_code, s.error,
       exists (select 1 from wa_session_auth a where a.session_id = s.id) as has_stored_login,
       (select count(*) from wa_message m where m.session_id = s.id and m.status = 'queued') as queued,
       s.created_at, s.updated_at
from wa_session s
left join wa_runner r on r.id = s.runner_id;

create view wa_runner_overview as
select r.id, r.host, r.pid, r.version, r.capacity, r.draining, r.started_at, r.heartbeat_at,
       now() - r.heartbeat_at as heartbeat_age,
       (select count(*) from wa_session s where s.runner_id = r.id and s.lease_until > now()) as sessions,
       (select count(*) from wa_session s where s.runner_id = r.id and s.lease_until > now()
          and s.status = 'connected') as connected
from wa_runner r;
