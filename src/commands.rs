//! The command loop: claims due `wa_command` rows for the sessions this runner owns and has
//! connected, asks the page, and writes the answer back (issue 14).
//!
//! The same discipline as the dispatcher: the claim joins `wa_session` on this runner holding a
//! live lease and takes rows with SKIP LOCKED; every write is fenced on this runner still owning
//! the session; every statement is bounded; times come from the database. One command per
//! session at a time, in id order.
//!
//! The kinds of this slice (`check_numbers`, `mark_read`, `presence`) may be repeated without
//! harm, so a row left `running` (a runner died, a claim's answer was lost) is simply claimed
//! again by the session's owner, up to [`MAX_ATTEMPTS`] times.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Row;
use tokio::time::Instant;

use crate::db::bounded;
use crate::driver::{ChatState, DriverError, Session};
use crate::error_code::ErrorCode;
use crate::shared::{backoff, Shared};

/// Numbers one `check_numbers` command may ask about.
pub const MAX_NUMBERS: usize = 100;
/// Claims of one command (a transient failure, or a runner lost mid-command) before it fails.
pub const MAX_ATTEMPTS: i32 = 3;

/// The kinds this runner executes (the CHECK on `wa_command.kind` lists the same).
pub const KINDS: &[&str] = &[
    "check_numbers",
    "mark_read",
    "presence",
    "contact_info",
    "profile_picture",
    "chats",
    "history",
    "group_create",
    "group_info",
    "group_invite_link",
    "group_leave",
    "group_participants",
];
/// The kinds that change the world: never run twice (see [`settle_interrupted`]).
pub const SIDE_EFFECTS: &[&str] = &["group_create", "group_leave", "group_participants"];
/// The actions of `group_participants` (WAWebModifyParticipantsGroupAction's four).
pub const PARTICIPANT_ACTIONS: &[&str] = &["add", "remove", "promote", "demote"];
/// Participants one `group_create` may name.
pub const MAX_PARTICIPANTS: usize = 256;
/// Characters of a group subject (the server refuses a longer one with 406: WAWebCreateGroupAction).
pub const MAX_SUBJECT: usize = 100;
/// Chats one `chats` command lists at most (and its default).
pub const MAX_CHATS: usize = 200;
pub const DEFAULT_CHATS: usize = 50;
/// Messages one `history` command returns at most (and its default).
pub const MAX_HISTORY: usize = 500;
pub const DEFAULT_HISTORY: usize = 50;

#[derive(Clone)]
struct Claimed {
    id: i64,
    session_id: String,
    kind: String,
    args: Value,
    attempts: i32,
    /// The row was `running` when claimed: an earlier claim may have asked the page already.
    was_running: bool,
    /// `started_at` of that earlier claim.
    prev_started: Option<chrono::DateTime<chrono::Utc>>,
    /// `started_at` of this claim.
    started: chrono::DateTime<chrono::Utc>,
}

/// How one command ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Done(Value),
    Failed(ErrorCode, String),
    /// Queued again after this long.
    Retry(ErrorCode, String, Duration),
}

