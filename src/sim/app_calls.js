  // ------------------------------------------------------------------ calls and group notifications (issue 14)
  // Spliced into app.html's script by the server (src/sim/server.rs). Evidence in
  // docs/sim-surface.md, "Calls" and "Group notifications".
  //
  // WAWebCallCollection: a collection of call models with id, peerJid (the
  // caller's LID on LID builds), outgoing, isVideo, isGroup, groupJid, offerTime, getState()
  // (WAWebVoipWaCallEnums.CallState: None 0, ReceivedCall 3, …) and callLogResult (Missed 2,
  // Declined 3); `activeCall` is the call the page rings for. WAWebVoipStackInterface's
  // getVoipStackInterface() resolves the stack the page's own buttons use; its rejectCall()
  // declines the active incoming call (the server hears the reject).
  var CALL_STATE = { None: 0, ReceivedCall: 3 };
  var CALL_LOG = { Undefined: 0, Missed: 2, Declined: 3 };
  class CallModel extends Model {
    getState() { return this.callState; }
  }
  var CallCollection = new Collection(CallModel);
  CallCollection.activeCall = null;
  CallCollection.setActiveCall = function (c) { CallCollection.activeCall = c || null; };
  function endCall(call, result) {
    call.set({ callState: CALL_STATE.None, callLogResult: result });
    if (CallCollection.activeCall === call) {
      var next = CallCollection.getModelsArray().find(function (c) { return c !== call && c.getState() === CALL_STATE.ReceivedCall; });
      CallCollection.setActiveCall(next || null);
    }
    render();
  }
  var voipStack = {
    type: 'web',
    rejectCall: async function () {
      var call = CallCollection.activeCall;
      if (!call || call.getState() !== CALL_STATE.ReceivedCall) throw new Error('no incoming call to reject');
      // Offline, this throws: nothing reached the server.
      await T.request({ t: 'call_reject', id: call.id }, 30000);
      endCall(call, CALL_LOG.Declined);
    },
    acceptCall: async function () { throw new Error('the simulator carries no call media'); },
    endCall: async function () {
      var call = CallCollection.activeCall;
      if (!call) return;
      if (call.getState() === CALL_STATE.ReceivedCall) return voipStack.rejectCall();
      endCall(call, call.callLogResult);
    }
  };
  // The module is the collection itself, as whatsapp-web.js 1.34.7 reads it (`.on`, and the
  // internal Map it wraps to see each call added).
  MODULES.WAWebCallCollection = CallCollection;
  MODULES.WAWebVoipStackInterface = { getVoipStackInterface: async function () { return voipStack; } };
  MODULES.WAWebVoipWaCallEnums = { CallState: { None: 0, Calling: 1, PreacceptReceived: 2, ReceivedCall: 3, AcceptSent: 4, AcceptReceived: 5, CallActive: 6 } };

  SERVER_HOOKS.call_offer = function (m) {
    var c = m.call || {};
    // Offered again after a reconnect: the page keeps one model per call.
    if (CallCollection.get(c.id)) return;
    var peer = createWid(c.from + '@c.us');
    if (since(LID_BUILD) && c.from_lid) {
      learnLid(c.from, c.from_lid);
      peer = createWid(c.from_lid + '@lid');
    }
    var call = new CallModel({
      id: String(c.id), peerJid: peer, outgoing: false, isVideo: !!c.video, isGroup: false,
      groupJid: null, offerTime: Number(c.t) || Math.floor(Date.now() / 1000),
      callState: CALL_STATE.ReceivedCall, callLogResult: CALL_LOG.Undefined
    });
    if (!CallCollection.activeCall) CallCollection.setActiveCall(call);
    CallCollection.add(call);
    render();
  };
  SERVER_HOOKS.call_end = function (m) {
    var call = CallCollection.get(m.id);
    if (call && call.getState() === CALL_STATE.ReceivedCall) endCall(call, m.reason === 'rejected' ? CALL_LOG.Declined : CALL_LOG.Missed);
  };

  // A change another member made to a group: the page adds a `gp2` notification message to the
  // group's chat (isNewMsg, subtype add / remove / promote / demote / subject, author,
  // recipients, the new subject as body) and updates the group's metadata.
  SERVER_HOOKS.group_notification = function (m) {
    var n = m.n || {};
    var group = createWid(n.group);
    var author = n.author ? createWid(n.author + '@c.us') : undefined;
    var key = new MsgKey({ fromMe: false, remote: group, id: n.id, participant: author });
    if (Msg.get(key)) return;
    if (m.group) groupMetaFrom(m.group);
    var msg = new MsgModel({
      id: key, from: group, to: me(), author: author, type: 'gp2', subtype: String(n.subtype),
      recipients: (n.recipients || []).map(function (p) { return createWid(p + '@c.us'); }),
      body: n.body != null ? String(n.body) : '', t: Number(n.t) || Math.floor(Date.now() / 1000),
      ack: 1, isNewMsg: true, local: false
    });
    Msg.add(msg);
    var chat = getOrCreateChat(group);
    chat.msgs.add(msg);
    chat.set({ t: msg.t });
    if (n.subtype === 'subject' && n.body) chat.set({ name: String(n.body), formattedTitle: String(n.body) });
    render();
  };
