//! The page → runner event path: what the page pushes through the binding, read into
//! [`DriverEvent`]s, and the page's and browser's DevTools events (loads, crashes, closed
//! targets) watched for the life of a session.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::inspector::EventTargetCrashed as EventInspectorTargetCrashed;
use chromiumoxide::cdp::browser_protocol::page::EventLoadEventFired;
use chromiumoxide::cdp::browser_protocol::target::{
    EventTargetCrashed, EventTargetDestroyed, TargetId,
};
use chromiumoxide::cdp::js_protocol::runtime::EventBindingCalled;
use chromiumoxide::error::CdpError;
use chromiumoxide::listeners::EventStream;
use chromiumoxide::{Browser, Page};
use futures::StreamExt as _;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::config::ChromiumConfig;
use super::scripts::{cdp_call, install, listen_failed, BINDING};
use crate::driver::{DriverError, DriverEvent, IncomingMessage, TypedEvent};
use crate::error_code::ErrorCode;

#[derive(Default)]
struct EventState {
    last_qr: Option<String>,
    connected: bool,
    logged_out: bool,
}

/// The sending half of a session's event channel, plus the de-duplication that makes the stream
/// easy to consume: the same QR twice, or two `LoggedOut` for one logout, reach the runner once;
/// `Crashed` is sent at most once and never after `close()`.
pub(super) struct EventSink {
    tx: mpsc::Sender<DriverEvent>,
    pub(super) closing: AtomicBool,
    pub(super) crashed: AtomicBool,
    state: Mutex<EventState>,
}

impl EventSink {
    pub(super) fn new(tx: mpsc::Sender<DriverEvent>) -> Self {
        Self {
            tx,
            closing: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            state: Mutex::new(EventState::default()),
        }
    }

    fn is_dead(&self) -> bool {
        self.closing.load(Ordering::SeqCst) || self.crashed.load(Ordering::SeqCst)
    }

    pub(super) async fn emit(&self, ev: DriverEvent) {
        if self.is_dead() {
            return;
        }
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match &ev {
                DriverEvent::Qr { payload } => {
                    if st.last_qr.as_deref() == Some(payload.as_str()) {
                        return;
                    }
                    st.last_qr = Some(payload.clone());
                }
                DriverEvent::Connected { .. } => {
                    st.connected = true;
                    st.logged_out = false;
                    st.last_qr = None;
                }
                DriverEvent::Disconnected { .. } => st.connected = false,
                DriverEvent::LoggedOut { .. } => {
                    if st.logged_out {
                        return;
                    }
                    st.logged_out = true;
                    st.connected = false;
                }
                _ => {}
            }
        }
        // A dropped receiver means the runner is done with this session.
        let _ = self.tx.send(ev).await;
    }

    pub(super) async fn crashed(&self, reason: String) {
        if self.closing.load(Ordering::SeqCst) || self.crashed.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::warn!(%reason, "browser session crashed");
        let _ = self.tx.send(DriverEvent::Crashed { reason }).await;
    }
}

/// What the injected `install.js` pushes through the binding.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PagePush {
    Qr {
        qr: String,
    },
    PairingCode {
        code: String,
    },
    Connected {
        phone: Option<String>,
        #[serde(rename = "pushName")]
        push_name: Option<String>,
    },
    Disconnected {
        reason: Option<String>,
    },
    LoggedOut {
        reason: Option<String>,
    },
    Ack {
        id: String,
        ack: i32,
    },
    Incoming(PageIncoming),
    /// call_hooks.js: an incoming call.
    Call(PageCall),
    /// call_hooks.js: a group notification.
    GroupUpdate(PageGroupUpdate),
    /// A reaction, poll vote, edit or revoke from the other side (inbound_typed.js).
    Typed(PageTyped),
    /// A state the page never leaves by itself.
    Terminal {
        state: String,
    },
    Error {
        #[serde(rename = "where")]
        at: Option<String>,
        message: Option<String>,
    },
}

