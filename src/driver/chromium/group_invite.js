// GroupChat.getInviteCode of whatsapp-web.js: Store.Invite.queryGroupInviteCode(chatWid) with
// Store.Invite = require('WAWebGroupInviteJob'); the answer's `code` (older builds answered the
// code itself). The server refuses a non-admin (not-authorized).
async function (lib, groupId) {
    const req = lib.req;
    const wid = req('WAWebWidFactory').createWid(groupId);
    const res = await req('WAWebGroupInviteJob').queryGroupInviteCode(wid);
    const code = res && typeof res === 'object' ? res.code : res;
    return typeof code === 'string' ? code : null;
}
