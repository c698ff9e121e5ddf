-- Calls and group changes from the other side (issue 14).
-- `reject_calls`: the session's runner rejects every incoming call through the page's own VoIP
-- module. Either way each incoming call is one `wa_event` of kind `call` (payload: README), keyed
-- by the call's id in `wa_message_id`: stored once however often the page reports it.
alter table wa_session add column reject_calls boolean not null default false;

create unique index wa_event_call_uq on wa_event (session_id, wa_message_id) where kind = 'call';

-- A group change someone else made (a `gp2` notification the page added), keyed by the
-- notification's message key in `wa_message_id`: stored once.
create unique index wa_event_group_update_uq on wa_event (session_id, wa_message_id)
  where kind = 'group_update';
