//! The browser boundary. The runner's loops talk only to these traits; `chromium` implements
//! them with a real browser, `memory` with a script for the loops' unit tests.
//!
//! "A browser" and "a session's page" are kept apart (DESIGN.md §7): a `Driver` may own one
//! browser per session today and one shared browser with a context per session later.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error_code::ErrorCode;

pub mod chromium;
pub mod inbound_media;
pub mod memory;
pub mod proxy;
pub mod typed;

pub use typed::{TypedEvent, TypedKind};

/// What a driver needs to start one session's page.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub session_id: String,
    /// The session's own profile folder (already restored from the stored login if there was one).
    pub profile_dir: PathBuf,
    /// Link by pairing code for this number (digits only) instead of a QR.
    pub pair_phone: Option<String>,
    /// `wa_session.proxy_url`, parsed (its Debug is redacted).
    pub proxy: Option<proxy::Proxy>,
}

/// Page → runner events, in the order the page produced them.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverEvent {
    /// A new QR payload (the five comma-separated fields). A credential while valid: never log it.
    Qr { payload: String },
    /// The 8-character pairing code to type on the phone.
    PairingCode { code: String },
    /// Logged in and synced. `phone` is digits only.
    Connected {
        phone: String,
        push_name: Option<String>,
    },
    /// The socket dropped; the page reconnects on its own.
    Disconnected { reason: String },
    /// The device was unlinked (from the phone, or by our logout). The stored login is void.
    LoggedOut { reason: String },
    /// Ack change of a message this account sent: -1 error, 0 pending, 1 server, 2 device, 3 read, 4 played.
    Ack { wa_message_id: String, ack: i32 },
    /// A message this account received.
    Incoming(IncomingMessage),
    /// The other side reacted, voted, edited or revoked (issue 13).
    Typed(TypedEvent),
    /// The page or the browser died. The runner closes the session and restarts it with back-off.
    Crashed { reason: String },
    /// A call to this account: each incoming call the page adds, once per page document.
    Call(IncomingCall),
    /// Someone changed a group this account is in (a `gp2` notification the page added).
    GroupUpdate(GroupUpdate),
    /// The page is in a state it never leaves by itself (another page took the login, the account
    /// is banned, the proxy is blocked, this build of WhatsApp Web is unsupported), or lacks what
    /// the driver needs. The runner ends the session with `code`; restarting cannot help.
    Failed { code: ErrorCode, reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncomingMessage {
    pub wa_message_id: String,
    pub from: String,
    pub chat_id: String,
    pub kind: String,
    pub body: Option<String>,
    /// Seconds since the epoch, as the page reports it.
    pub timestamp: i64,
    /// Everything else the page said about it, kept for the wa_event payload.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// An incoming call as the page holds it (its `WAWebCallCollection` model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncomingCall {
    /// The call's id (the server's `call-id`).
    pub id: String,
    /// The caller: a phone-number JID where the page knows it, else its LID.
    pub from: Option<String>,
    /// The caller's LID, on a LID-addressed page.
    pub from_lid: Option<String>,
    pub is_video: bool,
    pub is_group: bool,
    /// The group of a group call.
    pub group_id: Option<String>,
    /// When it was offered, seconds since the epoch.
    pub timestamp: i64,
    /// Still ringing when the page reported it (`ReceivedCall`).
    pub ringing: bool,
}

/// What rejecting a call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectOutcome {
    /// The page declined it (now, or earlier on the same page).
    Rejected,
    /// Nothing was sent: the reason (not ringing any more, not found, not the call the page
    /// rings for).
    NotRejected(String),
}

