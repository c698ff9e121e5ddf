//! HTTP side of the simulator: the app page, the page's WebSocket and the `/_sim/` control API.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;
use tokio::sync::mpsc;

use super::world::{
    new_pairing_code, normalize_phone, qr_matrix, random_token, AutoAck, Conn, ConnId, DevState,
    Keys, Media, Out, SentContact, SentForward, SentLocation, SentMsg, SentPoll, SimConfig, Upload,
    World,
};
use crate::driver::MAX_BODY_CHARS;

mod calls;
mod other_side;
mod sticker;

pub use sticker::SentSticker;

const APP_HTML: &str = include_str!("app.html");
/// The page's side of calls and group notifications (issue 14), spliced into the app's script.
const APP_CALLS_JS: &str = include_str!("app_calls.js");
/// Large enough for WhatsApp's 100 MB media limit sent as base64 over the socket.
const MAX_WS_MESSAGE: usize = 160 << 20;

#[derive(Clone)]
pub struct SimState {
    world: Arc<Mutex<World>>,
    /// The address pages use to reach us; None: derive it from the request's Host.
    public_url: Option<String>,
    local: Option<SocketAddr>,
}

impl SimState {
    pub fn new(config: SimConfig, public_url: Option<String>, local: Option<SocketAddr>) -> Self {
        SimState {
            world: Arc::new(Mutex::new(World::new(config))),
            public_url,
            local,
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock must not take the whole simulator down with it.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rotates QR refs on time; one ticker for all pending devices.
    pub fn spawn_ticker(&self) -> tokio::task::JoinHandle<()> {
        let st = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                st.world().rotate_refs(Instant::now());
            }
        })
    }

    fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.public_url {
            return u.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.len() < 256
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            });
        match (host, self.local) {
            (Some(h), _) => format!("http://{h}"),
            (None, Some(a)) => format!("http://{a}"),
            (None, None) => "http://127.0.0.1".to_string(),
        }
    }
}

pub fn router(state: SimState) -> Router {
    Router::new()
        .route("/", get(app_page))
        .route("/_sim/ws", get(ws_upgrade))
        .route("/_sim/devices", get(devices))
        .route("/_sim/scan", post(scan))
        .route("/_sim/pair", post(pair))
        .route("/_sim/logout", post(logout))
        .route(
            "/_sim/incoming",
            // A file travels as base64 in the JSON body (src/sim/media_in.rs).
            post(incoming).layer(axum::extract::DefaultBodyLimit::max(
                super::media_in::MAX_INCOMING_MEDIA / 3 * 4 + (1 << 20),
            )),
        )
        .route("/_sim/messages", get(messages))
        .route("/_sim/chat_state", get(chat_state))
        .route("/_sim/profile", post(profile))
        .route("/_sim/ack", post(ack))
        .route("/_sim/unregistered", post(unregistered))
        .route("/_sim/faults", get(get_faults).post(faults))
        .route("/_sim/groups", get(groups))
        .route("/_sim/reload", post(reload))
        .route("/_sim/state", post(set_state))
        .route("/_sim/media/{id}", get(media))
        // The other side's calls and group changes (issue 14).
        .route("/_sim/call", post(calls::place))
        .route("/_sim/calls", get(calls::list))
        .route("/_sim/group_update", post(calls::group_update))
        .route("/mms/{kind}/{file}", get(mms))
        // The other side of a chat (issue 13).
        .route("/_sim/react", post(other_side::react))
        .route("/_sim/vote", post(other_side::vote))
        .route("/_sim/edit", post(other_side::edit))
        .route("/_sim/revoke", post(other_side::revoke))
        .route("/_sim/location", post(other_side::location))
        .route("/_sim/contact", post(other_side::contact))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::cors::CorsLayer::permissive())
        .with_state(state)
}

// ---------------------------------------------------------------- errors and bodies

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found_err(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

/// Parses a JSON body ourselves so that every malformed request gets a JSON error.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    if body.is_empty() {
        return Err(bad("request body must be a JSON object"));
    }
    serde_json::from_slice(&body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

fn phone_arg(field: &str, raw: &str) -> Result<String, ApiError> {
    normalize_phone(raw).ok_or_else(|| bad(format!("{field}: not a phone number: {raw:?}")))
}

async fn not_found() -> ApiError {
    not_found_err("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed here".into(),
    )
}

type ApiResult = Result<Json<Value>, ApiError>;

// ---------------------------------------------------------------- the page

async fn app_page(State(st): State<SimState>, headers: HeaderMap) -> Response {
    let base = st.base_url(&headers);
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}/_sim/ws")
    } else {
        format!("ws://{}/_sim/ws", base.trim_start_matches("http://"))
    };
    let config = {
        let w = st.world();
        // The page reads its build (and the builds' faults) from here: see `since()` in app.html.
        let late = (!w.faults.late_modules.is_empty()).then(|| {
            json!({"modules": w.faults.late_modules, "ms": w.faults.late_ms,
                   "phone": w.faults.late_phone})
        });
        json!({
            "base": base,
            "ws": ws,
            "version": w.version.text,
            "reload_after_pair_ms": w.config.reload_after_pair.as_millis() as u64,
            "late": late,
        })
    };
    // JSON inside a <script> element: `<` must not open a tag.
    let config = config.to_string().replace('<', "\\u003c");
    let html = APP_HTML
        .replace("\"__SIM_CONFIG__\"", &config)
        .replace("/*__SIM_CALLS__*/", APP_CALLS_JS);
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

async fn ws_upgrade(State(st): State<SimState>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| page_socket(st, socket))
}

