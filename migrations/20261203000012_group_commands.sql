-- Commands as rows, groups (issue 14): group_create changes the world, so a row left `running`
-- is settled by asking the page instead of being run again; group_info only reads.
alter table wa_command drop constraint wa_command_kind_check;
alter table wa_command add constraint wa_command_kind_check check (kind in (
  'check_numbers', 'mark_read', 'presence',
  'contact_info', 'profile_picture',
  'chats', 'history',
  'group_create', 'group_info'
));