pub async fn run(shared: Arc<Shared>) {
    // Sessions with a command in flight here. A session not in it has nothing running here, so
    // a `running` row of it is a leftover and is claimed again.
    let busy = Arc::new(Mutex::new(HashSet::<String>::new()));
    loop {
        if shared.draining.is_cancelled() {
            break;
        }
        let ready: Vec<String> = {
            let sessions = shared.sessions();
            let busy = busy.lock().unwrap_or_else(|p| p.into_inner());
            sessions
                .iter()
                .filter(|(id, e)| e.handle.is_some() && !busy.contains(*id))
                .map(|(id, _)| id.clone())
                .collect()
        };
        if !ready.is_empty() {
            match claim(&shared, &ready).await {
                Ok(rows) => {
                    let mut give_back = Vec::new();
                    for row in rows {
                        let handle = shared
                            .sessions()
                            .get(&row.session_id)
                            .and_then(|e| e.handle.clone());
                        // The page went away while the claim ran: nothing was asked.
                        let Some(handle) = handle else {
                            give_back.push(row.id);
                            continue;
                        };
                        busy.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(row.session_id.clone());
                        let sh = shared.clone();
                        let busy = busy.clone();
                        tokio::spawn(async move {
                            let side_effect = SIDE_EFFECTS.contains(&row.kind.as_str());
                            let outcome = if side_effect && row.was_running {
                                settle_interrupted(&sh, &*handle, &row).await
                            } else if row.attempts > MAX_ATTEMPTS {
                                Outcome::Failed(
                                    ErrorCode::CommandFailed,
                                    format!(
                                        "interrupted {} times before it finished",
                                        row.attempts - 1
                                    ),
                                )
                            } else {
                                execute(&sh, &*handle, &row).await
                            };
                            complete(&sh, &row, outcome).await;
                            busy.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&row.session_id);
                            sh.command_wake.notify_one();
                        });
                    }
                    if !give_back.is_empty() {
                        unclaim(&shared, &give_back).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming commands failed; retrying"),
            }
        }
        tokio::select! {
            _ = shared.command_wake.notified() => {}
            _ = tokio::time::sleep(shared.cfg.poll_interval) => {}
            _ = shared.draining.cancelled() => {}
        }
    }
    // Drain: let running commands finish within the bound (a row left running is claimed
    // again by the session's next owner).
    let deadline = Instant::now() + shared.cfg.drain_timeout;
    while !busy.lock().unwrap_or_else(|p| p.into_inner()).is_empty() && Instant::now() < deadline {
        tokio::select! {
            _ = shared.command_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

async fn claim(shared: &Shared, ready: &[String]) -> sqlx::Result<Vec<Claimed>> {
    let q = sqlx::query(
        "with ready as (select unnest($2::text[]) as sid),
         picked as (
           select k.id, k.status, k.started_at from ready r
           cross join lateral (
             select id, status, started_at from wa_command
             where session_id = r.sid
               and ((status = 'queued' and not_before <= now()) or status = 'running')
             order by id limit 1
             for update skip locked) k
         )
         update wa_command c set status = 'running', attempts = c.attempts + 1, runner_id = $1,
           started_at = now()
         from picked p
         where c.id = any(array(select id from picked)) and c.id = p.id
           and (select s.runner_id from wa_session s where s.id = c.session_id and s.lease_until > now()) = $1
         returning c.id, c.session_id, c.kind, c.args, c.attempts,
           c.started_at, p.status = 'running' as was_running, p.started_at as prev_started",
    )
    .bind(shared.id)
    .bind(ready);
    let rows = bounded(q.fetch_all(&shared.pool)).await?;
    Ok(rows
        .into_iter()
        .map(|r| Claimed {
            id: r.get("id"),
            session_id: r.get("session_id"),
            kind: r.get("kind"),
            args: r.get("args"),
            attempts: r.get("attempts"),
            was_running: r.get("was_running"),
            prev_started: r.get("prev_started"),
            started: r.get("started_at"),
        })
        .collect())
}

/// Rows claimed for a session that lost its page before they were started: queued again.
async fn unclaim(shared: &Shared, ids: &[i64]) {
    let r = bounded(
        sqlx::query(
            "update wa_command c set status = 'queued', attempts = greatest(c.attempts - 1, 0)
             where c.id = any($1) and c.status = 'running'
               and (select s.runner_id from wa_session s where s.id = c.session_id) = $2",
        )
        .bind(ids)
        .bind(shared.id)
        .execute(&shared.pool),
    )
    .await;
    if let Err(e) = r {
        // Left `running`: claimed again once the session has a page.
        tracing::warn!(error = %e, "giving back commands failed");
    }
}

/// The completion, fenced on this runner still owning the session and the row still running
/// under it. Retried a few times; a row never written stays `running` and is claimed again.
async fn complete(shared: &Shared, row: &Claimed, outcome: Outcome) {
    let (status, result, code, error, retry_ms) = match &outcome {
        Outcome::Done(v) => ("done", Some(v.clone()), None, None, None),
        Outcome::Failed(c, m) => ("failed", None, Some(c.as_str()), Some(m.as_str()), None),
        Outcome::Retry(c, m, d) => (
            "queued",
            None,
            Some(c.as_str()),
            Some(m.as_str()),
            Some(d.as_secs_f64() * 1000.0),
        ),
    };
    match &outcome {
        Outcome::Done(_) => {
            tracing::info!(command_id = row.id, session = %row.session_id, kind = %row.kind, "command done")
        }
        _ => {
            tracing::info!(command_id = row.id, session = %row.session_id, kind = %row.kind, status, code, "command not done")
        }
    }
    let mut delay = Duration::from_millis(50);
    for _ in 0..8 {
        let q = sqlx::query(
            "with done as (
               update wa_command c set status = $2, result = $3, error_code = $4, error = $5,
                 finished_at = case when $2 = 'queued' then null else now() end,
                 not_before = case when $6::float8 is null then c.not_before
                                   else now() + make_interval(secs => $6::float8 / 1000) end
               where c.id = $1 and c.status = 'running' and c.runner_id = $7
                 and (select s.runner_id from wa_session s where s.id = c.session_id) = $7
               returning c.session_id, c.status)
             update wa_session s set last_active_at = now()
             where s.id in (select session_id from done where status = 'done')",
        )
        .bind(row.id)
        .bind(status)
        .bind(&result)
        .bind(code)
        .bind(error)
        .bind(retry_ms)
        .bind(shared.id)
        .execute(&shared.pool);
        match bounded(q).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(command_id = row.id, error = %e, "writing a command's completion failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn invalid(msg: impl Into<String>) -> Outcome {
    Outcome::Failed(ErrorCode::InvalidCommand, msg.into())
}

/// What a command asks for, checked before the page sees anything.
#[derive(Debug, PartialEq)]
enum Request {
    CheckNumbers(Vec<(String, String)>),
    MarkRead(String),
    Presence(String, ChatState),
    ContactInfo(String),
    ProfilePicture(String),
    Chats(usize),
    History(String, usize),
    GroupCreate(String, Vec<String>),
    GroupInfo(String),
    GroupInviteLink(String),
    GroupLeave(String),
    GroupParticipants(String, String, Vec<String>),
}

/// Validates a row's kind and args; the error is the sentence for the `error` column.
fn parse(kind: &str, args: &Value) -> Result<Request, String> {
    let Some(obj) = args.as_object() else {
        return Err("args must be a JSON object".into());
    };
    let allowed: &[&str] = match kind {
        "check_numbers" => &["numbers"],
        "mark_read" => &["chat"],
        "presence" => &["chat", "state"],
        "contact_info" | "profile_picture" => &["contact"],
        "chats" => &["limit"],
        "history" => &["chat", "limit"],
        "group_create" => &["subject", "participants"],
        "group_info" | "group_invite_link" | "group_leave" => &["group"],
        "group_participants" => &["group", "action", "participants"],
        other => {
            return Err(format!(
                "unknown kind `{other}` (this runner knows {})",
                KINDS.join(", ")
            ))
        }
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "args.{k} is not an argument of {kind} (it takes {})",
            allowed.join(", ")
        ));
    }
    match kind {
        "group_create" | "group_info" | "group_invite_link" | "group_leave"
        | "group_participants" => parse_group(kind, obj),
        "contact_info" | "profile_picture" => parse_contact(kind, obj),
        "chats" => Ok(Request::Chats(parse_limit(obj, DEFAULT_CHATS, MAX_CHATS)?)),
        "history" => {
            let limit = parse_limit(obj, DEFAULT_HISTORY, MAX_HISTORY)?;
            let Some(chat) = obj.get("chat").and_then(Value::as_str) else {
                return Err("args.chat must be a phone number or a c.us/g.us JID".into());
            };
            let jid = crate::recipient::normalize(chat).map_err(|e| format!("args.chat: {e}"))?;
            Ok(Request::History(jid.as_str().to_string(), limit))
        }
        "check_numbers" => {
            let Some(list) = obj.get("numbers").and_then(Value::as_array) else {
                return Err("args.numbers must be a list of phone numbers".into());
            };
            if list.is_empty() || list.len() > MAX_NUMBERS {
                return Err(format!(
                    "args.numbers must hold 1 to {MAX_NUMBERS} numbers (it holds {})",
                    list.len()
                ));
            }
            let mut out = Vec::with_capacity(list.len());
            for (i, n) in list.iter().enumerate() {
                let Some(s) = n.as_str() else {
                    return Err(format!("args.numbers[{i}] is not a string"));
                };
                let jid = crate::recipient::normalize(s)
                    .map_err(|e| format!("args.numbers[{i}]: {e}"))?;
                if jid.is_group() {
                    return Err(format!("args.numbers[{i}] is a group, not a phone number"));
                }
                out.push((s.to_string(), jid.as_str().to_string()));
            }
            Ok(Request::CheckNumbers(out))
        }
        _ => {
            let Some(chat) = obj.get("chat").and_then(Value::as_str) else {
                return Err("args.chat must be a phone number or a c.us/g.us JID".into());
            };
            let jid = crate::recipient::normalize(chat).map_err(|e| format!("args.chat: {e}"))?;
            if kind == "mark_read" {
                return Ok(Request::MarkRead(jid.as_str().to_string()));
            }
            let state = obj.get("state").and_then(Value::as_str).unwrap_or("");
            let Some(state) = ChatState::parse(state) else {
                return Err("args.state must be one of typing, recording, paused".into());
            };
            Ok(Request::Presence(jid.as_str().to_string(), state))
        }
    }
}

// ---- groups (issue 14)

fn parse_group(kind: &str, obj: &serde_json::Map<String, Value>) -> Result<Request, String> {
    if kind != "group_create" {
        let Some(raw) = obj.get("group").and_then(Value::as_str) else {
            return Err("args.group must be a group JID (…@g.us)".into());
        };
        let jid = crate::recipient::normalize(raw).map_err(|e| format!("args.group: {e}"))?;
        if !jid.is_group() {
            return Err(format!("args.group: `{raw}` is not a group JID (…@g.us)"));
        }
        let jid = jid.as_str().to_string();
        if kind == "group_participants" {
            let action = obj.get("action").and_then(Value::as_str).unwrap_or("");
            if !PARTICIPANT_ACTIONS.contains(&action) {
                return Err(format!(
                    "args.action must be one of {} (it is {})",
                    PARTICIPANT_ACTIONS.join(", "),
                    obj.get("action").unwrap_or(&Value::Null)
                ));
            }
            let list = parse_participants(obj)?;
            return Ok(Request::GroupParticipants(jid, action.to_string(), list));
        }
        return Ok(match kind {
            "group_info" => Request::GroupInfo(jid),
            "group_invite_link" => Request::GroupInviteLink(jid),
            _ => Request::GroupLeave(jid),
        });
    }
    let subject = obj
        .get("subject")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("");
    let n = subject.chars().count();
    if n == 0 || n > MAX_SUBJECT {
        return Err(format!(
            "args.subject must be a text of 1 to {MAX_SUBJECT} characters (it has {n})"
        ));
    }
    if subject.chars().any(char::is_control) {
        return Err("args.subject must not hold control characters (newlines, tabs)".into());
    }
    Ok(Request::GroupCreate(
        subject.to_string(),
        parse_participants(obj)?,
    ))
}

/// `args.participants`: 1 to [`MAX_PARTICIPANTS`] distinct people (numbers or c.us JIDs).
fn parse_participants(obj: &serde_json::Map<String, Value>) -> Result<Vec<String>, String> {
    let Some(list) = obj.get("participants").and_then(Value::as_array) else {
        return Err("args.participants must be a list of phone numbers or c.us JIDs".into());
    };
    if list.is_empty() || list.len() > MAX_PARTICIPANTS {
        return Err(format!(
            "args.participants must hold 1 to {MAX_PARTICIPANTS} numbers (it holds {})",
            list.len()
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let Some(s) = p.as_str() else {
            return Err(format!("args.participants[{i}] is not a string"));
        };
        let jid =
            crate::recipient::normalize(s).map_err(|e| format!("args.participants[{i}]: {e}"))?;
        if jid.is_group() {
            return Err(format!("args.participants[{i}] is a group, not a person"));
        }
        let jid = jid.as_str().to_string();
        if out.contains(&jid) {
            return Err(format!("args.participants[{i}] repeats {jid}"));
        }
        out.push(jid);
    }
    Ok(out)
}

/// The `result` of group_participants from the page's answer: `{group, action, results: [{wid,
/// ok, code}], recovered}`, one entry per asked participant in the asked order; `code` is the
/// page's ("200" done, else its refusal: a server code such as "403" / "409", the page's own
/// `ActionError`, `not_a_participant`, `unknown_contact`).
fn participants_result(
    group: &str,
    action: &str,
    asked: &[String],
    v: &Value,
    recovered: bool,
) -> Value {
    let mut codes = std::collections::HashMap::new();
    for p in v
        .get("participants")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(w), Some(c)) = (
            p.get("wid").and_then(Value::as_str),
            p.get("code").and_then(Value::as_str),
        ) {
            codes.insert(w.to_string(), c.chars().take(64).collect::<String>());
        }
    }
    let results: Vec<Value> = asked
        .iter()
        .map(|w| {
            let code = codes.get(w).cloned().unwrap_or_else(|| "unknown".into());
            json!({"wid": w, "ok": code == "200", "code": code})
        })
        .collect();
    json!({"group": group, "action": action, "results": results, "recovered": recovered})
}

/// Whether `group` (an entry of `groups_all`) shows the asked change for every participant:
/// add → in it, remove → not in it, promote → an admin, demote → in it and not an admin.
fn participants_settled(group: Option<&Value>, action: &str, asked: &[String]) -> bool {
    let Some(g) = group else {
        return false;
    };
    let role = |w: &str| -> Option<Option<String>> {
        g.get("participants")
            .and_then(Value::as_array)?
            .iter()
            .find(|p| p.get("id").and_then(Value::as_str) == Some(w))
            .map(|p| p.get("admin").and_then(Value::as_str).map(str::to_string))
    };
    asked.iter().all(|w| match (action, role(w)) {
        ("add", r) => r.is_some(),
        ("remove", r) => r.is_none(),
        ("promote", Some(Some(_))) => true,
        ("demote", Some(None)) => true,
        _ => false,
    })
}

/// An interrupted group_participants: the group as the server has it shows the change for every
/// asked participant (done, `recovered`), or it does not (command_interrupted: the change may
/// still arrive, or a participant refused).
async fn settle_participants(
    shared: &Shared,
    session: &dyn Session,
    group: &str,
    action: &str,
    asked: &[String],
) -> Outcome {
    let all = match tokio::time::timeout(shared.cfg.send_timeout, session.groups_all()).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return Outcome::Failed(
                ErrorCode::CommandInterrupted,
                format!("interrupted, and the page could not list the groups to check: {e}"),
            )
        }
        Err(_) => {
            return Outcome::Failed(
                ErrorCode::CommandInterrupted,
                "interrupted, and listing the groups to check took too long".into(),
            )
        }
    };
    let g = all.as_array().and_then(|gs| {
        gs.iter()
            .find(|g| g.get("id").and_then(Value::as_str) == Some(group))
    });
    if participants_settled(g, action, asked) {
        let v = json!({"participants": asked.iter().map(|w| json!({"wid": w, "code": "200"})).collect::<Vec<_>>()});
        return Outcome::Done(participants_result(group, action, asked, &v, true));
    }
    Outcome::Failed(
        ErrorCode::CommandInterrupted,
        format!("interrupted during {action} in {group}; the group does not show it for every participant, but the page may still have sent it: check before asking again"),
    )
}

/// The `result` of group_create from the page's answer: `{id, subject, added, failed:
/// [{wid, code}], recovered}`. A participant the answer does not mention counts as added (the
/// page reports only the ones it could not add with their code).
fn group_create_result(subject: &str, asked: &[String], v: &Value, recovered: bool) -> Value {
    let mut codes = std::collections::HashMap::new();
    for p in v
        .get("participants")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(w) = p.get("wid").and_then(Value::as_str) {
            let code = p.get("code").and_then(Value::as_str).unwrap_or("200");
            codes.insert(w.to_string(), code.to_string());
        }
    }
    let mut added = Vec::new();
    let mut failed = Vec::new();
    for w in asked {
        match codes.get(w).map(String::as_str) {
            None | Some("200") => added.push(json!(w)),
            Some(c) => failed.push(json!({"wid": w, "code": c})),
        }
    }
    json!({
        "id": v.get("id").and_then(Value::as_str),
        "subject": subject,
        "added": added,
        "failed": failed,
        "recovered": recovered,
    })
}

