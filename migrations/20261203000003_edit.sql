-- Kind `edit` (issue 13): `body` is the new text of a message this account sent, named like a
-- reaction's (`options.target_id` or `options.target_wa_id`, a `true_…` id); the runner refuses
-- one past WhatsApp's 15-minute edit window (invalid_options).
alter table wa_message drop constraint wa_message_kind_check;
alter table wa_message add constraint wa_message_kind_check
  check (kind in ('text', 'image', 'video', 'audio', 'voice', 'document', 'location',
                  'contact', 'poll', 'reaction', 'edit'));
