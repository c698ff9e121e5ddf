-- Typed events (issues 13 and 14): besides incoming messages, acks and session changes, the
-- runner records what the other side did that is not a message of its own: a `reaction` to a
-- message, a `poll_vote`, an `edit` or a `revoke` of a message it sent us, an incoming `call`
-- (and whether the runner rejected it), and a `group_update` (someone else changed a group we are
-- in). Each kind's payload is written in the README's table contract. One migration defines the
-- whole set so that the kinds added by different changes never redefine the check against each
-- other; a later migration that adds a kind must list all of them.
alter table wa_event drop constraint wa_event_kind_check;
alter table wa_event add constraint wa_event_kind_check check (kind in (
  'message', 'ack', 'session_status',
  'reaction', 'poll_vote', 'edit', 'revoke', 'call', 'group_update'
));
