//! One session's WhatsApp Web page ([`ChromiumSession`]): opening it in its browser (or its
//! context of the shared one), and the [`Session`] calls the runner makes on it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use chromiumoxide::cdp::browser_protocol::inspector::EnableParams as InspectorEnableParams;
use chromiumoxide::cdp::browser_protocol::page::{
    AddScriptToEvaluateOnNewDocumentParams, NavigateParams,
};
use chromiumoxide::cdp::js_protocol::runtime::AddBindingParams;
use chromiumoxide::Page;
use serde::Deserialize;
use tokio::task::JoinHandle;

use super::config::ChromiumConfig;
use super::events::{EventSink, PageIncoming, PageListeners, PageTyped};
use super::process::{group_pss_bytes, kill_group, Owner};
use super::proxy_auth;
use super::scripts::{
    call_function, cdp_call, install, listen_failed, CallError, BINDING, FN_CHATS, FN_CONTACT_INFO,
    FN_EDIT, FN_FIND_MESSAGE, FN_FORWARD, FN_GROUPS_ALL, FN_GROUP_CREATE, FN_GROUP_INFO,
    FN_GROUP_INVITE, FN_GROUP_LEAVE, FN_GROUP_PARTICIPANTS, FN_HISTORY, FN_INBOUND_SINCE,
    FN_MARK_READ, FN_NUMBER_EXISTS, FN_PRESENCE, FN_PROFILE_PICTURE, FN_REACT, FN_REJECT_CALL,
    FN_SEND, FN_TYPED_SINCE, JS_KEY_SHADOW, JS_LIVENESS, JS_LOGOUT,
};
use super::storage::{self, restore_storage};
use crate::driver::{
    bare_id, ChatState, DriverError, DriverEvent, IncomingMessage, MarkedRead, MessageKind,
    OutgoingMessage, RejectOutcome, Sent, Session, SessionSpec, TypedEvent, MAX_BODY_CHARS,
};
use crate::error_code::ErrorCode;

/// One session's WhatsApp Web page.
pub struct ChromiumSession {
    session_id: String,
    config: Arc<ChromiumConfig>,
    page: Page,
    pid: u32,
    sink: Arc<EventSink>,
    /// In a browser context of the shared browser (its login lives in memory).
    shared: bool,
    profile_dir: PathBuf,
    owner: tokio::sync::Mutex<Option<Owner>>,
    event_task: Mutex<Option<JoinHandle<()>>>,
    send_lock: tokio::sync::Mutex<()>,
}

impl ChromiumSession {
    /// An `edit` row (edit.js): the page's own sendMessageEdit on a message we sent, within
    /// WhatsApp's window. The row keeps the key the runner gave it.
    async fn edit(&self, msg: &OutgoingMessage) -> Result<Sent, DriverError> {
        let (target, text, revoke) = match &msg.data {
            Some(crate::kinds::KindData::Edit { target, text }) => (target, Some(text), false),
            Some(crate::kinds::KindData::Revoke { target }) => (target, None, true),
            _ => {
                return Err(DriverError::permanent(
                    ErrorCode::InvalidOptions,
                    "an edit or revoke needs its target message",
                ))
            }
        };
        let args = vec![
            serde_json::json!(msg.chat_id),
            serde_json::json!(target),
            serde_json::json!(text),
            serde_json::json!(crate::kinds::EDIT_WINDOW_SECS),
            serde_json::json!(revoke),
        ];
        let r = self.page_action(&FN_EDIT, args, "editing").await?;
        if let Some(err) = r.error {
            let why = match err.as_str() {
                "not_ours" => format!("the target message {target} was not sent by this account"),
                "too_old" if revoke => {
                    format!("the page says {target} can no longer be deleted for everyone")
                }
                "too_old" => format!(
                    "the target message {target} went out more than 15 minutes ago; WhatsApp's edit window has passed"
                ),
                _ => format!("the target message {target} is not on the page"),
            };
            return Err(DriverError::permanent(ErrorCode::InvalidOptions, why));
        }
        Ok(Sent {
            wa_message_id: msg.wa_message_id.clone(),
            chat_id: r.chat.unwrap_or_else(|| msg.chat_id.clone()),
        })
    }

