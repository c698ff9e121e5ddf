// Client.getMessageById: the in-memory collection first, then the page's message store.
async function (serializedId) {
    const Msg = window.require('WAWebCollections').Msg;
    let msg = Msg.get(serializedId);
    if (!msg && typeof Msg.getMessagesById === 'function') {
        const found = await Msg.getMessagesById([serializedId]);
        if (found && found.messages && found.messages.length) msg = found.messages[0];
    }
    return msg ? Number(msg.ack) : null;
}