async fn page_socket(st: SimState, socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let conn = {
        let mut w = st.world();
        let id = w.next_conn;
        w.next_conn += 1;
        w.conns.insert(
            id,
            Conn {
                tx: tx.clone(),
                device: None,
            },
        );
        id
    };
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Json(v)) => {
                    if sink.send(Message::Text(v.to_string().into())).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close) | None => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            },
            inc = stream.next() => match inc {
                Some(Ok(Message::Text(t))) => page_message(&st, conn, t.as_str()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let mut w = st.world();
    w.conns.remove(&conn);
    let mut gone = Vec::new();
    for d in w.devices.values_mut() {
        if d.conn == Some(conn) {
            d.conn = None;
            if matches!(d.state, DevState::Pending { .. }) {
                gone.push(d.id.clone());
            }
        }
    }
    // A QR nobody shows any more cannot be scanned.
    for id in gone {
        w.devices.remove(&id);
    }
}

#[derive(Deserialize)]
struct PageKeys {
    noise: String,
    identity: String,
    adv: String,
    platform: String,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(|x| x.as_str()).map(str::to_string)
}

fn reply(w: &World, conn: ConnId, req: &Value, body: Value) {
    let mut body = body;
    body["t"] = json!("reply");
    body["req"] = req.clone();
    w.send_to(conn, body);
}

/// One message from a page. Malformed messages get an error reply, never a panic.
fn page_message(st: &SimState, conn: ConnId, text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        st.world()
            .send_to(conn, json!({"t": "error", "error": "malformed message"}));
        return;
    };
    let req = v.get("req").cloned().unwrap_or(Value::Null);
    match v.get("t").and_then(|t| t.as_str()).unwrap_or("") {
        "hello" => hello(st, conn, &v),
        "refresh_qr" => {
            let mut w = st.world();
            let dev = w.conns.get(&conn).and_then(|c| c.device.clone());
            if let Some(d) = dev.and_then(|d| w.devices.get_mut(&d)) {
                if let DevState::Pending {
                    next_rotation,
                    refs_shown,
                    idle,
                    refreshes,
                    ..
                } = &mut d.state
                {
                    // A new run of refs, starting now.
                    *next_rotation = Instant::now();
                    *refs_shown = 0;
                    *idle = false;
                    *refreshes += 1;
                }
            }
            w.rotate_refs(Instant::now());
        }
        "pair_code" => {
            let mut w = st.world();
            let phone = s(&v, "phone").as_deref().and_then(normalize_phone);
            let dev = w.conns.get(&conn).and_then(|c| c.device.clone());
            let result = match (phone, dev.and_then(|d| w.devices.get_mut(&d))) {
                (None, _) => Err("invalid phone number"),
                (_, None) => Err("not waiting for a login"),
                (Some(p), Some(d)) => match &mut d.state {
                    DevState::Pending { code, .. } => {
                        let c = new_pairing_code();
                        *code = Some((c.clone(), p));
                        Ok(c)
                    }
                    DevState::Linked { .. } => Err("already logged in"),
                },
            };
            match result {
                Ok(c) => reply(&w, conn, &req, json!({"ok": true, "code": c})),
                Err(e) => reply(&w, conn, &req, json!({"error": e})),
            }
        }
        "send" => send(st, conn, &v),
        "upload" => upload(st, conn, &v),
        "seen" | "chatstate" => chat_mark(st, conn, &v),
        "contact" | "about" | "picture" => profile_query(st, conn, &v),
        "react" => react(st, conn, &v),
        "edit" | "revoke" => edit(st, conn, &v),
        "group_create" => group_create(st, conn, &v),
        "group_query" | "group_all" => group_query(st, conn, &v),
        "group_invite" | "group_leave" => group_member_op(st, conn, &v),
        "group_participants" => group_participants(st, conn, &v),
        "call_reject" => calls::page_reject(st, conn, &v),
        "exists" => {
            let mut w = st.world();
            let user = s(&v, "user").as_deref().and_then(normalize_phone);
            let exists = user.as_deref().is_some_and(|u| w.is_registered(u));
            // LID builds answer with the LID too (USYNC in LID addressing mode).
            let lid = match (&user, exists) {
                (Some(u), true) => w.lid_of(u),
                _ => None,
            };
            reply(
                &w,
                conn,
                &req,
                json!({"ok": true, "exists": exists, "user": user, "lid": lid}),
            );
        }
        "fetch" => {
            let w = st.world();
            let ids: Vec<String> = v
                .get("ids")
                .and_then(|x| x.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let phone = w
                .conns
                .get(&conn)
                .and_then(|c| c.device.as_ref())
                .and_then(|d| w.devices.get(d))
                .and_then(|d| d.phone().map(str::to_string));
            let found: Vec<&SentMsg> = phone
                .and_then(|p| w.phones.get(&p))
                .map(|p| {
                    p.sent
                        .iter()
                        .filter(|m| ids.iter().any(|i| *i == m.id || *i == m.serialized))
                        .collect()
                })
                .unwrap_or_default();
            reply(&w, conn, &req, json!({"ok": true, "sent": found}));
        }
        "logout" => {
            let mut w = st.world();
            let dev = w.conns.get(&conn).and_then(|c| c.device.clone());
            let phone = dev
                .as_ref()
                .and_then(|d| w.devices.get(d))
                .and_then(|d| d.phone().map(str::to_string));
            match (phone, dev) {
                (Some(p), Some(d)) => {
                    w.logout(&p, Some(&d));
                }
                _ => w.send_to(conn, json!({"t": "logged_out"})),
            }
        }
        other => {
            let w = st.world();
            reply(
                &w,
                conn,
                &req,
                json!({"error": format!("unknown message type {other:?}")}),
            );
        }
    }
}

fn hello(st: &SimState, conn: ConnId, v: &Value) {
    let keys: Option<PageKeys> = v
        .get("keys")
        .cloned()
        .and_then(|k| serde_json::from_value(k).ok());
    let Some(keys) = keys else {
        st.world()
            .send_to(conn, json!({"t": "error", "error": "hello without keys"}));
        return;
    };
    let keys = Keys {
        noise: keys.noise,
        identity: keys.identity,
        adv: keys.adv,
        platform: keys.platform,
    };
    let browser = s(v, "browser").unwrap_or_else(|| "Chrome".into());
    let token = s(v, "token");
    let mut w = st.world();
    if let Some(token) = token {
        if let Some(dev) = w.find_device_by_token(&token) {
            // One page per login, as on WhatsApp: the older page is told it was replaced.
            let old = w.devices.get(&dev).and_then(|d| d.conn);
            if let Some(old) = old.filter(|o| *o != conn) {
                let phone = w
                    .devices
                    .get(&dev)
                    .and_then(|d| d.phone())
                    .map(str::to_string);
                *w.takeovers.entry(phone.unwrap_or_default()).or_default() += 1;
                w.send_to(old, json!({"t": "replaced"}));
                if let Some(c) = w.conns.get_mut(&old) {
                    c.device = None;
                }
            }
            if let Some(d) = w.devices.get_mut(&dev) {
                d.conn = Some(conn);
            }
            if let Some(c) = w.conns.get_mut(&conn) {
                c.device = Some(dev.clone());
            }
            tracing::info!(device = %dev, "page resumed a stored login");
            let history = w.history_for(&dev).unwrap_or(Value::Null);
            w.send_to(
                conn,
                json!({"t": "linked", "device": dev, "history": history}),
            );
            drop(w);
            spawn_sync(st.clone(), conn, dev);
            return;
        }
        tracing::info!("page offered a login the phone no longer knows");
        w.send_to(conn, json!({"t": "login_invalid"}));
    }
    let (dev, qr_ref) = w.add_pending(conn, keys, browser);
    tracing::info!(device = %dev, "page waits for a login (QR shown)");
    let matrix = w
        .devices
        .get(&dev)
        .and_then(|d| d.qr_payload())
        .map(|p| qr_matrix(&p))
        .unwrap_or(Value::Null);
    w.send_to(
        conn,
        json!({"t": "unpaired", "device": dev, "ref": qr_ref, "qr": matrix}),
    );
}

/// After the sync delay: the messages that reached the account while no page of it was connected
/// (WhatsApp's offline queue, delivered as one batch that ends the offline resume), then
/// `hasSynced`. See docs/sim-surface.md "Offline messages" for how the page surfaces them.
fn spawn_sync(st: SimState, conn: ConnId, dev: String) {
    let delay = st.world().config.sync_delay;
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut w = st.world();
        if w.devices.get(&dev).and_then(|d| d.conn) != Some(conn) {
            return;
        }
        deliver_offline(&mut w, &dev);
        calls::offer_ringing(&mut w, &dev);
        w.send_to(conn, json!({"t": "synced"}));
    });
}

fn phone_of(w: &World, dev: &str) -> Option<String> {
    w.devices
        .get(dev)
        .and_then(|d| d.phone().map(str::to_string))
}

/// Live delivery to a connected page: each message announced as new.
fn deliver_incoming(w: &mut World, dev: &str) {
    let me = phone_of(w, dev);
    for m in w.take_undelivered(dev) {
        w.send_to_device(dev, json!({"t": "incoming", "msg": m, "to": me}));
    }
}

/// The offline queue at (re)connect: always sent (possibly empty), since it also tells the page
/// that the offline delivery is complete.
fn deliver_offline(w: &mut World, dev: &str) {
    let me = phone_of(w, dev);
    let msgs = w.take_undelivered(dev);
    w.send_to_device(dev, json!({"t": "offline", "msgs": msgs, "to": me}));
}

