// Sets (or, with '', removes) our reaction on a message, the way the page's own menu does:
// WAWebSendReactionMsgAction.sendReactionToMsg(msg, reactionText) (the page module; whatsapp-web.js
// Message.react calls the same). The parent is found by lib.findTarget, as whatsapp-web.js finds it (Msg.get, then
// the page's store by id); one of ours is also looked for under either wid of its chat (lib.findSent).
// The page makes the reaction's own key, so nothing of ours can be asked about it later: the runner
// never sends a reaction row twice (see dispatcher recovery). Every value arrives as JSON.
//
// Returns {chat, ack: 1, result} once the page's send answered, or {error: 'no_message'}.
async function (lib, chatId, target, emoji) {
    const req = lib.req;
    const msg = await lib.findTarget(target);
    if (!msg) return { error: 'no_message' };
    // Throws "Reaction send error" when the server's answer is not OK.
    await req('WAWebSendReactionMsgAction').sendReactionToMsg(msg, emoji);
    return { chat: lib.widStr(msg.id.remote) || chatId, ack: 1, result: 'OK' };
}