/// The `result` of group_info.
fn group_info_result(group: &str, v: &Value) -> Value {
    let found = v.get("found").and_then(Value::as_bool).unwrap_or(false);
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(1024).collect::<String>())
    };
    json!({
        "group": group,
        "found": found,
        "subject": if found { text("subject") } else { None },
        "owner": if found { text("owner") } else { None },
        "created_at": v.get("creation").and_then(Value::as_i64)
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "participants": if found {
            pick_items(v.get("participants"), &["id", "is_admin", "is_super_admin"], MAX_PARTICIPANTS * 4)
        } else {
            Vec::new()
        },
    })
}

/// How far before the row's `started_at` a group's `creation` (server seconds, truncated) may lie
/// and still be the one this row asked for.
const CREATION_SLACK: chrono::Duration = chrono::Duration::seconds(2);

/// A side-effecting row found `running` from an earlier claim (a runner died mid-call, a lease
/// moved), or whose page call failed without a clear answer: it is never asked of the page
/// again. The page is asked whether the effect is there (README, "the rule the group commands
/// follow"): one group with this subject created since the row started, holding the asked
/// participants, settles it `done`; anything else fails it `command_interrupted`.
async fn settle_interrupted(shared: &Shared, session: &dyn Session, row: &Claimed) -> Outcome {
    let (subject, asked) = match parse(&row.kind, &row.args) {
        Ok(Request::GroupCreate(s, p)) => (s, p),
        Ok(Request::GroupLeave(group)) => return settle_leave(shared, session, &group).await,
        Ok(Request::GroupParticipants(group, action, asked)) => {
            return settle_participants(shared, session, &group, &action, &asked).await
        }
        Ok(_) => {
            return Outcome::Failed(
                ErrorCode::CommandInterrupted,
                "interrupted; this kind cannot be checked on the page".into(),
            )
        }
        Err(m) => return invalid(m),
    };
    let since = row.prev_started.unwrap_or_else(chrono::Utc::now) - CREATION_SLACK;
    let all = match tokio::time::timeout(shared.cfg.send_timeout, session.groups_all()).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return Outcome::Failed(
                ErrorCode::CommandInterrupted,
                format!("interrupted, and the page could not list the groups to check: {e}"),
            )
        }
        Err(_) => {
            return Outcome::Failed(
                ErrorCode::CommandInterrupted,
                "interrupted, and listing the groups to check took too long".into(),
            )
        }
    };
    let matches = find_created(&all, &subject, &asked, since);
    match matches.as_slice() {
        [g] => {
            let gid = g.get("id").and_then(Value::as_str).unwrap_or("");
            tracing::info!(command_id = row.id, group = gid, "an interrupted group_create had created its group");
            let members: Vec<Value> = asked
                .iter()
                .filter(|w| has_member(g, w))
                .map(|w| json!({"wid": w, "code": "200"}))
                .chain(
                    asked
                        .iter()
                        .filter(|w| !has_member(g, w))
                        .map(|w| json!({"wid": w, "code": "unknown"})),
                )
                .collect();
            let v = json!({"id": g.get("id"), "participants": members});
            Outcome::Done(group_create_result(&subject, &asked, &v, true))
        }
        [] => Outcome::Failed(
            ErrorCode::CommandInterrupted,
            format!(
                "interrupted while creating the group; no group `{subject}` created since the command started is there yet, but the page may still have sent it: check before asking again"
            ),
        ),
        many => Outcome::Failed(
            ErrorCode::CommandInterrupted,
            format!(
                "interrupted; {} groups `{subject}` were created since the command started ({}), which one is this command's is unknown",
                many.len(),
                many.iter().filter_map(|g| g.get("id").and_then(Value::as_str)).collect::<Vec<_>>().join(", ")
            ),
        ),
    }
}

