// Client.getNumberId: WAWebQueryExistsJob.queryWidExists on the chat's wid.
async function (chatId) {
    const wid = window.require('WAWebWidFactory').createWid(chatId);
    const result = await window.require('WAWebQueryExistsJob').queryWidExists(wid);
    return !!(result && result.wid !== undefined);
}
