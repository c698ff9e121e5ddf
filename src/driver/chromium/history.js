// Chat.fetchMessages({limit}) of whatsapp-web.js: the chat's messages the page holds
// (chat.msgs.getModelsArray(), notifications left out), earlier ones loaded with
// WAWebChatLoadMessages.loadEarlierMsgs(chat, chat.msgs) until `limit` or nothing more, sorted by
// `t`, the last `limit`. loadEarlierMsgs throws on a chat never opened in this page on some
// builds; what the page already holds is then the answer. The chat is found as mark_read finds it
// (its wid, its LID sibling, or the page's own phone → LID lookup). Returns {chat: null} when the
// page has no such chat.
async function (lib, chatId, limit) {
    const req = lib.req;
    const Chat = req('WAWebCollections').Chat;
    const wid = req('WAWebWidFactory').createWid(chatId);
    const other = lib.sibling(wid);
    let chat = Chat.get(wid) || (other ? Chat.get(other) : null);
    if (!chat && typeof wid.isUser === 'function' && wid.isUser()) {
        const found = await req('WAWebFindChatAction').findOrCreateLatestChat(wid);
        chat = found && found.chat;
    }
    if (!chat) return { chat: null, messages: [] };
    const keep = (m) => !!m && !m.isNotification;
    let msgs = chat.msgs.getModelsArray().filter(keep);
    const loader = lib.maybe('WAWebChatLoadMessages');
    for (let round = 0; msgs.length < limit && round < 20; round++) {
        if (!loader || typeof loader.loadEarlierMsgs !== 'function') break;
        let loaded;
        try {
            loaded = await loader.loadEarlierMsgs(chat, chat.msgs);
        } catch (e) {
            break;
        }
        if (!loaded || !loaded.length) break;
        const before = msgs.length;
        msgs = chat.msgs.getModelsArray().filter(keep);
        if (msgs.length <= before) break;
    }
    msgs.sort((a, b) => (Number(a.t) || 0) - (Number(b.t) || 0));
    msgs = msgs.slice(-limit);
    return {
        chat: lib.widStr(chat.id),
        messages: msgs.map((m) => ({
            id: lib.bareId(m.id),
            key: lib.keyStr(m.id),
            from_me: !!(m.id && m.id.fromMe),
            type: m.type || 'chat',
            body: typeof m.body === 'string' && m.type === 'chat' ? m.body : (typeof m.caption === 'string' ? m.caption : null),
            timestamp: Number(m.t) || 0,
            author: m.author ? lib.widStr(m.author) : null,
        })),
    };
}