/// A group change someone made, from the page's `gp2` notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupUpdate {
    /// The notification's serialized message key (stored once per key).
    pub wa_message_id: String,
    pub group_id: String,
    /// The page's subtype: add, invite, remove, leave, promote, demote, subject, …
    pub subtype: String,
    /// Who made the change (a phone-number JID where the page knows it).
    pub author: Option<String>,
    pub author_lid: Option<String>,
    /// Whom it concerned (participants added, removed, promoted, demoted).
    pub participants: Vec<String>,
    /// The new subject, for a subject change.
    pub body: Option<String>,
    pub timestamp: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Text,
    Image,
    Video,
    Audio,
    Voice,
    Document,
    /// A map pin: `OutgoingMessage::location`, no body or media.
    Location,
    /// One or more contact cards: `OutgoingMessage::data` (`KindData::Contact`).
    Contact,
    /// A poll: `OutgoingMessage::data` (`KindData::Poll`).
    Poll,
    /// An emoji on a message (`body`; `""` removes it): `OutgoingMessage::data`
    /// (`KindData::Reaction`).
    Reaction,
    /// New text (`body`) for a message we sent: `OutgoingMessage::data` (`KindData::Edit`).
    Edit,
    /// Delete a message we sent for everyone: `OutgoingMessage::data` (`KindData::Revoke`).
    Revoke,
    /// Forward a message to the row's chat: `OutgoingMessage::data` (`KindData::Forward`).
    Forward,
    /// An image sent as a sticker (the page converts it to a 512x512 WebP): `OutgoingMessage::media`.
    Sticker,
}

impl MessageKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "text" => Self::Text,
            "image" => Self::Image,
            "video" => Self::Video,
            "audio" => Self::Audio,
            "voice" => Self::Voice,
            "document" => Self::Document,
            "location" => Self::Location,
            "contact" => Self::Contact,
            "poll" => Self::Poll,
            "reaction" => Self::Reaction,
            "edit" => Self::Edit,
            "revoke" => Self::Revoke,
            "forward" => Self::Forward,
            "sticker" => Self::Sticker,
            _ => return None,
        })
    }
    /// Kinds that carry media (`OutgoingMessage::media`).
    pub fn has_media(self) -> bool {
        !matches!(
            self,
            Self::Text
                | Self::Location
                | Self::Contact
                | Self::Poll
                | Self::Reaction
                | Self::Edit
                | Self::Revoke
                | Self::Forward
        )
    }
    /// Kinds the page sends under a key of its own making (reactions, edits, revokes, forwards:
    /// WAWebForwardMessagesToChat makes the copy's key): once one may have reached the page,
    /// nothing can ask whether it went out, so it is never sent again.
    pub fn page_keyed(self) -> bool {
        matches!(
            self,
            Self::Reaction | Self::Edit | Self::Revoke | Self::Forward
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Voice => "voice",
            Self::Document => "document",
            Self::Location => "location",
            Self::Contact => "contact",
            Self::Poll => "poll",
            Self::Reaction => "reaction",
            Self::Edit => "edit",
            Self::Revoke => "revoke",
            Self::Forward => "forward",
            Self::Sticker => "sticker",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Media {
    pub data: bytes::Bytes,
    pub mime: String,
    pub filename: Option<String>,
}

/// One message, ready for the page. Its id was chosen (and committed) before `send` is called.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Normalised JID, `15551234567@c.us` or `…@g.us`.
    pub chat_id: String,
    /// The id part of the WhatsApp message key, e.g. `3EB0A1B2C3D4E5F60718`.
    pub id: String,
    /// The serialized key, `true_<chat_id>_<id>`, as stored in `wa_message.wa_message_id`.
    pub wa_message_id: String,
    pub kind: MessageKind,
    /// Text body, or the caption of media.
    pub body: Option<String>,
    pub media: Option<Media>,
    /// The pin of a `location` message (from `options`, validated).
    pub location: Option<Location>,
    /// The cards of a `contact` message or the question and choices of a `poll` (from
    /// `options`, validated by `crate::kinds`).
    pub data: Option<crate::kinds::KindData>,
    /// `wa_message.options` (reply_to, link_preview, …), already validated; for a location
    /// without the pin's own keys.
    pub options: serde_json::Value,
}

/// A `location` message's pin: `options.latitude`, `options.longitude` (finite, degrees, within
/// ±90 and ±180), optional `options.name` and `options.address`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    pub name: Option<String>,
    pub address: Option<String>,
}

