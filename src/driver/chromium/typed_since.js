// The typed inbound events (reactions, poll votes, edits, revokes of the other side; see
// inbound_typed.js) the page holds from `since` (seconds since the epoch) on, shaped exactly as
// the live pushes (lib.js typedEvents), at most `limit`. The backfill after every (re)connect: what
// the page took in while its hooks were not there (the offline queue at login, a reload) is read
// back from where the page keeps it:
// - reactions: the page's reactions table, `WAWebSchemaReactions.getReactionsTable()` (rows
//   `msgKey`, `parentMsgKey`, `senderUserJid`, `reactionText`, `timestamp` in ms), which
//   `WAWebAddonReactionTableMode.reactionTableMode.bulkUpsert` writes;
// - poll votes: `WAWebPollsVotesSchema.getTable()` (rows `msgKey`, `parentMsgKey`, `sender`,
//   `senderTimestampMs`, `selectedOptionLocalIds`);
// - edits and revokes: the message models themselves (latestEditMsgKey; type `revoked`).
// Waits for the offline delivery as inbound_since.js does. A page without one of the tables has
// nothing of that kind to give back.
async function (lib, since, limit, waitMs) {
    const Offline = lib.maybe('WAWebOfflineHandler');
    const handler = Offline && Offline.OfflineMessageHandler;
    if (handler && typeof handler.getOfflineDeliveryProgress === 'function') {
        const started = Date.now();
        while (Number(handler.getOfflineDeliveryProgress()) < 100) {
            if (Date.now() - started >= waitMs) throw new Error('the offline delivery is still in progress');
            await new Promise((r) => setTimeout(r, 100));
        }
    }
    const ev = lib.typedEvents;
    const out = [];
    const seen = new Set();
    // A revoke carries no time of its own on the page (its timestamp is the revoked message's),
    // so every revoked message of theirs the page holds is returned; the runner stores each once.
    const keep = (e) => {
        if (!e || (e.kind !== 'revoke' && !(Number(e.t) >= since))) return;
        const id = e.kind + ' ' + e.key;
        if (seen.has(id)) return;
        seen.add(id);
        out.push(e);
    };
    const tableRows = async (mod, getter) => {
        const m = lib.maybe(mod);
        const table = m && typeof m[getter] === 'function' ? m[getter]() : null;
        if (!table || typeof table.all !== 'function') return [];
        return (await table.all()) || [];
    };
    for (const row of await tableRows('WAWebSchemaReactions', 'getReactionsTable')) {
        keep(ev.reaction({
            msgKey: row.msgKey, reactionParentKey: row.parentMsgKey, senderUserJid: row.senderUserJid,
            reactionText: row.reactionText, reactionTimestamp: row.timestamp,
        }));
    }
    for (const row of await tableRows('WAWebPollsVotesSchema', 'getTable')) {
        const ids = row.selectedOptionLocalIds instanceof ArrayBuffer ? Array.from(new Uint8Array(row.selectedOptionLocalIds)) : row.selectedOptionLocalIds;
        keep(await ev.pollVote({
            msgKey: row.msgKey, pollUpdateParentKey: row.parentMsgKey, sender: row.sender,
            senderTimestampMs: row.senderTimestampMs, selectedOptionLocalIds: ids, t: row.t,
        }));
    }
    const Collections = lib.req('WAWebCollections');
    const models = Collections.Msg.getModelsArray().slice();
    for (const chat of Collections.Chat.getModelsArray()) {
        if (chat && chat.msgs && typeof chat.msgs.getModelsArray === 'function') models.push(...chat.msgs.getModelsArray());
    }
    for (const msg of models) {
        keep(ev.edit(msg));
        keep(ev.revoke(msg));
    }
    out.sort((a, b) => a.t - b.t);
    return out.slice(0, Math.max(0, limit));
}