    /// A `forward` row (forward.js): the page's own forwardMessagesToChats with the target message
    /// and the row's chat. The row takes the forwarded copy's key when the page filed it during
    /// the call (the page makes that key), else keeps the key the runner gave it.
    async fn forward(&self, msg: &OutgoingMessage) -> Result<Sent, DriverError> {
        let Some(crate::kinds::KindData::Forward { target }) = &msg.data else {
            return Err(DriverError::permanent(
                ErrorCode::InvalidOptions,
                "a forward needs its target message",
            ));
        };
        let args = vec![serde_json::json!(msg.chat_id), serde_json::json!(target)];
        let r = self.page_action(&FN_FORWARD, args, "forwarding").await?;
        match r.error.as_deref() {
            None => {}
            Some("no_chat") => {
                return Err(DriverError::permanent(
                    ErrorCode::InvalidRecipient,
                    format!("the page has no chat {} to forward to", msg.chat_id),
                ))
            }
            Some(_) => {
                return Err(DriverError::permanent(
                    ErrorCode::InvalidOptions,
                    format!("the message to forward, {target}, is not on the page"),
                ))
            }
        }
        Ok(Sent {
            wa_message_id: r.id.unwrap_or_else(|| msg.wa_message_id.clone()),
            chat_id: r.chat.unwrap_or_else(|| msg.chat_id.clone()),
        })
    }

    /// A `reaction` row (react.js): the page's own sendReactionToMsg on the target message. The
    /// row keeps the key the runner gave it (the page makes the reaction's own).
    async fn react(&self, msg: &OutgoingMessage) -> Result<Sent, DriverError> {
        let Some(crate::kinds::KindData::Reaction { target, emoji }) = &msg.data else {
            return Err(DriverError::permanent(
                ErrorCode::InvalidOptions,
                "a reaction needs its target message and emoji",
            ));
        };
        let args = vec![
            serde_json::json!(msg.chat_id),
            serde_json::json!(target),
            serde_json::json!(emoji),
        ];
        let r = self.page_action(&FN_REACT, args, "reacting").await?;
        if r.error.is_some() {
            return Err(DriverError::permanent(
                ErrorCode::InvalidOptions,
                format!("the target message {target} is not on the page"),
            ));
        }
        Ok(Sent {
            wa_message_id: msg.wa_message_id.clone(),
            chat_id: r.chat.unwrap_or_else(|| msg.chat_id.clone()),
        })
    }