/// Where the page filed a message it sent: today's page may key a one-to-one message under the
/// contact's LID, or under the chat's sibling wid, rather than under the key the runner chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The serialized key as the page holds it (same bare id as the one chosen).
    pub wa_message_id: String,
    /// The chat the page sent it to.
    pub chat_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Worth retrying: timeouts, crashes, reloads.
    #[error("{code}: {message}")]
    Transient { code: ErrorCode, message: String },
    /// Retrying cannot help: bad recipient, not on WhatsApp, logged out.
    #[error("{code}: {message}")]
    Permanent { code: ErrorCode, message: String },
    /// WhatsApp refused the send (the page marked it ack -1): certainly not sent, worth retrying,
    /// but the message id is spent (the page keeps the failed message under it), so the retry
    /// must go out under a new id.
    #[error("{code}: {message}")]
    Refused { code: ErrorCode, message: String },
}

impl DriverError {
    pub fn transient(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Transient {
            code,
            message: message.into(),
        }
    }
    pub fn permanent(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Permanent {
            code,
            message: message.into(),
        }
    }
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
        }
    }
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Transient { code, .. }
            | Self::Permanent { code, .. }
            | Self::Refused { code, .. } => *code,
        }
    }
    /// Worth retrying (a refusal is too, under a new id).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::Refused { .. })
    }
}

/// The id part of a serialized message key (`<fromMe>_<chat>_<id>[_<participant>]`). Acks are
/// matched on it with the session: today's page may key a message under the chat's LID, its
/// phone number, or with our own JID appended for a group, but the id is the one we chose.
pub fn bare_id(key: &str) -> &str {
    key.split('_').nth(2).unwrap_or(key)
}

/// WhatsApp refuses longer texts and captions (characters). The one definition: the dispatcher
/// checks rows against it, the driver checks again before the page, the simulator refuses beyond
/// it as WhatsApp does.
pub const MAX_BODY_CHARS: usize = 65_536;

/// A chat state shown to the other side of a chat (the `presence` command).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatState {
    Typing,
    Recording,
    Paused,
}

impl ChatState {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "typing" => Self::Typing,
            "recording" => Self::Recording,
            "paused" => Self::Paused,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Typing => "typing",
            Self::Recording => "recording",
            Self::Paused => "paused",
        }
    }
}

/// What marking a chat read did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedRead {
    /// The chat as the page holds it (on today's page a contact's LID), or `None` when the page
    /// has no such chat (nothing to mark).
    pub chat: Option<String>,
    /// Unread messages the receipt covered (0: the chat had none, nothing was sent).
    pub unread: u32,
}

/// Starts sessions. One per runner; shared by all its sessions.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    async fn start(&self, spec: SessionSpec) -> Result<StartedSession, DriverError>;
}

pub struct StartedSession {
    pub session: Arc<dyn Session>,
    pub events: mpsc::Receiver<DriverEvent>,
}

