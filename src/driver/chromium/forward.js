// Forwards a message (ours or received) to a chat the way the page's own forward modal does:
// WAWebForwardMessagesToChat.forwardMessagesToChats({msgs, chats, includeCaption: true}) (the page's
// forward-to-new-group modal; wa-js's chat.forwardMessage calls the same), after loading the
// forward bundle when the page has it lazy (WAWebForwardMessageFlowLoadable.requireBundle). The
// message is looked for as react.js looks; the chat is found as send.js finds it (a phone number
// leads to its LID sibling's chat). The page makes the copy's key, so nothing of ours can be
// asked about it later: the runner never sends a forward row twice. Values arrive as JSON.
//
// Returns {id, chat, ack: 1, result} (id: the forwarded copy's key when the page filed it in the
// chat during the call, else null), or {error: 'no_message' | 'no_chat'}.
async function (lib, chatId, target) {
    const req = lib.req;
    const Collections = req('WAWebCollections');
    const msg = await lib.findTarget(target);
    if (!msg) return { error: 'no_message' };

    const chatWid = req('WAWebWidFactory').createWid(chatId);
    const isPn = typeof chatWid.isLid === 'function' && !chatWid.isLid() && chatWid.isUser();
    const to = (isPn && lib.sibling(chatWid)) || chatWid;
    const chat = Collections.Chat.get(to) ||
        ((await req('WAWebFindChatAction').findOrCreateLatestChat(to)) || {}).chat;
    if (!chat) return { error: 'no_chat' };

    const Flow = lib.maybe('WAWebForwardMessageFlowLoadable');
    if (Flow && typeof Flow.requireBundle === 'function') await Flow.requireBundle();
    const before = new Set(chat.msgs.getModelsArray().map((m) => lib.keyStr(m.id)));
    await req('WAWebForwardMessagesToChat').forwardMessagesToChats({
        msgs: [msg],
        chats: [chat],
        includeCaption: true,
    });
    // The copy: a message of ours, marked forwarded, that was not in the chat before the call.
    const copy = chat.msgs.getModelsArray().find((m) =>
        m && m.id && m.id.fromMe && m.isForwarded && !before.has(lib.keyStr(m.id)));
    return {
        id: copy ? lib.keyStr(copy.id) : null,
        chat: lib.widStr(chat.id) || chatId,
        ack: 1,
        result: 'OK',
    };
}
