//! Kinds beyond text, media and location (issue 13): `contact` and `poll` rows, and
//! `options.mentions` for text and captions. Their fields live in `wa_message.options` (the
//! README's table contract); this module checks them and turns them into what the page needs.
//! Every refusal is `invalid_options` with a sentence that names the key.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::driver::{DriverError, MessageKind};
use crate::error_code::ErrorCode;

/// A contact card: the vCard as written, and the name WhatsApp shows on it (its `FN`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactCard {
    pub display_name: String,
    pub vcard: String,
}

/// A poll: its question, the choices in order, and how many one voter may pick (0 = any
/// number, the page's `pollSelectableOptionsCount`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Poll {
    pub question: String,
    pub choices: Vec<String>,
    pub selectable_count: u32,
}

/// What a `contact`, `poll`, `reaction` or `edit` row carries to the page besides its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KindData {
    Contact {
        cards: Vec<ContactCard>,
    },
    Poll(Poll),
    /// `target`: the serialized WhatsApp id of the message; `emoji`: `""` removes ours.
    Reaction {
        target: String,
        emoji: String,
    },
    /// `target`: the serialized id of a message we sent; `text`: its new text.
    Edit {
        target: String,
        text: String,
    },
    /// `target`: the serialized id of a message we sent, deleted for everyone.
    Revoke {
        target: String,
    },
    /// `target`: the serialized id of any message on the page (ours or received), forwarded to
    /// the row's chat.
    Forward {
        target: String,
    },
}

/// At most this many cards in one `contact` message (our bound: one message, one screen).
pub const MAX_CONTACT_CARDS: usize = 50;
/// A vCard longer than this is not a contact card (photos embedded as base64 are refused).
pub const MAX_VCARD_CHARS: usize = 16 * 1024;
/// WhatsApp's poll composer offers 2 to 12 options.
pub const MIN_POLL_CHOICES: usize = 2;
pub const MAX_POLL_CHOICES: usize = 12;
/// Our bound on a poll's question and on each choice.
pub const MAX_POLL_QUESTION_CHARS: usize = 255;
pub const MAX_POLL_CHOICE_CHARS: usize = 100;
/// At most this many mentions in one message.
pub const MAX_MENTIONS: usize = 1024;

/// The `options` keys that make a contact message's cards.
pub const CONTACT_KEYS: &[&str] = &["vcards"];
/// The `options` keys that make a poll.
pub const POLL_KEYS: &[&str] = &["question", "choices", "selectable_count"];

fn bad(msg: impl Into<String>) -> DriverError {
    DriverError::permanent(ErrorCode::InvalidOptions, msg)
}

/// Takes a `contact` or `poll` row's own keys out of `options` and checks them; other kinds
/// get `None` and keep their options untouched. Neither kind has a body.
pub fn take_kind_data(
    kind: MessageKind,
    obj: &mut Map<String, Value>,
    body: Option<&str>,
) -> Result<Option<KindData>, DriverError> {
    let (data, keys) = match kind {
        MessageKind::Contact => (
            KindData::Contact {
                cards: contacts_of(obj)?,
            },
            CONTACT_KEYS,
        ),
        MessageKind::Poll => (KindData::Poll(poll_of(obj)?), POLL_KEYS),
        _ => return Ok(None),
    };
    if body.is_some_and(|b| !b.is_empty()) {
        return Err(bad(format!(
            "a {} message has no body; its content is in options ({})",
            kind.as_str(),
            keys.join(", ")
        )));
    }
    for k in keys {
        obj.remove(*k);
    }
    Ok(Some(data))
}

