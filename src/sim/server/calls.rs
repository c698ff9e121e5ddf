//! The other side's calls and group changes (issue 14): the control API that places a call to an
//! account or changes a group as another member, and the page's side of a call (its reject).
//! What the page does with them is in `app_calls.js`; the evidence in docs/sim-surface.md
//! ("Calls", "Group notifications").

use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    bad, group_json, linked_phone, not_found_err, parse, phone_arg, phone_query, reply, s,
    ApiResult, SimState,
};
use crate::sim::world::{ConnId, SimCall, World};

/// How long a call rings before it is missed, unless the caller says otherwise (WhatsApp rings
/// for about a minute).
const DEFAULT_RING_MS: u64 = 45_000;
const MAX_RING_MS: u64 = 600_000;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A call id as the server makes them: 32 upper-case hex digits (wa-js#3572 quotes one).
fn new_call_id() -> String {
    let mut b = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut b[..]);
    hex::encode_upper(b)
}

/// The offer a page receives: the caller by phone, and by LID on LID builds (wa-js#3572: the
/// incoming call's `peerJid` is the caller's `@lid` on 2.3000.1044839451).
fn offer_json(w: &mut World, c: &SimCall) -> Value {
    let from_lid = w.lid_of(&c.from);
    json!({"t": "call_offer", "call": {
        "id": c.id, "from": c.from, "from_lid": from_lid, "video": c.video, "t": c.offered_at,
    }})
}

/// Offers `call` (by index) to every connected page of its account; how many there were.
fn offer(w: &mut World, i: usize) -> usize {
    let c = w.calls[i].clone();
    let msg = offer_json(w, &c);
    let devs = w.conns_of(Some(&c.to));
    for conn in &devs {
        w.send_to(*conn, msg.clone());
    }
    w.calls[i].offers += devs.len() as u32;
    devs.len()
}

/// A page of `dev` (re)connected: the calls still ringing for its account are offered again, as
/// the server re-sends a pending offer to a device that comes online (the page keeps one model
/// per call id, so a page that already holds it sees nothing new).
pub(super) fn offer_ringing(w: &mut World, dev: &str) {
    let Some(phone) = super::phone_of(w, dev) else {
        return;
    };
    let ringing: Vec<usize> = (0..w.calls.len())
        .filter(|i| w.calls[*i].to == phone && w.calls[*i].state == "ringing")
        .collect();
    for i in ringing {
        let c = w.calls[i].clone();
        let msg = offer_json(w, &c);
        w.send_to_device(dev, msg);
        w.calls[i].offers += 1;
    }
}

fn end_call(w: &mut World, i: usize, state: &'static str) {
    let c = &mut w.calls[i];
    c.state = state;
    c.ended_at = Some(now());
    let (id, to) = (c.id.clone(), c.to.clone());
    for conn in w.conns_of(Some(&to)) {
        w.send_to(conn, json!({"t": "call_end", "id": id, "reason": state}));
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CallReq {
    to: String,
    from: String,
    #[serde(default)]
    video: bool,
    /// How long it rings before it is missed (default 45 s, at most 600 s).
    ring_ms: Option<u64>,
}

/// `POST /_sim/call {to, from, video, ring_ms}`: `from` calls `to`.
pub(super) async fn place(
    State(st): State<SimState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: CallReq = parse(body)?;
    let to = phone_arg("to", &r.to)?;
    let from = phone_arg("from", &r.from)?;
    if to == from {
        return Err(bad("from and to are the same account"));
    }
    let ring = r.ring_ms.unwrap_or(DEFAULT_RING_MS);
    if ring == 0 || ring > MAX_RING_MS {
        return Err(bad("ring_ms: 1 to 600000"));
    }
    let (id, delivered) = {
        let mut w = st.world();
        let call = SimCall {
            id: new_call_id(),
            to,
            from,
            video: r.video,
            state: "ringing",
            rejects: 0,
            offered_at: now(),
            ended_at: None,
            offers: 0,
        };
        let id = call.id.clone();
        w.calls.push(call);
        let i = w.calls.len() - 1;
        (id, offer(&mut w, i))
    };
    let st2 = st.clone();
    let id2 = id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(ring)).await;
        let mut w = st2.world();
        if let Some(i) = w
            .calls
            .iter()
            .position(|c| c.id == id2 && c.state == "ringing")
        {
            end_call(&mut w, i, "missed");
        }
    });
    Ok(Json(
        json!({"ok": true, "id": id, "delivered_to": delivered}),
    ))
}

