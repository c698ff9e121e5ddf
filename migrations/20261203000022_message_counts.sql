-- Per-session message counts kept by the writes themselves (issue 16): wa_outbox_stats and
-- `wa-outbox status` read them instead of counting wa_message, so they cost the fleet, not the
-- history (aggregating 10 M rows took 2.5–3.5 s on the benchmark machine, even as one parallel
-- index-only scan).
--
-- Each statement that inserts, deletes or changes the status of messages adds its net change
-- per (session, status) to the row of its own backend (`pg_backend_pid()`): two transactions in
-- flight never write the same counter row, so counting adds no lock waits between Django and the
-- runners. A count is the sum over backends; maintenance folds the backends' rows into backend 0
-- (wa-outbox's `compact_counts`), skipping rows in use.
create table wa_message_count (
  session_id  text not null,
  status      text not null,
  backend     integer not null,
  n           bigint not null,
  primary key (session_id, status, backend)
);

-- The trigger functions run as the schema's owner (security definer, search_path fixed): the
-- roles of deploy/sql/roles.sql that write wa_message need no rights on this table, and a tenant
-- cannot write counts of its own.
create or replace function wa_message_count_apply() returns trigger language plpgsql
security definer set search_path from current as $$
begin
  if tg_op = 'INSERT' then
    insert into wa_message_count (session_id, status, backend, n)
      select session_id, status, pg_backend_pid(), count(*) from new_rows group by 1, 2
      on conflict (session_id, status, backend) do update set n = wa_message_count.n + excluded.n;
  elsif tg_op = 'DELETE' then
    insert into wa_message_count (session_id, status, backend, n)
      select session_id, status, pg_backend_pid(), -count(*) from old_rows group by 1, 2
      on conflict (session_id, status, backend) do update set n = wa_message_count.n + excluded.n;
  else
    insert into wa_message_count (session_id, status, backend, n)
      select session_id, status, pg_backend_pid(), sum(d) from (
        select o.session_id, o.status, -1 as d from old_rows o join new_rows w on w.id = o.id
          where o.status <> w.status or o.session_id <> w.session_id
        union all
        select w.session_id, w.status, 1 as d from old_rows o join new_rows w on w.id = o.id
          where o.status <> w.status or o.session_id <> w.session_id) x
      group by 1, 2 having sum(d) <> 0
      on conflict (session_id, status, backend) do update set n = wa_message_count.n + excluded.n;
  end if;
  return null;
end $$;
create trigger wa_message_count_insert after insert on wa_message
  referencing new table as new_rows for each statement execute function wa_message_count_apply();
create trigger wa_message_count_update after update on wa_message
  referencing old table as old_rows new table as new_rows for each statement execute function wa_message_count_apply();
create trigger wa_message_count_delete after delete on wa_message
  referencing old table as old_rows for each statement execute function wa_message_count_apply();

create or replace function wa_message_count_truncate() returns trigger language plpgsql
security definer set search_path from current as $$
begin
  delete from wa_message_count;
  return null;
end $$;
create trigger wa_message_count_truncate after truncate on wa_message
  for each statement execute function wa_message_count_truncate();

-- The counts as they are now (no write can slip between this and the triggers).
lock table wa_message in share mode;
insert into wa_message_count (session_id, status, backend, n)
  select session_id, status, 0, count(*) from wa_message group by 1, 2;

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
         (sum(n) filter (where status = 'queued'))::bigint    as queued,
         (sum(n) filter (where status = 'sending'))::bigint   as sending,
         (sum(n) filter (where status = 'sent'))::bigint      as sent,
         (sum(n) filter (where status = 'delivered'))::bigint as delivered,
         (sum(n) filter (where status = 'read'))::bigint      as read,
         (sum(n) filter (where status = 'played'))::bigint    as played,
         (sum(n) filter (where status = 'failed'))::bigint    as failed,
         (sum(n) filter (where status = 'cancelled'))::bigint as cancelled
  from wa_message_count group by session_id
) c on c.session_id = s.id
left join (
  select session_id, min(created_at) as oldest from wa_message where status = 'queued' group by session_id
) q on q.session_id = s.id
left join lateral (
  select m.error_code, m.error from wa_message m
  where m.session_id = s.id and m.error_code is not null
  order by m.updated_at desc limit 1
) e on true;
