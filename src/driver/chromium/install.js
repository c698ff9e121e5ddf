// Hooks the page's own models and pushes everything the runner needs through the CDP binding
// named `bindingName`. Called after every load of the document; a second call on the same document
// is a no-op. Uses only the module surface whatsapp-web.js 1.34 uses (Client.inject,
// attachEventListeners, AuthStore), read through lib.js so that today's page (minified message
// keys, LID chats, strict window.require) is handled in one place.
//
// First it probes every module and function the driver uses. Today's page registers modules
// progressively, often seconds after its loader (wa-js PR 3476), so a miss is retried until
// `probeMs` has passed; then the missing names are returned ({missing}) and nothing is hooked: the
// runner fails the session with web_version_unsupported instead of restarting it in a loop.
async function (lib, bindingName, pairPhone, probeMs) {
    const MARK = Symbol.for('wa-outbox.hooks');
    if (window[MARK]) return 'already';

    const NEEDED = [
        ['WAWebSocketModel', 'Socket'], ['WAWebConnModel', 'Conn'], ['WAWebCmd', 'Cmd'],
        ['WAWebCollections', 'Msg'], ['WAWebCollections', 'Chat'], ['WAWebMsgKey', null],
        ['WAWebWidFactory', 'createWid'], ['WAWebWidFactory', 'asUserWidOrThrow'],
        ['WAWebUserPrefsMeUser', 'getMaybeMePnUser'], ['WAWebUserPrefsMeUser', 'getMaybeMeLidUser'],
        ['WAWebFindChatAction', 'findOrCreateLatestChat'], ['WAWebSendMsgChatAction', 'addAndSendMsgToChat'],
        ['WAWebQueryExistsJob', 'queryWidExists'], ['WAWebGetEphemeralFieldsMsgActionsUtils', 'getEphemeralFields'],
        ['WALinkify', 'findLink'], ['WAWebLinkPreviewChatAction', 'getLinkPreview'],
        ['WAWebCompanionRegClientUtils', 'DEVICE_PLATFORM'], ['WAWebUserPrefsInfoStore', 'waNoiseInfo'],
        ['WAWebSignalStoreApi', 'waSignalStore'], ['WABase64', 'encodeB64'],
        ['WAWebUserPrefsMultiDevice', 'getADVSecretKey'],
        ['WAWebMediaOpaqueData', 'createFromData'], ['WAWebPrepRawMedia', 'prepRawMedia'],
        ['WAWebMediaStorage', 'getOrCreateMediaObject'], ['WAWebMmsMediaTypes', 'msgToMediaType'],
        ['WAWebMediaDataUtils', 'shouldUseMediaCache'], ['WAWebMediaInMemoryBlobCache', 'InMemoryMediaBlobCache'],
        ['WAWebMediaMmsV4Upload', 'uploadMedia'],
        // Stickers (issue 13): the page's own conversion to a sticker WebP.
        ['WAWebImageUtils', 'toWebpSticker'],
    ];
    if (pairPhone) NEEDED.push(['WAWebAltDeviceLinkingApi', 'startAltLinkingFlow']);
    const missing = await lib.waitFor(() => lib.lacking(NEEDED), probeMs);
    if (missing.length) return { missing: missing };
    if (window[MARK]) return 'already';
    window[MARK] = true;

    const req = lib.req;
    const push = (type, data) => {
        try {
            window[bindingName](JSON.stringify(Object.assign({ type: type }, data || {})));
        } catch (e) {
            // The binding is gone only when the page is going away; nothing to tell.
        }
    };
    const widStr = lib.widStr;
    const fail = (where, e) => push('error', { where: where, message: String((e && e.message) || e) });

    // WhatsApp Web logs out by navigating to ?post_logout=1 (page module WAWebReloadAfterLogout):
    // the new document is unpaired and knows nothing of the session it replaced.
    const params = new URLSearchParams(window.location.search);
    if (params.get('post_logout') === '1') {
        push('logged_out', { reason: 'post_logout' + (params.get('logout_reason') ? ': ' + params.get('logout_reason') : '') });
    }

    const Socket = req('WAWebSocketModel').Socket;
    const Conn = req('WAWebConnModel').Conn;
    const Cmd = req('WAWebCmd').Cmd;
    const Msg = req('WAWebCollections').Msg;

    // ---- login: QR (as Client.inject builds it) or pairing code
    let qrStarted = false;
    const startQr = async () => {
        if (qrStarted) return;
        qrStarted = true;
        const Reg = Object.assign(
            {},
            req('WAWebCompanionRegClientUtils'),
            lib.maybe('WAWebAdvSignatureApi'),
            req('WAWebUserPrefsInfoStore'),
            req('WAWebSignalStoreApi'),
        );
        const B64 = req('WABase64');
        const registrationInfo = await Reg.waSignalStore.getRegistrationInfo();
        const noiseKeyPair = await Reg.waNoiseInfo.get();
        const staticKeyB64 = B64.encodeB64(noiseKeyPair.staticKeyPair.pubKey);
        const identityKeyB64 = B64.encodeB64(registrationInfo.identityKeyPair.pubKey);
        const platform = Reg.DEVICE_PLATFORM;
        const qrOf = (ref) =>
            ref + ',' + staticKeyB64 + ',' + identityKeyB64 + ',' +
            req('WAWebUserPrefsMultiDevice').getADVSecretKey() + ',' + platform;
        Conn.on('change:ref', (_conn, ref) => {
            if (ref) push('qr', { qr: qrOf(ref) });
        });
        if (Conn.ref) push('qr', { qr: qrOf(Conn.ref) });
    };

    let pairingTimer = null;
    const startPairing = async () => {
        if (pairingTimer) return;
        const Api = req('WAWebAltDeviceLinkingApi');
        const tick = async () => {
            const s = Socket.state;
            if (s !== 'UNPAIRED' && s !== 'UNPAIRED_IDLE') {
                clearInterval(pairingTimer);
                pairingTimer = null;
                return;
            }
            try {
                Api.setPairingType('ALT_DEVICE_LINKING');
                await Api.initializeAltDeviceLinking();
                const code = await Api.startAltLinkingFlow(pairPhone, true);
                push('pairing_code', { code: String(code) });
            } catch (e) {
                fail('pairing', e);
            }
        };
        // WhatsApp's pairing codes live about three minutes; whatsapp-web.js renews at that pace.
        pairingTimer = setInterval(tick, 180000);
        await tick();
    };

    // ---- connection state
    let connected = false;
    let everConnected = false;
    const me = () => {
        const U = req('WAWebUserPrefsMeUser');
        return U.getMaybeMePnUser() || U.getMaybeMeLidUser();
    };
    const sendConnected = () => {
        if (connected) return;
        const wid = me();
        if (!wid) return;
        connected = true;
        everConnected = true;
        push('connected', { phone: wid.user != null ? String(wid.user) : widStr(wid), pushName: Conn.pushname || null });
    };
    // States the page never leaves by itself (WAWebAppScreen: CONFLICT, TOS_BLOCK, SMB_TOS_BLOCK,
    // PROXYBLOCK; whatsapp-web.js's WAState: DEPRECATED_VERSION): the runner ends the session with
    // the state's own error code.
    const TERMINAL = ['CONFLICT', 'TOS_BLOCK', 'SMB_TOS_BLOCK', 'PROXYBLOCK', 'DEPRECATED_VERSION'];
    const onState = (state) => {
        if (TERMINAL.indexOf(state) >= 0) {
            connected = false;
            push('terminal', { state: String(state) });
            return;
        }
        if (state === 'CONNECTED') {
            if (Socket.hasSynced) sendConnected();
            return;
        }
        if (connected) {
            connected = false;
            if (state !== 'UNPAIRED' && state !== 'UNPAIRED_IDLE') push('disconnected', { reason: String(state) });
        }
        if (state === 'UNPAIRED' || state === 'UNPAIRED_IDLE') {
            if (everConnected) {
                everConnected = false;
                push('logged_out', { reason: 'unpaired' });
            }
            if (pairPhone) {
                startPairing().catch((e) => fail('pairing', e));
            } else {
                startQr().catch((e) => fail('qr', e));
                if (state === 'UNPAIRED_IDLE') Cmd.refreshQR();
            }
        }
    };
    Socket.on('change:state', (_socket, state) => onState(state));
    Socket.on('change:hasSynced', () => {
        if (Socket.hasSynced) sendConnected();
    });
    Cmd.on('logout', () => push('logged_out', { reason: 'logout' }));
    Cmd.on('logout_from_bridge', () => push('logged_out', { reason: 'logout' }));

    // ---- messages
    Msg.on('change:ack', (msg, ack) => {
        const id = msg && msg.id && msg.id.fromMe ? lib.keyStr(msg.id) : null;
        if (id) push('ack', { id: id, ack: Number(ack) });
    });
    const pushIncoming = (msg) => {
        const m = lib.incomingOf(msg);
        if (!m) return fail('incoming', 'a message without a readable key');
        push('incoming', m);
    };
    Msg.on('add', (msg) => {
        if (!msg || !msg.isNewMsg || !msg.id || msg.id.fromMe) return;
        // A group notification is not a message: call_hooks.js reports it as a group_update.
        if (msg.type === 'gp2') return;
        if (msg.type === 'ciphertext') {
            // Not decrypted yet; the page swaps in the real type when it is.
            msg.once('change:type', (m) => {
                if (m.type !== 'revoked') pushIncoming(m);
            });
            return;
        }
        pushIncoming(msg);
    });

    onState(Socket.state);
    if (Socket.state === 'CONNECTED' && Socket.hasSynced) sendConnected();
    return 'installed';
}
