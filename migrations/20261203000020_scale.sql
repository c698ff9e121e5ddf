-- Scale (issue 16): every view and the reconciler's claim cost what the fleet and the backlog
-- cost, not the history. 10 k sessions and 10 M message rows are the yardstick (bench/run.sh).

-- A plain index on wa_message(session_id): `on delete cascade` from wa_session finds a session's
-- rows through it (before, only partial indexes led with session_id, so the cascade scanned the
-- table), and with status second the per-session counts of wa_outbox_stats are one index-only
-- scan of it, grouped once.
create index wa_message_session_idx on wa_message (session_id, status);

-- The newest error of a session: one index probe per session instead of a sort of its rows.
create index wa_message_error_idx on wa_message (session_id, updated_at) where error_code is not null;

-- The reconciler's claim, served by indexes (src/reconciler.rs `claim`). The old
-- wa_session_unowned_idx could not serve it: its predicate left out `stopped`, which the claim's
-- logged_out branch matches, so every tick was a sequential scan and sort of all sessions. This
-- index's predicate is the claim's own branches (minus hibernated sessions, which only need a
-- browser once work is queued for them), so PostgreSQL proves the claim implies it; the claim
-- reads it by `lease_until is null` and by `lease_until < now()`, so a tick visits only the
-- sessions it could take, never the ones with a live lease.
drop index wa_session_unowned_idx;
create index wa_session_claim_idx on wa_session (lease_until nulls first, id)
  where (desired_state = 'running' and status in ('new', 'starting', 'qr_pending', 'pairing', 'connected', 'stopped'))
     or (desired_state = 'stopped' and status not in ('stopped', 'logged_out', 'failed'))
     or (desired_state = 'logged_out' and status <> 'logged_out');
-- Hibernated sessions a queued message or command may wake.
create index wa_session_hibernated_idx on wa_session (id)
  where desired_state = 'running' and status = 'hibernated';

-- Views: each table is read once, grouped once, then joined; no subquery per session.
create or replace view wa_outbox_stats as
select s.id as session_id,
       s.status as session_status,
       coalesce(c.queued, 0)    as queued,
       coalesce(c.sending, 0)   as sending,
       coalesce(c.sent, 0)      as sent,
       coalesce(c.delivered, 0) as delivered,
       coalesce(c.read, 0)      as read,
       coalesce(c.played, 0)    as played,
       coalesce(c.failed, 0)    as failed,
       coalesce(c.cancelled, 0) as cancelled,
       now() - q.oldest as oldest_queued_age,
       e.error_code as last_error_code,
       e.error as last_error
from wa_session s
left join (
  select session_id,
         count(*) filter (where status = 'queued')    as queued,
         count(*) filter (where status = 'sending')   as sending,
         count(*) filter (where status = 'sent')      as sent,
         count(*) filter (where status = 'delivered') as delivered,
         count(*) filter (where status = 'read')      as read,
         count(*) filter (where status = 'played')    as played,
         count(*) filter (where status = 'failed')    as failed,
         count(*) filter (where status = 'cancelled') as cancelled
  from wa_message group by session_id
) c on c.session_id = s.id
left join (
  select session_id, min(created_at) as oldest from wa_message where status = 'queued' group by session_id
) q on q.session_id = s.id
left join lateral (
  select m.error_code, m.error from wa_message m
  where m.session_id = s.id and m.error_code is not null
  order by m.updated_at desc limit 1
) e on true;

create or replace view wa_session_overview as
select s.id, s.user_id, s.desired_state, s.status, s.phone_number, s.push_name,
       s.qr_code is not null as has_qr, s.qr_expires_at, s.pairing_code,
       s.runner_id, r.host as runner_host,
       s.lease_until, (s.lease_until is not null and s.lease_until > now()) as lease_live,
       s.last_active_at, s.error_code, s.error,
       a.session_id is not null as has_stored_login,
       coalesce(q.queued, 0) as queued,
       s.created_at, s.updated_at
from wa_session s
left join wa_runner r on r.id = s.runner_id
left join wa_session_auth a on a.session_id = s.id
left join (
  select session_id, count(*) as queued from wa_message where status = 'queued' group by session_id
) q on q.session_id = s.id;

create or replace view wa_runner_overview as
select r.id, r.host, r.pid, r.version, r.capacity, r.draining, r.started_at, r.heartbeat_at,
       now() - r.heartbeat_at as heartbeat_age,
       coalesce(c.sessions, 0) as sessions,
       coalesce(c.connected, 0) as connected
from wa_runner r
left join (
  select runner_id, count(*) as sessions, count(*) filter (where status = 'connected') as connected
  from wa_session where runner_id is not null and lease_until > now() group by runner_id
) c on c.runner_id = r.id;
