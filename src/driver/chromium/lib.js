// What every injected function needs to survive today's page (DESIGN.md §3 "Today's page"). The
// driver prepends its result as the first argument of send.js, find_message.js and the others.
//
// - A message key's serialized form: `_serialized` on pages before 2.3000.1042401057, the
//   minified `$1` after (wa-js PRs 3484/3488), and `toString()` on both. Never undefined
//   into a lookup: whatsapp-web.js 1.34.7's `Msg.get(key._serialized)` is `Msg.get(undefined)`
//   there and reports a delivered message as unsent (whatsapp-web.js PR 201901).
// - One-to-one chats live under the contact's LID (`@lid`) and a sent message can be indexed under
//   the chat's sibling wid, LID ↔ phone number (whatsapp-web.js PR 201839): "already sent?" looks
//   under both, by the bare id, and among the sends still in flight in this page.
// - `window.require` throws for a module the page lacks (or has not registered yet).
function () {
    const req = (name) => window.require(name);
    const maybe = (name) => {
        try {
            return window.require(name);
        } catch (e) {
            return null;
        }
    };
    // The [module, member] pairs of `needed` the page lacks (member null: the module alone),
    // named `module.member`.
    const lacking = (needed) => needed.filter(([mod, member]) => {
        const m = maybe(mod);
        return !m || (member != null && m[member] == null);
    }).map(([mod, member]) => (member ? mod + '.' + member : mod));
    // Today's page registers its modules progressively (wa-js PR #3476): ask `missingNow()` every
    // 250 ms until it names nothing or `probeMs` have passed; what is still missing then.
    const waitFor = async (missingNow, probeMs) => {
        const started = Date.now();
        let missing = missingNow();
        while (missing.length && Date.now() - started < probeMs) {
            await new Promise((r) => setTimeout(r, 250));
            missing = missingNow();
        }
        return missing;
    };
    const keyStr = (k) => {
        if (k == null) return null;
        if (typeof k === 'string') return k;
        if (typeof k._serialized === 'string') return k._serialized;
        if (typeof k.$1 === 'string') return k.$1;
        const s = String(k);
        return s && s !== '[object Object]' ? s : null;
    };
    const bareId = (k) => {
        if (k && typeof k === 'object' && k.id != null && typeof k.id !== 'object') return String(k.id);
        const parts = String(keyStr(k) || '').split('_');
        return parts.length >= 3 ? parts[2] : null;
    };
    // The other wid of a one-to-one chat (phone number ↔ LID), where the page knows it.
    const sibling = (wid) => {
        const Api = maybe('WAWebApiContact');
        if (!Api || !wid || typeof wid.isUser !== 'function' || !wid.isUser()) return null;
        try {
            const isLid = typeof wid.isLid === 'function' && wid.isLid();
            const f = isLid ? Api.getPhoneNumber : Api.getCurrentLid;
            return typeof f === 'function' ? f(wid) || null : null;
        } catch (e) {
            return null;
        }
    };
    // Sends started by send.js in this document, by bare id: running, or accepted by the page
    // (a failed one is removed). A send the runner gave up on keeps running in the page; a retry
    // must join it, never start a second one.
    const INFLIGHT = Symbol.for('wa-outbox.inflight');
    const inflight = window[INFLIGHT] || (window[INFLIGHT] = new Map());

    const isOurs = (m, id) => !!m && !!m.id && m.id.fromMe === true && bareId(m.id) === id;
    // A message of ours still pending (ack 0) that no send of this document started: a leftover of
    // an earlier document that went away mid-send (a reload), restored from the page's own store.
    // Nothing says the server has it, so it does not count as sent; the caller sends again under
    // the same id, which the server de-duplicates if the first one did reach it.
    const isStale = (m, id) => Number(m.ack) === 0 && !inflight.has(id);
    // A message of ours with this bare id: in the chat or its sibling (under either wid, with our
    // own JID appended as a group message's participant), then anywhere in the page's Msg
    // collection, then in the page's own message store. Stale ones (isStale) are not returned but
    // collected into `stale`, for send.js to drop before it sends again.
    const findSent = async (chatWid, id, stale) => {
        const seen = stale || [];
        const pick = (m) => {
            if (!isOurs(m, id)) return false;
            if (!isStale(m, id)) return true;
            if (seen.indexOf(m) < 0) seen.push(m);
            return false;
        };
        const Collections = req('WAWebCollections');
        const Msg = Collections.Msg;
        const MsgKey = req('WAWebMsgKey');
        const WidFactory = req('WAWebWidFactory');
        const Me = req('WAWebUserPrefsMeUser');
        const remotes = [chatWid, sibling(chatWid)].filter(Boolean);
        const mePn = Me.getMaybeMePnUser();
        const meLid = Me.getMaybeMeLidUser();
        const keys = [];
        // Keys are built as whatsapp-web.js builds them on the real page ({from, to, id, selfDir}).
        for (const remote of remotes) {
            const isLid = typeof remote.isLid === 'function' && remote.isLid();
            const from = (isLid ? meLid : mePn) || mePn || meLid;
            keys.push(keyStr(new MsgKey({ from: from, to: remote, id: id, selfDir: 'out' })));
            if (typeof remote.isGroup === 'function' && remote.isGroup()) {
                for (const me of [mePn, meLid]) {
                    if (!me) continue;
                    const participant = WidFactory.asUserWidOrThrow(me);
                    keys.push(keyStr(new MsgKey({ from: me, to: remote, id: id, participant: participant, selfDir: 'out' })));
                }
            }
        }
        const wanted = keys.filter((k) => typeof k === 'string' && k.length > 0);
        for (const k of wanted) {
            const m = Msg.get(k);
            if (pick(m)) return m;
        }
        for (const remote of remotes) {
            const chat = Collections.Chat.get(remote);
            const found = chat && chat.msgs && chat.msgs.getModelsArray().find(pick);
            if (found) return found;
        }
        const anywhere = Msg.getModelsArray().find(pick);
        if (anywhere) return anywhere;
        if (typeof Msg.getMessagesById === 'function' && wanted.length) {
            try {
                const r = await Msg.getMessagesById(wanted);
                const m = r && r.messages && r.messages.find(pick);
                if (m) return m;
            } catch (e) {
                // The page's store said no (or has no such key); the lookups above stand.
            }
        }
        return null;
    };
    // Drops stale leftovers (see isStale) from the collections, so that sending under their key
    // sends instead of answering with the leftover.
    // A message by its serialized key (ours or incoming): the page's collection, then the page's
    // lookup by id, then (for one of ours) our own search of the chat. Null when the page has none.
    const findTarget = async (target) => {
        const Msg = req('WAWebCollections').Msg;
        let msg = null;
        try {
            msg = Msg.get(target) || null;
        } catch (e) {
            msg = null;
        }
        if (!msg && typeof Msg.getMessagesById === 'function') {
            try {
                const r = await Msg.getMessagesById([target]);
                msg = (r && r.messages && r.messages[0]) || null;
            } catch (e) {
                msg = null;
            }
        }
        const parts = String(target).split('_');
        if (!msg && parts[0] === 'true' && parts.length >= 3) {
            const wid = req('WAWebWidFactory').createWid(parts[1]);
            msg = await findSent(wid, parts[2]);
        }
        return msg;
    };
    const dropStale = (stale) => {
        const Collections = req('WAWebCollections');
        for (const m of stale) {
            try {
                const chat = Collections.Chat.get(m.id.remote);
                if (chat && chat.msgs && typeof chat.msgs.remove === 'function') chat.msgs.remove(m.id);
                Collections.Msg.remove(m.id);
            } catch (e) {
                // The send below then answers with the leftover: not sent twice, merely not sent.
            }
        }
    };
    // An incoming message as the runner takes it (DriverEvent::Incoming), for the live `add`
    // hook (install.js) and the backfill (inbound_since.js) alike. From and chat are phone numbers
    // where the page knows them (a LID chat's contact), the LIDs kept beside in `extra`. Null for a
    // message whose key cannot be read.
    const pn = (wid) => {
        if (wid && typeof wid.isLid === 'function' && wid.isLid()) return sibling(wid) || wid;
        return wid;
    };
    const lidOf = (wid) => (wid && typeof wid.isLid === 'function' && wid.isLid() ? keyStr(wid) : null);
    const incomingOf = (msg) => {
        const id = keyStr(msg.id);
        if (!id) return null;
        return {
            id: id,
            from: keyStr(pn(msg.from)),
            chatId: keyStr(pn(msg.id.remote)),
            kind: String(msg.type || 'chat'),
            body: msg.mediaObject || msg.type !== 'chat' ? (msg.caption != null ? String(msg.caption) : null) : msg.body != null ? String(msg.body) : null,
            t: Number(msg.t || 0),
            extra: {
                author: keyStr(pn(msg.author)),
                fromLid: lidOf(msg.from),
                chatLid: lidOf(msg.id.remote),
                authorLid: lidOf(msg.author),
                notifyName: msg.notifyName || null,
                mimetype: msg.mimetype || null,
                filename: msg.filename || null,
                size: msg.size || null,
                hasMedia: !!(msg.mediaObject || msg.directPath),
                quotedMsgId: msg.quotedStanzaID || null,
            },
            typed: typedOf(msg),
        };
    };
    // ---- typed inbound (issue 13): see inbound_typed.js for where the page surfaces each.
    const widOf = (x) => {
        if (x && typeof x === 'object' && typeof x.isUser === 'function') return x;
        if (typeof x !== 'string' || !x) return null;
        try {
            return req('WAWebWidFactory').createWid(x);
        } catch (e) {
            return null;
        }
    };
    const remoteOf = (k) => {
        if (k && typeof k === 'object' && k.remote) return widOf(k.remote);
        const parts = String(keyStr(k) || '').split('_');
        return parts.length >= 3 ? widOf(parts[1]) : null;
    };
    const isMe = (w) => {
        const s = keyStr(w);
        if (!s) return false;
        const Me = req('WAWebUserPrefsMeUser');
        return [Me.getMaybeMePnUser(), Me.getMaybeMeLidUser()].some((m) => !!m && keyStr(m) === s);
    };
    const seconds = (ms, fallback) => {
        const v = Number(ms);
        return v > 0 ? Math.floor(v / 1000) : Number(fallback) || Math.floor(Date.now() / 1000);
    };
    // The common part of a typed event: who (phone number where the page knows it), in which chat,
    // and the LIDs the page used.
    const typedBase = (kind, key, target, sender, chat, t) => ({
        kind: kind,
        key: key,
        target: target,
        from: keyStr(pn(sender)),
        chatId: keyStr(pn(chat)),
        t: t,
        fields: { from_lid: lidOf(sender), chat_lid: lidOf(chat) },
    });
    const typedEvents = {
        // A row of WAWebAddonReactionTableMode.reactionTableMode.bulkUpsert.
        reaction: (row) => {
            if (!row) return null;
            const keyObj = row.id || row.msgKey;
            const key = keyStr(keyObj);
            const parent = row.reactionParentKey || row.parentMsgKey;
            const target = keyStr(parent);
            const sender = widOf(row.author || row.from || row.senderUserJid);
            if (!key || !target || (keyObj && keyObj.fromMe === true) || isMe(sender)) return null;
            const e = typedBase('reaction', key, target, sender, remoteOf(parent), seconds(row.reactionTimestamp, row.t));
            e.fields.emoji = row.reactionText != null ? String(row.reactionText) : '';
            return e;
        },
        // A row of WAWebAddonPollVoteTableMode.pollVoteTableMode.bulkUpsert; option ids named from
        // the poll's own pollOptions.
        pollVote: async (row) => {
            if (!row) return null;
            const keyObj = row.id || row.msgKey;
            const key = keyStr(keyObj);
            const parent = row.pollUpdateParentKey || row.parentMsgKey;
            const target = keyStr(parent);
            const sender = widOf(row.author || row.from || row.sender || row.senderUserJid);
            if (!key || !target || (keyObj && keyObj.fromMe === true) || isMe(sender)) return null;
            const Msg = req('WAWebCollections').Msg;
            let poll = Msg.get(target) || null;
            if (!poll && typeof Msg.getMessagesById === 'function') {
                try {
                    const r = await Msg.getMessagesById([target]);
                    poll = (r && r.messages && r.messages[0]) || null;
                } catch (e) {
                    poll = null;
                }
            }
            const ids = Array.from(row.selectedOptionLocalIds || []).map(Number);
            const options = (poll && poll.pollOptions) || null;
            const e = typedBase('poll_vote', key, target, sender, remoteOf(parent), seconds(row.senderTimestampMs, row.t));
            e.fields.selected_local_ids = ids;
            // Null when the page no longer holds the poll (its option names are unknown).
            e.fields.selected_options = options
                ? ids.map((id) => {
                      const o = options.find((x) => Number(x.localId) === id);
                      return o ? String(o.name) : null;
                  })
                : null;
            return e;
        },
        // An edited message of the other side's (latestEditMsgKey set by the edit).
        edit: (msg) => {
            if (!msg || !msg.id || msg.id.fromMe !== false || msg.type === 'revoked') return null;
            const key = keyStr(msg.latestEditMsgKey);
            const target = keyStr(msg.id);
            if (!key || !target || key === target) return null;
            const sender = msg.author || msg.from;
            const e = typedBase('edit', key, target, sender, msg.id.remote, seconds(msg.latestEditSenderTimestampMs, msg.t));
            const body = msg.type === 'chat' ? msg.body : msg.caption;
            e.fields.body = body != null ? String(body) : null;
            return e;
        },
        // A message of the other side's turned `revoked` (protocolMessageKey: the revoke's key).
        revoke: (msg) => {
            if (!msg || !msg.id || msg.id.fromMe !== false || msg.type !== 'revoked') return null;
            const target = keyStr(msg.id);
            if (!target) return null;
            const key = keyStr(msg.protocolMessageKey) || target;
            const sender = msg.author || msg.from;
            return typedBase('revoke', key, target, sender, msg.id.remote, Number(msg.t) || Math.floor(Date.now() / 1000));
        },
    };
    // The typed fields of an incoming location or contact card (the page's attributes as
    // docs/sim-surface.md "Locations" and "Contact cards" describe them); null for other types.
    const typedOf = (msg) => {
        if (msg.type === 'location') {
            const loc = typeof msg.loc === 'string' ? msg.loc : '';
            const cut = loc.indexOf('\n');
            const name = cut >= 0 ? loc.slice(0, cut) : loc;
            const address = cut >= 0 ? loc.slice(cut + 1) : '';
            return {
                type: 'location',
                location: {
                    latitude: Number(msg.lat),
                    longitude: Number(msg.lng),
                    name: name || null,
                    address: address || null,
                },
            };
        }
        if (msg.type === 'vcard') {
            return { type: 'contact', vcards: [{ display_name: msg.vcardFormattedName != null ? String(msg.vcardFormattedName) : null, vcard: String(msg.body || '') }] };
        }
        if (msg.type === 'multi_vcard') {
            return {
                type: 'contact',
                vcards: Array.from(msg.vcardList || []).map((c) => ({ display_name: c.displayName != null ? String(c.displayName) : null, vcard: String(c.vcard || '') })),
            };
        }
        return null;
    };
    return { req, maybe, lacking, waitFor, keyStr, widStr: keyStr, bareId, sibling, inflight, findSent, findTarget, dropStale, incomingOf, typedEvents, typedOf };
}
