//! The control API's other side (issue 13): a contact of an account reacts to a message, votes in
//! one of the account's polls, edits or revokes a message it sent the account, or sends it a
//! location or contact cards. Each goes into the account's inbox like `POST /_sim/incoming` (held
//! while no page is connected, the offline queue at the next login, history after a reload), and
//! the page raises it where the real page does (docs/sim-surface.md "Typed inbound events").

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    bad, deliver_incoming, not_found_err, parse, phone_arg, ApiError, ApiResult, SimState,
};
use crate::driver::MAX_BODY_CHARS;
use crate::sim::world::{InMsg, World};

/// WhatsApp lets a sender edit a message for 15 minutes (docs/sim-surface.md "Edits").
const EDIT_WINDOW_SECS: i64 = 15 * 60;

/// A message between `to` (the account) and `from` (its contact), by bare id or serialized key:
/// `Some(true)` when the account sent it, `Some(false)` when the contact did.
fn find_between(w: &World, to: &str, from: &str, id: &str) -> Option<(String, bool)> {
    let bare = id.split('_').nth(2).unwrap_or(id);
    let p = w.phones.get(to)?;
    let them = format!("{from}@c.us");
    if let Some(m) = p.sent.iter().find(|m| m.id == bare && m.to == them) {
        return Some((m.id.clone(), true));
    }
    p.inbox
        .iter()
        .find(|m| m.id == bare && m.from == from && m.addon.is_none())
        .map(|m| (m.id.clone(), false))
}

/// Puts `attrs` (a typed message) or `addon` (a reaction, vote, edit, revoke) into `to`'s inbox
/// from `from`, delivers it to the account's connected pages and answers as `/_sim/incoming`.
fn add_and_deliver(
    st: &SimState,
    to: &str,
    from: &str,
    attrs: Option<Value>,
    addon: Option<Value>,
) -> ApiResult {
    let mut w = st.world();
    let mut m = w.add_incoming(to, from, String::new(), None, chrono::Utc::now());
    if let Some(p) = w.phones.get_mut(to) {
        if let Some(stored) = p.inbox.iter_mut().find(|x| x.seq == m.seq) {
            stored.attrs = attrs.clone();
            stored.addon = addon.clone();
        }
    }
    m.attrs = attrs;
    m.addon = addon;
    let devs: Vec<String> = w
        .devices
        .values()
        .filter(|d| d.phone() == Some(to) && d.conn.is_some())
        .map(|d| d.id.clone())
        .collect();
    for d in &devs {
        deliver_incoming(&mut w, d);
    }
    Ok(Json(answer(&m, from, devs.len())))
}

fn answer(m: &InMsg, from: &str, delivered_to: usize) -> Value {
    json!({
        "ok": true,
        "id": m.id,
        // The key the page gives it: by the sender's LID on LID builds.
        "serialized": match &m.from_lid {
            Some(lid) => format!("false_{lid}@lid_{}", m.id),
            None => format!("false_{from}@c.us_{}", m.id),
        },
        "delivered_to": delivered_to,
        "t": m.time.timestamp(),
    })
}

