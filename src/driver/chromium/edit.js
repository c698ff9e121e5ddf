// New text for a message we sent (or, with `revoke`, deleting it for everyone), the way the page's own edit modal does it:
// WAWebSendMessageEditAction.sendMessageEdit(msg, newText, options) (the page's
// WAWebMessageEditModal flow; whatsapp-web.js binds the module as EditMessage). The message is
// looked for as react.js looks (Msg.get, the page's store, either wid of its chat). Past WhatsApp's
// 15-minute window (by the message's own `t`, the page's clock) nothing is sent. Values arrive as
// JSON.
//
// Returns {chat, ack: 1, result} once the page's call returned, or {error: 'no_message' | 'not_ours'
// | 'too_old'}.
async function (lib, chatId, target, text, windowSecs, revoke) {
    const req = lib.req;
    const msg = await lib.findTarget(target);
    if (!msg) return { error: 'no_message' };
    if (!msg.id || !msg.id.fromMe) return { error: 'not_ours' };
    if (revoke) {
        // Delete for everyone as whatsapp-web.js's Message.delete(true) does:
        // WAWebMsgActionCapability.canSenderRevokeMsg, then
        // WAWebCmd.Cmd.sendRevokeMsgs(chat, {type: 'message', list: [msg]}, {clearMedia: true}).
        const Cap = lib.maybe('WAWebMsgActionCapability');
        if (Cap && typeof Cap.canSenderRevokeMsg === 'function' && !Cap.canSenderRevokeMsg(msg)) {
            return { error: 'too_old' };
        }
        const chat = req('WAWebCollections').Chat.get(msg.id.remote);
        await req('WAWebCmd').Cmd.sendRevokeMsgs(chat, { type: 'message', list: [msg] }, { clearMedia: true });
        return { chat: lib.widStr(msg.id.remote) || chatId, ack: 1, result: 'OK' };
    }
    if (Number(msg.t) > 0 && Date.now() / 1000 - Number(msg.t) > windowSecs) return { error: 'too_old' };
    await req('WAWebSendMessageEditAction').sendMessageEdit(msg, text, {});
    return { chat: lib.widStr(msg.id.remote) || chatId, ack: 1, result: 'OK' };
}