/// An incoming message as the page describes it (lib.js `incomingOf`): pushed live, and returned
/// by inbound_since.js.
#[derive(Debug, Deserialize)]
pub(super) struct PageIncoming {
    id: String,
    from: Option<String>,
    #[serde(rename = "chatId")]
    chat_id: Option<String>,
    kind: Option<String>,
    body: Option<String>,
    t: Option<f64>,
    #[serde(default)]
    extra: serde_json::Value,
    /// A location's or contact card's typed fields (lib.js `typedOf`), kept in `extra.typed`
    /// for the payload (see `crate::driver::typed::message_fields`).
    #[serde(default)]
    typed: Option<serde_json::Value>,
}

impl From<PageIncoming> for IncomingMessage {
    fn from(mut m: PageIncoming) -> Self {
        if let (Some(t), Some(extra)) = (m.typed.take(), m.extra.as_object_mut()) {
            extra.insert("typed".into(), t);
        }
        let chat_id = m.chat_id.unwrap_or_default();
        IncomingMessage {
            wa_message_id: m.id,
            from: m.from.unwrap_or_else(|| chat_id.clone()),
            chat_id,
            kind: m.kind.unwrap_or_else(|| "chat".into()),
            body: m.body,
            timestamp: m.t.unwrap_or(0.0) as i64,
            extra: m.extra,
        }
    }
}

/// An incoming call as call_hooks.js describes it.
#[derive(Debug, Deserialize)]
pub(super) struct PageCall {
    id: String,
    from: Option<String>,
    #[serde(rename = "fromLid")]
    from_lid: Option<String>,
    #[serde(default, rename = "isVideo")]
    is_video: bool,
    #[serde(default, rename = "isGroup")]
    is_group: bool,
    #[serde(rename = "groupJid")]
    group_jid: Option<String>,
    t: Option<f64>,
    #[serde(default)]
    ringing: bool,
}

impl From<PageCall> for crate::driver::IncomingCall {
    fn from(c: PageCall) -> Self {
        Self {
            id: c.id,
            from: c.from,
            from_lid: c.from_lid,
            is_video: c.is_video,
            is_group: c.is_group,
            group_id: c.group_jid,
            timestamp: c.t.unwrap_or(0.0) as i64,
            ringing: c.ringing,
        }
    }
}

/// A group notification as call_hooks.js describes it.
#[derive(Debug, Deserialize)]
pub(super) struct PageGroupUpdate {
    id: String,
    group: Option<String>,
    subtype: Option<String>,
    author: Option<String>,
    #[serde(rename = "authorLid")]
    author_lid: Option<String>,
    #[serde(default)]
    recipients: Vec<String>,
    body: Option<String>,
    t: Option<f64>,
}

impl From<PageGroupUpdate> for crate::driver::GroupUpdate {
    fn from(g: PageGroupUpdate) -> Self {
        // The group is the key's remote when the page did not name it.
        let group = g
            .group
            .unwrap_or_else(|| g.id.split('_').nth(1).unwrap_or_default().to_string());
        Self {
            wa_message_id: g.id,
            group_id: group,
            subtype: g.subtype.unwrap_or_default(),
            author: g.author,
            author_lid: g.author_lid,
            participants: g.recipients,
            body: g.body,
            timestamp: g.t.unwrap_or(0.0) as i64,
        }
    }
}

/// A typed inbound event as inbound_typed.js describes it: pushed live, and returned by its
/// backfill.
#[derive(Debug, Deserialize)]
pub(super) struct PageTyped {
    kind: crate::driver::TypedKind,
    key: String,
    target: String,
    from: Option<String>,
    #[serde(rename = "chatId")]
    chat_id: Option<String>,
    t: Option<f64>,
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
}

impl From<PageTyped> for TypedEvent {
    fn from(m: PageTyped) -> Self {
        let chat_id = m.chat_id.unwrap_or_default();
        TypedEvent {
            kind: m.kind,
            key: m.key,
            target: m.target,
            from: m.from.unwrap_or_else(|| chat_id.clone()),
            chat_id,
            timestamp: m.t.unwrap_or(0.0) as i64,
            fields: m.fields,
        }
    }
}

/// The error code a terminal page state ends the session with.
pub fn terminal_state_code(state: &str) -> ErrorCode {
    match state {
        "CONFLICT" => ErrorCode::SessionConflict,
        "TOS_BLOCK" | "SMB_TOS_BLOCK" => ErrorCode::AccountBanned,
        "PROXYBLOCK" => ErrorCode::ProxyBlocked,
        _ => ErrorCode::WebVersionUnsupported,
    }
}

