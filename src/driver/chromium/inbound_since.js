// The incoming messages the page holds with a timestamp at or after `since` (seconds since the
// epoch), oldest first, at most `limit`, shaped exactly as the live `incoming` push (lib.js
// incomingOf). This is how the runner sees messages that reached the account while no page was
// connected: the page adds WhatsApp's offline queue to Msg at login without announcing it as new
// (docs/sim-surface.md "Offline messages"), so install.js's `add` hook never reports them.
//
// The offline queue is complete only once the page says its offline delivery is (page module
// WAWebOfflineHandler); until then this waits, at most `waitMs`, and then throws rather than return
// a partial answer. A page without that module is read as it is. Not returned: our own messages,
// status broadcasts, and placeholders not decrypted yet (`ciphertext`).
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
    const Collections = lib.req('WAWebCollections');
    const isStatus = (wid) =>
        !!wid && ((typeof wid.isStatus === 'function' && wid.isStatus()) || lib.widStr(wid) === 'status@broadcast');
    const seen = new Set();
    const found = [];
    const consider = (msg) => {
        if (!msg || !msg.id || msg.id.fromMe !== false) return;
        if (isStatus(msg.id.remote) || isStatus(msg.from)) return;
        if (msg.type === 'ciphertext') return;
        // Group notifications are group_update events (call_hooks.js), not messages.
        if (msg.type === 'gp2') return;
        const t = Number(msg.t || 0);
        if (!(t >= since)) return;
        const m = lib.incomingOf(msg);
        if (!m || seen.has(m.id)) return;
        seen.add(m.id);
        found.push(m);
    };
    // The page's Msg collection, and each chat's messages (a chat may hold models Msg no longer
    // indexes under the same key).
    Collections.Msg.getModelsArray().forEach(consider);
    for (const chat of Collections.Chat.getModelsArray()) {
        if (chat && chat.msgs && typeof chat.msgs.getModelsArray === 'function') chat.msgs.getModelsArray().forEach(consider);
    }
    // Oldest first; equal timestamps keep the page's order.
    const order = found.map((m, i) => [m, i]);
    order.sort((a, b) => a[0].t - b[0].t || a[1] - b[1]);
    return order.slice(0, Math.max(0, limit)).map((x) => x[0]);
}