/// A read receipt or a chat state from a page, recorded on its account for `GET /_sim/chat_state`.
/// A reaction from a page (WAWebSendReactionMsgAction.sendReactionToMsg): recorded on the
/// account, as the phone on the other side would show it. A reaction names a message by its key;
/// the emoji is at most a few characters (`""` removes it).
fn react(st: &SimState, conn: ConnId, v: &Value) {
    let req = v.get("req").cloned().unwrap_or(Value::Null);
    let mut w = st.world();
    let Some(phone) = linked_phone(&w, conn) else {
        reply(&w, conn, &req, json!({"error": "not logged in"}));
        return;
    };
    let (Some(parent_id), Some(raw), Some(text)) = (s(v, "parent_id"), s(v, "chat"), s(v, "text"))
    else {
        reply(
            &w,
            conn,
            &req,
            json!({"error": "a reaction needs parent_id, chat and text"}),
        );
        return;
    };
    if parent_id.is_empty() || text.chars().count() > 32 {
        reply(&w, conn, &req, json!({"error": "bad reaction"}));
        return;
    }
    let chat = match raw.strip_suffix("@lid").map(|l| w.lids.get(l).cloned()) {
        Some(Some(p)) => format!("{p}@c.us"),
        _ => raw,
    };
    let now = chrono::Utc::now();
    w.phones
        .entry(phone)
        .or_default()
        .reactions
        .push(crate::sim::world::ReactionMark {
            parent_id,
            parent_from_me: v.get("from_me").and_then(Value::as_bool).unwrap_or(false),
            chat,
            text,
            time: now,
        });
    reply(&w, conn, &req, json!({"ok": true, "t": now.timestamp()}));
}

/// An edit from a page (WAWebSendMessageEditAction.sendMessageEdit): only of a message this
/// account sent, within WhatsApp's 15 minutes, as the server enforces it. With the
/// `edit_delay_ms` fault the edit (or revoke) is done and answered only after the delay, and is
/// done even if the asking page is gone by then (the server had the request).
fn edit(st: &SimState, conn: ConnId, v: &Value) {
    let req = v.get("req").cloned().unwrap_or(Value::Null);
    let mut w = st.world();
    let Some(phone) = linked_phone(&w, conn) else {
        reply(&w, conn, &req, json!({"error": "not logged in"}));
        return;
    };
    let revoke = v.get("t").and_then(Value::as_str) == Some("revoke");
    let text = if revoke {
        Some(String::new())
    } else {
        s(v, "text")
    };
    let (Some(parent_id), Some(text)) = (s(v, "parent_id"), text) else {
        reply(
            &w,
            conn,
            &req,
            json!({"error": "an edit needs parent_id and text"}),
        );
        return;
    };
    let now = chrono::Utc::now();
    let Some(orig) = w
        .phones
        .get(&phone)
        .and_then(|p| p.sent.iter().find(|m| m.id == parent_id))
    else {
        reply(&w, conn, &req, json!({"error": "no such message of yours"}));
        return;
    };
    if !revoke && ((now - orig.time).num_seconds() > 15 * 60 || text.trim().is_empty()) {
        reply(&w, conn, &req, json!({"error": "edit refused"}));
        return;
    }
    let mark = crate::sim::world::EditMark {
        parent_id,
        chat: orig.to.clone(),
        text,
        time: now,
    };
    let delay = Duration::from_millis(
        w.faults
            .edit_delay_by_phone
            .get(&phone)
            .copied()
            .unwrap_or(0),
    );
    let who = phone.clone();
    let done = move |w: &mut crate::sim::world::World| {
        let p = w.phones.entry(who).or_default();
        if revoke {
            p.revokes.push(mark);
        } else {
            p.edits.push(mark);
        }
        reply(w, conn, &req, json!({"ok": true, "t": now.timestamp()}));
    };
    if delay.is_zero() {
        done(&mut w);
        return;
    }
    *w.edits_pending.entry(phone.clone()).or_default() += 1;
    drop(w);
    let st = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut w = st.world();
        if let Some(n) = w.edits_pending.get_mut(&phone) {
            *n = n.saturating_sub(1);
        }
        done(&mut w);
    });
}

fn chat_mark(st: &SimState, conn: ConnId, v: &Value) {
    let req = v.get("req").cloned().unwrap_or(Value::Null);
    let mut w = st.world();
    let Some(phone) = linked_phone(&w, conn) else {
        reply(&w, conn, &req, json!({"error": "not logged in"}));
        return;
    };
    let raw = s(v, "chat").or_else(|| s(v, "to")).unwrap_or_default();
    // A LID chat is reported by the phone JID it stands for, as sent messages are.
    let chat = match raw.strip_suffix("@lid").map(|l| w.lids.get(l).cloned()) {
        Some(Some(p)) => format!("{p}@c.us"),
        _ => raw.clone(),
    };
    if !(chat.ends_with("@c.us") || chat.ends_with("@g.us")) {
        reply(&w, conn, &req, json!({"error": "bad chat"}));
        return;
    }
    let now = chrono::Utc::now();
    let p = w.phones.entry(phone).or_default();
    if v.get("t").and_then(|t| t.as_str()) == Some("seen") {
        p.read_marks.push(crate::sim::world::ReadMark {
            chat,
            key: s(v, "key"),
            count: v.get("count").and_then(|c| c.as_i64()).unwrap_or(0),
            time: now,
        });
    } else {
        let state = s(v, "state").unwrap_or_default();
        if !["typing", "recording_audio", "idle"].contains(&state.as_str()) {
            reply(&w, conn, &req, json!({"error": "bad chat state"}));
            return;
        }
        p.chat_states.push(crate::sim::world::ChatStateMark {
            chat,
            state,
            time: now,
        });
    }
    reply(&w, conn, &req, json!({"ok": true}));
}

// ---------------------------------------------------------------- groups (issue 14)

/// A participant as a page names it (`user` + `server`, `c.us` or `lid`) → phone.
fn participant_phone(w: &World, v: &Value) -> Option<String> {
    let user = s(v, "user")?;
    match s(v, "server").as_deref() {
        Some("lid") => w.lids.get(&user).cloned(),
        Some("c.us") | Some("s.whatsapp.net") => normalize_phone(&user),
        _ => None,
    }
}

fn group_json(g: &crate::sim::world::Group) -> Value {
    json!({
        "id": g.id, "subject": g.subject, "owner": format!("{}@c.us", g.owner),
        "creation": g.creation,
        "participants": g.participants.iter().map(|(p, role)| json!({
            "id": format!("{p}@c.us"), "admin": role,
        })).collect::<Vec<_>>(),
    })
}