/// An interrupted group_leave: the group no longer among the account's groups is left (done);
/// still there, the leave may yet arrive (command_interrupted).
async fn settle_leave(shared: &Shared, session: &dyn Session, group: &str) -> Outcome {
    match tokio::time::timeout(shared.cfg.send_timeout, session.groups_all()).await {
        Ok(Ok(all)) => {
            let member = all.as_array().is_some_and(|gs| {
                gs.iter()
                    .any(|g| g.get("id").and_then(Value::as_str) == Some(group))
            });
            if member {
                Outcome::Failed(
                    ErrorCode::CommandInterrupted,
                    format!("interrupted while leaving {group}; the account is still in it, but the page may still have sent the leave: check before asking again"),
                )
            } else {
                Outcome::Done(json!({"group": group, "left": true, "recovered": true}))
            }
        }
        Ok(Err(e)) => Outcome::Failed(
            ErrorCode::CommandInterrupted,
            format!("interrupted, and the page could not list the groups to check: {e}"),
        ),
        Err(_) => Outcome::Failed(
            ErrorCode::CommandInterrupted,
            "interrupted, and listing the groups to check took too long".into(),
        ),
    }
}

fn has_member(g: &Value, wid: &str) -> bool {
    g.get("participants")
        .and_then(Value::as_array)
        .is_some_and(|ps| {
            ps.iter()
                .any(|p| p.get("id").and_then(Value::as_str) == Some(wid))
        })
}

