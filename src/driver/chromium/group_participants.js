// WAWebModifyParticipantsGroupAction.{add,remove,promote,demote}Participants(chat, [x]), one
// participant at a time (as whatsapp-web.js's GroupChat and other clients call it: add takes
// contacts, the others the chat's groupMetadata participant models). The metadata is refreshed
// first (WAWebGroupQueryJob.queryAndUpdateGroupMetadataById) so the action's own checks see the
// group as the server has it. Each participant answers {wid, code}: add the job's code ("200",
// "403", "409", …), the others "200" when the action resolved; the page's refusal (an
// ActionError from its own checks, a server status) is its name or status; "not_a_participant"
// / "unknown_contact" when the page holds no model to pass. A group the account is not in
// answers {found: false}.
async function (lib, groupId, action, wids) {
    const req = lib.req;
    const WF = req('WAWebWidFactory');
    const gwid = WF.createWid(groupId);
    try {
        await req('WAWebGroupQueryJob').queryAndUpdateGroupMetadataById({ id: groupId });
    } catch (e) {
        const st = e && (e.statusCode || e.status);
        if (st === 404 || st === 403 || st === 401) return { found: false };
        throw e;
    }
    const cols = req('WAWebCollections');
    const chat = cols.Chat.get(gwid);
    if (!chat || !chat.groupMetadata) return { found: false };
    const act = req('WAWebModifyParticipantsGroupAction');
    const fn = { add: act.addParticipants, remove: act.removeParticipants,
        promote: act.promoteParticipants, demote: act.demoteParticipants }[action];
    if (typeof fn !== 'function') throw new Error('the page has no ' + action + 'Participants');
    const refusal = (e) => {
        const st = e && (e.statusCode || e.status);
        if (typeof st === 'number') return String(st);
        return (e && typeof e.name === 'string' && e.name !== 'Error') ? e.name : 'refused';
    };
    const out = [];
    for (const w of wids) {
        const wid = WF.createWid(w);
        let x = null;
        if (action === 'add') {
            x = cols.Contact.get(wid)
                || (typeof cols.Contact.find === 'function' ? await cols.Contact.find(wid) : null);
            if (!x) { out.push({ wid: w, code: 'unknown_contact' }); continue; }
        } else {
            const parts = chat.groupMetadata.participants;
            x = parts && typeof parts.get === 'function' ? parts.get(wid) : null;
            if (!x) { out.push({ wid: w, code: 'not_a_participant' }); continue; }
        }
        try {
            const r = await fn.call(act, chat, [x]);
            let code = '200';
            if (action === 'add' && r && Array.isArray(r.participants) && r.participants.length > 0) {
                const c = r.participants[0] && r.participants[0].code;
                code = c == null ? '200' : String(c);
            }
            out.push({ wid: w, code });
        } catch (e) {
            out.push({ wid: w, code: refusal(e) });
        }
    }
    return { found: true, participants: out };
}
