-- Plans that stay right however stale the statistics are (issue 16, the throughput fall at
-- 10 M rows). A big table's statistics never see the few rows in flight: ANALYZE samples 30 k
-- of 10 M rows, almost all finished, and autovacuum re-analyzes only after 10 % of the table
-- changed. So the planner believes no row is `sending`, and no session owned if the last
-- ANALYZE of wa_session ran before the runners claimed them. Two plans chose a partial index
-- for that belief and read every in-flight row or every owned session once per row:
--
-- * wa_outbox_channel (every message insert, per row) found the session through
--   wa_session_runner_idx, filtering all owned sessions by id: 0.47 ms per insert with 3,000
--   owned, against 0.01 ms through the primary key.
-- * the dispatcher's completion write joined every `sending` row (wa_message_sending_idx)
--   against the whole batch, and each against all of its runner's sessions
--   (wa_session_runner_idx): 270 ms for a batch of 300 at 10 M rows.
--
-- The channel is now looked up by the primary key alone, the completion's fence is a primary
-- key lookup too (src/dispatcher.rs), and wa_message_sending_idx goes: the only query that
-- needs it (a session's `sending` rows, on recovery) is served by wa_message_session_idx
-- (session_id, status), and without it a `status = 'sending'` condition can no longer draw
-- the planner to a scan of every in-flight row.
create or replace function wa_outbox_channel(p_session_id text) returns text
language plpgsql stable as $$
declare
  owner uuid;
  until timestamptz;
begin
  select s.runner_id, s.lease_until into owner, until from wa_session s where s.id = p_session_id;
  return case when owner is not null and until > now() then 'wa_outbox_' || owner::text else 'wa_outbox' end;
end $$;

drop index if exists wa_message_sending_idx;