/// The groups of `all` (the answer of `groups_all`) that this group_create made: the subject,
/// created since `since`, and every asked participant in it (or the page names members by LID,
/// which cannot be compared with a number).
fn find_created<'a>(
    all: &'a Value,
    subject: &str,
    asked: &[String],
    since: chrono::DateTime<chrono::Utc>,
) -> Vec<&'a Value> {
    all.as_array()
        .into_iter()
        .flatten()
        .filter(|g| g.get("subject").and_then(Value::as_str) == Some(subject))
        .filter(|g| {
            g.get("creation")
                .and_then(Value::as_i64)
                .is_some_and(|t| t >= since.timestamp())
        })
        .filter(|g| {
            let by_lid = g
                .get("participants")
                .and_then(Value::as_array)
                .is_some_and(|ps| {
                    ps.iter().any(|p| {
                        p.get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|i| i.ends_with("@lid"))
                    })
                });
            by_lid || asked.iter().all(|w| has_member(g, w))
        })
        .collect()
}

// ---- contacts and profile pictures (issue 14)

/// `args.contact` of contact_info / profile_picture: a phone number, a `c.us` JID, a LID
/// (`digits@lid`, as check_numbers answers on today's page), or for profile_picture a group.
fn parse_contact(kind: &str, obj: &serde_json::Map<String, Value>) -> Result<Request, String> {
    let Some(raw) = obj.get("contact").and_then(Value::as_str) else {
        return Err(format!(
            "args.contact of {kind} must be a phone number or a c.us/lid JID"
        ));
    };
    let jid = match raw.trim().strip_suffix("@lid") {
        Some(user)
            if !user.is_empty() && user.len() <= 20 && user.bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{user}@lid")
        }
        Some(_) => return Err(format!("args.contact: `{raw}` is not a LID (digits@lid)")),
        None => {
            let jid = crate::recipient::normalize(raw).map_err(|e| format!("args.contact: {e}"))?;
            if jid.is_group() && kind == "contact_info" {
                return Err(
                    "args.contact is a group; contact_info reads people (group_info reads groups)"
                        .into(),
                );
            }
            jid.as_str().to_string()
        }
    };
    Ok(if kind == "contact_info" {
        Request::ContactInfo(jid)
    } else {
        Request::ProfilePicture(jid)
    })
}

