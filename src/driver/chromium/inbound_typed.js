// Typed inbound events (issue 13): what the other side does to a message rather than send one —
// a reaction, a vote in a poll, an edit or a revoke of a message it sent us — pushed through the
// binding as {type: 'typed', kind, key, target, from, chatId, t, fields}. Installed after
// install.js on every document; a second call on the same document is a no-op. Where the page
// surfaces each (docs/sim-surface.md "Typed inbound events"), as whatsapp-web.js 1.34 listens:
//
// - reactions: the page writes every reaction it receives through
//   `WAWebAddonReactionTableMode.reactionTableMode.bulkUpsert(rows)` (rows: `id` = the reaction
//   message's key, `reactionParentKey`, `reactionText`, `reactionTimestamp` in ms, `from` /
//   `author`); wrapped here as whatsapp-web.js wraps it (its `message_reaction` event);
// - poll votes: `WAWebAddonPollVoteTableMode.pollVoteTableMode.bulkUpsert(rows)` (`id`,
//   `pollUpdateParentKey`, `selectedOptionLocalIds`, `senderTimestampMs`, `from` / `author`),
//   option ids named from the poll's `pollOptions` (whatsapp-web.js's `vote_update`);
// - edits: the edited message's model changes `body` (or `caption`) and carries
//   `latestEditMsgKey` (the edit message's key) and `latestEditSenderTimestampMs`
//   (whatsapp-web.js's `message_edit` on `change:body change:caption`);
// - revokes: the revoked message's model turns to type `revoked`, with `protocolMessageKey` (the
//   revoke message's key) (whatsapp-web.js's `message_revoke_everyone` on `change:type`).
//
// Only the other side's doings are reported: our own reactions, votes, edits and revokes (sent by
// the runner's rows, or by the account's phone) are not. Returns {missing} when the page lacks a
// module it needs, like install.js.
async function (lib, bindingName, probeMs) {
    const MARK = Symbol.for('wa-outbox.typed-hooks');
    if (window[MARK]) return 'already';
    const NEEDED = [
        ['WAWebAddonReactionTableMode', 'reactionTableMode'],
        ['WAWebAddonPollVoteTableMode', 'pollVoteTableMode'],
    ];
    const missingNow = () => NEEDED.filter(([mod, member]) => {
        const m = lib.maybe(mod);
        return !m || m[member] == null || typeof m[member].bulkUpsert !== 'function';
    }).map(([mod, member]) => mod + '.' + member + '.bulkUpsert');
    // Today's page registers modules progressively (install.js): wait for them as it does. What
    // the page takes in meanwhile is read back by the backfill (typed_since.js).
    const missing = await lib.waitFor(missingNow, probeMs);
    if (missing.length) return { missing: missing };
    if (window[MARK]) return 'already';
    window[MARK] = true;

    const push = (data) => {
        try {
            window[bindingName](JSON.stringify(Object.assign({ type: 'typed' }, data)));
        } catch (e) {
            // The binding is gone only when the page is going away.
        }
    };
    const fail = (where, e) => {
        try {
            window[bindingName](JSON.stringify({ type: 'error', where: where, message: String((e && e.message) || e) }));
        } catch (x) {
            // As above.
        }
    };
    const Msg = lib.req('WAWebCollections').Msg;
    const ev = lib.typedEvents;

    // Wraps a table mode's bulkUpsert: the rows are read before the page stores them, and the
    // page's own call goes on whatever reading them did.
    const wrap = (mode, read) => {
        const original = mode.bulkUpsert;
        mode.bulkUpsert = function () {
            const args = arguments;
            try {
                Promise.resolve(read(args[0])).catch((e) => fail('typed', e));
            } catch (e) {
                fail('typed', e);
            }
            return original.apply(mode, args);
        };
    };
    wrap(lib.req('WAWebAddonReactionTableMode').reactionTableMode, (rows) => {
        for (const row of rows || []) {
            const e = ev.reaction(row);
            if (e) push(e);
        }
    });
    wrap(lib.req('WAWebAddonPollVoteTableMode').pollVoteTableMode, async (rows) => {
        for (const row of rows || []) {
            const e = await ev.pollVote(row);
            if (e) push(e);
        }
    });
    Msg.on('change:body change:caption', (msg) => {
        const e = ev.edit(msg);
        if (e) push(e);
    });
    Msg.on('change:type', (msg) => {
        const e = ev.revoke(msg);
        if (e) push(e);
    });
    return 'installed';
}