/// WAWebGroupCreateJob.createGroup: the server makes the group with the asker as superadmin and
/// every registered participant in it; one not on WhatsApp comes back with code "404". With the
/// `group_delay_ms` fault the group is made and answered only after the delay, and is made even
/// if the asking page is gone by then (the server had the request).
fn group_create(st: &SimState, conn: ConnId, v: &Value) {
    let req = v.get("req").cloned().unwrap_or(Value::Null);
    let mut w = st.world();
    let Some(me) = linked_phone(&w, conn) else {
        reply(&w, conn, &req, json!({"error": "not logged in"}));
        return;
    };
    let subject = s(v, "subject").unwrap_or_default();
    if subject.trim().is_empty() || subject.chars().count() > 100 {
        reply(
            &w,
            conn,
            &req,
            json!({"error": "bad subject", "status": 406}),
        );
        return;
    }
    let mut members = std::collections::BTreeMap::new();
    members.insert(me.clone(), Some("superadmin".to_string()));
    let mut results = Vec::new();
    for p in v
        .get("participants")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let user = s(p, "user").unwrap_or_default();
        let server = s(p, "server").unwrap_or_default();
        let code = match participant_phone(&w, p) {
            Some(phone) if w.is_registered(&phone) => {
                members.entry(phone).or_insert(None);
                "200"
            }
            _ => "404",
        };
        results.push(json!({"user": user, "server": server, "code": code}));
    }
    let id = loop {
        let mut b = [0u8; 8];
        rand::Rng::fill(&mut rand::rng(), &mut b[..]);
        let id = format!(
            "120363{:012}@g.us",
            u64::from_le_bytes(b) % 1_000_000_000_000
        );
        if !w.groups.contains_key(&id) {
            break id;
        }
    };
    let group = crate::sim::world::Group {
        id: id.clone(),
        subject,
        owner: me,
        creation: 0,
        participants: members,
        invite_code: {
            use rand::distr::{Alphanumeric, SampleString};
            Alphanumeric.sample_string(&mut rand::rng(), 22)
        },
    };
    let delay = Duration::from_millis(
        w.faults
            .group_delay_by_phone
            .get(&group.owner)
            .copied()
            .unwrap_or(w.faults.group_delay_ms),
    );
    *w.groups_pending.entry(group.owner.clone()).or_default() += 1;
    drop(w);
    let st = st.clone();
    tokio::spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut w = st.world();
        let mut group = group;
        group.creation = chrono::Utc::now().timestamp();
        if let Some(n) = w.groups_pending.get_mut(&group.owner) {
            *n = n.saturating_sub(1);
        }
        w.groups.insert(id.clone(), group);
        reply(
            &w,
            conn,
            &req,
            json!({"ok": true, "gid": id, "participants": results}),
        );
    });
}

/// WAWebGroupQueryJob: `group_query` (queryAndUpdateGroupMetadataById) answers one group the
/// asker is in (else status 404); `group_all` (queryAllGroups) every group the asker is in.
fn group_query(st: &SimState, conn: ConnId, v: &Value) {
    let req = v.get("req").cloned().unwrap_or(Value::Null);
    let w = st.world();
    let Some(me) = linked_phone(&w, conn) else {
        reply(&w, conn, &req, json!({"error": "not logged in"}));
        return;
    };
    if s(v, "t").as_deref() == Some("group_all") {
        let groups: Vec<Value> = w
            .groups
            .values()
            .filter(|g| g.participants.contains_key(&me))
            .map(group_json)
            .collect();
        reply(&w, conn, &req, json!({"ok": true, "groups": groups}));
        return;
    }
    let id = s(v, "id").unwrap_or_default();
    match w
        .groups
        .get(&id)
        .filter(|g| g.participants.contains_key(&me))
    {
        Some(g) => reply(&w, conn, &req, json!({"ok": true, "group": group_json(g)})),
        None => reply(
            &w,
            conn,
            &req,
            json!({"error": "item-not-found", "status": 404}),
        ),
    }
}

/// `group_invite` (WAWebGroupInviteJob.queryGroupInviteCode): the code, for an admin only (else
/// not-authorized, 401). `group_leave` (WAWebExitGroupAction.sendExitGroup): the asker leaves;
/// a group it is not in is item-not-found (404).
fn group_member_op(st: &SimState, conn: ConnId, v: &Value) {
    let req = v.get("req").cloned().unwrap_or(Value::Null);
    let mut w = st.world();
    let Some(me) = linked_phone(&w, conn) else {
        reply(&w, conn, &req, json!({"error": "not logged in"}));
        return;
    };
    let id = s(v, "id").unwrap_or_default();
    let leave = s(v, "t").as_deref() == Some("group_leave");
    let Some(g) = w
        .groups
        .get_mut(&id)
        .filter(|g| g.participants.contains_key(&me))
    else {
        reply(
            &w,
            conn,
            &req,
            json!({"error": "item-not-found", "status": 404}),
        );
        return;
    };
    if leave {
        g.participants.remove(&me);
        reply(&w, conn, &req, json!({"ok": true}));
        return;
    }
    if g.participants.get(&me).cloned().flatten().is_none() {
        reply(
            &w,
            conn,
            &req,
            json!({"error": "not-authorized", "status": 401}),
        );
        return;
    }
    let code = g.invite_code.clone();
    reply(&w, conn, &req, json!({"ok": true, "code": code}));
}

/// `group_participants` (WAWebGroupModifyParticipantsJob's add / remove / promote / demote, which
/// WAWebModifyParticipantsGroupAction calls for one chat): only an admin of the group may (else
/// not-authorized, 401); a group the asker is not in is item-not-found (404). Each participant
/// answers a code: "200" done; add: "404" not on WhatsApp, "409" already in the group; remove,
/// promote, demote: "404" not in the group. The group as it now stands comes back with it.
fn group_participants(st: &SimState, conn: ConnId, v: &Value) {
    let req = v.get("req").cloned().unwrap_or(Value::Null);
    let mut w = st.world();
    let Some(me) = linked_phone(&w, conn) else {
        reply(&w, conn, &req, json!({"error": "not logged in"}));
        return;
    };
    let id = s(v, "id").unwrap_or_default();
    let action = s(v, "action").unwrap_or_default();
    let phones: Vec<(Value, Option<String>)> = v
        .get("participants")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| (p.clone(), participant_phone(&w, p)))
        .collect();
    let registered: Vec<bool> = phones
        .iter()
        .map(|(_, ph)| ph.as_deref().is_some_and(|p| w.is_registered(p)))
        .collect();
    let Some(g) = w
        .groups
        .get_mut(&id)
        .filter(|g| g.participants.contains_key(&me))
    else {
        reply(
            &w,
            conn,
            &req,
            json!({"error": "item-not-found", "status": 404}),
        );
        return;
    };
    if g.participants.get(&me).cloned().flatten().is_none() {
        reply(
            &w,
            conn,
            &req,
            json!({"error": "not-authorized", "status": 401}),
        );
        return;
    }
    let mut results = Vec::new();
    for ((p, phone), reg) in phones.iter().zip(registered) {
        let code = match (action.as_str(), phone) {
            ("add", Some(ph)) if reg => {
                if g.participants.contains_key(ph) {
                    "409"
                } else {
                    g.participants.insert(ph.clone(), None);
                    "200"
                }
            }
            ("add", _) => "404",
            ("remove", Some(ph)) if g.participants.remove(ph).is_some() => "200",
            ("promote", Some(ph)) if g.participants.contains_key(ph) => {
                if g.participants.get(ph).cloned().flatten().is_none() {
                    g.participants.insert(ph.clone(), Some("admin".to_string()));
                }
                "200"
            }
            ("demote", Some(ph)) if g.participants.contains_key(ph) => {
                g.participants.insert(ph.clone(), None);
                "200"
            }
            _ => "404",
        };
        results.push(json!({"user": s(p, "user"), "server": s(p, "server"), "code": code}));
    }
    let group = group_json(g);
    reply(
        &w,
        conn,
        &req,
        json!({"ok": true, "participants": results, "group": group}),
    );
}

