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


BY_KIND = {
    "message": message_received,
    "ack": message_ack,
    "session_status": session_status,
    "call": call_received,
    "group_update": group_updated,
}
