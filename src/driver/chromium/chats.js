// Client.getChats of whatsapp-web.js: WAWebCollections.Chat.getModelsArray(), read as
// WWebJS.getChatModel reads a chat (id, formattedTitle, isGroup, unreadCount, t, archive, pin).
// The `limit` most recent by their last activity (`t`), newest first. A one-to-one chat the page
// files under the contact's LID also names the phone number it stands for, where the page knows it.
// `unreadCount` -1 is a chat marked unread by hand.
async function (lib, limit) {
    const req = lib.req;
    const Chat = req('WAWebCollections').Chat;
    const all = typeof Chat.getModelsArray === 'function' ? Chat.getModelsArray() : Chat.models || [];
    const chats = all.slice().sort((a, b) => (Number(b.t) || 0) - (Number(a.t) || 0)).slice(0, limit);
    return chats.map((c) => {
        const id = c.id;
        const isGroup = typeof id.isGroup === 'function' ? id.isGroup() : String(id).endsWith('@g.us');
        const isLid = typeof id.isLid === 'function' && id.isLid();
        const pn = isLid ? lib.sibling(id) : null;
        const unread = Number(c.unreadCount) || 0;
        return {
            id: lib.widStr(id),
            number: isGroup ? null : isLid ? (pn ? pn.user : null) : id.user,
            name: c.formattedTitle || c.name || null,
            is_group: isGroup,
            unread: unread > 0 ? unread : 0,
            marked_unread: unread < 0 || !!c.markedUnread,
            timestamp: Number(c.t) || 0,
            archived: !!c.archive,
            pinned: !!c.pin,
        };
    });
}