/// `options.vcards`: a non-empty array of vCards (strings from `BEGIN:VCARD` to `END:VCARD`,
/// each with a non-empty `FN`, the name shown on the card).
pub fn contacts_of(obj: &Map<String, Value>) -> Result<Vec<ContactCard>, DriverError> {
    let list = match obj.get("vcards") {
        None | Some(Value::Null) => {
            return Err(bad(
                "a contact message needs options.vcards (an array of vCard strings)",
            ))
        }
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(bad(format!(
                "options.vcards must be an array of vCard strings, got {}",
                type_name(v)
            )))
        }
    };
    if list.is_empty() || list.len() > MAX_CONTACT_CARDS {
        return Err(bad(format!(
            "options.vcards holds {} cards; a contact message carries 1 to {MAX_CONTACT_CARDS}",
            list.len()
        )));
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let Value::String(card) = v else {
                return Err(bad(format!(
                    "options.vcards[{i}] must be a vCard string, got {}",
                    type_name(v)
                )));
            };
            vcard_of(card).map_err(|why| bad(format!("options.vcards[{i}]: {why}")))
        })
        .collect()
}

/// One vCard: framed by BEGIN:VCARD / END:VCARD (RFC 6350 §6.1.1, case-insensitive), with an
/// FN whose value is the display name.
fn vcard_of(card: &str) -> Result<ContactCard, String> {
    let n = card.chars().count();
    if n > MAX_VCARD_CHARS {
        return Err(format!(
            "{n} characters; a vCard may have {MAX_VCARD_CHARS}"
        ));
    }
    let lines: Vec<&str> = card
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let first = lines.first().map(|l| l.trim()).unwrap_or("");
    let last = lines.last().map(|l| l.trim()).unwrap_or("");
    if !first.eq_ignore_ascii_case("BEGIN:VCARD") || !last.eq_ignore_ascii_case("END:VCARD") {
        return Err("not a vCard (it must start with BEGIN:VCARD and end with END:VCARD)".into());
    }
    if lines[1..lines.len() - 1]
        .iter()
        .any(|l| l.trim().eq_ignore_ascii_case("BEGIN:VCARD"))
    {
        return Err("one string holds more than one vCard; put each in its own entry".into());
    }
    // FN or FN;params: value (property names are case-insensitive).
    let name = lines.iter().find_map(|l| {
        let (prop, value) = l.split_once(':')?;
        let name = prop.split(';').next()?.trim();
        name.eq_ignore_ascii_case("FN")
            .then(|| value.trim().to_string())
    });
    match name {
        Some(n) if !n.is_empty() => Ok(ContactCard {
            display_name: n,
            vcard: card.to_string(),
        }),
        _ => Err("the vCard has no FN (the name WhatsApp shows on the card)".into()),
    }
}

/// `options.question`, `options.choices`, `options.selectable_count` (default 1; 0 = any).
pub fn poll_of(obj: &Map<String, Value>) -> Result<Poll, DriverError> {
    let question = match obj.get("question") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err(bad("a poll needs options.question (a non-empty string)"))
        }
        Some(v) => {
            return Err(bad(format!(
                "options.question must be a string, got {}",
                type_name(v)
            )))
        }
    };
    if question.chars().count() > MAX_POLL_QUESTION_CHARS {
        return Err(bad(format!(
            "options.question is {} characters; the limit is {MAX_POLL_QUESTION_CHARS}",
            question.chars().count()
        )));
    }
    let list = match obj.get("choices") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => {
            return Err(bad("a poll needs options.choices (an array of strings)"))
        }
        Some(v) => {
            return Err(bad(format!(
                "options.choices must be an array of strings, got {}",
                type_name(v)
            )))
        }
    };
    if !(MIN_POLL_CHOICES..=MAX_POLL_CHOICES).contains(&list.len()) {
        return Err(bad(format!(
            "options.choices holds {}; a poll has {MIN_POLL_CHOICES} to {MAX_POLL_CHOICES}",
            list.len()
        )));
    }
    let mut choices: Vec<String> = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let Value::String(s) = v else {
            return Err(bad(format!(
                "options.choices[{i}] must be a string, got {}",
                type_name(v)
            )));
        };
        // The page trims each option's name (WAWebPollsSendPollCreationMsgAction).
        let s = s.trim();
        if s.is_empty() || s.chars().count() > MAX_POLL_CHOICE_CHARS {
            return Err(bad(format!(
                "options.choices[{i}] must have 1 to {MAX_POLL_CHOICE_CHARS} characters"
            )));
        }
        // A vote names its option by the hash of its name: two equal names are one option.
        if choices.iter().any(|c| c == s) {
            return Err(bad(format!(
                "options.choices[{i}] repeats `{s}`; each choice must differ"
            )));
        }
        choices.push(s.to_string());
    }
    let selectable_count = match obj.get("selectable_count") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(n) if n as usize <= choices.len() => n as u32,
            _ => {
                return Err(bad(format!(
                    "options.selectable_count must be a whole number from 0 (any) to {}, got {v}",
                    choices.len()
                )))
            }
        },
    };
    Ok(Poll {
        question,
        choices,
        selectable_count,
    })
}

