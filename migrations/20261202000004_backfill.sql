-- Events that are never lost (issue 12).

-- The newest incoming message recorded for a session (its WhatsApp timestamp): after every
-- (re)connect the runner asks the page for the messages since then (backfill). Set to the time
-- of the first link when a session links, so the history from before it is not imported.
alter table wa_session add column last_inbound_at timestamptz;

-- next_start_at was never set by anything: gone, with its use in the guard.
create or replace function wa_session_guard() returns trigger language plpgsql as $$
begin
  if new.desired_state = 'running' and old.status in ('failed', 'stopped', 'logged_out') then
    new.status := 'new';
    new.error_code := null;
    new.error := null;
    new.restart_count := 0;
  end if;
  return new;
end $$;
alter table wa_session drop column next_start_at;
