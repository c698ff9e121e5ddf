-- Commands as rows, chats and history (issue 14): chats lists the page's recent chats with their
-- unread counts; history a chat's last messages. Both only read.
alter table wa_command drop constraint wa_command_kind_check;
alter table wa_command add constraint wa_command_kind_check check (kind in (
  'check_numbers', 'mark_read', 'presence',
  'contact_info', 'profile_picture',
  'chats', 'history'
));
