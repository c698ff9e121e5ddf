//! The simulated WhatsApp "server": phones, linked and pending devices, messages, faults.
//!
//! All state lives in one `World` behind a mutex; nothing awaits while holding it. Pages are
//! reached through per-connection channels, so the world never touches a socket itself.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::version::{WaVersion, NEWEST_WA_VERSION};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoAck {
    None,
    Server,
    Device,
    Read,
}

impl AutoAck {
    pub fn as_ack(self) -> i8 {
        match self {
            AutoAck::None => 0,
            AutoAck::Server => 1,
            AutoAck::Device => 2,
            AutoAck::Read => 3,
        }
    }
}

impl std::str::FromStr for AutoAck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(AutoAck::None),
            "server" => Ok(AutoAck::Server),
            "device" => Ok(AutoAck::Device),
            "read" => Ok(AutoAck::Read),
            other => Err(format!(
                "unknown ack level {other:?} (none, server, device, read)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The WhatsApp Web build modelled, e.g. `2.3000.1049833609` (see `WaVersion::parse`; an
    /// unparsable one is treated as the newest).
    pub wa_version: String,
    /// On builds from 2.3000.1041868611 the page reloads itself this long after a fresh
    /// pairing (OpenWA PR #1181); zero: never.
    pub reload_after_pair: Duration,
    pub qr_first: Duration,
    pub qr_interval: Duration,
    /// QR refs a page shows before it stops and waits for a click (`UNPAIRED_IDLE`); 0: never.
    pub qr_refs: u32,
    pub sync_delay: Duration,
    pub ack_step: Duration,
    pub auto_ack: AutoAck,
}

/// What the server pushes to one page connection.
#[derive(Debug)]
pub enum Out {
    Json(Value),
    /// Close the socket (the "drop the socket" fault, or a replaced connection).
    Close,
}

pub type ConnId = u64;

/// Keys the page generated and keeps in its profile; the QR carries their public halves.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub noise: String,
    pub identity: String,
    pub adv: String,
    pub platform: String,
}

#[derive(Debug)]
pub enum DevState {
    Pending {
        qr_ref: String,
        next_rotation: Instant,
        /// (code, phone) while a pairing-code flow is open.
        code: Option<(String, String)>,
        /// Refs shown since the page last (re)started its QR run.
        refs_shown: u32,
        /// The page stopped rotating (`UNPAIRED_IDLE`): no QR until it asks for one.
        idle: bool,
        /// Times the page asked for a new QR run (`Cmd.refreshQR`).
        refreshes: u32,
    },
    Linked {
        phone: String,
        token: String,
        linked_at: chrono::DateTime<chrono::Utc>,
        /// Incoming messages of the phone with a sequence number at or below this were already
        /// handed to this device.
        delivered_seq: u64,
    },
}

#[derive(Debug)]
pub struct Device {
    pub id: String,
    pub conn: Option<ConnId>,
    pub keys: Keys,
    pub browser: String,
    pub state: DevState,
}