/// The expiry a WhatsApp CDN URL carries: its `oe` query parameter, hex seconds since the epoch
/// (`…_n.jpg?ccb=11-4&oh=…&oe=630F8F9D`; the URL stops working after it: wppconnect#852, #1315).
pub fn url_expiry(url: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let parsed = url::Url::parse(url).ok()?;
    let oe = parsed
        .query_pairs()
        .find(|(k, _)| k == "oe")
        .map(|(_, v)| v.into_owned())?;
    let secs = i64::from_str_radix(&oe, 16).ok()?;
    chrono::DateTime::from_timestamp(secs, 0)
}

/// The `result` of contact_info from the page's answer, with only the documented keys.
fn contact_result(contact: &str, v: &Value) -> Value {
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(1024).collect::<String>())
    };
    let exists = v.get("exists").and_then(Value::as_bool).unwrap_or(false);
    json!({
        "contact": contact,
        "exists": exists,
        "wid": if exists { text("wid") } else { None },
        "number": if exists { text("number") } else { None },
        "name": text("name"),
        "pushname": text("pushname"),
        "is_business": v.get("is_business").and_then(Value::as_bool).unwrap_or(false),
        "is_my_contact": v.get("is_my_contact").and_then(Value::as_bool).unwrap_or(false),
        "about": text("about"),
    })
}

/// The `result` of profile_picture: the URL and the expiry it carries.
fn picture_result(contact: &str, v: &Value) -> Value {
    let url = v
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
    json!({
        "contact": contact,
        "found": url.is_some(),
        "url": url,
        "expires_at": url.and_then(url_expiry).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    })
}

// ---- chats and history (issue 14)

/// `args.limit`: absent is `default`; else an integer 1..=max.
fn parse_limit(
    obj: &serde_json::Map<String, Value>,
    default: usize,
    max: usize,
) -> Result<usize, String> {
    match obj.get("limit") {
        None => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
            _ => Err(format!(
                "args.limit must be an integer from 1 to {max} (it is {v})"
            )),
        },
    }
}

/// Keeps only the documented keys of each item the page returned.
fn pick_items(v: Option<&Value>, keys: &[&str], limit: usize) -> Vec<Value> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .take(limit)
                .map(|item| {
                    let mut o = serde_json::Map::new();
                    for k in keys {
                        o.insert(k.to_string(), item.get(*k).cloned().unwrap_or(Value::Null));
                    }
                    Value::Object(o)
                })
                .collect()
        })
        .unwrap_or_default()
}

pub const CHAT_KEYS: &[&str] = &[
    "id",
    "number",
    "name",
    "is_group",
    "unread",
    "marked_unread",
    "timestamp",
    "archived",
    "pinned",
];
pub const HISTORY_KEYS: &[&str] = &[
    "id",
    "key",
    "from_me",
    "type",
    "body",
    "timestamp",
    "author",
];