/// The groups `phone` is in, as the server holds them, and how many creations are still held.
async fn groups(
    State(st): State<SimState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> ApiResult {
    let phone = phone_query(&q)?;
    let w = st.world();
    let groups: Vec<Value> = w
        .groups
        .values()
        .filter(|g| g.participants.contains_key(&phone))
        .map(|g| {
            let mut j = group_json(g);
            j["invite_code"] = json!(g.invite_code);
            j
        })
        .collect();
    Ok(Json(json!({"phone": phone, "groups": groups,
               "pending": w.groups_pending.get(&phone).copied().unwrap_or(0)})))
}

// ---------------------------------------------------------------- contacts and pictures (issue 14)

/// How long a profile picture URL the server hands out stays valid (its `oe` parameter); the
/// real CDN's signatures expire after days (wppconnect#852, #1315).
const PICTURE_URL_TTL: chrono::Duration = chrono::Duration::days(3);

/// A page asks about another account: `contact` (pushname, business, the asker's address-book
/// name), `about` (WAWebContactStatusBridge.getStatus) or `picture`
/// (WAWebContactProfilePicThumbBridge.requestProfilePicFromServer). `user` with `server` `c.us`
/// or `lid`; an account not on WhatsApp answers `exists: false` (a picture: `status: 404`).
fn profile_query(st: &SimState, conn: ConnId, v: &Value) {
    let req = v.get("req").cloned().unwrap_or(Value::Null);
    let w = st.world();
    let Some(me) = linked_phone(&w, conn) else {
        reply(&w, conn, &req, json!({"error": "not logged in"}));
        return;
    };
    let user = s(v, "user").unwrap_or_default();
    let phone = match s(v, "server").as_deref() {
        Some("lid") => w.lids.get(&user).cloned(),
        Some("c.us") => normalize_phone(&user),
        _ => None,
    };
    let Some(phone) = phone.filter(|p| w.is_registered(p)) else {
        reply(
            &w,
            conn,
            &req,
            json!({"ok": true, "exists": false, "status": 404}),
        );
        return;
    };
    let p = w.phones.get(&phone);
    let profile = p.map(|p| p.profile.clone()).unwrap_or_default();
    let body = match s(v, "t").as_deref() {
        Some("contact") => {
            let name = w
                .phones
                .get(&me)
                .and_then(|m| m.address_book.get(&phone).cloned());
            let pushname = p.map(|p| p.pushname.clone()).filter(|n| !n.is_empty());
            json!({"ok": true, "exists": true, "user": phone, "pushname": pushname,
                   "business": profile.business, "name": name, "my_contact": name.is_some()})
        }
        Some("about") => json!({"ok": true, "exists": true, "status": profile.about}),
        _ => match profile.picture_id {
            Some(id) => {
                let oe = (chrono::Utc::now() + PICTURE_URL_TTL).timestamp();
                json!({"ok": true, "exists": true, "id": id,
                       "path": format!("/_sim/pps/{phone}/{id}_n.jpg?oe={oe:X}")})
            }
            None => json!({"ok": true, "exists": true, "status": 404}),
        },
    };
    reply(&w, conn, &req, body);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileReq {
    phone: String,
    pushname: Option<String>,
    /// The about text others may read; `""` hides it.
    about: Option<String>,
    business: Option<bool>,
    /// true: a new profile picture; false: none (or hidden).
    picture: Option<bool>,
    /// Entries of this account's address book: number → saved name.
    address_book: Option<std::collections::BTreeMap<String, String>>,
}

/// Sets what the server tells others about an account (and its address book).
async fn profile(State(st): State<SimState>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let r: ProfileReq = parse(body)?;
    let phone = phone_arg("phone", &r.phone)?;
    let mut book = Vec::new();
    for (n, name) in r.address_book.iter().flatten() {
        book.push((phone_arg("address_book", n)?, name.clone()));
    }
    let mut w = st.world();
    let p = w.phones.entry(phone.clone()).or_default();
    if let Some(n) = r.pushname {
        p.pushname = n;
    }
    if let Some(a) = r.about {
        p.profile.about = (!a.is_empty()).then_some(a);
    }
    if let Some(b) = r.business {
        p.profile.business = b;
    }
    match r.picture {
        Some(true) => p.profile.picture_id = Some(p.profile.picture_id.unwrap_or(1000) + 1),
        Some(false) => p.profile.picture_id = None,
        None => {}
    }
    p.address_book.extend(book);
    Ok(Json(
        json!({"ok": true, "phone": phone, "profile": p.profile,
                   "address_book": p.address_book}),
    ))
}

fn linked_phone(w: &World, conn: ConnId) -> Option<String> {
    w.conns
        .get(&conn)
        .and_then(|c| c.device.as_ref())
        .and_then(|d| w.devices.get(d))
        .and_then(|d| d.phone().map(str::to_string))
}

fn upload(st: &SimState, conn: ConnId, v: &Value) {
    use base64::Engine;
    let req = v.get("req").cloned().unwrap_or(Value::Null);
    let mut w = st.world();
    if linked_phone(&w, conn).is_none() {
        reply(&w, conn, &req, json!({"error": "not logged in"}));
        return;
    }
    let data = s(v, "data").unwrap_or_default();
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data.as_bytes()) else {
        reply(&w, conn, &req, json!({"error": "media is not base64"}));
        return;
    };
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let media = Media {
        mime: s(v, "mime").unwrap_or_else(|| "application/octet-stream".into()),
        size: bytes.len() as u64,
        sha256: sha.clone(),
        filename: s(v, "filename"),
    };
    let id = random_token(12);
    w.uploads.insert(
        id.clone(),
        Upload {
            media,
            bytes: Bytes::from(bytes),
        },
    );
    reply(
        &w,
        conn,
        &req,
        json!({"ok": true, "direct_path": format!("/_sim/media/{id}"), "sha256": sha}),
    );
}

type SentMore = (
    Option<Vec<SentContact>>,
    Option<SentPoll>,
    Option<Vec<String>>,
);

/// A sent message's contact cards, poll and mentions, checked as WhatsApp's server would
/// refuse a malformed contactMessage / pollCreationMessage: cards need a name and a vCard, a
/// poll a name, 2 to 12 distinct options, a selectable count within them and its messageSecret.
fn sent_more(kind: &str, msg: &Value) -> Result<SentMore, &'static str> {
    let contacts = if kind == "contact" {
        let list = msg
            .get("contacts")
            .and_then(Value::as_array)
            .filter(|l| !l.is_empty())
            .ok_or("a contact message needs its cards")?;
        let mut cards = Vec::with_capacity(list.len());
        for c in list {
            let (Some(display_name), Some(vcard)) = (s(c, "display_name"), s(c, "vcard")) else {
                return Err("a contact card needs a display name and a vCard");
            };
            if !vcard
                .trim_start()
                .to_ascii_uppercase()
                .starts_with("BEGIN:VCARD")
            {
                return Err("a contact card's vCard must start with BEGIN:VCARD");
            }
            cards.push(SentContact {
                display_name,
                vcard,
            });
        }
        Some(cards)
    } else {
        None
    };
    let poll = if kind == "poll" {
        let p = msg.get("poll").ok_or("a poll message needs its poll")?;
        let name = s(p, "name")
            .filter(|n| !n.trim().is_empty())
            .ok_or("a poll needs a name")?;
        let options: Vec<String> = p
            .get("options")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|o| o.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let distinct: std::collections::HashSet<&String> = options.iter().collect();
        if !(2..=12).contains(&options.len()) || distinct.len() != options.len() {
            return Err("a poll needs 2 to 12 distinct options");
        }
        let selectable = p
            .get("selectable")
            .and_then(Value::as_u64)
            .filter(|n| *n as usize <= options.len())
            .ok_or("a poll's selectable count must be 0 to its number of options")?;
        if p.get("has_secret").and_then(Value::as_bool) != Some(true) {
            return Err("a poll needs a 32-byte messageSecret for its votes");
        }
        Some(SentPoll {
            name,
            options,
            selectable: selectable as u32,
        })
    } else {
        None
    };
    let mentions = match msg.get("mentions").and_then(Value::as_array) {
        Some(l) if !l.is_empty() => {
            let mut out = Vec::with_capacity(l.len());
            for m in l {
                let m = m.as_str().ok_or("a mention must be a JID")?;
                if !(m.ends_with("@c.us") || m.ends_with("@lid")) {
                    return Err("a mention must be a user's JID");
                }
                out.push(m.to_string());
            }
            Some(out)
        }
        _ => None,
    };
    Ok((contacts, poll, mentions))
}

