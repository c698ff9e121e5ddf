-- Wake-ups per insert independent of the runner count (issue 16). A message, command or
-- desired_state change for a session with a live lease notifies only its owner, on the owner's
-- own channel `wa_outbox_<runner id>`; only a session without a live owner (one to claim, e.g. a
-- hibernated one) is announced on `wa_outbox`, which every runner's reconciler hears. Before,
-- every insert reached every runner and woke each non-owner's reconciler for a full tick
-- (heartbeat, renewal of every lease, the claim): N − 1 ticks per insert with N runners.
-- The payloads are unchanged. A notification stays a hint: runners also poll.

-- The channel for a session: its owner's while the lease is live, else the shared one.
-- PL/pgSQL, not SQL: its plan is cached per connection (an SQL function called per row from a
-- trigger is planned on every call, which made a 1 M-row insert hit the statement timeout).
create or replace function wa_outbox_channel(p_session_id text) returns text
language plpgsql stable as $$
declare
  owner uuid;
begin
  select s.runner_id into owner from wa_session s
   where s.id = p_session_id and s.runner_id is not null and s.lease_until > now();
  return case when owner is null then 'wa_outbox' else 'wa_outbox_' || owner::text end;
end $$;

create or replace function wa_notify_outbox() returns trigger language plpgsql as $$
begin
  if tg_table_name = 'wa_message' then
    perform pg_notify(wa_outbox_channel(new.session_id),
      json_build_object('kind', 'message', 'session_id', new.session_id, 'id', new.id)::text);
  else
    perform pg_notify(case when new.runner_id is not null and new.lease_until > now()
                           then 'wa_outbox_' || new.runner_id::text else 'wa_outbox' end,
      json_build_object('kind', 'session', 'session_id', new.id)::text);
  end if;
  return null;
end $$;

create or replace function wa_notify_command() returns trigger language plpgsql as $$
begin
  if tg_op = 'INSERT' then
    perform pg_notify(wa_outbox_channel(new.session_id),
      json_build_object('kind', 'command', 'session_id', new.session_id, 'id', new.id)::text);
  end if;
  if new.status in ('done', 'failed', 'cancelled') and (tg_op = 'INSERT' or old.status is distinct from new.status) then
    perform pg_notify('wa_command', json_build_object('session_id', new.session_id, 'id', new.id, 'status', new.status)::text);
  end if;
  return null;
end $$;
