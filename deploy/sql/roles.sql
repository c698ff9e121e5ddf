-- wa-outbox least-privilege roles (DESIGN.md §5). Re-runnable: run it after every
-- `wa-outbox migrate`, as the role that owns the tables (the one that ran the migrations), in the
-- wa-outbox database:
--
--   psql "$MIGRATE_DATABASE_URL" -v ON_ERROR_STOP=1 -f deploy/sql/roles.sql
--
-- It defines three group roles (NOLOGIN) and their rights on the current schema. Logins are
-- yours to create, one per holder, as members:
--
--   create role django_app      login password '…' in role wa_django;
--   create role wa_runner_login login password '…' in role wa_runner;
--   create role wa_keda_login   login password '…' in role wa_keda;
--
--   wa_django  Django. Inserts and reads sessions and messages, reads events, incoming media
--              (wa_media) and the views.
--              It may change only what a caller may ask for: a session's desired_state,
--              pair_phone, proxy_url, reject_calls and user_id, and a message's status (to cancel it: see the note at
--              the end). It cannot delete rows, and cannot read wa_session_auth (the
--              encrypted logins), wa_runner or wa_leader.
--              Column rights mean Django must write only those columns: create rows with
--              `objects.create(...)` (a plain `save()` of a new row with a chosen primary key
--              tries an UPDATE of every column first, which is refused) and change them with
--              `save(update_fields=[...])` or `queryset.update(...)`.
--   wa_runner  The runners. Reads and writes every wa_ table. Not the owner, so it cannot drop,
--              alter or truncate them; it cannot create tables either (PostgreSQL 15 no longer
--              lets PUBLIC create in schema public; on older servers run
--              `revoke create on schema public from public` once).
--   wa_keda    KEDA's scaler. Reads only the columns its session count uses.
--   wa_tenant  Optional row-level security, for several apps (tenants) sharing one outbox: a
--              member role sees and writes only the rows of its own users. Per tenant app:
--
--                create role tenant_shop nologin in role wa_tenant;   -- the tenant
--                create role shop_app login password '…' in role tenant_shop;
--                insert into wa_tenant_user (tenant, user_id) values ('tenant_shop', 7), …;
--
--              It has wa_django's rights, on its rows only: a session is its when
--              wa_session.user_id is listed for it in wa_tenant_user, a message or an event
--              when its session is. It sees only its own wa_tenant_user rows, and not the
--              views (they run with their owner's rights, so they would show every row).
--              Nothing changes for the other roles: row-level security is on for these tables,
--              with a policy that lets wa_django, wa_runner and wa_keda see every row. Another
--              role you grant rights on them yourself sees no rows until you add a policy.
--
-- Creating the roles needs CREATEROLE; once they exist, a re-run needs only ownership of the
-- tables. Everything happens in one transaction, so nobody sees the rights half changed.

begin;

do $$
declare
  r text;
begin
  foreach r in array array['wa_django', 'wa_runner', 'wa_keda', 'wa_tenant'] loop
    if not exists (select 1 from pg_roles where rolname = r) then
      begin
        execute format('create role %I nologin', r);
      exception when duplicate_object or unique_violation then
        null; -- created meanwhile by a concurrent run: what we wanted
      end;
    end if;
  end loop;
  execute format('grant usage on schema %I to wa_django, wa_runner, wa_keda, wa_tenant',
                 current_schema());
end $$;

-- Which users' rows each tenant role may reach (see wa_tenant above). Owned by whoever runs this
-- file, so a tenant cannot add users to itself.
create table if not exists wa_tenant_user (
  tenant  regrole not null,
  user_id bigint not null,
  primary key (tenant, user_id)
);

-- Start from nothing, so a re-run also takes back rights an older version of this file gave.
revoke all on wa_session, wa_message, wa_event, wa_media, wa_session_auth, wa_runner, wa_leader, wa_command,
              wa_outbox_stats, wa_session_overview, wa_runner_overview, wa_tenant_user
  from wa_django, wa_runner, wa_keda, wa_tenant;

-- Django ---------------------------------------------------------------------------------------
grant select, insert on wa_session to wa_django;
grant update (desired_state, pair_phone, proxy_url, reject_calls, user_id) on wa_session to wa_django;
grant select, insert on wa_message to wa_django;
grant update (status) on wa_message to wa_django;
grant select, insert on wa_command to wa_django;
grant update (status) on wa_command to wa_django;
grant select on wa_event to wa_django;
grant select on wa_media to wa_django;
-- The views run with their owner's rights: wa_session_overview may say whether a stored login
-- exists (has_stored_login) without Django being able to read the login itself.
grant select on wa_outbox_stats, wa_session_overview, wa_runner_overview to wa_django;

-- Runners --------------------------------------------------------------------------------------
grant select, insert, update, delete
  on wa_session, wa_message, wa_event, wa_media, wa_session_auth, wa_runner, wa_leader, wa_command
  to wa_runner;
grant select on wa_outbox_stats, wa_session_overview, wa_runner_overview to wa_runner;
-- `wa-outbox run` checks the schema version before it starts (and never migrates itself).
do $$
begin
  if to_regclass('_sqlx_migrations') is not null then
    revoke all on _sqlx_migrations from wa_django, wa_runner, wa_keda;
    grant select on _sqlx_migrations to wa_runner;
  end if;
end $$;
-- Tables a later migration creates are the runners' at once; Django's rights stay explicit
-- (re-run this file after migrating).
do $$
begin
  execute format(
    'alter default privileges in schema %I grant select, insert, update, delete on tables to wa_runner',
    current_schema());
end $$;

-- KEDA -----------------------------------------------------------------------------------------
-- Exactly the columns of the ScaledObject's query (deploy/k8s/scaledobject.yaml).
grant select (id, desired_state, status) on wa_session to wa_keda;
grant select (session_id, status, not_before) on wa_message to wa_keda;

-- Tenants (row-level security) ------------------------------------------------------------------
grant select, insert on wa_session to wa_tenant;
grant update (desired_state, pair_phone, proxy_url, reject_calls, user_id) on wa_session to wa_tenant;
grant select, insert on wa_message to wa_tenant;
grant update (status) on wa_message to wa_tenant;
grant select, insert on wa_command to wa_tenant;
grant update (status) on wa_command to wa_tenant;
grant select on wa_event to wa_tenant;
grant select on wa_media to wa_tenant;
grant select on wa_tenant_user to wa_tenant;

alter table wa_tenant_user enable row level security;
alter table wa_session enable row level security;
alter table wa_message enable row level security;
alter table wa_event enable row level security;
alter table wa_media enable row level security;
alter table wa_command enable row level security;
-- The table owner (the migrations, the tests' admin) is not subject to row-level security;
-- the three roles above see every row, as before.
drop policy if exists wa_all_rows on wa_session;
drop policy if exists wa_all_rows on wa_message;
drop policy if exists wa_all_rows on wa_event;
drop policy if exists wa_all_rows on wa_media;
drop policy if exists wa_all_rows on wa_command;
create policy wa_all_rows on wa_session to wa_django, wa_runner, wa_keda using (true);
create policy wa_all_rows on wa_message to wa_django, wa_runner, wa_keda using (true);
create policy wa_all_rows on wa_event to wa_django, wa_runner, wa_keda using (true);
create policy wa_all_rows on wa_media to wa_django, wa_runner, wa_keda using (true);
create policy wa_all_rows on wa_command to wa_django, wa_runner, wa_keda using (true);
-- A tenant's own rows: pg_has_role, so the logins of a tenant role (its members) count too.
drop policy if exists wa_tenant_own on wa_tenant_user;
drop policy if exists wa_tenant_own on wa_session;
drop policy if exists wa_tenant_own on wa_message;
drop policy if exists wa_tenant_own on wa_event;
drop policy if exists wa_tenant_own on wa_media;
drop policy if exists wa_tenant_own on wa_command;
create policy wa_tenant_own on wa_tenant_user to wa_tenant
  using (pg_has_role(tenant, 'member'));
-- The subqueries below are themselves filtered by these policies: a tenant's message is one of
-- its visible sessions, which is one of its users'.
create policy wa_tenant_own on wa_session to wa_tenant
  using (user_id in (select t.user_id from wa_tenant_user t))
  with check (user_id in (select t.user_id from wa_tenant_user t));
create policy wa_tenant_own on wa_message to wa_tenant
  using (session_id in (select s.id from wa_session s))
  with check (session_id in (select s.id from wa_session s));
create policy wa_tenant_own on wa_event to wa_tenant
  using (session_id in (select s.id from wa_session s));
create policy wa_tenant_own on wa_media to wa_tenant
  using (session_id in (select s.id from wa_session s));
create policy wa_tenant_own on wa_command to wa_tenant
  using (session_id in (select s.id from wa_session s))
  with check (session_id in (select s.id from wa_session s));

commit;

-- Note on cancelling: column rights cannot say "only the value cancelled". wa_message_guard
-- (in the migration) only checks a change *to* cancelled (allowed from queued alone), so a
-- wa_django login could still write another status into a row. Django code should cancel with
--   Message.objects.filter(pk=…, status="queued").update(status="cancelled")
-- and nothing else; the runners overwrite any other status they own.