/// One running session's page. Every method is bounded by a timeout inside the driver.
#[async_trait]
pub trait Session: Send + Sync + 'static {
    /// The chat to send to for this JID: the wid the page answers with (on today's page a
    /// contact's LID), or `None` when the number has no WhatsApp account. Groups are not asked.
    async fn resolve_chat(&self, chat_id: &str) -> Result<Option<String>, DriverError>;
    /// Send one message under its pre-chosen id. Returns once the page has accepted it
    /// (ack >= 0), with the key and chat the page filed it under; later acks arrive as events.
    async fn send(&self, msg: &OutgoingMessage) -> Result<Sent, DriverError>;
    /// Recovery after a crash mid-send: does a message of ours with this id exist in that chat
    /// (under either of its wids, or still being sent)? `Some(ack)` if it does.
    async fn find_message(
        &self,
        chat_id: &str,
        wa_message_id: &str,
    ) -> Result<Option<i32>, DriverError>;
    /// The incoming messages the page holds with a timestamp at or after `since` (seconds since
    /// the epoch), oldest first, at most `limit`: what arrived while no page was watching, as an
    /// `Incoming` event would have carried it. After every (re)connect the runner backfills from
    /// the newest message it recorded and stores each id once.
    async fn inbound_since(
        &self,
        since: i64,
        limit: usize,
    ) -> Result<Vec<IncomingMessage>, DriverError>;
    /// The typed inbound events (reactions, poll votes, edits, revokes of the other side) the
    /// page holds from `since` on (seconds since the epoch), oldest first, at most `limit`: what
    /// the page took in while its hooks were not watching. Part of the backfill after every
    /// (re)connect; each is stored once per key. A driver without them has none.
    async fn typed_since(&self, since: i64, limit: usize) -> Result<Vec<TypedEvent>, DriverError> {
        let _ = (since, limit);
        Ok(Vec::new())
    }
    /// Send read receipts for a chat's unread messages (a normalised JID), as opening the chat
    /// does. A chat with nothing unread sends nothing.
    async fn mark_read(&self, chat_id: &str) -> Result<MarkedRead, DriverError> {
        let _ = chat_id;
        Err(DriverError::permanent(
            ErrorCode::CommandFailed,
            "this driver cannot mark chats read",
        ))
    }
    /// Show a chat state (typing, recording, paused) in a chat (a normalised JID).
    async fn set_presence(&self, chat_id: &str, state: ChatState) -> Result<(), DriverError> {
        let _ = (chat_id, state);
        Err(DriverError::permanent(
            ErrorCode::CommandFailed,
            "this driver cannot send chat states",
        ))
    }
    // ---- contacts and profile pictures (issue 14): the page's answer as JSON, shaped by the
    // runner (src/commands.rs).
    /// What the page knows about a contact (a normalised JID): `{exists: false}` for a number
    /// without WhatsApp, else `{exists, wid, number, name, pushname, is_business,
    /// is_my_contact, about}`.
    async fn contact_info(&self, contact_id: &str) -> Result<serde_json::Value, DriverError> {
        let _ = contact_id;
        Err(DriverError::permanent(
            ErrorCode::CommandFailed,
            "this driver cannot read contacts",
        ))
    }
    /// A contact's or group's profile picture as the server hands it out: `{url, tag}` with the
    /// signed CDN URL, or `{url: null}` when there is none or it is hidden.
    async fn profile_picture(&self, contact_id: &str) -> Result<serde_json::Value, DriverError> {
        let _ = contact_id;
        Err(DriverError::permanent(
            ErrorCode::CommandFailed,
            "this driver cannot read profile pictures",
        ))
    }
    // ---- chats and history (issue 14)
    /// The `limit` most recent chats the page holds, newest first, each `{id, number, name,
    /// is_group, unread, marked_unread, timestamp, archived, pinned}`.
    async fn chats(&self, limit: usize) -> Result<serde_json::Value, DriverError> {
        let _ = limit;
        Err(DriverError::permanent(
            ErrorCode::CommandFailed,
            "this driver cannot list chats",
        ))
    }
    /// A chat's last `limit` messages, oldest first: `{chat, messages: [{id, key, from_me, type,
    /// body, timestamp, author}]}`, `chat: null` when the page has no such chat.
    async fn history(&self, chat_id: &str, limit: usize) -> Result<serde_json::Value, DriverError> {
        let _ = (chat_id, limit);
        Err(DriverError::permanent(
            ErrorCode::CommandFailed,
            "this driver cannot read chat history",
        ))
    }
    // ---- groups (issue 14)
    /// Create a group: `{id, participants: [{wid, code}]}` (code "200" added).
    async fn group_create(
        &self,
        subject: &str,
        participants: &[String],
    ) -> Result<serde_json::Value, DriverError> {
        let _ = (subject, participants);
        Err(DriverError::permanent(
            ErrorCode::CommandFailed,
            "this driver cannot create groups",
        ))
    }
    /// A group's metadata from the server: `{found, id, subject, owner, creation, participants:
    /// [{id, is_admin, is_super_admin}]}`.
    async fn group_info(&self, group_id: &str) -> Result<serde_json::Value, DriverError> {
        let _ = group_id;
        Err(DriverError::permanent(
            ErrorCode::CommandFailed,
            "this driver cannot read groups",
        ))
    }
    /// The group's current invite code (the account must be an admin).
    async fn group_invite_code(&self, group_id: &str) -> Result<serde_json::Value, DriverError> {
        let _ = group_id;
        Err(DriverError::permanent(
            ErrorCode::CommandFailed,
            "this driver cannot read invite links",
        ))
    }
    /// Leave the group.
    async fn group_leave(&self, group_id: &str) -> Result<serde_json::Value, DriverError> {
        let _ = group_id;
        Err(DriverError::permanent(
            ErrorCode::CommandFailed,
            "this driver cannot leave groups",
        ))
    }
    /// Add, remove, promote or demote participants of a group, one at a time: `{found,
    /// participants: [{wid, code}]}` with the page's code for each ("200" done).
    async fn group_participants(
        &self,
        group_id: &str,
        action: &str,
        participants: &[String],
    ) -> Result<serde_json::Value, DriverError> {
        let _ = (group_id, action, participants);
        Err(DriverError::permanent(
            ErrorCode::CommandFailed,
            "this driver cannot change group participants",
        ))
    }
    /// Every group the account is in, from the server: `[{id, subject, owner, creation,
    /// participants: [{id, admin}]}]`.
    async fn groups_all(&self) -> Result<serde_json::Value, DriverError> {
        Err(DriverError::permanent(
            ErrorCode::CommandFailed,
            "this driver cannot list groups",
        ))
    }
    /// Reject an incoming call (by its id) through the page's own VoIP module, never twice.
    async fn reject_call(&self, call_id: &str) -> Result<RejectOutcome, DriverError> {
        let _ = call_id;
        Err(DriverError::permanent(
            ErrorCode::CommandFailed,
            "this driver cannot reject calls",
        ))
    }
    /// Download an incoming message's media (its serialized key) through the page's own download
    /// manager, decrypted, within `timeout`. Over `max_bytes` it is not downloaded when the page
    /// reports the size first (`TooLarge`). Errors carry `media_fetch_failed`.
    async fn download_media(
        &self,
        wa_message_id: &str,
        max_bytes: u64,
        timeout: std::time::Duration,
    ) -> Result<inbound_media::MediaDownload, DriverError> {
        let _ = (wa_message_id, max_bytes, timeout);
        Err(DriverError::permanent(
            ErrorCode::MediaFetchFailed,
            "this driver cannot download media",
        ))
    }
    /// Unlink the device. A `LoggedOut` event follows.
    async fn logout(&self) -> Result<(), DriverError>;
    /// Close the page (and its browser). Idempotent. The profile on disk is kept (a
    /// shared-browser session writes its storage export there first).
    async fn close(&self) -> Result<(), DriverError>;
    /// Bring the profile folder up to date with the live login, for a save while running. Only
    /// a shared-browser session, whose storage lives in memory, has anything to do.
    async fn persist(&self) -> Result<(), DriverError> {
        Ok(())
    }
    /// The operating-system process that holds this session's browser, where there is one
    /// (memory accounting).
    fn process_id(&self) -> Option<u32> {
        None
    }
}