impl PagePush {
    fn into_event(self) -> Option<DriverEvent> {
        Some(match self {
            PagePush::Qr { qr } => DriverEvent::Qr { payload: qr },
            PagePush::PairingCode { code } => DriverEvent::PairingCode { code },
            PagePush::Connected { phone, push_name } => DriverEvent::Connected {
                phone: phone
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| c.is_ascii_digit())
                    .collect(),
                push_name: push_name.filter(|n| !n.is_empty()),
            },
            PagePush::Disconnected { reason } => DriverEvent::Disconnected {
                reason: reason.unwrap_or_else(|| "unknown".into()),
            },
            PagePush::LoggedOut { reason } => DriverEvent::LoggedOut {
                reason: reason.unwrap_or_else(|| "logout".into()),
            },
            PagePush::Ack { id, ack } => DriverEvent::Ack {
                wa_message_id: id,
                ack,
            },
            PagePush::Incoming(m) => DriverEvent::Incoming(m.into()),
            PagePush::Call(c) => DriverEvent::Call(c.into()),
            PagePush::GroupUpdate(g) => DriverEvent::GroupUpdate(g.into()),
            PagePush::Typed(m) => DriverEvent::Typed(m.into()),
            PagePush::Terminal { state } => DriverEvent::Failed {
                code: terminal_state_code(&state),
                reason: format!(
                    "WhatsApp Web is in state {state}, which it does not leave by itself"
                ),
            },
            PagePush::Error { at, message } => {
                tracing::warn!(
                    at = at.as_deref().unwrap_or("?"),
                    message = message.as_deref().unwrap_or(""),
                    "page reported an error"
                );
                return None;
            }
        })
    }
}

/// One listener subscription, bounded by `cdp`; its failure fails the start.
async fn listen<S>(
    cdp: Duration,
    subscribe: impl std::future::Future<Output = Result<S, CdpError>>,
) -> Result<S, DriverError> {
    cdp_call(cdp, subscribe)
        .await
        .and_then(|r| r.map_err(listen_failed))
}

/// The DevTools events a session's page is watched through, subscribed before it navigates.
pub(super) struct PageListeners {
    bindings: EventStream<EventBindingCalled>,
    page_crashed: EventStream<EventInspectorTargetCrashed>,
    loads: EventStream<EventLoadEventFired>,
    target_crashed: EventStream<EventTargetCrashed>,
    target_destroyed: EventStream<EventTargetDestroyed>,
}

impl PageListeners {
    /// `page`'s own events, and `browser`'s target events (which name the page by `TargetId`).
    pub(super) async fn subscribe(
        page: &Page,
        browser: &Browser,
        cdp: Duration,
    ) -> Result<Self, DriverError> {
        let bindings = listen(cdp, page.event_listener::<EventBindingCalled>()).await?;
        let page_crashed =
            listen(cdp, page.event_listener::<EventInspectorTargetCrashed>()).await?;
        let loads = listen(cdp, page.event_listener::<EventLoadEventFired>()).await?;
        let target_crashed = listen(cdp, browser.event_listener::<EventTargetCrashed>()).await?;
        let target_destroyed =
            listen(cdp, browser.event_listener::<EventTargetDestroyed>()).await?;
        Ok(Self {
            bindings,
            page_crashed,
            loads,
            target_crashed,
            target_destroyed,
        })
    }

