"""Include with one line: path("whatsapp/", include("wa_outbox.urls"))."""

from django.urls import path

from . import views

app_name = "wa_outbox"

urlpatterns = [
    path("session/init", views.session_init, name="session-init"),
    path("session/status/<str:session_id>", views.session_status, name="session-status"),
    path("session/disconnect", views.session_disconnect, name="session-disconnect"),
    path("session/logout", views.session_logout, name="session-logout"),
    path("message/send-text", views.send_text, name="send-text"),
    path("message/send-media", views.send_media, name="send-media"),
    path("message/send-location", views.send_location, name="send-location"),
    path("message/send-contact", views.send_contact, name="send-contact"),
    path("message/send-poll", views.send_poll, name="send-poll"),
    path("message/send-sticker", views.send_sticker, name="send-sticker"),
    path("message/react", views.react, name="react"),
    path("message/edit", views.edit_message, name="edit-message"),
    path("message/delete", views.delete_message, name="delete-message"),
    path("message/forward", views.forward_message, name="forward-message"),
    path("message/status/<int:message_id>", views.message_status, name="message-status"),
    # Commands (wa_command rows), issue 14.
    path("command/mark-read", views.command_mark_read, name="command-mark-read"),
    path("command/typing", views.command_typing, name="command-typing"),
    path("command/check-numbers", views.command_check_numbers, name="command-check-numbers"),
    path("command/contact-info", views.command_contact_info, name="command-contact-info"),
    path("command/profile-picture", views.command_profile_picture, name="command-profile-picture"),
    path("command/chats", views.command_chats, name="command-chats"),
    path("command/history", views.command_history, name="command-history"),
    path("command/status/<int:command_id>", views.command_status, name="command-status"),
    path("group/create", views.group_create, name="group-create"),
    path("group/info", views.group_info, name="group-info"),
    path("group/invite-link", views.group_invite_link, name="group-invite-link"),
    path("group/leave", views.group_leave, name="group-leave"),
    path("group/participants", views.group_participants, name="group-participants"),
]