fn send(st: &SimState, conn: ConnId, v: &Value) {
    let req = v.get("req").cloned().unwrap_or(Value::Null);
    let msg = v.get("msg").cloned().unwrap_or(Value::Null);
    let mut w = st.world();
    let Some(phone) = linked_phone(&w, conn) else {
        reply(&w, conn, &req, json!({"error": "not logged in"}));
        return;
    };
    let (Some(id), Some(serialized), Some(to)) =
        (s(&msg, "id"), s(&msg, "serialized"), s(&msg, "to"))
    else {
        reply(
            &w,
            conn,
            &req,
            json!({"error": "message needs id, serialized and to"}),
        );
        return;
    };
    if w.faults.lose_sends {
        w.faults.lost_sends += 1;
        return;
    }
    // The same key twice is the same message: WhatsApp de-duplicates by id, and the product's
    // at-most-once recovery relies on it.
    if w.phones
        .get(&phone)
        .is_some_and(|p| p.sent.iter().any(|m| m.id == id))
    {
        reply(&w, conn, &req, json!({"ok": true, "duplicate": true}));
        return;
    }
    let media = match s(&msg, "direct_path") {
        Some(dp) => {
            let key = dp.rsplit('/').next().unwrap_or("");
            match w.uploads.get(key) {
                Some(u) => Some(u.media.clone()),
                None => {
                    reply(&w, conn, &req, json!({"error": "unknown media"}));
                    return;
                }
            }
        }
        None => None,
    };
    // LID builds: a 1:1 message goes to the contact's LID; the record keeps the phone JID (as
    // before) plus the LID. Addressed to the phone JID of a contact that has a LID, WhatsApp's
    // server refuses it with error 463 (Baileys#2441/#2683, OpenWA PR #717).
    let mut to = to;
    let mut to_lid = None;
    let mut refusal = None;
    if w.version.has_lid() {
        if let Some(lid) = to.strip_suffix("@lid") {
            let Some(p) = w.lids.get(lid).cloned() else {
                reply(&w, conn, &req, json!({"error": "unknown lid"}));
                return;
            };
            to_lid = Some(to.clone());
            to = format!("{p}@c.us");
        } else if let Some(user) = to.strip_suffix("@c.us") {
            if user != phone && w.is_registered(user) {
                refusal = Some("error 463: recipient must be addressed by its LID");
            }
        }
    }
    let kind = s(&msg, "kind").unwrap_or_else(|| "text".into());
    let location = if kind == "location" {
        let (Some(lat), Some(lng)) = (
            msg.get("lat").and_then(Value::as_f64),
            msg.get("lng").and_then(Value::as_f64),
        ) else {
            reply(
                &w,
                conn,
                &req,
                json!({"error": "a location needs lat and lng"}),
            );
            return;
        };
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lng) {
            reply(&w, conn, &req, json!({"error": "location out of range"}));
            return;
        }
        let loc = s(&msg, "loc");
        let (name, address) = match loc.as_deref().and_then(|l| l.split_once('\n')) {
            Some((n, a)) => (Some(n.to_string()), Some(a.to_string())),
            None => (loc, None),
        };
        Some(SentLocation {
            lat,
            lng,
            name,
            address,
        })
    } else {
        None
    };
    let (contacts, poll, mentions) = match sent_more(&kind, &msg) {
        Ok(more) => more,
        Err(why) => {
            reply(&w, conn, &req, json!({ "error": why }));
            return;
        }
    };
    let sticker = if kind == "sticker" {
        let up = s(&msg, "direct_path")
            .and_then(|dp| w.uploads.get(dp.rsplit('/').next().unwrap_or("")));
        let checked = match up {
            Some(u) => sticker::check(&u.media.mime, &u.bytes),
            None => Err("a sticker needs its uploaded image"),
        };
        match checked {
            Ok(st) => Some(st),
            Err(why) => {
                reply(&w, conn, &req, json!({ "error": why }));
                return;
            }
        }
    } else {
        None
    };
    let record = SentMsg {
        sticker,
        id,
        serialized,
        to: to.clone(),
        to_lid,
        kind,
        body: s(&msg, "body"),
        caption: s(&msg, "caption"),
        media,
        quoted_id: s(&msg, "quoted_id"),
        location,
        contacts,
        poll,
        mentions,
        forwarded: (msg.get("forwarded").and_then(Value::as_bool) == Some(true)).then(|| {
            SentForward {
                score: msg
                    .get("forwarding_score")
                    .and_then(Value::as_u64)
                    .map_or(1, |n| n.min(u32::MAX as u64) as u32),
                from: s(&msg, "forwarded_from"),
            }
        }),
        ack: 1,
        time: chrono::Utc::now(),
    };
    let delay = Duration::from_millis(w.faults.send_delay_ms);
    let fail = match refusal {
        Some(why) => Some(why),
        None => w
            .faults
            .take_failure(&phone)
            .then_some("send failed (simulated fault)"),
    };
    let auto = w.faults.auto_ack;
    let step = w.config.ack_step;
    let recipient_registered = to.strip_suffix("@c.us").is_none_or(|u| w.is_registered(u));
    drop(w);
    let st = st.clone();
    tokio::spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let serialized = record.serialized.clone();
        {
            let mut w = st.world();
            if let Some(why) = fail {
                reply(&w, conn, &req, json!({ "error": why }));
                w.send_to(conn, json!({"t": "ack", "id": serialized, "ack": -1}));
                return;
            }
            let t = record.time.timestamp();
            let echo = json!({"t": "own", "msg": record});
            w.phones.entry(phone.clone()).or_default().sent.push(record);
            reply(&w, conn, &req, json!({"ok": true, "t": t}));
            // The account's other linked devices see the message too, as on WhatsApp.
            for other in w.conns_of(Some(&phone)) {
                if other != conn {
                    w.send_to(other, echo.clone());
                }
            }
            let _ = w.set_ack(&serialized, 1);
        }
        // Unregistered numbers never get a device ack: the server keeps the message forever.
        let top = if recipient_registered {
            auto.as_ack()
        } else {
            auto.as_ack().min(1)
        };
        for level in 2..=top {
            tokio::time::sleep(step).await;
            let mut w = st.world();
            let current = w.find_sent_mut(&serialized).map(|(_, m)| m.ack);
            match current {
                Some(a) if a >= 1 && a < level => {
                    let _ = w.set_ack(&serialized, level);
                }
                _ => break,
            }
        }
    });
}

// ---------------------------------------------------------------- control API

