-- More kinds (issue 13, first slice): `location`. Its fields live in `options`
-- ({"latitude", "longitude", "name"?, "address"?}), where a Django user already writes reply_to;
-- the runner validates them (invalid_options with a sentence), so no new columns or codes.
alter table wa_message drop constraint wa_message_kind_check;
alter table wa_message add constraint wa_message_kind_check
  check (kind in ('text', 'image', 'video', 'audio', 'voice', 'document', 'location'));
