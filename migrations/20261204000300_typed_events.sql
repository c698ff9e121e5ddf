-- Typed inbound events (issue 13): a reaction, a poll vote, an edit or a revoke from the other side
-- is recorded once per session, kind and the page's key of that reaction / vote / edit / revoke
-- message (wa_message_id), whether the live hook or the backfill after a reconnect saw it first,
-- or both. Incoming messages keep their own index (wa_event_incoming_uq).
create unique index wa_event_typed_uq on wa_event (session_id, kind, wa_message_id)
  where kind in ('reaction', 'poll_vote', 'edit', 'revoke');
