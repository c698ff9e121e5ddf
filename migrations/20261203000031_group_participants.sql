-- Commands as rows, group participants (issue 14): group_participants adds, removes, promotes or
-- demotes participants; it changes the world, so a row left `running` is settled by asking the
-- page (the group as the server has it) instead of being run again.
alter table wa_command drop constraint wa_command_kind_check;
alter table wa_command add constraint wa_command_kind_check check (kind in (
  'check_numbers', 'mark_read', 'presence',
  'contact_info', 'profile_picture',
  'chats', 'history',
  'group_create', 'group_info', 'group_invite_link', 'group_leave',
  'group_participants'
));