    /// Runs until the streams end: the page's pushes become events on `sink`, a reload gets the
    /// hooks put back, and a crash of the page (`target_id`) or of the browser (`dead`) is
    /// reported once.
    pub(super) fn spawn(
        self,
        page: Page,
        target_id: TargetId,
        sink: Arc<EventSink>,
        config: Arc<ChromiumConfig>,
        pair_phone: Option<String>,
        mut dead: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let Self {
            bindings,
            page_crashed,
            loads,
            target_crashed,
            target_destroyed,
        } = self;
        tokio::spawn(async move {
            let mut bindings = bindings.fuse();
            let mut page_crashed = page_crashed.fuse();
            let mut loads = loads.fuse();
            let mut target_crashed = target_crashed.fuse();
            let mut target_destroyed = target_destroyed.fuse();
            let mut watch_dead = true;
            loop {
                tokio::select! {
                    // The browser went (the shared one is everyone's).
                    r = dead.changed(), if watch_dead => {
                        let gone = *dead.borrow();
                        if r.is_err() || gone {
                            watch_dead = false;
                        }
                        if gone {
                            sink.crashed("browser process exited".into()).await;
                        }
                    }
                    Some(ev) = bindings.next() => {
                        if ev.name != BINDING {
                            continue;
                        }
                        match serde_json::from_str::<PagePush>(&ev.payload) {
                            Ok(push) => {
                                if let Some(ev) = push.into_event() {
                                    sink.emit(ev).await;
                                }
                            }
                            // Neither the payload nor serde's message (which may quote
                            // it) is logged: it may carry a QR.
                            Err(e) => tracing::warn!(
                                category = ?e.classify(),
                                "unreadable page push"
                            ),
                        }
                    }
                    Some(_) = loads.next() => {
                        // A reload (WhatsApp reloads itself, e.g. after logout) drops our
                        // hooks; put them back on the new document.
                        let page = page.clone();
                        let config = config.clone();
                        let pair_phone = pair_phone.clone();
                        let sink = sink.clone();
                        tokio::spawn(async move {
                            match install(&page, &config, pair_phone.as_deref()).await {
                                Ok(()) => {}
                                // The new document lacks what the driver needs: say so
                                // instead of running a session that cannot work.
                                Err(DriverError::Permanent { code, message }) => {
                                    sink.emit(DriverEvent::Failed { code, reason: message }).await;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "re-installing page hooks failed");
                                }
                            }
                        });
                    }
                    Some(_) = page_crashed.next() => {
                        sink.crashed("page crashed (Inspector.targetCrashed)".into()).await;
                    }
                    Some(ev) = target_crashed.next() => {
                        if ev.target_id == target_id {
                            sink.crashed(format!("page crashed ({})", ev.status)).await;
                        }
                    }
                    Some(ev) = target_destroyed.next() => {
                        if ev.target_id == target_id {
                            sink.crashed("page closed".into()).await;
                        }
                    }
                    else => break,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_pushes_map_to_events() {
        let ev = |s: &str| serde_json::from_str::<PagePush>(s).unwrap().into_event();
        assert_eq!(
            ev(r#"{"type":"connected","phone":"15551234567","pushName":"Bob"}"#),
            Some(DriverEvent::Connected {
                phone: "15551234567".into(),
                push_name: Some("Bob".into())
            })
        );
        assert_eq!(
            ev(r#"{"type":"ack","id":"true_1@c.us_X","ack":3}"#),
            Some(DriverEvent::Ack {
                wa_message_id: "true_1@c.us_X".into(),
                ack: 3
            })
        );
        assert_eq!(ev(r#"{"type":"error","where":"qr","message":"x"}"#), None);
        assert!(serde_json::from_str::<PagePush>(r#"{"type":"bogus"}"#).is_err());
    }

    #[tokio::test]
    async fn sink_deduplicates_and_stops_after_crash() {
        let (tx, mut rx) = mpsc::channel(16);
        let sink = EventSink::new(tx);
        let qr = || DriverEvent::Qr {
            payload: "a,b,c,d,e".into(),
        };
        sink.emit(qr()).await;
        sink.emit(qr()).await;
        sink.emit(DriverEvent::LoggedOut { reason: "x".into() })
            .await;
        sink.emit(DriverEvent::LoggedOut { reason: "y".into() })
            .await;
        sink.crashed("one".into()).await;
        sink.crashed("two".into()).await;
        sink.emit(qr()).await;
        drop(sink);
        let mut got = vec![];
        while let Some(e) = rx.recv().await {
            got.push(e);
        }
        assert_eq!(
            got,
            vec![
                qr(),
                DriverEvent::LoggedOut { reason: "x".into() },
                DriverEvent::Crashed {
                    reason: "one".into()
                }
            ]
        );
    }
}
