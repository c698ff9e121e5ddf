"""Signals sent by the `wa_outbox_listen` command, one per wa_event row, in id order.

Every signal is sent with sender=Event and these keyword arguments:
    event       the wa_outbox.models.Event instance
    session_id  the session it belongs to
    payload     the event's JSON payload (dict), as the runner wrote it
plus, per signal:
    message_received  wa_message_id, sender_jid (payload "from"), body (payload "body")
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

BY_KIND = {
    "message": message_received,
    "ack": message_ack,
    "session_status": session_status,
    "call": call_received,
    "group_update": group_updated,
}
