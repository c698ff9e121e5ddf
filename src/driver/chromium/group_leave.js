// GroupChat.leave of whatsapp-web.js: Store.GroupUtils.sendExitGroup(chatWid), GroupUtils
// spreading require('WAWebExitGroupAction'); wa-js documents sendExitGroup(group: ChatModel), so
// the page's chat is passed when it holds one.
async function (lib, groupId) {
    const req = lib.req;
    const wid = req('WAWebWidFactory').createWid(groupId);
    const chat = req('WAWebCollections').Chat.get(wid);
    await req('WAWebExitGroupAction').sendExitGroup(chat || wid);
    return true;
}
