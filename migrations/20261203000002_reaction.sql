-- Kind `reaction` (issue 13): `body` is the emoji ('' removes ours), the message it is on is
-- `options.target_id` (one of the session's wa_message rows that went out) or
-- `options.target_wa_id` (a serialized WhatsApp id); the runner checks both (invalid_options).
alter table wa_message drop constraint wa_message_kind_check;
alter table wa_message add constraint wa_message_kind_check
  check (kind in ('text', 'image', 'video', 'audio', 'voice', 'document', 'location',
                  'contact', 'poll', 'reaction'));