async fn execute(shared: &Shared, session: &dyn Session, row: &Claimed) -> Outcome {
    let req = match parse(&row.kind, &row.args) {
        Ok(r) => r,
        Err(m) => return invalid(m),
    };
    let timeout = shared.cfg.send_timeout;
    let bounded_call = |what: &'static str| {
        move |_| {
            DriverError::transient(
                ErrorCode::CommandTimeout,
                format!("{what} took longer than {timeout:?}"),
            )
        }
    };
    let r: Result<Value, DriverError> = async {
        match req {
            Request::CheckNumbers(numbers) => {
                let mut results = Vec::with_capacity(numbers.len());
                for (number, jid) in numbers {
                    let wid = tokio::time::timeout(timeout, session.resolve_chat(&jid))
                        .await
                        .map_err(bounded_call("a number lookup"))??;
                    results.push(json!({"number": number, "wid": wid, "exists": wid.is_some()}));
                }
                Ok(json!({ "results": results }))
            }
            Request::MarkRead(chat) => {
                let m = tokio::time::timeout(timeout, session.mark_read(&chat))
                    .await
                    .map_err(bounded_call("marking the chat read"))??;
                Ok(json!({"chat": chat, "found": m.chat.is_some(), "unread": m.unread}))
            }
            Request::Presence(chat, state) => {
                tokio::time::timeout(timeout, session.set_presence(&chat, state))
                    .await
                    .map_err(bounded_call("sending the chat state"))??;
                Ok(json!({"chat": chat, "state": state.as_str()}))
            }
            Request::ContactInfo(contact) => {
                let v = tokio::time::timeout(timeout, session.contact_info(&contact))
                    .await
                    .map_err(bounded_call("reading the contact"))??;
                Ok(contact_result(&contact, &v))
            }
            Request::ProfilePicture(contact) => {
                let v = tokio::time::timeout(timeout, session.profile_picture(&contact))
                    .await
                    .map_err(bounded_call("reading the profile picture"))??;
                Ok(picture_result(&contact, &v))
            }
            Request::Chats(limit) => {
                let v = tokio::time::timeout(timeout, session.chats(limit))
                    .await
                    .map_err(bounded_call("listing the chats"))??;
                Ok(json!({"chats": pick_items(Some(&v), CHAT_KEYS, limit)}))
            }
            Request::GroupCreate(subject, participants) => {
                let v =
                    tokio::time::timeout(timeout, session.group_create(&subject, &participants))
                        .await
                        .map_err(bounded_call("creating the group"))??;
                Ok(group_create_result(&subject, &participants, &v, false))
            }
            Request::GroupInfo(group) => {
                let v = tokio::time::timeout(timeout, session.group_info(&group))
                    .await
                    .map_err(bounded_call("reading the group"))??;
                Ok(group_info_result(&group, &v))
            }
            Request::GroupInviteLink(group) => {
                let v = tokio::time::timeout(timeout, session.group_invite_code(&group))
                    .await
                    .map_err(bounded_call("reading the invite link"))??;
                let code = v
                    .as_str()
                    .filter(|c| !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric()))
                    .ok_or_else(|| DriverError::permanent(ErrorCode::CommandFailed, "the page answered no invite code"))?;
                Ok(json!({"group": group, "code": code, "link": format!("https://chat.whatsapp.com/{code}")}))
            }
            Request::GroupLeave(group) => {
                tokio::time::timeout(timeout, session.group_leave(&group))
                    .await
                    .map_err(bounded_call("leaving the group"))??;
                Ok(json!({"group": group, "left": true, "recovered": false}))
            }
            Request::GroupParticipants(group, action, participants) => {
                let v = tokio::time::timeout(
                    timeout,
                    session.group_participants(&group, &action, &participants),
                )
                .await
                .map_err(bounded_call("changing the group's participants"))??;
                if v.get("found").and_then(Value::as_bool) != Some(true) {
                    return Err(DriverError::permanent(
                        ErrorCode::CommandFailed,
                        format!("the account is not in group {group} (or there is no such group)"),
                    ));
                }
                Ok(participants_result(&group, &action, &participants, &v, false))
            }
            Request::History(chat, limit) => {
                let v = tokio::time::timeout(timeout, session.history(&chat, limit))
                    .await
                    .map_err(bounded_call("reading the chat's history"))??;
                let found = v.get("chat").and_then(Value::as_str);
                Ok(json!({
                    "chat": chat,
                    "found": found.is_some(),
                    "page_chat": found,
                    "messages": pick_items(v.get("messages"), HISTORY_KEYS, limit),
                }))
            }
        }
    }
    .await;
    match r {
        Ok(v) => Outcome::Done(v),
        Err(DriverError::Permanent { code, message }) => Outcome::Failed(code, message),
        // The page may have done it before the call failed: checked, never asked again.
        Err(_) if SIDE_EFFECTS.contains(&row.kind.as_str()) => {
            let row = Claimed {
                prev_started: Some(row.prev_started.unwrap_or(row.started)),
                ..row.clone()
            };
            settle_interrupted(shared, session, &row).await
        }
        Err(e) => {
            let code = match e.code() {
                ErrorCode::CommandTimeout | ErrorCode::SendTimeout => ErrorCode::CommandTimeout,
                _ => ErrorCode::CommandFailed,
            };
            let message = e.to_string();
            if row.attempts >= MAX_ATTEMPTS {
                Outcome::Failed(code, format!("{} attempts; last: {message}", row.attempts))
            } else {
                let d = backoff(
                    row.attempts as u32,
                    shared.cfg.retry_base,
                    Duration::from_secs(60),
                );
                Outcome::Retry(code, message, d)
            }
        }
    }
}

