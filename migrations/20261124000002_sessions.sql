-- Sessions and maintenance (issue 5): indexes the housekeeping statements need.

-- Deleting a message nulls wa_event.message_id of its events (on delete set null); without
-- this index every deleted message would scan wa_event.
create index wa_event_message_idx on wa_event (message_id) where message_id is not null;

-- Pruning finds finished rows by finished_at (wa_message_finished_idx); this covers rows that
-- reached a final status without finished_at being set.
create index wa_message_done_unfinished_idx on wa_message (updated_at)
  where finished_at is null
    and status in ('sent', 'delivered', 'read', 'played', 'failed', 'cancelled');