impl Device {
    pub fn qr_payload(&self) -> Option<String> {
        match &self.state {
            DevState::Pending { idle: true, .. } => None,
            DevState::Pending { qr_ref, .. } => Some(format!(
                "{},{},{},{},{}",
                qr_ref, self.keys.noise, self.keys.identity, self.keys.adv, self.keys.platform
            )),
            DevState::Linked { .. } => None,
        }
    }
    pub fn phone(&self) -> Option<&str> {
        match &self.state {
            DevState::Linked { phone, .. } => Some(phone),
            DevState::Pending { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Media {
    pub mime: String,
    pub size: u64,
    pub sha256: String,
    pub filename: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SentMsg {
    pub id: String,
    pub serialized: String,
    pub to: String,
    pub kind: String,
    pub body: Option<String>,
    pub caption: Option<String>,
    pub media: Option<Media>,
    /// On LID builds: the recipient's LID (`<digits>@lid`); `to` stays the phone JID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_lid: Option<String>,
    /// Id of the message this one replies to.
    pub quoted_id: Option<String>,
    /// A `location` message's pin, as the locationMessage protobuf carries it: the page's `lat`,
    /// `lng`, and its `loc` description split into name (first line) and address (the rest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<SentLocation>,
    /// The cards of a `contact` message, as the contactMessage / contactsArrayMessage protobufs
    /// carry them (display name and vCard).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<SentContact>>,
    /// A `poll` (pollCreationMessage: name, option names, selectable count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll: Option<SentPoll>,
    /// The JIDs the text or caption mentions (contextInfo.mentionedJid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mentions: Option<Vec<String>>,
    /// A forwarded copy (WAWebForwardMessagesToChat): contextInfo.isForwarded and
    /// forwardingScore, plus the simulator's own note of the original's serialized key (not on
    /// WhatsApp's wire).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<SentForward>,
    /// A `sticker` message's image size (the server takes 512x512 WebP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticker: Option<super::server::SentSticker>,
    pub ack: i8,
    pub time: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentForward {
    pub score: u32,
    pub from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentLocation {
    pub lat: f64,
    pub lng: f64,
    pub name: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentContact {
    pub display_name: String,
    pub vcard: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentPoll {
    pub name: String,
    pub options: Vec<String>,
    /// 0: any number of options.
    pub selectable: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct InMsg {
    pub seq: u64,
    pub id: String,
    pub from: String,
    /// On LID builds: the sender's LID user (digits); the page addresses the message by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_lid: Option<String>,
    pub body: String,
    /// The page first shows it as an undecrypted `ciphertext` placeholder for this long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext_ms: Option<u64>,
    pub time: chrono::DateTime<chrono::Utc>,
    /// A file the phone sent (issue 13), as the page's message carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<super::media_in::InMedia>,
    /// A typed message's own attributes as the page keeps them (a `location`'s `lat`, `lng`,
    /// `loc`; a `vcard`'s body and name, a `multi_vcard`'s `vcardList`), from the other side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attrs: Option<Value>,
    /// Not a message of its own: the other side's reaction, poll vote, edit or revoke of
    /// `parent_id` (`kind`, `parent_id`, `parent_from_me`, `text` / `options`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addon: Option<Value>,
}

#[derive(Debug, Default)]
pub struct Phone {
    pub pushname: String,
    pub sent: Vec<SentMsg>,
    pub inbox: Vec<InMsg>,
    pub next_seq: u64,
    /// Read receipts this account's pages sent (WAWebChatSeenBridge.sendConversationSeen).
    pub read_marks: Vec<ReadMark>,
    /// Chat states this account's pages sent (WAWebChatStateBridge).
    pub chat_states: Vec<ChatStateMark>,
    /// What the server tells others about this account (contact_info, profile_picture).
    pub profile: PublicProfile,
    /// This account's address book: phone → the name it saved the contact under.
    pub address_book: std::collections::BTreeMap<String, String>,
    /// Reactions this account's pages set or removed (WAWebSendReactionMsgAction), in order.
    pub reactions: Vec<ReactionMark>,
    /// Edits this account's pages sent (WAWebSendMessageEditAction), in order.
    pub edits: Vec<EditMark>,
    /// Messages this account deleted for everyone (WAWebCmd.Cmd.sendRevokeMsgs): bare ids.
    pub revokes: Vec<EditMark>,
}

/// An edit as the server saw it: which of the account's messages (bare id), and its new text.
#[derive(Debug, Clone, Serialize)]
pub struct EditMark {
    pub parent_id: String,
    pub chat: String,
    pub text: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// What WhatsApp's servers tell other accounts about one account: its about text (None: hidden
/// or never set), whether it is a business account, and its profile picture (None: none, or
/// hidden by its privacy settings), as the id of the current picture.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PublicProfile {
    pub about: Option<String>,
    pub business: bool,
    pub picture_id: Option<u64>,
}

/// A reaction as the server saw it: on which message (its bare id, and whether it is one of
/// this account's own), in which chat (phone JID; a LID chat mapped back), and the emoji (`""`
/// removes the reaction).
#[derive(Debug, Clone, Serialize)]
pub struct ReactionMark {
    pub parent_id: String,
    pub parent_from_me: bool,
    pub chat: String,
    pub text: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// A chat this account marked read, as the server saw the receipt.
#[derive(Debug, Clone, Serialize)]
pub struct ReadMark {
    /// The chat's phone JID (`digits@c.us`; a LID chat is mapped back), or a group's JID.
    pub chat: String,
    /// The key of the last received message the receipt covers, as the page sent it.
    pub key: Option<String>,
    /// How many unread messages it cleared.
    pub count: i64,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// A chat state (`typing`, `recording_audio`, `idle`) this account sent to a chat.
#[derive(Debug, Clone, Serialize)]
pub struct ChatStateMark {
    pub chat: String,
    pub state: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug)]
pub struct Upload {
    pub media: Media,
    pub bytes: bytes::Bytes,
}

#[derive(Debug, Clone, Serialize)]
pub struct Faults {
    pub send_delay_ms: u64,
    /// The next N sends of any account are refused.
    pub fail_sends: u32,
    /// The next N sends of one account (by phone) are refused.
    pub fail_sends_by_phone: std::collections::BTreeMap<String, u32>,
    pub auto_ack: AutoAck,
    /// Modules pages loaded from now on register late: `window.require` throws for them until
    /// `late_ms` after load (wa-js PR #3476).
    pub late_modules: Vec<String>,
    pub late_ms: u64,
    /// Only pages whose stored login is this phone's.
    pub late_phone: Option<String>,
    /// Sends are lost on the way to the server: never recorded, never answered (the page's request
    /// is left to time out or die with its document). Tests use it to cut a send off reliably.
    pub lose_sends: bool,
    /// How many sends were lost that way.
    pub lost_sends: u64,
    /// Group creations are answered (and done) only this long after the page asked.
    pub group_delay_ms: u64,
    /// The same for one account's creations (by phone).
    pub group_delay_by_phone: std::collections::BTreeMap<String, u64>,
    /// One account's edits and revokes are done and answered only this long after the page
    /// asked (by phone), and done even if the page is gone by then.
    pub edit_delay_by_phone: std::collections::BTreeMap<String, u64>,
    /// The media server answers every download with 404 while set (issue 13).
    pub media_fail: bool,
    /// The media server answers each download only this long after it was asked.
    pub media_delay_ms: u64,
    /// Downloads the media server was asked for (counted, not a fault: tests read it to see
    /// that a file over a client's cap was never fetched).
    pub media_fetches: u64,
}

impl Faults {
    /// Whether this send of `phone` is refused (and counts it down).
    pub fn take_failure(&mut self, phone: &str) -> bool {
        if let Some(n) = self.fail_sends_by_phone.get_mut(phone) {
            *n -= 1;
            if *n == 0 {
                self.fail_sends_by_phone.remove(phone);
            }
            return true;
        }
        if self.fail_sends > 0 {
            self.fail_sends -= 1;
            return true;
        }
        false
    }
}

pub struct Conn {
    pub tx: mpsc::UnboundedSender<Out>,
    pub device: Option<String>,
}

pub struct World {
    pub config: SimConfig,
    pub version: WaVersion,
    /// LID user → phone, for every LID handed out (LIDs are derived from the phone).
    pub lids: HashMap<String, String>,
    pub next_conn: ConnId,
    pub conns: HashMap<ConnId, Conn>,
    pub devices: HashMap<String, Device>,
    pub phones: HashMap<String, Phone>,
    pub unregistered: HashSet<String>,
    pub uploads: HashMap<String, Upload>,
    /// Incoming media as the media server keeps it, encrypted, by token (src/sim/media_in.rs).
    pub mms: HashMap<String, bytes::Bytes>,
    pub faults: Faults,
    /// Per phone: how often a page resumed a login while another page still held it live (the
    /// older one is told it was replaced). Two runners driving one device shows here.
    pub takeovers: std::collections::BTreeMap<String, u64>,
    /// Groups on the server, by id (`…@g.us`) (issue 14).
    pub groups: std::collections::BTreeMap<String, Group>,
    /// Group creations a page asked for that the server has not finished yet (held by the
    /// `group_delay_ms` fault).
    pub groups_pending: std::collections::BTreeMap<String, u64>,
    /// Edits and revokes a page asked for that the server has not done yet (held by the
    /// `edit_delay_ms` fault), by phone.
    pub edits_pending: std::collections::BTreeMap<String, u64>,
    /// Calls placed through the control API, oldest first (issue 14; sim/server/calls.rs).
    pub calls: Vec<SimCall>,
}

/// A call the other side placed to an account (`POST /_sim/call`): `ringing` until a page of
/// the account rejects it (`rejected`) or it rings out (`missed`). `rejects` counts every reject
/// the server received for it, so a test can see one sent twice.
#[derive(Debug, Clone, Serialize)]
pub struct SimCall {
    pub id: String,
    pub to: String,
    pub from: String,
    pub video: bool,
    pub state: &'static str,
    pub rejects: u32,
    /// Seconds since the epoch.
    pub offered_at: i64,
    pub ended_at: Option<i64>,
    /// How many times it was offered to a connected page (again at each reconnect while ringing).
    pub offers: u32,
}

/// A group as WhatsApp's server keeps it: subject, creator, creation time (seconds) and
/// members by phone with their role (`superadmin` for the creator, `admin`, or none).
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub id: String,
    pub subject: String,
    pub owner: String,
    pub creation: i64,
    pub participants: std::collections::BTreeMap<String, Option<String>>,
    /// The current invite code (chat.whatsapp.com/<code>), 22 letters and digits.
    pub invite_code: String,
}

pub fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill(&mut b[..]);
    hex::encode(b)
}

fn new_ref() -> String {
    use base64::Engine;
    let mut b = [0u8; 18];
    rand::rng().fill(&mut b[..]);
    format!("2@{}", base64::engine::general_purpose::STANDARD.encode(b))
}

/// `+1 (555) 123-4567`, `15551234567` and `15551234567@c.us` all name the same phone.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let raw = raw
        .strip_suffix("@c.us")
        .or_else(|| raw.strip_suffix("@s.whatsapp.net"))
        .unwrap_or(raw);
    let digits: String = raw.chars().filter(|c| c.is_ascii_digit()).collect();
    let only_allowed = raw
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'));
    if !only_allowed || !(5..=20).contains(&digits.len()) {
        return None;
    }
    Some(digits)
}

impl World {
    pub fn new(config: SimConfig) -> Self {
        let auto_ack = config.auto_ack;
        let version = WaVersion::parse(&config.wa_version)
            .unwrap_or_else(|_| WaVersion::parse(NEWEST_WA_VERSION).expect("valid constant"));
        World {
            config,
            version,
            lids: HashMap::new(),
            next_conn: 1,
            conns: HashMap::new(),
            devices: HashMap::new(),
            phones: HashMap::new(),
            unregistered: HashSet::new(),
            uploads: HashMap::new(),
            mms: HashMap::new(),
            takeovers: Default::default(),
            groups: Default::default(),
            groups_pending: Default::default(),
            edits_pending: Default::default(),
            calls: Vec::new(),
            faults: Faults {
                send_delay_ms: 0,
                fail_sends: 0,
                fail_sends_by_phone: Default::default(),
                auto_ack,
                late_modules: Vec::new(),
                late_ms: 0,
                late_phone: None,
                lose_sends: false,
                lost_sends: 0,
                group_delay_ms: 0,
                group_delay_by_phone: Default::default(),
                edit_delay_by_phone: Default::default(),
                media_fail: false,
                media_delay_ms: 0,
                media_fetches: 0,
            },
        }
    }

    /// The LID user (15 digits) of `phone` on LID builds, None before them. Derived from the
    /// phone so every run and every page agrees; remembered for the way back.
    pub fn lid_of(&mut self, phone: &str) -> Option<String> {
        if !self.version.has_lid() {
            return None;
        }
        let lid = lid_user(phone);
        self.lids.insert(lid.clone(), phone.to_string());
        Some(lid)
    }

    pub fn send_to(&self, conn: ConnId, v: Value) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.tx.send(Out::Json(v));
        }
    }

    pub fn send_to_device(&self, device: &str, v: Value) {
        if let Some(conn) = self.devices.get(device).and_then(|d| d.conn) {
            self.send_to(conn, v);
        }
    }

    /// Connections of the linked devices of `phone` (all pages when `phone` is None).
    pub fn conns_of(&self, phone: Option<&str>) -> Vec<ConnId> {
        match phone {
            None => self.conns.keys().copied().collect(),
            Some(p) => self
                .devices
                .values()
                .filter(|d| d.phone() == Some(p))
                .filter_map(|d| d.conn)
                .collect(),
        }
    }

    pub fn is_registered(&self, number: &str) -> bool {
        !self.unregistered.contains(number)
    }

    /// A page without a valid login: a fresh pending device with a new QR ref.
    pub fn add_pending(&mut self, conn: ConnId, keys: Keys, browser: String) -> (String, String) {
        let id = format!("dev-{}", random_token(6));
        let qr_ref = new_ref();
        self.devices.insert(
            id.clone(),
            Device {
                id: id.clone(),
                conn: Some(conn),
                keys,
                browser,
                state: DevState::Pending {
                    qr_ref: qr_ref.clone(),
                    next_rotation: Instant::now() + self.config.qr_first,
                    code: None,
                    refs_shown: 1,
                    idle: false,
                    refreshes: 0,
                },
            },
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.device = Some(id.clone());
        }
        (id, qr_ref)
    }

    /// Replace due QR refs; the page learns each new ref and shows a new QR. After
    /// `qr_refs` refs the page goes idle instead (as WhatsApp Web does: "click to reload").
    pub fn rotate_refs(&mut self, now: Instant) {
        let interval = self.config.qr_interval;
        let max_refs = self.config.qr_refs;
        let mut pushes = Vec::new();
        let mut idles = Vec::new();
        for d in self.devices.values_mut() {
            if let DevState::Pending {
                qr_ref,
                next_rotation,
                code,
                refs_shown,
                idle,
                ..
            } = &mut d.state
            {
                if *idle || *next_rotation > now {
                    continue;
                }
                // A pairing-code flow keeps the page waiting for the code, not idle.
                if max_refs > 0 && *refs_shown >= max_refs && code.is_none() {
                    *idle = true;
                    if let Some(conn) = d.conn {
                        idles.push(conn);
                    }
                    continue;
                }
                *qr_ref = new_ref();
                *refs_shown += 1;
                *next_rotation = now + interval;
                if let Some(conn) = d.conn {
                    pushes.push((conn, qr_ref.clone()));
                }
            }
        }
        for conn in idles {
            self.send_to(conn, json!({"t": "idle"}));
        }
        for (conn, r) in pushes {
            let payload = self
                .conns
                .get(&conn)
                .and_then(|c| c.device.as_ref())
                .and_then(|d| self.devices.get(d))
                .and_then(|d| d.qr_payload());
            let matrix = payload.as_deref().map(qr_matrix).unwrap_or(Value::Null);
            self.send_to(conn, json!({"t": "ref", "ref": r, "qr": matrix}));
        }
    }

    /// Link a pending device to `phone`, as a scan or an entered pairing code does.
    pub fn link(
        &mut self,
        device_id: &str,
        phone: &str,
        name: Option<String>,
    ) -> Result<(), String> {
        let entry = self.phones.entry(phone.to_string()).or_default();
        if let Some(n) = name {
            entry.pushname = n;
        } else if entry.pushname.is_empty() {
            entry.pushname = format!("Sim {phone}");
        }
        let pushname = entry.pushname.clone();
        let current_seq = entry.next_seq;
        let lid = self.lid_of(phone);
        let d = self
            .devices
            .get_mut(device_id)
            .ok_or_else(|| "no such device".to_string())?;
        if !matches!(d.state, DevState::Pending { .. }) {
            return Err("device is already linked".into());
        }
        let token = random_token(24);
        d.state = DevState::Linked {
            phone: phone.to_string(),
            token: token.clone(),
            linked_at: chrono::Utc::now(),
            // Messages that arrived before the link are history, not news, for this device.
            delivered_seq: current_seq,
        };
        // The page counts as connected again once it logs in with the new credentials, which
        // it does only after storing them; until then a killed browser has lost the login.
        let conn = d.conn.take();
        if let Some(conn) = conn {
            self.send_to(
                conn,
                json!({"t": "paired", "phone": phone, "token": token, "pushname": pushname,
                       "device": device_id, "lid": lid}),
            );
        }
        Ok(())
    }

    /// Everything a linked device needs after (re)connecting: who it is and the chat history.
    pub fn history_for(&mut self, device_id: &str) -> Option<Value> {
        let (phone, delivered) = match &self.devices.get(device_id)?.state {
            DevState::Linked {
                phone,
                delivered_seq,
                ..
            } => (phone.clone(), *delivered_seq),
            DevState::Pending { .. } => return None,
        };
        let lid = self.lid_of(&phone);
        let p = self.phones.get(&phone)?;
        let old: Vec<&InMsg> = p.inbox.iter().filter(|m| m.seq <= delivered).collect();
        Some(json!({
            "phone": phone,
            "lid": lid,
            "pushname": p.pushname,
            "sent": p.sent,
            "received": old,
        }))
    }

    /// Incoming messages this device has not seen yet; marks them delivered.
    pub fn take_undelivered(&mut self, device_id: &str) -> Vec<InMsg> {
        let Some(d) = self.devices.get_mut(device_id) else {
            return Vec::new();
        };
        let DevState::Linked {
            phone,
            delivered_seq,
            ..
        } = &mut d.state
        else {
            return Vec::new();
        };
        let Some(p) = self.phones.get(phone.as_str()) else {
            return Vec::new();
        };
        let out: Vec<InMsg> = p
            .inbox
            .iter()
            .filter(|m| m.seq > *delivered_seq)
            .cloned()
            .collect();
        if let Some(last) = out.last() {
            *delivered_seq = last.seq;
        }
        out
    }

    /// Unlink devices of `phone` (one device when given); their pages forget the login.
    pub fn logout(&mut self, phone: &str, device: Option<&str>) -> Vec<String> {
        let ids: Vec<String> = self
            .devices
            .values()
            .filter(|d| d.phone() == Some(phone))
            .filter(|d| match device {
                None => true,
                Some(id) => id == d.id,
            })
            .map(|d| d.id.clone())
            .collect();
        for id in &ids {
            if let Some(d) = self.devices.remove(id) {
                if let Some(conn) = d.conn {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.device = None;
                    }
                    self.send_to(conn, json!({"t": "logged_out"}));
                }
            }
        }
        ids
    }

    pub fn find_device_by_token(&self, token: &str) -> Option<String> {
        self.devices
            .values()
            .find(|d| matches!(&d.state, DevState::Linked { token: t, .. } if t == token))
            .map(|d| d.id.clone())
    }

    pub fn find_sent_mut(&mut self, id: &str) -> Option<(String, &mut SentMsg)> {
        for (phone, p) in self.phones.iter_mut() {
            if let Some(m) = p.sent.iter_mut().find(|m| m.id == id || m.serialized == id) {
                return Some((phone.clone(), m));
            }
        }
        None
    }

    /// Set an ack and tell every page of the sending account.
    pub fn set_ack(&mut self, id: &str, ack: i8) -> Result<(), String> {
        let (phone, serialized) = {
            let (phone, m) = self
                .find_sent_mut(id)
                .ok_or_else(|| format!("no message with id {id:?}"))?;
            m.ack = ack;
            (phone, m.serialized.clone())
        };
        for conn in self.conns_of(Some(&phone)) {
            self.send_to(conn, json!({"t": "ack", "id": serialized, "ack": ack}));
        }
        Ok(())
    }

    pub fn add_incoming(
        &mut self,
        to: &str,
        from: &str,
        body: String,
        ciphertext_ms: Option<u64>,
        time: chrono::DateTime<chrono::Utc>,
    ) -> InMsg {
        let from_lid = self.lid_of(from);
        let p = self.phones.entry(to.to_string()).or_default();
        p.next_seq += 1;
        let msg = InMsg {
            seq: p.next_seq,
            id: format!("3A{}", random_token(9).to_uppercase()),
            from: from.to_string(),
            from_lid,
            body,
            ciphertext_ms,
            time,
            media: None,
            attrs: None,
            addon: None,
        };
        p.inbox.push(msg.clone());
        msg
    }

    pub fn devices_json(&self) -> Value {
        let mut list: Vec<Value> = self
            .devices
            .values()
            .map(|d| match &d.state {
                DevState::Pending {
                    code,
                    idle,
                    refreshes,
                    ..
                } => json!({
                    "id": d.id,
                    "state": "pending",
                    "connected": d.conn.is_some(),
                    "browser": d.browser,
                    "qr": d.qr_payload(),
                    "qr_idle": idle,
                    "qr_refreshes": refreshes,
                    "pairing_code": code.as_ref().map(|c| &c.0),
                    "pairing_phone": code.as_ref().map(|c| &c.1),
                }),
                DevState::Linked {
                    phone, linked_at, ..
                } => json!({
                    "id": d.id,
                    "state": "linked",
                    "connected": d.conn.is_some(),
                    "browser": d.browser,
                    "phone": phone,
                    "linked_at": linked_at,
                    "qr": null,
                }),
            })
            .collect();
        list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        json!({ "devices": list })
    }
}

/// The sim's LID for a phone: 15 digits from a hash of the number (real LIDs are opaque,
/// unrelated to the number, and about that long: wa-js#3358 "1378…@lid").
pub fn lid_user(phone: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("wa-outbox-sim lid {phone}").as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&h[..8]);
    let n = u64::from_be_bytes(n);
    (100_000_000_000_000 + n % 900_000_000_000_000).to_string()
}

/// The QR modules of `payload` for the page's canvas: width and one '1'/'0' per module, row by
/// row. Rendering here keeps the page free of a QR encoder.
pub fn qr_matrix(payload: &str) -> Value {
    match qrcode::QrCode::with_error_correction_level(payload.as_bytes(), qrcode::EcLevel::L) {
        Ok(code) => {
            let bits: String = code
                .to_colors()
                .iter()
                .map(|c| if *c == qrcode::Color::Dark { '1' } else { '0' })
                .collect();
            json!({"width": code.width(), "bits": bits})
        }
        Err(_) => Value::Null,
    }
}

/// A pairing code as WhatsApp shows it: 8 characters from an alphabet without look-alikes.
pub fn new_pairing_code() -> String {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTVWXYZ";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalize() {
        assert_eq!(
            normalize_phone("+1 (555) 123-4567").as_deref(),
            Some("15551234567")
        );
        assert_eq!(
            normalize_phone("15551234567@c.us").as_deref(),
            Some("15551234567")
        );
        assert_eq!(normalize_phone("abc"), None);
        assert_eq!(normalize_phone("12"), None);
    }

    #[test]
    fn lids_are_fifteen_stable_digits() {
        let a = lid_user("15551234567");
        assert_eq!(a.len(), 15);
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(a, lid_user("15551234567"));
        assert_ne!(a, lid_user("15551234568"));
    }

    #[test]
    fn pairing_codes_have_eight_chars() {
        let c = new_pairing_code();
        assert_eq!(c.len(), 8);
        assert!(c.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
