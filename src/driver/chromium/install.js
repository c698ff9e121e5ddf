// Hooks the page's own models and pushes everything the runner needs through the CDP binding
// named `bindingName`. Called after every load of the document; a second call on the same document
// is a no-op. Uses only the module surface whatsapp-web.js 1.34 uses (Client.inject,
// attachEventListeners, AuthStore).
function (bindingName, pairPhone) {
    const MARK = Symbol.for('wa-outbox.hooks');
    if (window[MARK]) return 'already';
    window[MARK] = true;

    const req = window.require;
    const push = (type, data) => {
        try {
            window[bindingName](JSON.stringify(Object.assign({ type: type }, data || {})));
        } catch (e) {
            // The binding is gone only when the page is going away; nothing to tell.
        }
    };
    const widStr = (w) => (w == null ? null : typeof w === 'string' ? w : w._serialized || String(w));
    const fail = (where, e) => push('error', { where: where, message: String((e && e.message) || e) });

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
            req('WAWebAdvSignatureApi'),
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
    const onState = (state) => {
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
        if (msg && msg.id && msg.id.fromMe) push('ack', { id: widStr(msg.id), ack: Number(ack) });
    });
    const pushIncoming = (msg) => {
        push('incoming', {
            id: widStr(msg.id),
            from: widStr(msg.from),
            chatId: widStr(msg.id.remote),
            kind: String(msg.type || 'chat'),
            body: msg.mediaObject || msg.type !== 'chat' ? (msg.caption != null ? String(msg.caption) : null) : msg.body != null ? String(msg.body) : null,
            t: Number(msg.t || 0),
            extra: {
                author: widStr(msg.author),
                notifyName: msg.notifyName || null,
                mimetype: msg.mimetype || null,
                filename: msg.filename || null,
                size: msg.size || null,
                hasMedia: !!(msg.mediaObject || msg.directPath),
                quotedMsgId: msg.quotedStanzaID || null,
            },
        });
    };
    Msg.on('add', (msg) => {
        if (!msg || !msg.isNewMsg || !msg.id || msg.id.fromMe) return;
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
