// WAWebGroupQueryJob.queryAndUpdateGroupMetadataById({id}) asks the server and fills
// WAWebCollections.GroupMetadata (as WPPConnect's wapi and whatsapp-web.js's
// GroupQueryAndUpdate do); the model then gives subject, owner, creation and participants with
// isAdmin / isSuperAdmin. A group the account is not in (or no group) rejects: {found: false}.
async function (lib, groupId) {
    const req = lib.req;
    const wid = req('WAWebWidFactory').createWid(groupId);
    try {
        await req('WAWebGroupQueryJob').queryAndUpdateGroupMetadataById({ id: groupId });
    } catch (e) {
        const st = e && (e.statusCode || e.status);
        if (st === 404 || st === 403 || st === 401) return { found: false };
        throw e;
    }
    const meta = req('WAWebCollections').GroupMetadata.get(wid);
    if (!meta) return { found: false };
    const models = meta.participants && typeof meta.participants.getModelsArray === 'function'
        ? meta.participants.getModelsArray() : [];
    return {
        found: true,
        id: lib.widStr(meta.id),
        subject: typeof meta.subject === 'string' ? meta.subject : null,
        owner: meta.owner ? lib.widStr(meta.owner) : null,
        creation: typeof meta.creation === 'number' ? meta.creation : null,
        participants: models.map((p) => ({
            id: lib.widStr(p.id), is_admin: !!(p.isAdmin || p.isSuperAdmin), is_super_admin: !!p.isSuperAdmin,
        })),
    };
}
