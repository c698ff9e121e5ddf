// Rejects one incoming call as the page's own "Decline" button does (issue 14): the VoIP stack
// interface's rejectCall() (`WAWebVoipStackInterface.getVoipStackInterface()`, called by the
// page's useWAWebVoipCallHandlers; docs/sim-surface.md "Calls"). That declines the call the page
// is ringing for, so the call must be the collection's active call and still ringing
// (ReceivedCall = 3); otherwise nothing is sent and the answer says why.
//
// Never twice: a call this document rejected is remembered, and asking again answers `rejected`
// without sending (a runner that timed out on the first answer asks again after a reconnect).
async function (lib, callId) {
    const DONE = Symbol.for('wa-outbox.rejected-calls');
    const done = window[DONE] || (window[DONE] = new Set());
    const id = String(callId);
    if (done.has(id)) return { result: 'rejected', again: true };
    const mod = lib.req('WAWebCallCollection');
    const Calls = mod.default || mod.CallCollection || mod;
    const call = Calls.get(id) || (typeof Calls.getModelsArray === 'function'
        ? Calls.getModelsArray().find((c) => String(c.id) === id) : null);
    if (!call) return { result: 'not_found' };
    if (call.outgoing === true) return { result: 'not_incoming' };
    const state = typeof call.getState === 'function' ? Number(call.getState()) : Number(call.state);
    if (state !== 3) return { result: 'not_ringing', state: state };
    const active = Calls.activeCall;
    if (active && String(active.id) !== id) return { result: 'not_active' };
    const stack = await lib.req('WAWebVoipStackInterface').getVoipStackInterface();
    done.add(id);
    try {
        await stack.rejectCall();
    } catch (e) {
        done.delete(id);
        throw e;
    }
    return { result: 'rejected' };
}
