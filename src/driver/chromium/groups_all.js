// WAWebGroupQueryJob.queryAllGroups(): the server's "participating" query the page itself uses,
// every group of the account with its participants in one round trip (a read). Used to settle an
// interrupted group_create: each {id, subject, owner, creation, participants: [{id, admin}]}.
async function (lib) {
    const req = lib.req;
    const res = await req('WAWebGroupQueryJob').queryAllGroups();
    if (!Array.isArray(res)) return null;
    const s = (x) => (x == null ? null : (typeof x === 'string' ? x : lib.widStr(x)));
    return res.map((g) => ({
        id: s(g.id),
        subject: typeof g.subject === 'string' ? g.subject : null,
        owner: s(g.owner),
        creation: typeof g.creation === 'number' ? g.creation : null,
        participants: (Array.isArray(g.participants) ? g.participants : []).map((p) => ({
            id: s(p && p.id),
            admin: p && typeof p.admin === 'string' ? p.admin : null,
        })),
    }));
}
