//! What the other side does to a message rather than send one of its own (issue 13): it reacts to
//! a message, votes in one of our polls, edits or revokes a message it sent us. The page keeps
//! these beside the messages (its reactions and poll-vote tables, the edited or revoked message
//! model); the driver reports each as one [`TypedEvent`] and the runner records one `wa_event` of
//! the same kind, once per page key.

use serde::{Deserialize, Serialize};

/// The `wa_event.kind` of a typed inbound event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypedKind {
    Reaction,
    PollVote,
    Edit,
    Revoke,
}

impl TypedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TypedKind::Reaction => "reaction",
            TypedKind::PollVote => "poll_vote",
            TypedKind::Edit => "edit",
            TypedKind::Revoke => "revoke",
        }
    }
}

/// One reaction, vote, edit or revoke, as the page describes it (inbound_typed.js).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypedEvent {
    pub kind: TypedKind,
    /// The page's key of the reaction / vote / edit / revoke message itself: the event is recorded
    /// once per session, kind and key.
    pub key: String,
    /// The serialized key of the message it is about (the reacted message, the poll, the edited
    /// or revoked message).
    pub target: String,
    /// Who did it (a phone JID where the page knows the number behind a LID).
    pub from: String,
    /// The chat the target is in.
    pub chat_id: String,
    /// Seconds since the epoch, as the sender's device stamped it.
    pub timestamp: i64,
    /// The kind's own fields: `emoji` (reaction; `""` removed it), `selected_options` (poll_vote:
    /// option names), `body` (edit); none for a revoke. Plus the LIDs the page used, if any.
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl TypedEvent {
    /// The `wa_event.payload` written for it (README, table contract).
    pub fn payload(&self) -> serde_json::Value {
        let mut p = serde_json::Map::new();
        p.insert("from".into(), self.from.clone().into());
        p.insert("chat_id".into(), self.chat_id.clone().into());
        let target = match self.kind {
            TypedKind::PollVote => "poll_wa_id",
            _ => "target_wa_id",
        };
        p.insert(target.into(), self.target.clone().into());
        p.insert("timestamp".into(), self.timestamp.into());
        for (k, v) in &self.fields {
            // The common fields above are the page's own; a kind's fields never replace them.
            p.entry(k.clone()).or_insert_with(|| v.clone());
        }
        serde_json::Value::Object(p)
    }

    /// Whether the target is a message this account sent (`true_…`): then it may be one of our
    /// `wa_message` rows.
    pub fn target_is_ours(&self) -> bool {
        self.target.starts_with("true_")
    }
}

/// The typed fields an incoming message adds to its `wa_event` payload: `type` (`text`,
/// `location`, `contact`, or the page's own type for the rest), and for a location `location
/// {latitude, longitude, name, address}`, for contact cards `vcards [{display_name, vcard}]`. The
/// page's reading of them travels in `extra.typed`; it is moved out of `extra` here.
pub fn message_fields(
    kind: &str,
    extra: &serde_json::Value,
) -> (
    serde_json::Map<String, serde_json::Value>,
    serde_json::Value,
) {
    let mut extra = extra.clone();
    let typed = extra
        .as_object_mut()
        .and_then(|o| o.remove("typed"))
        .unwrap_or(serde_json::Value::Null);
    let mut out = match typed {
        serde_json::Value::Object(o) => o,
        _ => serde_json::Map::new(),
    };
    out.retain(|k, _| matches!(k.as_str(), "type" | "location" | "vcards"));
    if !out.contains_key("type") {
        let t = match kind {
            "chat" => "text",
            other => other,
        };
        out.insert("type".into(), t.into());
    }
    (out, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_names_the_target_by_kind_and_keeps_common_fields() {
        let mut fields = serde_json::Map::new();
        fields.insert("selected_options".into(), serde_json::json!(["Pizza"]));
        fields.insert("from".into(), serde_json::json!("spoofed"));
        let ev = TypedEvent {
            kind: TypedKind::PollVote,
            key: "false_1@c.us_V".into(),
            target: "true_1@c.us_P".into(),
            from: "1@c.us".into(),
            chat_id: "1@c.us".into(),
            timestamp: 7,
            fields,
        };
        assert_eq!(
            ev.payload(),
            serde_json::json!({"from": "1@c.us", "chat_id": "1@c.us", "poll_wa_id": "true_1@c.us_P",
                               "timestamp": 7, "selected_options": ["Pizza"]})
        );
        assert!(ev.target_is_ours());
    }

    #[test]
    fn message_fields_lift_the_typed_reading_out_of_extra() {
        let extra = serde_json::json!({"author": null, "typed": {"type": "location",
            "location": {"latitude": 1.5, "longitude": 2.5, "name": "A", "address": null}, "junk": 1}});
        let (fields, extra) = message_fields("location", &extra);
        assert_eq!(fields["type"], "location");
        assert_eq!(fields["location"]["latitude"], 1.5);
        assert!(!fields.contains_key("junk"));
        assert_eq!(extra, serde_json::json!({"author": null}));
        let (fields, _) = message_fields("chat", &serde_json::json!({}));
        assert_eq!(fields["type"], "text");
    }
}
