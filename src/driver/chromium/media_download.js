// Downloads an incoming message's media through the page's own modules, the way the page shows it
// and the gateways drive it (docs/sim-surface.md "Incoming media"): the message's own
// `downloadMedia` first (always, even when its mediaData says RESOLVED: a cache eviction leaves
// that stage with no bytes behind it, whatsapp-web.js issue 201908), then
// `WAWebDownloadManager.downloadManager.downloadAndMaybeDecrypt` with the message's directPath,
// hashes and media key, which fetches the encrypted file from WhatsApp's media servers and
// returns the decrypted ArrayBuffer (whatsapp-web.js Message.downloadMedia; PR 201914). The key
// material is taken from `msg.mediaObject` where the page refreshed it after a media retry, else
// from the message (wwebjs-api PR 152). Nothing here takes a URL from anyone but the page.
//
// The size the page reports comes first: over `maxBytes` nothing is fetched ({status:
// 'too_large'}). The bytes stay in the page under a token (see media_chunk.js), read in chunks;
// `timeoutMs` bounds the page's own work (an AbortController on the download).
async function (lib, id, maxBytes, timeoutMs) {
    const msg = await lib.findTarget(id);
    if (!msg) throw new Error('the page holds no message with this id');
    const mo = msg.mediaObject || null;
    const pick = (k) => (mo && mo[k] != null ? mo[k] : msg[k]);
    const reported = Number(msg.size || (mo && mo.size) || 0);
    const info = {
        status: 'ok',
        type: String(msg.type || ''),
        mimetype: msg.mimetype || (mo && mo.mimetype) || null,
        filename: msg.filename || null,
        size: reported > 0 ? reported : null,
    };
    if (reported > 0 && reported > maxBytes) {
        info.status = 'too_large';
        return info;
    }
    const started = Date.now();
    const left = () => Math.max(1, timeoutMs - (Date.now() - started));
    if (typeof msg.downloadMedia === 'function') {
        try {
            await Promise.race([
                msg.downloadMedia({ downloadEvenIfExpensive: true, rmrReason: 1, isUserInitiated: true }),
                new Promise((r) => setTimeout(r, left())),
            ]);
        } catch (e) {
            // Some builds throw a minified error here while the fields below still work.
        }
    }
    const stage = String((msg.mediaData && msg.mediaData.mediaStage) || '');
    const directPath = pick('directPath');
    const mediaKey = pick('mediaKey');
    if (!directPath || !mediaKey) {
        throw new Error('the message has no media path or key (media stage ' + (stage || 'none') + ')');
    }
    const DM = lib.req('WAWebDownloadManager').downloadManager;
    if (!DM || typeof DM.downloadAndMaybeDecrypt !== 'function') {
        throw new Error('WAWebDownloadManager.downloadManager.downloadAndMaybeDecrypt is missing');
    }
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), left());
    // The page's tracing object: only these two methods are called (whatsapp-web.js PR 201914).
    const qpl = {
        addAnnotations() { return this; },
        addPoint() { return this; },
    };
    let buf;
    try {
        buf = await DM.downloadAndMaybeDecrypt({
            directPath: directPath,
            encFilehash: pick('encFilehash'),
            filehash: pick('filehash'),
            mediaKey: mediaKey,
            mediaKeyTimestamp: pick('mediaKeyTimestamp'),
            type: msg.type,
            signal: ctl.signal,
            downloadQpl: qpl,
        });
    } catch (e) {
        // HttpStatusCodeError carries a numeric status (PR 201914).
        const why = e && typeof e.status === 'number' ? 'HTTP ' + e.status : (e && (e.message || e.name)) || String(e);
        throw new Error('the page could not download the media: ' + why + (ctl.signal.aborted ? ' (timed out)' : ''));
    } finally {
        clearTimeout(timer);
    }
    let bytes = null;
    if (buf instanceof ArrayBuffer) bytes = new Uint8Array(buf);
    else if (buf && ArrayBuffer.isView(buf)) bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    if (!bytes) throw new Error('the download manager returned no bytes');
    info.size = bytes.byteLength;
    if (bytes.byteLength > maxBytes) {
        info.status = 'too_large';
        return info;
    }
    const key = Symbol.for('wa-outbox.media');
    const store = window[key] || (window[key] = new Map());
    const token = Date.now().toString(36) + '.' + Math.random().toString(36).slice(2);
    store.set(token, bytes);
    // Read by the runner within its timeout; whatever it leaves behind goes.
    setTimeout(() => store.delete(token), Math.max(60000, 2 * timeoutMs));
    info.token = token;
    return info;
}
