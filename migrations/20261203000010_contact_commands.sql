-- Commands as rows, contacts and profile pictures (issue 14): contact_info reads what the page
-- knows about a contact (name, pushname, business, about, in the address book); profile_picture
-- the signed URL of a contact's or group's picture and the expiry it carries. Both only read, so
-- a row left running by a dead runner is simply run again.
alter table wa_command drop constraint wa_command_kind_check;
alter table wa_command add constraint wa_command_kind_check check (kind in (
  'check_numbers', 'mark_read', 'presence',
  'contact_info', 'profile_picture'
));