/// `options.mentions`: phone numbers or c.us JIDs of the people a text or caption mentions,
/// rewritten in place to JIDs (the page's `mentionedJidList`). Only text and media kinds
/// have a body to mention in.
pub fn normalize_mentions(
    kind: MessageKind,
    obj: &mut Map<String, Value>,
) -> Result<(), DriverError> {
    let Some(v) = obj.get("mentions") else {
        return Ok(());
    };
    if !matches!(
        kind,
        MessageKind::Text | MessageKind::Image | MessageKind::Video | MessageKind::Document
    ) {
        return Err(bad(format!(
            "options.mentions: a {} message has no text or caption to mention in",
            kind.as_str()
        )));
    }
    let Value::Array(list) = v else {
        return Err(bad(format!(
            "options.mentions must be an array of phone numbers or JIDs, got {}",
            type_name(v)
        )));
    };
    if list.len() > MAX_MENTIONS {
        return Err(bad(format!(
            "options.mentions holds {}; the limit is {MAX_MENTIONS}",
            list.len()
        )));
    }
    let mut jids: Vec<Value> = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let Value::String(s) = m else {
            return Err(bad(format!(
                "options.mentions[{i}] must be a phone number or JID string, got {}",
                type_name(m)
            )));
        };
        let jid = crate::recipient::normalize(s)
            .map_err(|e| bad(format!("options.mentions[{i}]: {e}")))?;
        if jid.is_group() {
            return Err(bad(format!(
                "options.mentions[{i}]: `{s}` is a group; mention people"
            )));
        }
        let jid = Value::String(jid.as_str().to_string());
        if !jids.contains(&jid) {
            jids.push(jid);
        }
    }
    obj.insert("mentions".into(), Value::Array(jids));
    Ok(())
}

// ---- reactions --------------------------------------------------------------------------------

/// The `options` keys that name a reaction's message.
pub const REACTION_KEYS: &[&str] = &["target_id", "target_wa_id"];
/// Our bound on a reaction's emoji (one emoji, even a family of joined ones, is far shorter).
pub const MAX_REACTION_CHARS: usize = 32;

/// A `reaction` row: `body` the emoji (`""` removes our reaction), and exactly one of
/// `options.target_id` (one of this session's `wa_message` rows that went out) or
/// `options.target_wa_id` (a WhatsApp message id as the page serializes it, e.g. an incoming
/// message's `wa_event` id). Its keys leave `options`.
pub async fn take_reaction(
    pool: &sqlx::PgPool,
    session_id: &str,
    obj: &mut Map<String, Value>,
    body: Option<&str>,
) -> Result<KindData, DriverError> {
    let emoji = match body {
        None => {
            return Err(bad(
                "a reaction needs body: the emoji, or an empty string to remove ours",
            ))
        }
        Some(e)
            if e.chars().count() > MAX_REACTION_CHARS
                || e.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c.is_ascii_alphanumeric()) =>
        {
            return Err(bad(format!(
                "body must be one emoji (or empty to remove the reaction), got {e:?}"
            )))
        }
        Some(e) => e.to_string(),
    };
    let target = target(pool, session_id, obj, Whose::Any, "a reaction").await?;
    Ok(KindData::Reaction { target, emoji })
}

// ---- edits ------------------------------------------------------------------------------------

/// WhatsApp lets a sender edit a message for 15 minutes (its FAQ, as quoted in
/// go-whatsapp-web-multidevice PR #119 and mautrix/whatsapp#780; whatsmeow allows 20: we keep the
/// stricter bound).
pub const EDIT_WINDOW_SECS: i64 = 15 * 60;

