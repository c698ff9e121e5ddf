// Client.getNumberId: WAWebQueryExistsJob.queryWidExists on the chat's wid. Returns the wid the
// page answers with, which on today's page is the canonical one (the contact's LID where the
// page addresses it so: page module WAWebQueryExistsJob), or null for a number without WhatsApp.
async function (lib, chatId) {
    const wid = lib.req('WAWebWidFactory').createWid(chatId);
    const result = await lib.req('WAWebQueryExistsJob').queryWidExists(wid);
    if (!result || result.wid == null) return null;
    return lib.widStr(result.wid);
}
