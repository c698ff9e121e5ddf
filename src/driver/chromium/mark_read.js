// Chat.sendSeen of whatsapp-web.js (WWebJS.sendSeen): the chat's model, then
// WAWebUpdateUnreadChatAction.sendSeen({chat, afterAvailable: false}). The page module sends the
// receipt (WAWebChatSeenBridge.sendConversationSeen) only for a chat with unread messages;
// afterAvailable: false sends it now instead of when a visible tab becomes "available", which a
// headless tab never does. A one-to-one chat may live under the contact's LID (lib.sibling).
// Returns {chat, unread}: the chat's wid (null when the page has no such chat) and the unread
// count the receipt covered.
async function (lib, chatId) {
    const req = lib.req;
    const Chat = req('WAWebCollections').Chat;
    const wid = req('WAWebWidFactory').createWid(chatId);
    const other = lib.sibling(wid);
    let chat = Chat.get(wid) || (other ? Chat.get(other) : null);
    // A contact's chat the page files under a LID it has not mapped here yet: the page's own
    // lookup (it maps a phone number to its LID thread, asking the server where needed).
    if (!chat && typeof wid.isUser === 'function' && wid.isUser()) {
        const found = await req('WAWebFindChatAction').findOrCreateLatestChat(wid);
        chat = found && found.chat;
    }
    if (!chat) return { chat: null, unread: 0 };
    const unread = Number(chat.unreadCount) > 0 ? Number(chat.unreadCount) : 0;
    await req('WAWebUpdateUnreadChatAction').sendSeen({ chat: chat, afterAvailable: false });
    return { chat: lib.widStr(chat.id), unread: unread };
}
