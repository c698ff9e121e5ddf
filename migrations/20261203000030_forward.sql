-- Kind `forward` (issue 13): a message (`options.target_id`, one of the session's rows that went
-- out, or `options.target_wa_id`, any WhatsApp message id) forwarded to the row's chat; no body.
alter table wa_message drop constraint wa_message_kind_check;
alter table wa_message add constraint wa_message_kind_check
  check (kind in ('text', 'image', 'video', 'audio', 'voice', 'document', 'location',
                  'contact', 'poll', 'reaction', 'edit', 'revoke', 'forward'));
