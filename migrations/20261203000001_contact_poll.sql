-- More kinds (issue 13): `contact` (options.vcards) and `poll` (options.question, .choices,
-- .selectable_count). Like `location`, their fields live in `options` and the runner checks them
-- (invalid_options with a sentence), so no new columns or codes. `options.mentions` needs no DDL.
alter table wa_message drop constraint wa_message_kind_check;
alter table wa_message add constraint wa_message_kind_check
  check (kind in ('text', 'image', 'video', 'audio', 'voice', 'document', 'location',
                  'contact', 'poll'));
