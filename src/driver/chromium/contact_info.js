// Client.getContactById + Contact.getAbout of whatsapp-web.js: the number is checked first
// (WAWebQueryExistsJob.queryWidExists, as check_numbers does), then the contact model from
// WAWebCollections.Contact.find(wid) read as WWebJS.getContactModel reads it (name, pushname,
// isBusiness, WAWebFrontendContactGetters.getIsMyContact), then the about text from
// WAWebContactStatusBridge.getStatus({token: '', wid}).status (absent when the account hides it).
// A contact the page files under its LID is looked up there. Returns {exists: false} for a
// number without WhatsApp.
async function (lib, chatId) {
    const req = lib.req;
    const wid = req('WAWebWidFactory').createWid(chatId);
    const found = await req('WAWebQueryExistsJob').queryWidExists(wid);
    if (!found || found.wid == null) return { exists: false };
    const canonical = found.wid;
    const contact = await req('WAWebCollections').Contact.find(canonical);
    const str = (v) => (typeof v === 'string' && v.length > 0 ? v : null);
    let myContact = false;
    const getters = lib.maybe('WAWebFrontendContactGetters');
    if (getters && typeof getters.getIsMyContact === 'function') {
        myContact = !!getters.getIsMyContact(contact);
    }
    let about = null;
    const statusBridge = lib.maybe('WAWebContactStatusBridge');
    if (statusBridge && typeof statusBridge.getStatus === 'function') {
        try {
            const s = await statusBridge.getStatus({ token: '', wid: canonical });
            about = s ? str(s.status) : null;
        } catch (e) {
            // The server refuses to say (privacy): no about text, the rest still stands.
            about = null;
        }
    }
    const pn = lib.sibling(canonical);
    const isLid = typeof canonical.isLid === 'function' && canonical.isLid();
    return {
        exists: true,
        wid: lib.widStr(canonical),
        number: isLid ? (pn ? pn.user : wid.user) : canonical.user,
        name: str(contact && contact.name),
        pushname: str(contact && contact.pushname),
        is_business: !!(contact && contact.isBusiness),
        is_my_contact: myContact,
        about: about,
    };
}
