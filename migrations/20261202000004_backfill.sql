-- Events that are never lost (issue 12).

-- The newest incoming message recorded for a session (its WhatsApp timestamp): after every
-- (re)connect the runner asks the page for the messages since then (backfill). Set to the time
-- of the first link when a session links, so the history from before it is not imported.
alter table wa_session add column last_inbound_at timestamptz;