/// The `result` keys of each kind, for the docs and the tests.
pub fn result_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "check_numbers" => &["results"],
        "mark_read" => &["chat", "found", "unread"],
        "presence" => &["chat", "state"],
        "contact_info" => &[
            "contact",
            "exists",
            "wid",
            "number",
            "name",
            "pushname",
            "is_business",
            "is_my_contact",
            "about",
        ],
        "profile_picture" => &["contact", "found", "url", "expires_at"],
        "chats" => &["chats"],
        "history" => &["chat", "found", "page_chat", "messages"],
        "group_create" => &["id", "subject", "added", "failed", "recovered"],
        "group_info" => &[
            "group",
            "found",
            "subject",
            "owner",
            "created_at",
            "participants",
        ],
        "group_invite_link" => &["group", "code", "link"],
        "group_leave" => &["group", "left", "recovered"],
        "group_participants" => &["group", "action", "results", "recovered"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_validated_with_a_sentence() {
        let bad = [
            ("check_numbers", json!([])),
            ("check_numbers", json!({})),
            ("check_numbers", json!({"numbers": []})),
            ("check_numbers", json!({"numbers": [5]})),
            ("check_numbers", json!({"numbers": ["abc"]})),
            (
                "check_numbers",
                json!({"numbers": ["120363012345678901@g.us"]}),
            ),
            (
                "check_numbers",
                json!({"numbers": vec!["15551234567"; MAX_NUMBERS + 1]}),
            ),
            ("check_numbers", json!({"numbers": ["15551234567"], "x": 1})),
            ("mark_read", json!({})),
            ("mark_read", json!({"chat": "not a number"})),
            ("presence", json!({"chat": "15551234567"})),
            (
                "presence",
                json!({"chat": "15551234567", "state": "online"}),
            ),
            ("reboot", json!({})),
            ("contact_info", json!({})),
            ("contact_info", json!({"contact": 15551234567_i64})),
            (
                "contact_info",
                json!({"contact": "120363012345678901@g.us"}),
            ),
            ("contact_info", json!({"contact": "abc@lid"})),
            ("profile_picture", json!({"contact": "x@s.whatsapp.net"})),
            (
                "profile_picture",
                json!({"contact": "15551234567", "size": "big"}),
            ),
        ];
        for (kind, args) in bad {
            let e = parse(kind, &args).expect_err(&format!("{kind} {args}"));
            assert!(e.len() > 10 && !e.contains('\n'), "{e}");
        }
        assert_eq!(
            parse("check_numbers", &json!({"numbers": ["+1 555 123 4567"]})),
            Ok(Request::CheckNumbers(vec![(
                "+1 555 123 4567".into(),
                "15551234567@c.us".into()
            )]))
        );
        assert_eq!(
            parse("mark_read", &json!({"chat": "15551234567@c.us"})),
            Ok(Request::MarkRead("15551234567@c.us".into()))
        );
        assert_eq!(
            parse(
                "presence",
                &json!({"chat": "15551234567", "state": "recording"})
            ),
            Ok(Request::Presence(
                "15551234567@c.us".into(),
                ChatState::Recording
            ))
        );
    }

    #[test]
    fn contact_args_and_results() {
        assert_eq!(
            parse("contact_info", &json!({"contact": "+1 555 123 4567"})),
            Ok(Request::ContactInfo("15551234567@c.us".into()))
        );
        assert_eq!(
            parse("contact_info", &json!({"contact": "123456789012345@lid"})),
            Ok(Request::ContactInfo("123456789012345@lid".into()))
        );
        assert_eq!(
            parse(
                "profile_picture",
                &json!({"contact": "120363012345678901@g.us"})
            ),
            Ok(Request::ProfilePicture("120363012345678901@g.us".into()))
        );
        let t = url_expiry(
            "https://pps.whatsapp.net/v/t61.24694-24/1_n.jpg?ccb=11-4&oh=01_x&oe=630F8F9D",
        )
        .unwrap();
        assert_eq!(t.timestamp(), 0x630F8F9D);
        assert_eq!(url_expiry("https://example.com/a.jpg"), None);
        assert_eq!(url_expiry("https://example.com/a.jpg?oe=zz"), None);
        let r = picture_result("1@c.us", &json!({"url": "javascript:alert(1)"}));
        assert_eq!(r["found"], false);
        assert_eq!(r["url"], Value::Null);
        let r = contact_result("1@c.us", &json!({"exists": false, "wid": "x"}));
        assert_eq!(r["wid"], Value::Null);
        for k in ["contact_info", "profile_picture"] {
            let v = if k == "contact_info" {
                contact_result("1@c.us", &json!({}))
            } else {
                picture_result("1@c.us", &json!({}))
            };
            let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort();
            let mut want = result_keys(k).to_vec();
            want.sort();
            assert_eq!(keys, want, "{k}");
        }
    }

    #[test]
    fn chats_and_history_args() {
        assert_eq!(
            parse("chats", &json!({})),
            Ok(Request::Chats(DEFAULT_CHATS))
        );
        assert_eq!(parse("chats", &json!({"limit": 3})), Ok(Request::Chats(3)));
        assert_eq!(
            parse("history", &json!({"chat": "15551234567"})),
            Ok(Request::History("15551234567@c.us".into(), DEFAULT_HISTORY))
        );
        let items = pick_items(
            Some(&json!([{"id": "a", "extra": 1}, {"id": "b"}])),
            &["id", "body"],
            1,
        );
        assert_eq!(items, vec![json!({"id": "a", "body": null})]);
    }

    #[test]
    fn group_participants_args_results_and_settling() {
        assert_eq!(
            parse(
                "group_participants",
                &json!({"group": "120363012345678901@g.us", "action": "promote", "participants": ["+1 555 123 4567"]})
            ),
            Ok(Request::GroupParticipants(
                "120363012345678901@g.us".into(),
                "promote".into(),
                vec!["15551234567@c.us".into()]
            ))
        );
        for args in [
            json!({"group": "120363012345678901@g.us", "action": "kick", "participants": ["15551234567"]}),
            json!({"group": "15551234567", "action": "add", "participants": ["15551234567"]}),
            json!({"group": "120363012345678901@g.us", "action": "add", "participants": []}),
            json!({"group": "120363012345678901@g.us", "action": "add"}),
            json!({"group": "120363012345678901@g.us", "action": "add", "participants": ["1555", "1555"]}),
            json!({"group": "120363012345678901@g.us", "action": "add", "participants": ["15551234567"], "x": 1}),
        ] {
            let e = parse("group_participants", &args).expect_err(&args.to_string());
            assert!(e.len() > 10 && !e.contains('\n'), "{e}");
        }
        let asked = vec!["1@c.us".to_string(), "2@c.us".to_string()];
        let r = participants_result(
            "g@g.us",
            "add",
            &asked,
            &json!({"participants": [{"wid": "1@c.us", "code": "200"}, {"wid": "2@c.us", "code": "403"}]}),
            false,
        );
        assert_eq!(
            r["results"][0],
            json!({"wid": "1@c.us", "ok": true, "code": "200"})
        );
        assert_eq!(
            r["results"][1],
            json!({"wid": "2@c.us", "ok": false, "code": "403"})
        );
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        let mut want = result_keys("group_participants").to_vec();
        want.sort();
        assert_eq!(keys, want);
        let g = json!({"id": "g@g.us", "participants": [{"id": "1@c.us", "admin": "admin"}, {"id": "2@c.us", "admin": null}]});
        assert!(participants_settled(Some(&g), "add", &asked));
        assert!(!participants_settled(Some(&g), "remove", &asked));
        assert!(!participants_settled(Some(&g), "promote", &asked));
        assert!(participants_settled(Some(&g), "promote", &asked[..1]));
        assert!(participants_settled(Some(&g), "demote", &asked[1..]));
        assert!(participants_settled(
            Some(&g),
            "remove",
            &["3@c.us".to_string()]
        ));
        assert!(!participants_settled(None, "remove", &asked));
    }

    #[test]
    fn kinds_match_the_migration() {
        // The latest migration that redefines the kinds.
        let sql = include_str!("../migrations/20261203000031_group_participants.sql");
        for k in KINDS {
            assert!(sql.contains(&format!("'{k}'")), "{k}");
            assert!(!result_keys(k).is_empty());
        }
    }
}