    pub(super) async fn open(
        config: Arc<ChromiumConfig>,
        spec: SessionSpec,
        owner: Owner,
        sink: Arc<EventSink>,
    ) -> Result<Arc<Self>, (DriverError, Owner)> {
        macro_rules! tryb {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Err((e, owner)),
                }
            };
        }
        let cdp = config.cdp_timeout;
        let shared = matches!(owner, Owner::Shared { .. });
        let page = owner.new_page(cdp).await;
        let page = tryb!(page);
        let target_id = page.target_id().clone();

        let listeners = PageListeners::subscribe(&page, &owner.process().browser, cdp).await;
        let listeners = tryb!(listeners);

        tryb!(cdp_call(cdp, page.execute(AddBindingParams::new(BINDING)))
            .await
            .and_then(|r| r.map(|_| ()).map_err(listen_failed)));
        tryb!(
            cdp_call(cdp, page.execute(InspectorEnableParams::default()))
                .await
                .and_then(|r| r.map(|_| ()).map_err(listen_failed))
        );

        let pid = owner.process().pid;
        let dead = owner.process().dead.clone();
        let session = Arc::new(Self {
            session_id: spec.session_id.clone(),
            config: config.clone(),
            page: page.clone(),
            pid,
            sink: sink.clone(),
            shared,
            profile_dir: spec.profile_dir.clone(),
            owner: tokio::sync::Mutex::new(None),
            event_task: Mutex::new(None),
            send_lock: tokio::sync::Mutex::new(()),
        });

        let event_task = listeners.spawn(
            page.clone(),
            target_id,
            sink.clone(),
            config.clone(),
            spec.pair_phone.clone(),
            dead,
        );
        *session.event_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(event_task);

        // A shared-browser context starts empty: put the stored login back before the app runs.
        // The key shadow goes first, so that the restore and every later document of this page
        // (reloads included) record the key material of the non-extractable CryptoKeys the login
        // holds, which the export needs (key_shadow.js).
        if shared {
            let shadow =
                AddScriptToEvaluateOnNewDocumentParams::new(format!("({JS_KEY_SHADOW})();"));
            tryb!(cdp_call(cdp, page.execute(shadow))
                .await
                .and_then(|r| r.map(|_| ()).map_err(listen_failed)));
            tryb!(restore_storage(&page, &config, &spec.profile_dir).await);
        }

        // A proxy answered over CDP before anything goes through it.
        let mut proxy_watch = match &spec.proxy {
            Some(proxy) => Some(tryb!(proxy_auth::answer(&page, proxy, cdp).await)),
            None => None,
        };
        // A proxy that refused (the connection or the credentials) will refuse the next start
        // too: that ends the session with its own code instead of restarting it forever.
        let proxy_failed = |what: String, saw_407: bool| -> Option<DriverError> {
            let proxy = spec.proxy.as_ref()?;
            let why = if saw_407 {
                format!("the proxy {proxy} refused the credentials (407)")
            } else if proxy_auth::is_proxy_error(&what) {
                format!("the proxy {proxy} did not serve the page: {what}")
            } else {
                return None;
            };
            Some(DriverError::permanent(ErrorCode::ProxyFailed, why))
        };

        // Navigate and wait for WhatsApp Web's code.
        let load_failed = |m: String| DriverError::transient(ErrorCode::PageLoadFailed, m);
        let nav = NavigateParams::builder()
            .url(config.web_url.clone())
            .build()
            .map_err(load_failed);
        let nav = tryb!(nav);
        match tokio::time::timeout(config.start_timeout, page.goto(nav)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let e = e.to_string();
                let saw_407 = match proxy_watch.as_mut() {
                    Some(w) => w.saw_407().await,
                    None => false,
                };
                let err = proxy_failed(e.clone(), saw_407)
                    .unwrap_or_else(|| load_failed(format!("navigation failed: {e}")));
                return Err((err, owner));
            }
            Err(_) => {
                return Err((
                    load_failed(format!(
                        "navigation did not finish within {:?}",
                        config.start_timeout
                    )),
                    owner,
                ))
            }
        }
        tryb!(install(&page, &config, spec.pair_phone.as_deref()).await);
        *session.owner.lock().await = Some(owner);
        tracing::info!(
            session = %spec.session_id,
            pid,
            "browser session started (page loaded, hooks installed)"
        );
        Ok(session)
    }

    /// The Chromium main process id (tests kill it to simulate a crash).
    pub fn browser_pid(&self) -> u32 {
        self.pid
    }

    /// Proportional set size of every process of this session's browser, in bytes (Linux
    /// `smaps_rollup`), for the memory figures of DESIGN.md §7. `None` when /proc is unreadable.
    pub fn browser_pss_bytes(&self) -> Option<u64> {
        group_pss_bytes(self.pid)
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Tests only: runs `function_declaration` in the session's page with `args` as its JSON
    /// arguments and returns its JSON result (the error text, first line, when it throws).
    #[doc(hidden)]
    pub async fn evaluate_for_test(
        &self,
        function_declaration: &str,
        args: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        self.call(function_declaration, args, self.config.cdp_timeout)
            .await
            .map_err(|e| match e {
                CallError::Timeout => "timed out".to_string(),
                CallError::Js(m) | CallError::Cdp(m) => m,
            })
    }

    fn dead_error(&self) -> Option<DriverError> {
        if self.sink.closing.load(Ordering::SeqCst) {
            Some(DriverError::transient(
                ErrorCode::BrowserCrashed,
                "session is closed",
            ))
        } else if self.sink.crashed.load(Ordering::SeqCst) {
            Some(DriverError::transient(
                ErrorCode::BrowserCrashed,
                "browser crashed",
            ))
        } else {
            None
        }
    }

    async fn call(
        &self,
        source: &str,
        args: Vec<serde_json::Value>,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallError> {
        call_function(&self.page, source, args, timeout).await
    }

    /// A command's page function with one JID argument, bounded by the CDP timeout; a failure is
    /// mapped as the other calls map theirs (a timeout is `command_timeout`).
    async fn command_call(
        &self,
        source: &str,
        jid: &str,
        what: &'static str,
    ) -> Result<serde_json::Value, DriverError> {
        self.command_call_args(source, vec![serde_json::json!(jid)], what)
            .await
    }

    /// [`Self::command_call`] with any JSON arguments.
    async fn command_call_args(
        &self,
        source: &str,
        args: Vec<serde_json::Value>,
        what: &'static str,
    ) -> Result<serde_json::Value, DriverError> {
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        match self.call(source, args, self.config.cdp_timeout).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self
                .map_call_error(e, ErrorCode::CommandTimeout, what)
                .await),
        }
    }

    /// A backfill read (inbound_since.js, typed_since.js): what the page holds since `since`
    /// (seconds), at most `limit`, each page record turned into the driver's own. The page waits
    /// for its offline delivery to end within half the call's own bound, so that it answers (or
    /// says it could not) before the call times out.
    async fn read_since<P, T>(
        &self,
        source: &str,
        since: i64,
        limit: usize,
        what: &str,
    ) -> Result<Vec<T>, DriverError>
    where
        P: serde::de::DeserializeOwned + Into<T>,
    {
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        let wait_ms = (self.config.cdp_timeout / 2).as_millis() as u64;
        let args = vec![
            serde_json::json!(since),
            serde_json::json!(limit),
            serde_json::json!(wait_ms),
        ];
        let v = match self.call(source, args, self.config.cdp_timeout).await {
            Ok(v) => v,
            Err(e) => {
                let what = format!("reading {what}");
                return Err(self
                    .map_call_error(e, ErrorCode::BrowserCrashed, &what)
                    .await);
            }
        };
        let page: Vec<P> = serde_json::from_value(v).map_err(|e| {
            DriverError::transient(
                ErrorCode::SendFailed,
                format!("reading {what}: unexpected answer: {e}"),
            )
        })?;
        let mut out: Vec<T> = page.into_iter().map(Into::into).collect();
        out.truncate(limit);
        Ok(out)
    }

    /// A page function that sends something (send.js, edit.js, react.js, forward.js): one at a
    /// time per page, since the page's send path is not built for interleaving, bounded by the
    /// send timeout (a timeout is `send_timeout`), its answer read as a [`SendResult`].
    async fn page_action(
        &self,
        source: &str,
        args: Vec<serde_json::Value>,
        what: &'static str,
    ) -> Result<SendResult, DriverError> {
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        let _one = self.send_lock.lock().await;
        let v = match self.call(source, args, self.config.send_timeout).await {
            Ok(v) => v,
            Err(e) => return Err(self.map_call_error(e, ErrorCode::SendTimeout, what).await),
        };
        serde_json::from_value(v).map_err(|e| {
            DriverError::transient(
                ErrorCode::SendFailed,
                format!("unexpected result from the page while {what}: {e}"),
            )
        })
    }

    /// After a call failed: is the page still answering, and is WhatsApp Web still in it? A hung
    /// renderer or a page whose app has vanished is reported as a crash, so the runner restarts
    /// the session instead of retrying into a dead page.
    async fn check_alive(&self) {
        let grace = self.config.cdp_timeout / 2;
        match self
            .call(
                JS_LIVENESS,
                vec![serde_json::json!(grace.as_millis() as u64)],
                self.config.cdp_timeout,
            )
            .await
        {
            Ok(serde_json::Value::Bool(true)) => {}
            Ok(_) => {
                self.sink
                    .crashed("WhatsApp Web is gone from the page".into())
                    .await
            }
            Err(CallError::Cdp(_)) => {
                // The page is navigating; its load event re-installs the hooks.
            }
            Err(_) => {
                self.sink
                    .crashed("page unresponsive (a DevTools call timed out)".into())
                    .await
            }
        }
    }

    /// Shared-browser mode: the live page's login into the profile folder
    /// ([`storage::export_storage`]).
    async fn export_storage(&self) -> Result<(), DriverError> {
        storage::export_storage(&self.page, &self.profile_dir, self.config.cdp_timeout).await
    }

    async fn map_call_error(&self, e: CallError, on_timeout: ErrorCode, what: &str) -> DriverError {
        if let Some(dead) = self.dead_error() {
            return dead;
        }
        match e {
            CallError::Timeout => {
                self.check_alive().await;
                DriverError::transient(on_timeout, format!("{what} timed out"))
            }
            CallError::Js(m) => {
                self.check_alive().await;
                if let Some(dead) = self.dead_error() {
                    return dead;
                }
                DriverError::transient(ErrorCode::SendFailed, format!("{what}: {m}"))
            }
            CallError::Cdp(m) => {
                DriverError::transient(ErrorCode::BrowserCrashed, format!("{what}: {m}"))
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct SendResult {
    error: Option<String>,
    /// With `error`: the page's own words (a sticker image it cannot read).
    #[serde(default)]
    message: Option<String>,
    id: Option<String>,
    chat: Option<String>,
    ack: Option<i32>,
    result: Option<String>,
    #[serde(default)]
    existed: bool,
}

#[async_trait]
impl Session for ChromiumSession {
    async fn resolve_chat(&self, chat_id: &str) -> Result<Option<String>, DriverError> {
        if chat_id.ends_with("@g.us") {
            return Ok(Some(chat_id.to_string()));
        }
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        match self
            .call(
                &FN_NUMBER_EXISTS,
                vec![serde_json::json!(chat_id)],
                self.config.send_timeout,
            )
            .await
        {
            Ok(v) => Ok(v.as_str().map(str::to_string)),
            Err(e) => Err(self
                .map_call_error(e, ErrorCode::SendTimeout, "checking the number")
                .await),
        }
    }

    async fn mark_read(&self, chat_id: &str) -> Result<MarkedRead, DriverError> {
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        match self
            .call(
                &FN_MARK_READ,
                vec![serde_json::json!(chat_id)],
                self.config.cdp_timeout,
            )
            .await
        {
            Ok(v) => Ok(MarkedRead {
                chat: v.get("chat").and_then(|c| c.as_str()).map(str::to_string),
                unread: v
                    .get("unread")
                    .and_then(|u| u.as_u64())
                    .unwrap_or(0)
                    .min(u32::MAX as u64) as u32,
            }),
            Err(e) => Err(self
                .map_call_error(e, ErrorCode::CommandTimeout, "marking the chat read")
                .await),
        }
    }

    async fn set_presence(&self, chat_id: &str, state: ChatState) -> Result<(), DriverError> {
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        match self
            .call(
                &FN_PRESENCE,
                vec![
                    serde_json::json!(chat_id),
                    serde_json::json!(state.as_str()),
                ],
                self.config.cdp_timeout,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self
                .map_call_error(e, ErrorCode::CommandTimeout, "sending the chat state")
                .await),
        }
    }

    // ---- contacts and profile pictures (issue 14)
    async fn contact_info(&self, contact_id: &str) -> Result<serde_json::Value, DriverError> {
        self.command_call(&FN_CONTACT_INFO, contact_id, "reading the contact")
            .await
    }

    async fn profile_picture(&self, contact_id: &str) -> Result<serde_json::Value, DriverError> {
        self.command_call(
            &FN_PROFILE_PICTURE,
            contact_id,
            "reading the profile picture",
        )
        .await
    }

    // ---- chats and history (issue 14)
    async fn chats(&self, limit: usize) -> Result<serde_json::Value, DriverError> {
        self.command_call_args(
            &FN_CHATS,
            vec![serde_json::json!(limit)],
            "listing the chats",
        )
        .await
    }

    async fn history(&self, chat_id: &str, limit: usize) -> Result<serde_json::Value, DriverError> {
        self.command_call_args(
            &FN_HISTORY,
            vec![serde_json::json!(chat_id), serde_json::json!(limit)],
            "reading the chat's history",
        )
        .await
    }

    // ---- groups (issue 14)
    async fn group_create(
        &self,
        subject: &str,
        participants: &[String],
    ) -> Result<serde_json::Value, DriverError> {
        self.command_call_args(
            &FN_GROUP_CREATE,
            vec![serde_json::json!(subject), serde_json::json!(participants)],
            "creating the group",
        )
        .await
    }

    async fn group_info(&self, group_id: &str) -> Result<serde_json::Value, DriverError> {
        self.command_call(&FN_GROUP_INFO, group_id, "reading the group")
            .await
    }

    async fn group_invite_code(&self, group_id: &str) -> Result<serde_json::Value, DriverError> {
        self.command_call(&FN_GROUP_INVITE, group_id, "reading the invite link")
            .await
    }

    async fn group_leave(&self, group_id: &str) -> Result<serde_json::Value, DriverError> {
        self.command_call(&FN_GROUP_LEAVE, group_id, "leaving the group")
            .await
    }

    async fn group_participants(
        &self,
        group_id: &str,
        action: &str,
        participants: &[String],
    ) -> Result<serde_json::Value, DriverError> {
        self.command_call_args(
            &FN_GROUP_PARTICIPANTS,
            vec![
                serde_json::json!(group_id),
                serde_json::json!(action),
                serde_json::json!(participants),
            ],
            "changing the group's participants",
        )
        .await
    }

    async fn groups_all(&self) -> Result<serde_json::Value, DriverError> {
        self.command_call_args(&FN_GROUPS_ALL, vec![], "listing the groups")
            .await
    }

    async fn reject_call(&self, call_id: &str) -> Result<RejectOutcome, DriverError> {
        let r = self
            .command_call(&FN_REJECT_CALL, call_id, "rejecting the call")
            .await?;
        Ok(match r.get("result").and_then(|v| v.as_str()) {
            Some("rejected") => RejectOutcome::Rejected,
            Some("not_ringing") => RejectOutcome::NotRejected(format!(
                "the call was no longer ringing (page call state {})",
                r.get("state").unwrap_or(&serde_json::Value::Null)
            )),
            Some("not_found") => {
                RejectOutcome::NotRejected("the page no longer holds the call".into())
            }
            Some("not_active") => RejectOutcome::NotRejected(
                "another call was ringing on the page; only that one can be declined".into(),
            ),
            Some("not_incoming") => RejectOutcome::NotRejected("an outgoing call".into()),
            _ => {
                return Err(DriverError::transient(
                    ErrorCode::CommandFailed,
                    "rejecting the call: the page gave no answer",
                ))
            }
        })
    }

    async fn send(&self, msg: &OutgoingMessage) -> Result<Sent, DriverError> {
        if msg.kind == MessageKind::Reaction {
            return self.react(msg).await;
        }
        if msg.kind == MessageKind::Forward {
            return self.forward(msg).await;
        }
        if matches!(msg.kind, MessageKind::Edit | MessageKind::Revoke) {
            return self.edit(msg).await;
        }
        if let Some(body) = &msg.body {
            if body.chars().count() > MAX_BODY_CHARS {
                return Err(DriverError::permanent(
                    ErrorCode::BodyTooLong,
                    format!("body longer than {MAX_BODY_CHARS} characters"),
                ));
            }
        }
        let media = match (msg.kind, &msg.media) {
            (MessageKind::Text, _) => {
                if msg.body.as_deref().unwrap_or("").is_empty() {
                    return Err(DriverError::permanent(
                        ErrorCode::EmptyMessage,
                        "a text message needs a body",
                    ));
                }
                serde_json::Value::Null
            }
            (MessageKind::Location, _) => {
                if msg.location.is_none() {
                    return Err(DriverError::permanent(
                        ErrorCode::InvalidOptions,
                        "a location message needs its latitude and longitude",
                    ));
                }
                serde_json::Value::Null
            }
            (MessageKind::Contact | MessageKind::Poll, _) => {
                if msg.data.is_none() {
                    return Err(DriverError::permanent(
                        ErrorCode::InvalidOptions,
                        format!("a {} message needs its content", msg.kind.as_str()),
                    ));
                }
                serde_json::Value::Null
            }
            (_, None) => {
                return Err(DriverError::permanent(
                    ErrorCode::MediaMissing,
                    format!("a {} message needs media", msg.kind.as_str()),
                ))
            }
            (_, Some(m)) => serde_json::json!({
                "data": base64::engine::general_purpose::STANDARD.encode(&m.data),
                "mimetype": m.mime,
                "filename": m.filename,
            }),
        };
        let args = vec![
            serde_json::json!(msg.chat_id),
            serde_json::json!(msg.id),
            serde_json::json!(msg.kind.as_str()),
            serde_json::json!(msg.body),
            media,
            msg.options.clone(),
            serde_json::json!(msg.location),
            serde_json::json!(msg.data),
        ];
        let r = self.page_action(&FN_SEND, args, "sending").await?;
        if let Some(err) = r.error {
            if err == "bad_image" {
                return Err(DriverError::permanent(
                    ErrorCode::MediaInvalid,
                    format!(
                        "the page cannot read the sticker's image: {}",
                        r.message.unwrap_or_default()
                    ),
                ));
            }
            return Err(DriverError::permanent(
                ErrorCode::InvalidRecipient,
                format!("the page has no chat for {}: {err}", msg.chat_id),
            ));
        }
        if let Some(id) = &r.id {
            if *id != msg.wa_message_id {
                // Today's page files one-to-one messages under the contact's LID, or under the
                // chat's sibling wid: the row keeps the key the page uses.
                tracing::debug!(
                    expected = %msg.wa_message_id,
                    page = %id,
                    "the page keys the message differently"
                );
            }
        }
        let refused = match r.result.as_deref() {
            Some(res) if res != "OK" => Some(format!("the page refused the send: {res}")),
            _ if r.ack.unwrap_or(0) < 0 => {
                Some("the page marked the message as failed (ack -1)".to_string())
            }
            _ => None,
        };
        if let Some(why) = refused {
            // A refusal is normal (server said no), unless the app itself is gone.
            self.check_alive().await;
            return Err(self
                .dead_error()
                .unwrap_or_else(|| DriverError::refused(ErrorCode::SendFailed, why)));
        }
        if r.existed {
            tracing::info!(id = %msg.wa_message_id, "message already in the page; not sent again");
        }
        // A key we cannot read back is still sent; the row keeps the one it has.
        let wa_message_id =
            r.id.filter(|id| bare_id(id) == msg.id)
                .unwrap_or_else(|| msg.wa_message_id.clone());
        Ok(Sent {
            wa_message_id,
            chat_id: r.chat.unwrap_or_else(|| msg.chat_id.clone()),
        })
    }

    async fn find_message(
        &self,
        chat_id: &str,
        wa_message_id: &str,
    ) -> Result<Option<i32>, DriverError> {
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        match self
            .call(
                &FN_FIND_MESSAGE,
                vec![serde_json::json!(chat_id), serde_json::json!(wa_message_id)],
                self.config.cdp_timeout,
            )
            .await
        {
            Ok(v) => Ok(v.as_i64().map(|a| a as i32)),
            Err(e) => Err(self
                .map_call_error(e, ErrorCode::SendTimeout, "looking up the message")
                .await),
        }
    }

    async fn inbound_since(
        &self,
        since: i64,
        limit: usize,
    ) -> Result<Vec<IncomingMessage>, DriverError> {
        self.read_since::<PageIncoming, _>(&FN_INBOUND_SINCE, since, limit, "the incoming messages")
            .await
    }

    async fn download_media(
        &self,
        wa_message_id: &str,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<crate::driver::inbound_media::MediaDownload, DriverError> {
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        super::media_in::download(
            &self.page,
            wa_message_id,
            max_bytes,
            timeout,
            self.config.cdp_timeout,
        )
        .await
    }

    async fn typed_since(&self, since: i64, limit: usize) -> Result<Vec<TypedEvent>, DriverError> {
        self.read_since::<PageTyped, _>(&FN_TYPED_SINCE, since, limit, "the typed events")
            .await
    }

    async fn logout(&self) -> Result<(), DriverError> {
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        match self.call(JS_LOGOUT, vec![], self.config.cdp_timeout).await {
            // Today's page logs out by navigating to ?post_logout=1, which tears down the
            // context the call ran in: the logout went through.
            Ok(_) | Err(CallError::Cdp(_)) => {
                self.sink
                    .emit(DriverEvent::LoggedOut {
                        reason: "logout requested".into(),
                    })
                    .await;
                Ok(())
            }
            Err(e) => Err(self
                .map_call_error(e, ErrorCode::SendTimeout, "logging out")
                .await),
        }
    }

    fn process_id(&self) -> Option<u32> {
        Some(self.pid)
    }

    async fn persist(&self) -> Result<(), DriverError> {
        if !self.shared {
            return Ok(());
        }
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        self.export_storage().await
    }

    async fn close(&self) -> Result<(), DriverError> {
        // A context's storage dies with it: export the login while the page still runs.
        if self.shared && self.dead_error().is_none() {
            if let Err(e) = self.export_storage().await {
                tracing::warn!(session = %self.session_id, error = %e, "could not export the login before closing");
            }
        }
        self.sink.closing.store(true, Ordering::SeqCst);
        let owner = self.owner.lock().await.take();
        if let Some(owner) = owner {
            owner.release(self.config.cdp_timeout).await;
            tracing::info!(session = %self.session_id, "browser session closed");
        }
        if let Some(t) = self
            .event_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.abort();
        }
        Ok(())
    }
}

impl Drop for ChromiumSession {
    fn drop(&mut self) {
        // Not closed: make sure no browser (or context) outlives its session (kill_on_drop
        // reaps the leader).
        if let Ok(mut b) = self.owner.try_lock() {
            match b.take() {
                Some(Owner::Own(b)) if !b.has_exited() => kill_group(b.pid),
                Some(owner @ Owner::Shared { .. }) => {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        let timeout = self.config.cdp_timeout;
                        rt.spawn(owner.release(timeout));
                    }
                }
                _ => {}
            }
        }
    }
}
