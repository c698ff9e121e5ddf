// Chat.sendStateTyping / sendStateRecording / clearState of whatsapp-web.js (WWebJS.sendChatstate):
// WAWebChatStateBridge.sendChatStateComposing / sendChatStateRecording / sendChatStatePaused on
// the chat's wid; the page module sends it as `typing` / `recording_audio` / `idle`
// (WASendChatStateProtocol). A contact whose chat moved to its LID is addressed there, as send.js
// does. `state` is one of typing, recording, paused (checked by the runner).
async function (lib, chatId, state) {
    const req = lib.req;
    const wid = req('WAWebWidFactory').createWid(chatId);
    const isPn = typeof wid.isLid === 'function' && !wid.isLid() && wid.isUser();
    const target = (isPn && lib.sibling(wid)) || wid;
    const bridge = req('WAWebChatStateBridge');
    const fns = {
        typing: bridge.sendChatStateComposing,
        recording: bridge.sendChatStateRecording,
        paused: bridge.sendChatStatePaused,
    };
    const f = fns[state];
    if (typeof f !== 'function') throw new Error('no chat state function for ' + state);
    await f.call(bridge, target);
    return { chat: lib.widStr(target) };
}