fn pair(to: &str, from: &str) -> Result<(String, String), ApiError> {
    let to = phone_arg("to", to)?;
    let from = phone_arg("from", from)?;
    if to == from {
        return Err(bad("from and to are the same account"));
    }
    Ok((to, from))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReactReq {
    to: String,
    from: String,
    /// The message reacted to: bare id or serialized key, sent by either of them.
    id: String,
    /// `""` removes the contact's reaction.
    emoji: String,
}

/// `POST /_sim/react`: `from` reacts to a message of its chat with `to`.
pub(super) async fn react(
    State(st): State<SimState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: ReactReq = parse(body)?;
    let (to, from) = pair(&r.to, &r.from)?;
    if r.emoji.chars().count() > 32 {
        return Err(bad("emoji: at most 32 characters"));
    }
    let (parent, from_me) = find_between(&st.world(), &to, &from, &r.id)
        .ok_or_else(|| not_found_err("no such message between them"))?;
    let addon = json!({"kind": "reaction", "parent_id": parent, "parent_from_me": from_me, "text": r.emoji});
    add_and_deliver(&st, &to, &from, None, Some(addon))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VoteReq {
    to: String,
    from: String,
    /// The poll: a `poll` message `to` sent `from` (bare id or serialized key).
    poll: String,
    /// The option names chosen, replacing the contact's earlier vote; `[]` takes it back.
    options: Vec<String>,
}

/// `POST /_sim/vote`: `from` votes in a poll `to` sent it.
pub(super) async fn vote(
    State(st): State<SimState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: VoteReq = parse(body)?;
    let (to, from) = pair(&r.to, &r.from)?;
    let bare = r.poll.split('_').nth(2).unwrap_or(&r.poll).to_string();
    let them = format!("{from}@c.us");
    let poll = {
        let w = st.world();
        w.phones
            .get(&to)
            .and_then(|p| p.sent.iter().find(|m| m.id == bare && m.to == them))
            .and_then(|m| m.poll.clone())
            .ok_or_else(|| not_found_err("no such poll sent to them"))?
    };
    let mut seen = std::collections::HashSet::new();
    for o in &r.options {
        if !poll.options.contains(o) {
            return Err(bad(format!("options: {o:?} is not an option of the poll")));
        }
        if !seen.insert(o) {
            return Err(bad(format!("options: {o:?} chosen twice")));
        }
    }
    if poll.selectable > 0 && r.options.len() > poll.selectable as usize {
        return Err(bad(format!(
            "options: the poll allows at most {} choices",
            poll.selectable
        )));
    }
    let addon = json!({"kind": "poll_vote", "parent_id": bare, "parent_from_me": true, "options": r.options});
    add_and_deliver(&st, &to, &from, None, Some(addon))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EditReq {
    to: String,
    from: String,
    /// A message `from` sent `to`.
    id: String,
    body: String,
}

/// `POST /_sim/edit`: `from` edits a message it sent `to` (15 minutes, as WhatsApp allows).
pub(super) async fn edit(
    State(st): State<SimState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: EditReq = parse(body)?;
    let (to, from) = pair(&r.to, &r.from)?;
    if r.body.trim().is_empty() || r.body.chars().count() > MAX_BODY_CHARS {
        return Err(bad("body: not blank, at most 65536 characters"));
    }
    let parent = own_message(&st.world(), &to, &from, &r.id)?;
    let addon =
        json!({"kind": "edit", "parent_id": parent, "parent_from_me": false, "text": r.body});
    add_and_deliver(&st, &to, &from, None, Some(addon))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeReq {
    to: String,
    from: String,
    /// A message `from` sent `to`.
    id: String,
}

/// `POST /_sim/revoke`: `from` deletes a message it sent `to` for everyone.
pub(super) async fn revoke(
    State(st): State<SimState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: RevokeReq = parse(body)?;
    let (to, from) = pair(&r.to, &r.from)?;
    let parent = own_message_any_age(&st.world(), &to, &from, &r.id)?;
    let addon = json!({"kind": "revoke", "parent_id": parent, "parent_from_me": false});
    add_and_deliver(&st, &to, &from, None, Some(addon))
}

/// A message `from` sent `to` that is neither revoked nor older than the edit window.
fn own_message(w: &World, to: &str, from: &str, id: &str) -> Result<String, ApiError> {
    let parent = own_message_any_age(w, to, from, id)?;
    let m = w.phones[to].inbox.iter().find(|m| m.id == parent);
    if m.is_some_and(|m| (chrono::Utc::now() - m.time).num_seconds() > EDIT_WINDOW_SECS) {
        return Err(bad("edit refused: the message is older than 15 minutes"));
    }
    Ok(parent)
}

fn own_message_any_age(w: &World, to: &str, from: &str, id: &str) -> Result<String, ApiError> {
    let bare = id.split('_').nth(2).unwrap_or(id);
    let p = w
        .phones
        .get(to)
        .ok_or_else(|| not_found_err("no such message of theirs"))?;
    let m = p
        .inbox
        .iter()
        .find(|m| m.id == bare && m.from == from && m.addon.is_none())
        .ok_or_else(|| not_found_err("no such message of theirs"))?;
    let revoked = p.inbox.iter().any(|x| {
        x.addon.as_ref().is_some_and(|a| {
            a["kind"] == "revoke" && a["parent_id"].as_str() == Some(m.id.as_str())
        })
    });
    if revoked {
        return Err(bad("that message was deleted for everyone"));
    }
    Ok(m.id.clone())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LocationReq {
    to: String,
    from: String,
    latitude: f64,
    longitude: f64,
    name: Option<String>,
    address: Option<String>,
}

/// `POST /_sim/location`: `from` sends `to` a map pin (the page's `location` message: `lat`,
/// `lng`, `loc` = name and address on two lines).
pub(super) async fn location(
    State(st): State<SimState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: LocationReq = parse(body)?;
    let (to, from) = pair(&r.to, &r.from)?;
    if !(-90.0..=90.0).contains(&r.latitude) || !(-180.0..=180.0).contains(&r.longitude) {
        return Err(bad(
            "latitude in [-90, 90] and longitude in [-180, 180] required",
        ));
    }
    let parts: Vec<&str> = [r.name.as_deref(), r.address.as_deref()]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    let loc = (!parts.is_empty()).then(|| parts.join("\n"));
    let attrs = json!({"type": "location", "lat": r.latitude, "lng": r.longitude, "loc": loc});
    add_and_deliver(&st, &to, &from, Some(attrs), None)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ContactReq {
    to: String,
    from: String,
    vcards: Vec<String>,
}

/// The `FN` of a vCard (the name WhatsApp shows on the card).
fn vcard_name(v: &str) -> Option<String> {
    v.lines()
        .find_map(|l| {
            let (k, val) = l.split_once(':')?;
            (k.eq_ignore_ascii_case("FN") || k.to_ascii_uppercase().starts_with("FN;"))
                .then(|| val.trim().to_string())
        })
        .filter(|n| !n.is_empty())
}

/// `POST /_sim/contact`: `from` sends `to` one card (the page's `vcard` message) or several
/// (`multi_vcard`).
pub(super) async fn contact(
    State(st): State<SimState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: ContactReq = parse(body)?;
    let (to, from) = pair(&r.to, &r.from)?;
    if r.vcards.is_empty() || r.vcards.len() > 50 {
        return Err(bad("vcards: 1 to 50 cards"));
    }
    let mut cards = Vec::new();
    for (i, v) in r.vcards.iter().enumerate() {
        let name = vcard_name(v)
            .filter(|_| v.trim_start().starts_with("BEGIN:VCARD"))
            .ok_or_else(|| {
                bad(format!(
                    "vcards[{i}]: BEGIN:VCARD with a non-empty FN needed"
                ))
            })?;
        cards.push((name, v.clone()));
    }
    let attrs = if cards.len() == 1 {
        json!({"type": "vcard", "body": cards[0].1, "vcardFormattedName": cards[0].0})
    } else {
        json!({"type": "multi_vcard", "vcardList": cards.iter()
            .map(|(n, v)| json!({"displayName": n, "vcard": v})).collect::<Vec<_>>()})
    };
    add_and_deliver(&st, &to, &from, Some(attrs), None)
}
