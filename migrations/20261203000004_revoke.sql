-- Kind `revoke` (issue 13): delete a message this account sent for everyone, named like an
-- edit's (`options.target_id` or a `true_…` `options.target_wa_id`); no body.
alter table wa_message drop constraint wa_message_kind_check;
alter table wa_message add constraint wa_message_kind_check
  check (kind in ('text', 'image', 'video', 'audio', 'voice', 'document', 'location',
                  'contact', 'poll', 'reaction', 'edit', 'revoke'));
