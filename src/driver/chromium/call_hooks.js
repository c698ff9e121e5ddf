// Calls and group notifications (issue 14), hooked after install.js on every document; a second
// call on the same document is a no-op. Pushes through the same binding as install.js.
//
// Calls: the page keeps every call in `WAWebCallCollection` (the module, or its default export),
// a collection of `WAWebCallModel`s with `id`, `peerJid` (a Wid, phone number or LID), `outgoing`, `isVideo`,
// `isGroup`, `groupJid`, `offerTime` and `getState()` (`WAWebVoipWaCallEnums.CallState`,
// ReceivedCall = 3 while an incoming call rings); whatsapp-web.js reports a `call` for each model
// the collection adds (docs/sim-surface.md "Calls"). Each incoming one is pushed once per document
// as `call`; calls already ringing when the hooks go in (a reload mid-ring) are pushed too.
//
// Group notifications: the page adds a `gp2` notification message to Msg for a change someone
// made to a group we are in (`subtype` add / invite / remove / leave / promote / demote / subject
// / …, `author`, `recipients`, the new subject as `body`); whatsapp-web.js turns these into its
// group_join / group_leave / group_admin_changed / group_update events (docs/sim-surface.md
// "Group notifications"). Each new one is pushed as `group_update`.
//
// The modules probed here are waited for like install.js's, up to `probeMs`; missing ones are
// returned as {missing}.
async function (lib, bindingName, probeMs) {
    const MARK = Symbol.for('wa-outbox.call-hooks');
    if (window[MARK]) return 'already';
    const NEEDED = [['WAWebCallCollection', null], ['WAWebCollections', 'Msg']];
    const missing = await lib.waitFor(() => lib.lacking(NEEDED), probeMs);
    if (missing.length) return { missing: missing };
    if (window[MARK]) return 'already';
    window[MARK] = true;

    const push = (type, data) => {
        try {
            window[bindingName](JSON.stringify(Object.assign({ type: type }, data || {})));
        } catch (e) {
            // The binding is gone only when the page is going away.
        }
    };
    const str = (w) => (w == null ? null : lib.keyStr(w));
    // A phone-number wid where the page knows one (a LID caller's number), as lib.incomingOf does.
    const pn = (w) => {
        if (w && typeof w.isLid === 'function' && w.isLid()) return lib.sibling(w) || w;
        return w;
    };
    const lidOf = (w) => (w && typeof w.isLid === 'function' && w.isLid() ? str(w) : null);

    // ---- calls
    const mod = lib.req('WAWebCallCollection');
    const Calls = mod.default || mod.CallCollection || mod;
    const RECEIVED_CALL = 3;
    const stateOf = (c) => {
        try {
            return typeof c.getState === 'function' ? Number(c.getState()) : Number(c.state);
        } catch (e) {
            return null;
        }
    };
    const pushed = new Set();
    const pushCall = (c) => {
        if (!c || c.id == null || c.outgoing === true) return;
        const id = String(c.id);
        if (pushed.has(id)) return;
        pushed.add(id);
        const peer = c.peerJid || c.peer || null;
        const state = stateOf(c);
        push('call', {
            id: id,
            from: str(pn(peer)),
            fromLid: lidOf(peer),
            isVideo: !!c.isVideo,
            isGroup: !!c.isGroup,
            groupJid: str(c.groupJid),
            t: Number(c.offerTime || 0) || Math.floor(Date.now() / 1000),
            state: state,
            ringing: state === RECEIVED_CALL,
        });
    };
    if (typeof Calls.on === 'function') Calls.on('add', pushCall);
    const held = typeof Calls.getModelsArray === 'function' ? Calls.getModelsArray() : [];
    for (const c of held) if (stateOf(c) === RECEIVED_CALL) pushCall(c);

    // ---- group notifications
    const Msg = lib.req('WAWebCollections').Msg;
    Msg.on('add', (msg) => {
        if (!msg || !msg.isNewMsg || msg.type !== 'gp2' || !msg.id) return;
        const key = lib.keyStr(msg.id);
        if (!key) return;
        const recipients = Array.isArray(msg.recipients) ? msg.recipients : [];
        push('group_update', {
            id: key,
            group: str(msg.id.remote),
            subtype: String(msg.subtype || ''),
            author: str(pn(msg.author)),
            authorLid: lidOf(msg.author),
            recipients: recipients.map((w) => str(pn(w))).filter(Boolean),
            body: typeof msg.body === 'string' && msg.body !== '' ? msg.body : null,
            t: Number(msg.t || 0),
        });
    });
    return 'installed';
}