async fn devices(State(st): State<SimState>) -> ApiResult {
    Ok(Json(st.world().devices_json()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanReq {
    qr: String,
    phone: String,
    name: Option<String>,
}

async fn scan(State(st): State<SimState>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let r: ScanReq = parse(body)?;
    let phone = phone_arg("phone", &r.phone)?;
    let mut w = st.world();
    let dev = w
        .devices
        .values()
        .find(|d| d.qr_payload().as_deref() == Some(r.qr.as_str()))
        .map(|d| d.id.clone())
        .ok_or_else(|| not_found_err("no device shows this QR (expired, rotated or unknown)"))?;
    w.link(&dev, &phone, r.name)
        .map_err(|e| ApiError(StatusCode::CONFLICT, e))?;
    Ok(Json(json!({"ok": true, "device": dev, "phone": phone})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairReq {
    code: String,
    phone: String,
    name: Option<String>,
}

async fn pair(State(st): State<SimState>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let r: PairReq = parse(body)?;
    let phone = phone_arg("phone", &r.phone)?;
    let code: String = r
        .code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_uppercase();
    let mut w = st.world();
    let found = w.devices.values().find_map(|d| match &d.state {
        DevState::Pending {
            code: Some((c, p)), ..
        } if *c == code => Some((d.id.clone(), p.clone())),
        _ => None,
    });
    let (dev, wanted) = found.ok_or_else(|| not_found_err("no device shows this pairing code"))?;
    if wanted != phone {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("this code was requested for another number ({wanted})"),
        ));
    }
    w.link(&dev, &phone, r.name)
        .map_err(|e| ApiError(StatusCode::CONFLICT, e))?;
    Ok(Json(json!({"ok": true, "device": dev, "phone": phone})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogoutReq {
    phone: String,
    device: Option<String>,
}

async fn logout(State(st): State<SimState>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let r: LogoutReq = parse(body)?;
    let phone = phone_arg("phone", &r.phone)?;
    let ids = st.world().logout(&phone, r.device.as_deref());
    if ids.is_empty() {
        return Err(not_found_err("no linked device for this phone"));
    }
    Ok(Json(json!({"ok": true, "devices": ids})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncomingReq {
    to: String,
    from: String,
    /// The text; with `media`, may be left out (a caption goes in `media.caption`).
    #[serde(default)]
    body: String,
    /// A file the phone sends (src/sim/media_in.rs).
    media: Option<super::media_in::IncomingMediaReq>,
    /// Deliver it first as an undecrypted `ciphertext` placeholder, decrypted this much later.
    ciphertext_ms: Option<u64>,
    /// When the sender sent it (seconds since the epoch, not in the future); default now. A
    /// message held in the offline queue keeps the time it was sent.
    t: Option<i64>,
}

async fn incoming(State(st): State<SimState>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let r: IncomingReq = parse(body)?;
    let to = phone_arg("to", &r.to)?;
    let from = phone_arg("from", &r.from)?;
    if r.body.chars().count() > MAX_BODY_CHARS {
        return Err(bad("body is too long"));
    }
    if r.ciphertext_ms.is_some_and(|ms| ms > 600_000) {
        return Err(bad("ciphertext_ms: at most 600000"));
    }
    let time = match r.t {
        None => chrono::Utc::now(),
        Some(t) => chrono::DateTime::from_timestamp(t, 0)
            .filter(|d| t > 0 && *d <= chrono::Utc::now())
            .ok_or_else(|| bad("t: seconds since the epoch, not in the future"))?,
    };
    let media = match r.media {
        None => None,
        Some(_) if r.ciphertext_ms.is_some() => {
            return Err(bad("media and ciphertext_ms do not go together"))
        }
        Some(req) => {
            let token = random_token(16).to_lowercase();
            let (m, file) = super::media_in::prepare(req, &token).map_err(bad)?;
            Some((token, m, file))
        }
    };
    let mut w = st.world();
    let mut m = w.add_incoming(
        &to,
        &from,
        r.body,
        r.ciphertext_ms.filter(|ms| *ms > 0),
        time,
    );
    if let Some((token, media, file)) = media {
        w.mms.insert(token, file);
        m.media = Some(media.clone());
        if let Some(stored) = w
            .phones
            .get_mut(&to)
            .and_then(|p| p.inbox.iter_mut().find(|x| x.seq == m.seq))
        {
            stored.media = Some(media);
        }
    }
    let devs: Vec<String> = w
        .devices
        .values()
        .filter(|d| d.phone() == Some(to.as_str()) && d.conn.is_some())
        .map(|d| d.id.clone())
        .collect();
    for d in &devs {
        deliver_incoming(&mut w, d);
    }
    Ok(Json(json!({
        "ok": true,
        "id": m.id,
        // The key the page gives it: by the sender's LID on LID builds.
        "serialized": match &m.from_lid {
            Some(lid) => format!("false_{lid}@lid_{}", m.id),
            None => format!("false_{from}@c.us_{}", m.id),
        },
        "delivered_to": devs.len(),
        "t": m.time.timestamp(),
        "media": m.media.as_ref().map(|x| json!({"sha256": x.sha256, "size": x.size, "type": x.page_type})),
    })))
}

/// The required `?phone=` of the per-account views, normalised.
fn phone_query(q: &std::collections::HashMap<String, String>) -> Result<String, ApiError> {
    let raw = q
        .get("phone")
        .ok_or_else(|| bad("query parameter phone is required"))?;
    phone_arg("phone", raw)
}

async fn messages(
    State(st): State<SimState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> ApiResult {
    let phone = phone_query(&q)?;
    let w = st.world();
    let (sent, received, reactions, edits, revokes) = match w.phones.get(&phone) {
        Some(p) => (
            json!(p.sent),
            json!(p.inbox),
            json!(p.reactions),
            json!(p.edits),
            json!(p.revokes),
        ),
        None => (json!([]), json!([]), json!([]), json!([]), json!([])),
    };
    Ok(Json(
        json!({"phone": phone, "messages": sent, "received": received,
        "reactions": reactions, "edits": edits, "revokes": revokes,
        "edits_pending": w.edits_pending.get(&phone).copied().unwrap_or(0)}),
    ))
}

/// What account `phone` told the server about its chats: read receipts and chat states.
async fn chat_state(
    State(st): State<SimState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> ApiResult {
    let phone = phone_query(&q)?;
    let w = st.world();
    let (read, states) = match w.phones.get(&phone) {
        Some(p) => (json!(p.read_marks), json!(p.chat_states)),
        None => (json!([]), json!([])),
    };
    Ok(Json(
        json!({"phone": phone, "read": read, "presence": states}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckReq {
    id: String,
    ack: i8,
}

async fn ack(State(st): State<SimState>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let r: AckReq = parse(body)?;
    if !(-1..=4).contains(&r.ack) {
        return Err(bad("ack must be -1..4"));
    }
    st.world().set_ack(&r.id, r.ack).map_err(not_found_err)?;
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnregisteredReq {
    numbers: Vec<String>,
    /// true: these numbers are on WhatsApp again.
    #[serde(default)]
    remove: bool,
}

async fn unregistered(
    State(st): State<SimState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: UnregisteredReq = parse(body)?;
    let numbers = r
        .numbers
        .iter()
        .map(|n| phone_arg("numbers", n))
        .collect::<Result<Vec<_>, _>>()?;
    let mut w = st.world();
    for n in numbers {
        if r.remove {
            w.unregistered.remove(&n);
        } else {
            w.unregistered.insert(n);
        }
    }
    let mut all: Vec<&String> = w.unregistered.iter().collect();
    all.sort();
    Ok(Json(json!({"ok": true, "unregistered": all})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsReq {
    /// Restrict drop_socket / crash_page / fail_sends / group_delay_ms to this phone.
    phone: Option<String>,
    #[serde(default)]
    drop_socket: bool,
    /// `hang` (default: the page stops running script) or `blank` (the app is gone).
    crash_page: Option<Value>,
    send_delay_ms: Option<u64>,
    fail_sends: Option<u32>,
    auto_ack: Option<String>,
    /// Pages loaded from now on cannot require these modules until `late_ms` after load
    /// (with `phone`: only pages whose stored login is that account's); `[]` clears it.
    late_modules: Option<Vec<String>>,
    late_ms: Option<u64>,
    /// Sends lost in transit (never recorded, never answered) until set false again.
    lose_sends: Option<bool>,
    /// Group creations are done and answered this long after the page asked (0: at once).
    group_delay_ms: Option<u64>,
    /// One account's (`phone`, required) edits and revokes are done and answered this long
    /// after the page asked (0: at once).
    edit_delay_ms: Option<u64>,
    /// The media server answers every download with 404 until set false again.
    media_fail: Option<bool>,
    /// The media server answers each download this long after it was asked (0: at once).
    media_delay_ms: Option<u64>,
}

async fn get_faults(State(st): State<SimState>) -> ApiResult {
    let w = st.world();
    Ok(Json(json!({"faults": w.faults, "takeovers": w.takeovers})))
}

async fn faults(State(st): State<SimState>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let r: FaultsReq = parse(body)?;
    let phone = r
        .phone
        .as_deref()
        .map(|p| phone_arg("phone", p))
        .transpose()?;
    let auto: Option<AutoAck> = r
        .auto_ack
        .as_deref()
        .map(|a| a.parse().map_err(|e: String| bad(e)))
        .transpose()?;
    if let Some(names) = &r.late_modules {
        let valid = |n: &String| {
            !n.is_empty()
                && n.len() <= 200
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !names.iter().all(valid) {
            return Err(bad("late_modules: module names are letters, digits and _"));
        }
        if !names.is_empty() && r.late_ms.is_none() {
            return Err(bad("late_modules needs late_ms (milliseconds after load)"));
        }
    }
    if r.late_ms.is_some_and(|ms| ms > 600_000) {
        return Err(bad("late_ms: at most 600000"));
    }
    if r.edit_delay_ms.is_some() && phone.is_none() {
        return Err(bad("edit_delay_ms needs phone"));
    }
    let crash_mode = match &r.crash_page {
        None | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some("hang".to_string()),
        Some(Value::String(m)) if m == "hang" || m == "blank" => Some(m.clone()),
        Some(_) => return Err(bad("crash_page: true, \"hang\" or \"blank\"")),
    };
    let mut w = st.world();
    if let Some(d) = r.send_delay_ms {
        w.faults.send_delay_ms = d;
    }
    match (r.group_delay_ms, &phone) {
        (Some(0), Some(p)) => {
            w.faults.group_delay_by_phone.remove(p);
        }
        (Some(d), Some(p)) => {
            w.faults.group_delay_by_phone.insert(p.clone(), d);
        }
        (Some(d), None) => w.faults.group_delay_ms = d,
        (None, _) => {}
    }
    match (r.edit_delay_ms, &phone) {
        (Some(0), Some(p)) => {
            w.faults.edit_delay_by_phone.remove(p);
        }
        (Some(d), Some(p)) => {
            w.faults.edit_delay_by_phone.insert(p.clone(), d);
        }
        (Some(_), None) | (None, _) => {}
    }
    if let Some(lose) = r.lose_sends {
        w.faults.lose_sends = lose;
    }
    if let Some(f) = r.media_fail {
        w.faults.media_fail = f;
    }
    if let Some(d) = r.media_delay_ms {
        w.faults.media_delay_ms = d;
    }
    match (r.fail_sends, &phone) {
        (Some(0), Some(p)) => {
            w.faults.fail_sends_by_phone.remove(p);
        }
        (Some(n), Some(p)) => {
            w.faults.fail_sends_by_phone.insert(p.clone(), n);
        }
        (Some(n), None) => w.faults.fail_sends = n,
        (None, _) => {}
    }
    if let Some(a) = auto {
        w.faults.auto_ack = a;
    }
    if let Some(names) = r.late_modules {
        w.faults.late_phone = if names.is_empty() {
            None
        } else {
            phone.clone()
        };
        w.faults.late_ms = if names.is_empty() {
            0
        } else {
            r.late_ms.unwrap_or(0)
        };
        w.faults.late_modules = names;
    } else if let Some(ms) = r.late_ms {
        w.faults.late_ms = ms;
    }
    let targets = w.conns_of(phone.as_deref());
    let mut crashed = 0;
    if let Some(mode) = crash_mode {
        for c in &targets {
            w.send_to(*c, json!({"t": "crash", "mode": mode}));
            crashed += 1;
        }
    }
    let mut dropped = 0;
    if r.drop_socket {
        for c in &targets {
            if let Some(conn) = w.conns.get(c) {
                let _ = conn.tx.send(Out::Close);
                dropped += 1;
            }
        }
    }
    Ok(Json(json!({
        "ok": true,
        "faults": w.faults,
        "dropped": dropped,
        "crashed": crashed,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadReq {
    phone: String,
}

/// The account's pages reload themselves, as a service-worker update makes the real page do.
async fn reload(State(st): State<SimState>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let r: ReloadReq = parse(body)?;
    let phone = phone_arg("phone", &r.phone)?;
    let w = st.world();
    let conns = w.conns_of(Some(&phone));
    if conns.is_empty() {
        return Err(not_found_err("no page is logged in with this phone"));
    }
    for c in &conns {
        w.send_to(*c, json!({"t": "reload"}));
    }
    Ok(Json(json!({"ok": true, "reloaded": conns.len()})))
}

/// Socket states a page never leaves on its own (whatsapp-web.js `WAState`; UNLAUNCHED as
/// wppconnect#2813 saw a session end in it).
const TERMINAL_STATES: [&str; 6] = [
    "CONFLICT",
    "TOS_BLOCK",
    "SMB_TOS_BLOCK",
    "PROXYBLOCK",
    "DEPRECATED_VERSION",
    "UNLAUNCHED",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateReq {
    phone: String,
    state: String,
}

async fn set_state(State(st): State<SimState>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let r: StateReq = parse(body)?;
    let phone = phone_arg("phone", &r.phone)?;
    if !TERMINAL_STATES.contains(&r.state.as_str()) {
        return Err(bad(format!(
            "state must be one of {} (got {:?})",
            TERMINAL_STATES.join(", "),
            r.state
        )));
    }
    let w = st.world();
    let conns = w.conns_of(Some(&phone));
    if conns.is_empty() {
        return Err(not_found_err("no page is logged in with this phone"));
    }
    for c in &conns {
        w.send_to(*c, json!({"t": "state", "state": r.state}));
    }
    Ok(Json(json!({"ok": true, "pages": conns.len()})))
}

async fn media(State(st): State<SimState>, Path(id): Path<String>) -> Response {
    let w = st.world();
    match w.uploads.get(&id) {
        Some(u) => (
            [(header::CONTENT_TYPE, u.media.mime.clone())],
            u.bytes.clone(),
        )
            .into_response(),
        None => not_found_err("no such media").into_response(),
    }
}

/// The media server (issue 13): an incoming file, encrypted, at the direct path its message
/// carries. The `media_fail` and `media_delay_ms` faults act here.
async fn mms(State(st): State<SimState>, Path((_kind, file)): Path<(String, String)>) -> Response {
    let token = file.strip_suffix(".enc").unwrap_or(&file).to_string();
    let (delay, fail) = {
        let mut w = st.world();
        w.faults.media_fetches += 1;
        (w.faults.media_delay_ms, w.faults.media_fail)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if fail {
        return not_found_err("media not found (simulated fault)").into_response();
    }
    let w = st.world();
    match w.mms.get(&token) {
        Some(b) => (
            [(header::CONTENT_TYPE, "application/octet-stream".to_string())],
            b.clone(),
        )
            .into_response(),
        None => not_found_err("no such media").into_response(),
    }
}
