// Client.getMessageById: the in-memory collection first, then the page's message store.
// A message we sent to a group is keyed with our own JID appended as its participant (see
// send.js); the row keeps the key without it, so for a group both forms are looked up.
async function (chatId, serializedId) {
    const req = window.require;
    const Msg = req('WAWebCollections').Msg;
    const candidates = [serializedId];
    const WidFactory = req('WAWebWidFactory');
    const chatWid = WidFactory.createWid(chatId);
    const parts = String(serializedId).split('_');
    if (parts.length === 3 && typeof chatWid.isGroup === 'function' && chatWid.isGroup()) {
        const MsgKey = req('WAWebMsgKey');
        const { getMaybeMeLidUser, getMaybeMePnUser } = req('WAWebUserPrefsMeUser');
        for (const me of [getMaybeMePnUser(), getMaybeMeLidUser()]) {
            if (!me) continue;
            const key = new MsgKey({
                from: me,
                to: chatWid,
                id: parts[2],
                participant: WidFactory.asUserWidOrThrow(me),
                selfDir: 'out',
            });
            candidates.push(key._serialized);
        }
    }
    for (const id of candidates) {
        let msg = Msg.get(id);
        if (!msg && typeof Msg.getMessagesById === 'function') {
            const found = await Msg.getMessagesById([id]);
            if (found && found.messages && found.messages.length) msg = found.messages[0];
        }
        if (msg) return Number(msg.ack);
    }
    return null;
}
