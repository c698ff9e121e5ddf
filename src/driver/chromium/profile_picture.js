// Client.getProfilePicUrl of whatsapp-web.js on 2.3000 pages:
// WAWebContactProfilePicThumbBridge.requestProfilePicFromServer(wid), whose answer carries the
// picture's signed CDN URL in `eurl`; a ServerStatusCodeError means no picture (or one the
// account's privacy settings hide). Returns {url, tag} or {url: null}.
async function (lib, chatId) {
    const req = lib.req;
    const wid = req('WAWebWidFactory').createWid(chatId);
    let pic;
    try {
        pic = await req('WAWebContactProfilePicThumbBridge').requestProfilePicFromServer(wid);
    } catch (e) {
        if (e && e.name === 'ServerStatusCodeError') return { url: null };
        throw e;
    }
    const url = pic && (pic.eurl || pic.imgFull || pic.img);
    return { url: typeof url === 'string' && url ? url : null, tag: pic && pic.tag != null ? String(pic.tag) : null };
}
