"""Signals sent by the `wa_outbox_listen` command, one per wa_event row, in id order.

Every signal is sent with sender=Event and these keyword arguments:
    event       the wa_outbox.models.Event instance
    session_id  the session it belongs to
    payload     the event's JSON payload (dict), as the runner wrote it
plus, per signal:
    message_received  wa_message_id, sender_jid (payload "from"), body (payload "body"),
                      media: None for a message without a file, else {"media_id", "type"
                      (image, video, audio, voice, document, sticker), "mimetype", "filename",
                      "caption"}; the bytes are WhatsAppService().get_media(media["media_id"])
                      (or the Media model), which also says whether they were stored
    message_ack       message_id (our wa_message row id or None), wa_message_id, ack
                      (-1 error, 0 pending, 1 server, 2 device, 3 read, 4 played)
    session_status    status (payload "status", e.g. "qr_pending", "connected")
    call_received     call_id, caller_jid (payload "from"), is_video, is_group, rejected (the
                      runner declined it because the session has reject_calls)
    group_updated     group_id, action (add, remove, promote, demote, subject, …),
                      participants (list of JIDs), actor (who made the change, a JID or None)

What the other side did to a message (one signal per event, each recorded once by the runner):
    reaction_received   message_id (our row it reacted to, or None), wa_message_id (the
                        reaction's own key), sender_jid, target_wa_id, emoji ("" = taken back)
    poll_vote_received  message_id (our poll row), wa_message_id, sender_jid, poll_wa_id,
                        selected_options (option names; [] = vote taken back)
    message_edited      wa_message_id (the edit's key), sender_jid, target_wa_id, body (new text)
    message_revoked     wa_message_id (the revoke's key), sender_jid, target_wa_id
"""

from django.dispatch import Signal

message_received = Signal()
message_ack = Signal()
session_status = Signal()
# Calls and group changes from the other side (issue 14).
call_received = Signal()
group_updated = Signal()

MEDIA_TYPES = ("image", "video", "audio", "voice", "document", "sticker")


def media_of(payload: dict) -> dict | None:
    """The media part of an incoming message's payload (README, wa_event), or None."""
    if payload.get("media_id") is None or payload.get("type") not in MEDIA_TYPES:
        return None
    return {
        "media_id": payload["media_id"],
        "type": payload["type"],
        "mimetype": payload.get("mimetype"),
        "filename": payload.get("filename"),
        "caption": payload.get("caption"),
    }


reaction_received = Signal()
poll_vote_received = Signal()
message_edited = Signal()
message_revoked = Signal()

BY_KIND = {
    "message": message_received,
    "ack": message_ack,
    "session_status": session_status,
    "call": call_received,
    "group_update": group_updated,
    "reaction": reaction_received,
    "poll_vote": poll_vote_received,
    "edit": message_edited,
    "revoke": message_revoked,
}


def typed_kwargs(event, payload: dict) -> dict:
    """The per-signal keyword arguments of a typed event (reaction, poll_vote, edit, revoke)."""
    kwargs = {"wa_message_id": event.wa_message_id, "sender_jid": payload.get("from")}
    if event.kind == "reaction":
        kwargs.update(
            message_id=event.message_id,
            target_wa_id=payload.get("target_wa_id"),
            emoji=payload.get("emoji", ""),
        )
    elif event.kind == "poll_vote":
        kwargs.update(
            message_id=event.message_id,
            poll_wa_id=payload.get("poll_wa_id"),
            selected_options=payload.get("selected_options"),
        )
    elif event.kind == "edit":
        kwargs.update(target_wa_id=payload.get("target_wa_id"), body=payload.get("body"))
    else:
        kwargs.update(target_wa_id=payload.get("target_wa_id"))
    return kwargs


TYPED_KINDS = ("reaction", "poll_vote", "edit", "revoke")
