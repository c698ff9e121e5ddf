// Client.getMessageById for a message we sent, made to survive today's page (lib.js): by the bare
// id in the chat, in its sibling (LID ↔ phone number) and anywhere in the page, then in the page's
// own store. A send of this id still running in the page is waited for first, so a recovering
// runner never takes "still uploading" for "never sent". Returns the ack, or null.
async function (lib, chatId, serializedId) {
    const id = lib.bareId(serializedId);
    if (!id) return null;
    const running = lib.inflight.get(id);
    if (running) {
        try {
            await running;
        } catch (e) {
            // It failed in the page; whether it left a message behind is what we look up next.
        }
    }
    const chatWid = lib.req('WAWebWidFactory').createWid(chatId);
    const msg = await lib.findSent(chatWid, id);
    return msg ? Number(msg.ack) : null;
}