/// An `edit` row: `body` the new text, and exactly one of `options.target_id` (one of this
/// session's rows that went out, within the edit window) or `options.target_wa_id` (the
/// serialized id of a message this account sent: `true_…`). Its keys leave `options`.
pub async fn take_edit(
    pool: &sqlx::PgPool,
    session_id: &str,
    obj: &mut Map<String, Value>,
    body: Option<&str>,
) -> Result<KindData, DriverError> {
    let text = match body {
        Some(b) if !b.trim().is_empty() => b.to_string(),
        _ => return Err(bad("an edit needs body: the message's new text")),
    };
    let target = target(
        pool,
        session_id,
        obj,
        Whose::Ours {
            window: Some(EDIT_WINDOW_SECS),
        },
        "an edit",
    )
    .await?;
    Ok(KindData::Edit { target, text })
}

/// Which messages a row may name as its target.
#[derive(Debug, Clone, Copy)]
enum Whose {
    /// Any message the page holds (a reaction, a forward): ours or received.
    Any,
    /// One this account sent (an edit, a revoke): a `true_…` id, or a row younger than `window`
    /// seconds by its `sent_at` when given.
    Ours { window: Option<i64> },
}

/// The message a reaction, forward, edit or revoke names: `options.target_id` (one of this
/// session's rows that went out) or `options.target_wa_id` (a serialized WhatsApp id; `true_…`
/// when it must be ours). Its keys leave `options`.
async fn target(
    pool: &sqlx::PgPool,
    session_id: &str,
    obj: &mut Map<String, Value>,
    whose: Whose,
    what: &str,
) -> Result<String, DriverError> {
    let target = match (obj.get("target_id"), obj.get("target_wa_id")) {
        (Some(id), None) => {
            let id = id.as_i64().ok_or_else(|| {
                bad(format!(
                    "options.target_id must be a wa_message id (a whole number), got {id}"
                ))
            })?;
            let row: Option<(String, Option<String>, String, Option<f64>)> = sqlx::query_as(
                "select session_id, wa_message_id, status,
                        extract(epoch from now() - sent_at)::float8
                 from wa_message where id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(|e| {
                DriverError::transient(
                    ErrorCode::SendFailed,
                    format!("reading the target row: {e}"),
                )
            })?;
            match row {
                None => return Err(bad(format!("options.target_id: no wa_message {id}"))),
                Some((s, ..)) if s != session_id => {
                    return Err(bad(format!(
                        "options.target_id: message {id} belongs to another session"
                    )))
                }
                Some((_, Some(w), st, age))
                    if ["sent", "delivered", "read", "played"].contains(&st.as_str()) =>
                {
                    if let Whose::Ours { window: Some(win) } = whose {
                        if age.is_some_and(|a| a > win as f64) {
                            return Err(bad(format!(
                                "options.target_id: message {id} went out more than {} minutes ago; WhatsApp's window for this has passed",
                                win / 60
                            )));
                        }
                    }
                    w
                }
                Some((_, _, st, _)) => {
                    return Err(bad(format!(
                        "options.target_id: message {id} has not gone out (status {st})"
                    )))
                }
            }
        }
        (None, Some(Value::String(w)))
            if w.split('_').count() >= 3
                && w.len() <= 256
                && (matches!(whose, Whose::Any) || w.starts_with("true_")) =>
        {
            w.clone()
        }
        (None, Some(w)) => {
            return Err(bad(match whose {
                Whose::Any => format!(
                    "options.target_wa_id must be a serialized WhatsApp id like true_15551234567@c.us_3EB0…, got {w}"
                ),
                Whose::Ours { .. } => format!(
                    "options.target_wa_id must be the id of a message this account sent (true_…), got {w}"
                ),
            }))
        }
        _ => {
            return Err(bad(format!(
                "{what} needs exactly one of options.target_id or options.target_wa_id"
            )))
        }
    };
    for k in REACTION_KEYS {
        obj.remove(*k);
    }
    Ok(target)
}

/// A `revoke` row (delete for everyone): no body, the target as an edit's (no window checked
/// here; the page's canSenderRevokeMsg decides).
pub async fn take_revoke(
    pool: &sqlx::PgPool,
    session_id: &str,
    obj: &mut Map<String, Value>,
    body: Option<&str>,
) -> Result<KindData, DriverError> {
    if body.is_some_and(|b| !b.is_empty()) {
        return Err(bad("a revoke has no body; it names its message in options.target_id or options.target_wa_id"));
    }
    let target = target(
        pool,
        session_id,
        obj,
        Whose::Ours { window: None },
        "a revoke",
    )
    .await?;
    Ok(KindData::Revoke { target })
}

// ---- forwards ---------------------------------------------------------------------------------

/// A `forward` row: no body; the message to forward named as a reaction's (`options.target_id`,
/// one of this session's rows that went out, or `options.target_wa_id`, any message on the page),
/// sent to the row's own chat (`to`) by the page's WAWebForwardMessagesToChat.
pub async fn take_forward(
    pool: &sqlx::PgPool,
    session_id: &str,
    obj: &mut Map<String, Value>,
    body: Option<&str>,
) -> Result<KindData, DriverError> {
    if body.is_some_and(|b| !b.is_empty()) {
        return Err(bad("a forward has no body; it names its message in options.target_id or options.target_wa_id"));
    }
    let target = target(pool, session_id, obj, Whose::Any, "a forward").await?;
    Ok(KindData::Forward { target })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A `sticker` row (issue 13): no caption, and media that is a PNG, JPEG, GIF or WebP image (by
/// its bytes, whatever `media_mime` says), which the page converts to WhatsApp's 512x512 WebP.
/// Anything else fails before the page sees it: a body with `invalid_options`, other bytes with
/// `media_invalid`.
pub fn check_sticker(
    body: Option<&str>,
    media: Option<&crate::driver::Media>,
) -> Result<(), DriverError> {
    if body.is_some_and(|b| !b.is_empty()) {
        return Err(bad("a sticker has no caption: leave body empty".to_string()));
    }
    let Some(m) = media else {
        return Err(DriverError::permanent(
            ErrorCode::MediaMissing,
            "a sticker needs media_url or media_data",
        ));
    };
    match sniff_image(&m.data) {
        Some(_) => Ok(()),
        None => Err(DriverError::permanent(
            ErrorCode::MediaInvalid,
            format!(
                "a sticker is made from a PNG, JPEG, GIF or WebP image; these {} bytes ({}) are none of them",
                m.data.len(),
                m.mime
            ),
        )),
    }
}

/// The image format of `b` by its magic bytes, for the kinds the page can draw.
pub fn sniff_image(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ANN: &str = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ann Lee\r\nTEL;type=CELL;waid=15551234567:+1 555 123 4567\r\nEND:VCARD";

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn contacts_are_checked_without_panicking() {
        let cards = contacts_of(&obj(
            json!({"vcards": [ANN, "begin:vcard\nfn;charset=utf-8: Bo \nend:vcard"]}),
        ))
        .unwrap();
        assert_eq!(cards[0].display_name, "Ann Lee");
        assert_eq!(cards[0].vcard, ANN);
        assert_eq!(cards[1].display_name, "Bo");
        for bad in [
            json!({}),
            json!({"vcards": []}),
            json!({"vcards": ANN}),
            json!({"vcards": [5]}),
            json!({"vcards": ["FN:Ann"]}),
            json!({"vcards": ["BEGIN:VCARD\nVERSION:3.0\nEND:VCARD"]}),
            json!({"vcards": ["BEGIN:VCARD\nFN:\nEND:VCARD"]}),
            json!({"vcards": [format!("{ANN}\n{ANN}")]}),
            json!({"vcards": [""]}),
            json!({"vcards": [format!("BEGIN:VCARD\nFN:{}\nEND:VCARD", "x".repeat(MAX_VCARD_CHARS))]}),
        ] {
            let e = contacts_of(&obj(bad.clone())).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidOptions, "{bad}");
            assert!(e.to_string().contains("vcards"), "{bad}: {e}");
        }
    }

    #[test]
    fn polls_are_checked_without_panicking() {
        let p = poll_of(&obj(
            json!({"question": " Lunch? ", "choices": [" Pizza", "Sushi "]}),
        ))
        .unwrap();
        assert_eq!(p.question, "Lunch?");
        assert_eq!(p.choices, vec!["Pizza", "Sushi"]);
        assert_eq!(p.selectable_count, 1);
        let p = poll_of(&obj(
            json!({"question": "Q", "choices": ["a", "b", "c"], "selectable_count": 0}),
        ))
        .unwrap();
        assert_eq!(p.selectable_count, 0);
        for (bad, names) in [
            (json!({"choices": ["a", "b"]}), "question"),
            (json!({"question": " ", "choices": ["a", "b"]}), "question"),
            (json!({"question": 1, "choices": ["a", "b"]}), "question"),
            (json!({"question": "Q"}), "choices"),
            (json!({"question": "Q", "choices": ["a"]}), "choices"),
            (json!({"question": "Q", "choices": "a,b"}), "choices"),
            (json!({"question": "Q", "choices": ["a", 2]}), "choices[1]"),
            (
                json!({"question": "Q", "choices": ["a", " a "]}),
                "choices[1]",
            ),
            (json!({"question": "Q", "choices": ["a", ""]}), "choices[1]"),
            (
                json!({"question": "Q", "choices": vec!["x"; 13].iter().enumerate().map(|(i, _)| i.to_string()).collect::<Vec<_>>()}),
                "choices",
            ),
            (
                json!({"question": "Q", "choices": ["a", "b"], "selectable_count": 3}),
                "selectable_count",
            ),
            (
                json!({"question": "Q", "choices": ["a", "b"], "selectable_count": -1}),
                "selectable_count",
            ),
            (
                json!({"question": "Q", "choices": ["a", "b"], "selectable_count": 1.5}),
                "selectable_count",
            ),
        ] {
            let e = poll_of(&obj(bad.clone())).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidOptions, "{bad}");
            assert!(e.to_string().contains(names), "{bad}: {e}");
        }
    }

    #[test]
    fn contact_and_poll_rows_have_no_body_and_lose_their_keys() {
        let mut o = obj(json!({"vcards": [ANN], "reply_to": "x"}));
        let d = take_kind_data(MessageKind::Contact, &mut o, None).unwrap();
        assert!(matches!(d, Some(KindData::Contact { ref cards }) if cards.len() == 1));
        assert_eq!(Value::Object(o), json!({"reply_to": "x"}));
        let mut o = obj(json!({"vcards": [ANN]}));
        assert!(take_kind_data(MessageKind::Contact, &mut o, Some("hi")).is_err());
        let mut o = obj(json!({"question": "Q", "choices": ["a", "b"]}));
        assert!(take_kind_data(MessageKind::Poll, &mut o, None)
            .unwrap()
            .is_some());
        assert!(o.is_empty());
        let mut o = obj(json!({"vcards": 1}));
        assert_eq!(
            take_kind_data(MessageKind::Text, &mut o, None).unwrap(),
            None
        );
    }

    #[test]
    fn mentions_become_jids() {
        let mut o =
            obj(json!({"mentions": ["+1 555 010 0001", "15550100002@c.us", "15550100001"]}));
        normalize_mentions(MessageKind::Text, &mut o).unwrap();
        assert_eq!(
            o["mentions"],
            json!(["15550100001@c.us", "15550100002@c.us"])
        );
        for (kind, bad) in [
            (MessageKind::Text, json!({"mentions": "15550100001"})),
            (MessageKind::Text, json!({"mentions": [1]})),
            (MessageKind::Text, json!({"mentions": ["hello"]})),
            (
                MessageKind::Text,
                json!({"mentions": ["120363000000000001@g.us"]}),
            ),
            (MessageKind::Location, json!({"mentions": ["15550100001"]})),
            (MessageKind::Voice, json!({"mentions": ["15550100001"]})),
        ] {
            let mut o = obj(bad.clone());
            let e = normalize_mentions(kind, &mut o).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidOptions, "{bad}");
            assert!(e.to_string().contains("mentions"), "{bad}: {e}");
        }
    }
}
