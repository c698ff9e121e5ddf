// WAWebGroupCreateJob.createGroup(args, participants, outContacts), called as the page's own
// WAWebCreateGroupAction calls it (the action without its toast and modals): args
// {title, ephemeralDuration, restrict, announce, membershipApprovalMode, memberAddMode, ...},
// each participant through WAWebGroupMutationParticipantUtils.getGroupMutationParticipant(wid,
// true, 'createGroup') where the page has it (else the wid, as whatsapp-web.js passes them). The
// answer is {wid, participants: [{wid, code}]}; code "200" is added, "403" needs an invite, other
// codes failed. The group id is read with WAWebWidFactory.asGroupWidOrThrow, as the action does.
async function (lib, subject, ids) {
    const req = lib.req;
    const WF = req('WAWebWidFactory');
    const mut = lib.maybe('WAWebGroupMutationParticipantUtils');
    const wids = ids.map((id) => WF.createWid(id));
    const parts = wids.map((w) =>
        mut && typeof mut.getGroupMutationParticipant === 'function'
            ? mut.getGroupMutationParticipant(w, true, 'createGroup')
            : w);
    const args = {
        title: subject, thumb: null, full: null, ephemeralDuration: 0, restrict: false,
        announce: false, membershipApprovalMode: false, memberAddMode: false,
        memberShareGroupHistoryMode: false,
    };
    const r = await req('WAWebGroupCreateJob').createGroup(args, parts, []);
    const gid = typeof WF.asGroupWidOrThrow === 'function' ? WF.asGroupWidOrThrow(r.wid) : r.wid;
    const out = [];
    for (const p of (Array.isArray(r.participants) ? r.participants : [])) {
        const w = p && (p.wid || p.id || p.userWid);
        out.push({ wid: w ? lib.widStr(w) : null, code: p && p.code != null ? String(p.code) : null });
    }
    return { id: lib.widStr(gid), participants: out };
}