/// `GET /_sim/calls?phone=`: the calls placed to that account, oldest first.
pub(super) async fn list(
    State(st): State<SimState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> ApiResult {
    let phone = phone_query(&q)?;
    let w = st.world();
    let calls: Vec<&SimCall> = w.calls.iter().filter(|c| c.to == phone).collect();
    Ok(Json(json!({"phone": phone, "calls": calls})))
}

/// A page declines a call (`call_reject {id}`, what the page's VoIP stack sends for its Decline
/// button). Counted every time; a ringing call becomes `rejected` and the account's other pages
/// stop ringing. A call that is not the account's, or not known, is an error.
pub(super) fn page_reject(st: &SimState, conn: ConnId, v: &Value) {
    let req = v.get("req").cloned().unwrap_or(Value::Null);
    let mut w = st.world();
    let Some(me) = linked_phone(&w, conn) else {
        reply(&w, conn, &req, json!({"error": "not logged in"}));
        return;
    };
    let id = s(v, "id").unwrap_or_default();
    let Some(i) = w.calls.iter().position(|c| c.id == id && c.to == me) else {
        reply(&w, conn, &req, json!({"error": "item-not-found"}));
        return;
    };
    w.calls[i].rejects += 1;
    if w.calls[i].state == "ringing" {
        end_call(&mut w, i, "rejected");
    }
    reply(&w, conn, &req, json!({"ok": true}));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupUpdateReq {
    group: String,
    actor: String,
    action: String,
    #[serde(default)]
    participants: Vec<String>,
    subject: Option<String>,
}

/// `POST /_sim/group_update {group, actor, action, participants, subject}`: another member of a
/// group changes it. `add` / `remove` / `promote` / `demote` (the actor must be an admin; each
/// participant must be changeable: registered and not in the group to add, in it otherwise) or
/// `subject` (any member; 1 to 100 characters). The server then sends each member's connected
/// pages one `gp2` notification (`group_notification`): subtype = action, author = actor,
/// recipients = the participants.
pub(super) async fn group_update(
    State(st): State<SimState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: GroupUpdateReq = parse(body)?;
    let actor = phone_arg("actor", &r.actor)?;
    let mut w = st.world();
    let registered: Vec<(String, bool)> = r
        .participants
        .iter()
        .map(|p| phone_arg("participants", p).map(|ph| (ph.clone(), w.is_registered(&ph))))
        .collect::<Result<_, _>>()?;
    let Some(g) = w.groups.get_mut(&r.group) else {
        return Err(not_found_err(format!("no group {}", r.group)));
    };
    let Some(role) = g.participants.get(&actor).cloned() else {
        return Err(bad("actor is not in the group"));
    };
    let before: Vec<String> = g.participants.keys().cloned().collect();
    let body = match r.action.as_str() {
        "subject" => {
            let subject = r.subject.clone().unwrap_or_default();
            if subject.trim().is_empty() || subject.chars().count() > 100 {
                return Err(bad("subject: 1 to 100 characters"));
            }
            if !r.participants.is_empty() {
                return Err(bad("participants: not for a subject change"));
            }
            g.subject = subject.clone();
            Some(subject)
        }
        "add" | "remove" | "promote" | "demote" => {
            if role.is_none() {
                return Err(bad("actor is not an admin of the group"));
            }
            if registered.is_empty() || registered.len() > 256 {
                return Err(bad("participants: 1 to 256 phone numbers"));
            }
            if r.subject.is_some() {
                return Err(bad("subject: only for action subject"));
            }
            for (p, reg) in &registered {
                let held = g.participants.get(p);
                let ok = match r.action.as_str() {
                    "add" => *reg && held.is_none(),
                    "remove" => held.is_some() && *p != actor,
                    "promote" => held.is_some_and(|x| x.is_none()),
                    _ => held.is_some_and(|x| x.as_deref() == Some("admin")),
                };
                if !ok {
                    return Err(bad(format!("participant {p} cannot be {}d", r.action)));
                }
            }
            for (p, _) in &registered {
                match r.action.as_str() {
                    "add" | "demote" => {
                        g.participants.insert(p.clone(), None);
                    }
                    "remove" => {
                        g.participants.remove(p);
                    }
                    _ => {
                        g.participants.insert(p.clone(), Some("admin".into()));
                    }
                }
            }
            None
        }
        _ => return Err(bad("action: add, remove, promote, demote or subject")),
    };
    let group = group_json(g);
    let members: Vec<String> = g.participants.keys().cloned().collect();
    let notification = json!({
        "id": new_call_id()[..20].to_string(),
        "group": r.group, "subtype": r.action, "author": actor,
        "recipients": registered.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        "body": body, "t": now(),
    });
    // Everyone who was or is a member hears of it (a removed member learns it was removed).
    let mut told = 0;
    let mut audience = before;
    audience.extend(members.iter().cloned());
    audience.sort();
    audience.dedup();
    for phone in audience.iter().filter(|p| **p != actor) {
        let still = members.contains(phone);
        for conn in w.conns_of(Some(phone)) {
            w.send_to(
                conn,
                json!({"t": "group_notification", "n": notification,
                       "group": if still { group.clone() } else { Value::Null }}),
            );
            told += 1;
        }
    }
    Ok(Json(json!({
        "ok": true, "id": notification["id"], "group": group, "notified_pages": told,
    })))
}
