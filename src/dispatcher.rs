//! The dispatcher: claims due messages for the sessions this runner owns and has connected,
//! sends them through the page, and settles them. Sending is at most once:
//!
//! 1. The claim moves a row to `sending` with `attempts + 1` and its WhatsApp message id already
//!    chosen (derived from the row), and commits — before the page is asked anything.
//! 2. Only then the page sends under that id.
//! 3. Whoever later finds a row in `sending` (a new owner after a crash, or a retry after a
//!    timeout) asks the page whether that id exists in the chat, and re-sends only if not.
//!
//! Claims and completions are batched (one statement each for all ready sessions) because every
//! message is written twice; per session there is one message in flight, in (priority, id)
//! order, spaced by the minimum interval plus jitter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use sqlx::postgres::PgListener;
use sqlx::Row;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::db::bounded;
use crate::driver::{DriverError, Media, MessageKind, OutgoingMessage, Sent, Session};
use crate::error_code::ErrorCode;
use crate::shared::{backoff, status_for_ack, Shared};

pub use crate::driver::MAX_BODY_CHARS;
pub use crate::shared::{RETRY_BASE, RETRY_MAX};

/// LISTEN on this runner's own channel `wa_outbox_<id>` (work for the sessions it holds) and on
/// `wa_outbox` (sessions without a live owner, to claim). The triggers pick the channel
/// (migrations/20261203000021_wakeups.sql), so an insert wakes one runner whatever the fleet's
/// size. Notifications are only a hint; every loop also polls.
pub async fn listen(shared: Arc<Shared>) {
    let own = format!("wa_outbox_{}", shared.id);
    loop {
        let mut listener = match bounded(PgListener::connect_with(&shared.pool)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = bounded(listener.listen_all(["wa_outbox", own.as_str()])).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Anything sent while we were not listening is found by one look now.
        shared.dispatch_wake.notify_one();
        shared.command_wake.notify_one();
        shared.reconcile_wake.notify_one();
        // Ok(None) or an error: the connection dropped; reconnect, then look again.
        while let Ok(Some(n)) = listener.try_recv().await {
            let v: serde_json::Value = serde_json::from_str(n.payload()).unwrap_or_default();
            let sid = v["session_id"].as_str().unwrap_or_default();
            let ours = shared.sessions().contains_key(sid);
            match v["kind"].as_str() {
                Some("message") if ours => shared.dispatch_wake.notify_one(),
                Some("command") if ours => shared.command_wake.notify_one(),
                // Work for a session nobody holds (a hibernated one), or one we just let go of
                // while the row was written: a claim, not a full tick.
                Some("message" | "command" | "released") => shared.claim_wake.notify_one(),
                // A desired_state change: the renewal passes it to the session's actor.
                _ => shared.reconcile_wake.notify_one(),
            }
        }
    }
}

/// How one send ended, for the batched completion write.
#[derive(Debug)]
struct Completion {
    id: i64,
    session_id: String,
    status: &'static str,
    code: Option<ErrorCode>,
    error: Option<String>,
    /// Queued again, to be tried after this long (from the database's `now()`).
    retry_after: Option<Duration>,
    ack: Option<i16>,
    /// WhatsApp refused the send under this row's id: the next attempt gets a new one.
    new_id: bool,
    /// Where the page filed the message (key and chat), when it differs from the claim's guess.
    sent: Option<Sent>,
}

struct Claimed {
    id: i64,
    session_id: String,
    recipient: String,
    kind: String,
    body: Option<String>,
    media_url: Option<String>,
    media_data: Option<Vec<u8>>,
    media_mime: Option<String>,
    media_filename: Option<String>,
    options: serde_json::Value,
    attempts: i32,
    max_attempts: i32,
    chat_id: String,
    wa_message_id: String,
}

pub async fn run(shared: Arc<Shared>) {
    let (done_tx, done_rx) = mpsc::channel::<Completion>(8192);
    let writer = tokio::spawn(write_completions(shared.clone(), done_rx));
    let known = Arc::new(Mutex::new(HashMap::<String, String>::new()));
    loop {
        if shared.draining.is_cancelled() {
            break;
        }
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut recover = Vec::new();
        let mut next_wake = now + shared.cfg.poll_interval;
        {
            let mut sessions = shared.sessions();
            for (id, e) in sessions.iter_mut() {
                let Some(handle) = e.handle.clone() else {
                    continue;
                };
                if e.in_flight || e.recovering {
                    continue;
                }
                if !e.recovered {
                    e.recovering = true;
                    recover.push((id.clone(), handle));
                } else if e.next_send_at <= now {
                    ready.push(id.clone());
                } else {
                    next_wake = next_wake.min(e.next_send_at);
                }
            }
        }
        for (id, handle) in recover {
            tokio::spawn(recover_session(shared.clone(), id, handle));
        }
        if !ready.is_empty() {
            match claim(&shared, &ready).await {
                Ok(rows) => {
                    let mut sessions = shared.sessions();
                    let mut unclaim = Vec::new();
                    for row in rows {
                        // The session lost its page (a crash, a stop) while the claim ran: nothing
                        // was sent, so the row goes back as it was. Leaving it `sending` would
                        // strand it there.
                        let Some((e, handle)) = sessions
                            .get_mut(&row.session_id)
                            .and_then(|e| e.handle.clone().map(|h| (e, h)))
                        else {
                            unclaim.push(row.id);
                            continue;
                        };
                        e.in_flight = true;
                        let tx = done_tx.clone();
                        let sh = shared.clone();
                        let known = known.clone();
                        tokio::spawn(async move {
                            let c = send_one(&sh, handle, row, &known).await;
                            // The session may send its next message while this one's completion
                            // is still being written: the row is `sending` until then, so it is
                            // neither claimed again nor lost (recovery settles it by id).
                            free_session(&sh, &c);
                            let _ = tx.send(c).await;
                        });
                    }
                    drop(sessions);
                    if !unclaim.is_empty() {
                        tokio::spawn(give_back(shared.clone(), unclaim));
                    }
                }
                Err(e) => {
                    // The claim may have committed with its answer lost: its rows would sit in
                    // `sending`. These sessions settle `sending` rows by id (the page has not
                    // seen them: queued again) before anything new is sent.
                    tracing::warn!(error = %e, "claiming messages failed; retrying");
                    let mut sessions = shared.sessions();
                    for id in &ready {
                        if let Some(e) = sessions.get_mut(id) {
                            e.recovered = false;
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = shared.dispatch_wake.notified() => {}
            _ = tokio::time::sleep_until(next_wake) => {}
            _ = shared.draining.cancelled() => {}
        }
    }
    // Drain: let in-flight sends finish within the bound, then flush their completions.
    let deadline = Instant::now() + shared.cfg.drain_timeout;
    while shared.sessions().values().any(|e| e.in_flight) && Instant::now() < deadline {
        tokio::select! {
            _ = shared.dispatch_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    drop(done_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

async fn claim(shared: &Shared, ready: &[String]) -> sqlx::Result<Vec<Claimed>> {
    let t0 = Instant::now();
    // The chat id here is only the cheap form of the recipient; send_one checks it against the
    // real normalisation and fails the row (invalid_recipient) when they differ.
    let rows = sqlx::query(
        "with ready as (select unnest($2::text[]) as sid),
         picked as (
           select m.id,
             case when m.recipient like '%@%' then trim(m.recipient)
                  else regexp_replace(m.recipient, '[^0-9]', '', 'g') || '@c.us' end as chat
           from ready r
           cross join lateral (
             select id, recipient from wa_message
             where session_id = r.sid and status = 'queued' and not_before <= now()
             order by priority, id limit 1
             for update skip locked) m
         )
         update wa_message m set status = 'sending', attempts = m.attempts + 1, runner_id = $1, sending_at = now(),
           chat_id = c.chat,
           wa_message_id = coalesce(m.wa_message_id, 'true_' || c.chat || '_3EB0' ||
             upper(substr(md5(m.id::text || ':' || m.session_id || ':' || extract(epoch from m.created_at)::text
                               || case when m.attempts > 0 then ':' || (m.attempts + 1)::text else '' end), 1, 16)))
         from picked c
         -- The picked ids as an array: the rows are found by primary key whatever the table's
         -- size and statistics (joined, the planner may read the whole table to hash it).
         where m.id = any(array(select id from picked)) and m.id = c.id
           and (select s.runner_id from wa_session s where s.id = m.session_id and s.lease_until > now()) = $1
         returning m.id, m.session_id, m.recipient, m.kind, m.body, m.media_url, m.media_data, m.media_mime,
                   m.media_filename, m.options, m.attempts, m.max_attempts, m.chat_id, m.wa_message_id",
    )
    .bind(shared.id)
    .bind(ready);
    let rows = bounded(rows.fetch_all(&shared.pool)).await?;
    if let Some(m) = &shared.metrics {
        m.observe_claim_latency(t0.elapsed());
    }
    Ok(rows
        .into_iter()
        .map(|r| Claimed {
            id: r.get("id"),
            session_id: r.get("session_id"),
            recipient: r.get("recipient"),
            kind: r.get("kind"),
            body: r.get("body"),
            media_url: r.get("media_url"),
            media_data: r.get("media_data"),
            media_mime: r.get("media_mime"),
            media_filename: r.get("media_filename"),
            options: r.get("options"),
            attempts: r.get("attempts"),
            max_attempts: r.get("max_attempts"),
            chat_id: r.get("chat_id"),
            wa_message_id: r.get("wa_message_id"),
        })
        .collect())
}

fn permanent(code: ErrorCode, msg: impl Into<String>) -> DriverError {
    DriverError::permanent(code, msg)
}

/// Everything a row must satisfy before the page sees it; failures here are permanent.
async fn prepare(shared: &Shared, row: &Claimed) -> Result<OutgoingMessage, DriverError> {
    let jid = crate::recipient::normalize(&row.recipient)
        .map_err(|e| permanent(ErrorCode::InvalidRecipient, e))?;
    if jid.as_str() != row.chat_id {
        return Err(permanent(
            ErrorCode::InvalidRecipient,
            format!("`{}` is not a phone number or JID", row.recipient),
        ));
    }
    let kind = MessageKind::parse(&row.kind).ok_or_else(|| {
        permanent(
            ErrorCode::InvalidOptions,
            format!("unknown kind `{}`", row.kind),
        )
    })?;
    if let Some(b) = &row.body {
        if b.chars().count() > MAX_BODY_CHARS {
            return Err(permanent(
                ErrorCode::BodyTooLong,
                format!(
                    "{} characters; the limit is {MAX_BODY_CHARS}",
                    b.chars().count()
                ),
            ));
        }
    }
    let mut obj = row.options.as_object().cloned().unwrap_or_default();
    let location = if kind == MessageKind::Location {
        let loc = location_of(&obj)?;
        for k in LOCATION_KEYS {
            obj.remove(*k);
        }
        Some(loc)
    } else {
        None
    };
    // Contact cards and polls (issue 13): their keys leave `options` here; mentions become JIDs.
    let data = if kind == MessageKind::Forward {
        Some(
            crate::kinds::take_forward(
                &shared.pool,
                &row.session_id,
                &mut obj,
                row.body.as_deref(),
            )
            .await?,
        )
    } else if kind == MessageKind::Revoke {
        Some(
            crate::kinds::take_revoke(&shared.pool, &row.session_id, &mut obj, row.body.as_deref())
                .await?,
        )
    } else if kind == MessageKind::Edit {
        Some(
            crate::kinds::take_edit(&shared.pool, &row.session_id, &mut obj, row.body.as_deref())
                .await?,
        )
    } else if kind == MessageKind::Reaction {
        Some(
            crate::kinds::take_reaction(
                &shared.pool,
                &row.session_id,
                &mut obj,
                row.body.as_deref(),
            )
            .await?,
        )
    } else {
        crate::kinds::take_kind_data(kind, &mut obj, row.body.as_deref())?
    };
    crate::kinds::normalize_mentions(kind, &mut obj)?;
    for (k, v) in &obj {
        let ok = match k.as_str() {
            "reply_to" => {
                v.is_string()
                    && !matches!(
                        kind,
                        MessageKind::Reaction
                            | MessageKind::Edit
                            | MessageKind::Revoke
                            | MessageKind::Forward
                    )
            }
            "link_preview" => {
                v.is_boolean()
                    && !matches!(
                        kind,
                        MessageKind::Reaction
                            | MessageKind::Edit
                            | MessageKind::Revoke
                            | MessageKind::Forward
                            | MessageKind::Sticker
                    )
            }
            "mentions" => v.is_array(),
            _ => false,
        };
        if !ok {
            let allowed = match kind {
                MessageKind::Location => {
                    "latitude, longitude numbers, name, address, reply_to strings"
                }
                MessageKind::Contact => "vcards array of vCard strings, reply_to string",
                MessageKind::Reaction
                | MessageKind::Edit
                | MessageKind::Revoke
                | MessageKind::Forward => {
                    "target_id number or target_wa_id string"
                }
                MessageKind::Poll => {
                    "question string, choices array of strings, selectable_count number, reply_to string"
                }
                _ => "reply_to string, link_preview bool, mentions array",
            };
            return Err(permanent(
                ErrorCode::InvalidOptions,
                format!("options.{k}: unknown key or wrong type (allowed: {allowed})"),
            ));
        }
    }
    let media = if matches!(
        kind,
        MessageKind::Location
            | MessageKind::Contact
            | MessageKind::Poll
            | MessageKind::Reaction
            | MessageKind::Edit
            | MessageKind::Revoke
            | MessageKind::Forward
    ) {
        None
    } else if kind == MessageKind::Text {
        if row.body.as_deref().is_none_or(|b| b.trim().is_empty()) {
            return Err(permanent(
                ErrorCode::EmptyMessage,
                "a text message needs a body",
            ));
        }
        None
    } else if let Some(data) = &row.media_data {
        let mime = row
            .media_mime
            .clone()
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| {
                permanent(
                    ErrorCode::MediaMissing,
                    "media_mime is required with media_data",
                )
            })?;
        if data.len() as u64 > shared.cfg_media_max() {
            return Err(permanent(
                ErrorCode::MediaTooLarge,
                format!("{} bytes", data.len()),
            ));
        }
        Some(Media {
            data: bytes::Bytes::copy_from_slice(data),
            mime,
            filename: row.media_filename.clone(),
        })
    } else if let Some(url) = &row.media_url {
        let fetcher = shared.media.as_ref().ok_or_else(|| {
            permanent(
                ErrorCode::MediaFetchFailed,
                "media fetching is not configured",
            )
        })?;
        let mut m = fetcher
            .fetch(url, row.media_mime.as_deref())
            .await
            .map_err(|e| {
                if e.code == ErrorCode::MediaFetchFailed {
                    DriverError::transient(e.code, e.message)
                } else {
                    permanent(e.code, e.message)
                }
            })?;
        if m.filename.is_none() {
            m.filename = row.media_filename.clone();
        }
        Some(m)
    } else {
        return Err(permanent(
            ErrorCode::MediaMissing,
            format!("a {} message needs media_url or media_data", row.kind),
        ));
    };
    if kind == MessageKind::Sticker {
        crate::kinds::check_sticker(row.body.as_deref(), media.as_ref())?;
    }
    let id = row
        .wa_message_id
        .rsplit_once('_')
        .map(|(_, id)| id.to_string())
        .unwrap_or_default();
    Ok(OutgoingMessage {
        chat_id: row.chat_id.clone(),
        id,
        wa_message_id: row.wa_message_id.clone(),
        kind,
        body: row.body.clone(),
        media,
        location,
        data,
        options: serde_json::Value::Object(obj),
    })
}

/// The keys of `options` that make a `location` message's pin.
const LOCATION_KEYS: &[&str] = &["latitude", "longitude", "name", "address"];

/// WhatsApp shows a location's name and address under the pin; longer ones are not useful.
pub const MAX_LOCATION_TEXT_CHARS: usize = 1024;

/// A `location` row's pin from its `options`: finite latitude in [-90, 90] and longitude in
/// [-180, 180] (JSON numbers), optional non-empty name and address strings.
fn location_of(
    obj: &serde_json::Map<String, serde_json::Value>,
) -> Result<crate::driver::Location, DriverError> {
    let coord = |key: &str, limit: f64| -> Result<f64, DriverError> {
        let v = obj.get(key).ok_or_else(|| {
            permanent(
                ErrorCode::InvalidOptions,
                format!("a location message needs options.{key} (a number of degrees)"),
            )
        })?;
        let n = v.as_f64().filter(|n| n.is_finite()).ok_or_else(|| {
            permanent(
                ErrorCode::InvalidOptions,
                format!("options.{key} must be a finite number of degrees, got {v}"),
            )
        })?;
        if !(-limit..=limit).contains(&n) {
            return Err(permanent(
                ErrorCode::InvalidOptions,
                format!("options.{key} must be between -{limit} and {limit}, got {n}"),
            ));
        }
        Ok(n)
    };
    let text = |key: &str| -> Result<Option<String>, DriverError> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(serde_json::Value::String(s)) if s.chars().count() > MAX_LOCATION_TEXT_CHARS => {
                Err(permanent(
                    ErrorCode::InvalidOptions,
                    format!(
                        "options.{key} is {} characters; the limit is {MAX_LOCATION_TEXT_CHARS}",
                        s.chars().count()
                    ),
                ))
            }
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(permanent(
                ErrorCode::InvalidOptions,
                format!("options.{key} must be a string, got {v}"),
            )),
        }
    };
    Ok(crate::driver::Location {
        latitude: coord("latitude", 90.0)?,
        longitude: coord("longitude", 180.0)?,
        name: text("name")?,
        address: text("address")?,
    })
}

impl Shared {
    fn cfg_media_max(&self) -> u64 {
        self.media
            .as_ref()
            .map(|m| m.max_bytes())
            .unwrap_or(u64::MAX)
    }
}

/// How a claimed row went out: found in the page from an earlier attempt, or sent now.
enum Done {
    Found(i32),
    Sent(Sent),
}

async fn send_one(
    shared: &Shared,
    session: Arc<dyn Session>,
    row: Claimed,
    known: &Mutex<HashMap<String, String>>,
) -> Completion {
    let started = Instant::now();
    let outcome = async {
        let msg = prepare(shared, &row).await?;
        let timeout = shared.cfg.send_timeout;
        let bounded = |what: &'static str| {
            move |_| {
                DriverError::transient(
                    ErrorCode::SendTimeout,
                    format!("{what} took longer than {timeout:?}"),
                )
            }
        };
        // An earlier attempt may have reached WhatsApp before it failed: ask before sending again.
        if row.attempts > 1 {
            if let Some(ack) = tokio::time::timeout(
                timeout,
                session.find_message(&msg.chat_id, &msg.wa_message_id),
            )
            .await
            .map_err(bounded("lookup"))??
            {
                if ack < 0 {
                    // Refused under this id earlier and the refusal not yet written back.
                    return Err(DriverError::refused(
                        ErrorCode::SendFailed,
                        "an earlier attempt under this id was refused (ack -1)",
                    ));
                }
                return Ok(Done::Found(ack));
            }
        }
        // The chat is the wid the page answers for the number (today's page: the contact's LID).
        let key = format!("{}|{}", row.session_id, msg.chat_id);
        let cached = known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let chat = match cached {
            Some(chat) => chat,
            None => {
                let chat = tokio::time::timeout(timeout, session.resolve_chat(&msg.chat_id))
                    .await
                    .map_err(bounded("number lookup"))??
                    .ok_or_else(|| {
                        permanent(
                            ErrorCode::NotOnWhatsapp,
                            format!("{} has no WhatsApp account", msg.chat_id),
                        )
                    })?;
                let mut k = known.lock().unwrap_or_else(|p| p.into_inner());
                if k.len() > 100_000 {
                    k.clear();
                }
                k.insert(key, chat.clone());
                chat
            }
        };
        let msg = OutgoingMessage {
            chat_id: chat,
            ..msg
        };
        let kind = msg.kind;
        let sent = match tokio::time::timeout(timeout, session.send(&msg)).await {
            Ok(r) => r,
            Err(e) => Err(bounded("send")(e)),
        };
        // A reaction, edit or revoke that may have reached the page is never tried again: its key
        // is the page's own, so a retry could not ask first whether the first try went out.
        let sent = match sent {
            Err(DriverError::Transient { code, message }) if kind.page_keyed() => Err(permanent(
                ErrorCode::SendFailed,
                format!(
                    "the {} failed mid-send ({code}: {message}); it may or may not have gone out, \
                     and is not sent again",
                    kind.as_str()
                ),
            )),
            other => other,
        }?;
        Ok(Done::Sent(sent))
    }
    .await;
    if let Some(m) = &shared.metrics {
        m.observe_send_latency(started.elapsed());
    }
    let base = Completion {
        id: row.id,
        session_id: row.session_id.clone(),
        status: "sent",
        code: None,
        error: None,
        retry_after: None,
        ack: None,
        new_id: false,
        sent: None,
    };
    match outcome {
        Ok(Done::Found(ack)) => Completion {
            status: status_for_ack(ack),
            ack: Some(ack as i16),
            ..base
        },
        Ok(Done::Sent(sent)) => Completion {
            status: status_for_ack(0),
            sent: Some(sent),
            ..base
        },
        Err(DriverError::Permanent { code, message }) => Completion {
            status: "failed",
            code: Some(code),
            error: Some(message),
            ..base
        },
        Err(e @ (DriverError::Transient { .. } | DriverError::Refused { .. })) => {
            let new_id = matches!(e, DriverError::Refused { .. });
            let (DriverError::Transient { code, message } | DriverError::Refused { code, message }) =
                e
            else {
                unreachable!("matched above")
            };
            if row.attempts >= row.max_attempts {
                let error = format!("{} attempts; last: {code}: {message}", row.attempts);
                Completion {
                    status: "failed",
                    code: Some(ErrorCode::AttemptsExhausted),
                    error: Some(error),
                    ..base
                }
            } else {
                let delay = backoff(row.attempts as u32, shared.cfg.retry_base, RETRY_MAX);
                tracing::info!(message_id = row.id, attempt = row.attempts, ?delay, %code, "transient send failure; will retry");
                Completion {
                    status: "queued",
                    code: Some(code),
                    error: Some(message),
                    retry_after: Some(delay),
                    new_id,
                    ..base
                }
            }
        }
    }
}

/// Rows claimed for a session that lost its page before they were handed to it: queued again, the
/// claim undone (nothing was sent). Retried until written, like completions.
async fn give_back(shared: Arc<Shared>, ids: Vec<i64>) {
    until_written("given-back claims", ids.len(), || async {
        bounded(
            sqlx::query(
                "update wa_message m set status = 'queued', attempts = greatest(attempts - 1, 0)
                 where id = any($1) and status = 'sending'
                   and (select s.runner_id from wa_session s where s.id = m.session_id) = $2",
            )
            .bind(&ids)
            .bind(shared.id)
            .execute(&shared.pool),
        )
        .await
        .map(|_| ())
    })
    .await;
    shared.dispatch_wake.notify_one();
}

/// Retries a write the dispatcher must not lose, backing off from 50 ms to 5 s.
async fn until_written<F, Fut>(what: &str, n: usize, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<()>>,
{
    let mut delay = Duration::from_millis(50);
    while let Err(e) = write().await {
        tracing::warn!(error = %e, n, "writing {what} failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn write_completions(shared: Arc<Shared>, mut rx: mpsc::Receiver<Completion>) {
    let max = shared.cfg.completion_batch.max(1);
    let mut batch = Vec::with_capacity(max);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        // A completion is never dropped: retry until written (rows stay `sending` meanwhile,
        // and a crash here leaves them to the recovery path, which is still at most once).
        until_written("completions", batch.len(), || write_batch(&shared, &batch)).await;
        // A retry is due at the database's `now()` of that write plus its delay: wake the
        // dispatcher then (its own clock's guess, taken before the write, can be early, and the
        // claim would find the row not yet due and wait for the next poll).
        if let Some(wait) = batch.iter().filter_map(|c| c.retry_after).min() {
            let sh = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait + Duration::from_millis(5)).await;
                sh.dispatch_wake.notify_one();
            });
        }
        batch.clear();
    }
}

/// The session's send has ended: it may send again after the minimum interval, or after a
/// retry's delay (holding its later messages back: a session that just failed is likely to fail
/// again, and order is kept better this way).
fn free_session(shared: &Shared, c: &Completion) {
    let now = Instant::now();
    if let Some(e) = shared.sessions().get_mut(&c.session_id) {
        e.in_flight = false;
        e.next_send_at = now + jittered(shared.cfg.send_min_interval);
        if let Some(wait) = c.retry_after {
            e.next_send_at = e.next_send_at.max(now + wait);
        }
    }
    shared.dispatch_wake.notify_one();
}

fn jittered(d: Duration) -> Duration {
    if d.is_zero() {
        return d;
    }
    d.mul_f64(1.0 + rand::rng().random_range(0.0..0.25))
}

async fn write_batch(shared: &Shared, batch: &[Completion]) -> sqlx::Result<()> {
    let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
    let statuses: Vec<&str> = batch.iter().map(|c| c.status).collect();
    let codes: Vec<Option<&str>> = batch.iter().map(|c| c.code.map(|c| c.as_str())).collect();
    let errors: Vec<Option<&str>> = batch.iter().map(|c| c.error.as_deref()).collect();
    let retry_ms: Vec<Option<f64>> = batch
        .iter()
        .map(|c| c.retry_after.map(|d| d.as_secs_f64() * 1000.0))
        .collect();
    let acks: Vec<Option<i16>> = batch.iter().map(|c| c.ack).collect();
    let new_ids: Vec<bool> = batch.iter().map(|c| c.new_id).collect();
    let keys: Vec<Option<&str>> = batch
        .iter()
        .map(|c| c.sent.as_ref().map(|s| s.wa_message_id.as_str()))
        .collect();
    let chats: Vec<Option<&str>> = batch
        .iter()
        .map(|c| c.sent.as_ref().map(|s| s.chat_id.as_str()))
        .collect();
    // One statement (no BEGIN/COMMIT round trips): the message rows and their sessions' idle
    // clocks move together.
    let q = sqlx::query(
        "with done as (
           update wa_message m set
             status = c.status, error_code = c.code, error = c.err,
             not_before = case when c.retry_ms is null then m.not_before
                               else now() + make_interval(secs => c.retry_ms / 1000) end,
             ack = coalesce(c.ack, m.ack),
             sent_at = case when c.status in ('sent', 'delivered', 'read', 'played') then coalesce(m.sent_at, now()) else m.sent_at end,
             delivered_at = case when c.status in ('delivered', 'read', 'played') then coalesce(m.delivered_at, now()) else m.delivered_at end,
             read_at = case when c.status in ('read', 'played') then coalesce(m.read_at, now()) else m.read_at end,
             finished_at = case when c.status = 'queued' then null else now() end,
             wa_message_id = case when c.new_id then null else coalesce(c.key, m.wa_message_id) end,
             chat_id = coalesce(c.chat, m.chat_id)
           from unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::smallint[], $7::bool[],
                       $8::text[], $9::text[])
             as c(id, status, code, err, retry_ms, ack, new_id, key, chat)
           -- Fenced: a runner that lost the session writes nothing (its next owner settles the
           -- row by id, from the page). The fence is a primary-key lookup, not a join: with
           -- statistics that see no owned session (an ANALYZE before the runners claimed them)
           -- a join read all of this runner's sessions once per row (issue 16,
           -- migrations/20261204000400_scale_plans.sql).
           -- `m.id = any($1)`: found by primary key, never by a scan joined to the batch.
           where m.id = any($1) and m.id = c.id and m.status = 'sending'
             and (select s.runner_id from wa_session s where s.id = m.session_id) = $10
           returning m.session_id, c.status)
         update wa_session s set last_active_at = now()
         where s.id in (select session_id from done where status in ('sent', 'delivered', 'read', 'played'))",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&codes)
    .bind(&errors)
    .bind(&retry_ms)
    .bind(&acks)
    .bind(&new_ids)
    .bind(&keys)
    .bind(&chats)
    .bind(shared.id)
    .execute(&shared.pool);
    bounded(q).await?;
    Ok(())
}

/// A row the page could not be asked about is retried this many times (one recovery pass each,
/// backing off); then it fails as `send_failed` rather than block its session: it may or may not
/// have gone out, and at most once means it is never sent again.
pub const RECOVERY_TRIES: u32 = 5;

/// Settles the `sending` rows an earlier owner (or an earlier browser) of this session left:
/// sent if the page knows the id, queued again if not. Never sends anything itself. Each row is
/// settled on its own: one that fails does not hold up the others. Every write is fenced on this
/// runner still owning the session.
async fn recover_session(shared: Arc<Shared>, session_id: String, session: Arc<dyn Session>) {
    let rows = bounded(
        sqlx::query("select id, kind, chat_id, wa_message_id, attempts, max_attempts from wa_message where session_id = $1 and status = 'sending' order by id")
            .bind(&session_id)
            .fetch_all(&shared.pool),
    )
    .await;
    let tries = shared
        .sessions()
        .get(&session_id)
        .map_or(0, |e| e.recovery_failures);
    let mut failed = 0usize;
    match rows {
        Err(e) => {
            tracing::warn!(session = %session_id, error = %e, "reading in-flight messages failed; will retry");
            failed += 1;
        }
        Ok(rows) => {
            for r in rows {
                let id: i64 = r.get("id");
                if let Err(e) = recover_row(&shared, &session_id, &*session, &r, tries).await {
                    tracing::warn!(session = %session_id, message_id = id, error = %e, "settling an in-flight message failed; will retry");
                    failed += 1;
                }
            }
        }
    }
    if let Some(e) = shared.sessions().get_mut(&session_id) {
        e.recovering = false;
        e.recovered = failed == 0;
        if failed == 0 {
            e.recovery_failures = 0;
        } else {
            e.recovery_failures += 1;
            e.next_send_at = Instant::now()
                + backoff(
                    e.recovery_failures,
                    Duration::from_millis(500),
                    Duration::from_secs(30),
                );
        }
    }
    shared.dispatch_wake.notify_one();
}

async fn recover_row(
    shared: &Shared,
    session_id: &str,
    session: &dyn Session,
    r: &sqlx::postgres::PgRow,
    tries: u32,
) -> anyhow::Result<()> {
    let id: i64 = r.get("id");
    let chat: Option<String> = r.get("chat_id");
    let wa_id: Option<String> = r.get("wa_message_id");
    let attempts: i32 = r.get("attempts");
    let max_attempts: i32 = r.get("max_attempts");
    // A reaction, edit, revoke or forward gets a key of the page's own making: nothing can be asked about ours, and it is
    // never sent twice.
    let kind: String = r.get("kind");
    if MessageKind::parse(&kind).is_some_and(MessageKind::page_keyed) {
        return settle(shared, session_id, id, "failed", Some("send_failed"),
            Some(&format!("a {kind} interrupted mid-send: the page gives it a key of its own, so whether it went out cannot be asked; it may or may not have, and is not sent again")), None, false).await;
    }
    let found = match (&chat, &wa_id) {
        (Some(c), Some(w)) => {
            match tokio::time::timeout(shared.cfg.send_timeout, session.find_message(c, w)).await {
                Ok(Ok(f)) => f,
                Ok(Err(e)) if tries + 1 < RECOVERY_TRIES => return Err(e.into()),
                Err(_) if tries + 1 < RECOVERY_TRIES => anyhow::bail!("the page did not answer in time"),
                Ok(Err(e)) => return settle(shared, session_id, id, "failed", Some("send_failed"),
                    Some(&format!("interrupted mid-send and the page could not be asked about it ({e}); it may or may not have been sent, and is not sent again")), None, false).await,
                Err(_) => return settle(shared, session_id, id, "failed", Some("send_failed"),
                    Some("interrupted mid-send and the page did not answer about it; it may or may not have been sent, and is not sent again"), None, false).await,
            }
        }
        _ => None,
    };
    // A message the page holds with ack -1 was refused: not sent, and its id is spent.
    let refused = found.is_some_and(|a| a < 0);
    match found.filter(|a| *a >= 0) {
        Some(ack) => {
            tracing::info!(message_id = id, "recovered: the page has it; marking sent");
            settle(
                shared,
                session_id,
                id,
                status_for_ack(ack),
                None,
                None,
                Some(ack as i16),
                false,
            )
            .await
        }
        None if attempts >= max_attempts => {
            settle(
                shared,
                session_id,
                id,
                "failed",
                Some("attempts_exhausted"),
                Some("interrupted on its last attempt and not found in the chat"),
                None,
                false,
            )
            .await
        }
        None => {
            tracing::info!(message_id = id, "recovered: not in the chat; queued again");
            settle(shared, session_id, id, "queued", None, None, None, refused).await
        }
    }
}

/// One recovery write, fenced on the session still being ours and the row still `sending`.
#[allow(clippy::too_many_arguments)]
async fn settle(
    shared: &Shared,
    session_id: &str,
    id: i64,
    status: &str,
    code: Option<&str>,
    error: Option<&str>,
    ack: Option<i16>,
    new_id: bool,
) -> anyhow::Result<()> {
    bounded(
        sqlx::query(
            "update wa_message m set status = $2, error_code = $3, error = $4, ack = coalesce($5, m.ack),
               sent_at = case when $5 >= 0 then coalesce(m.sent_at, now()) else m.sent_at end,
               delivered_at = case when $5 >= 2 then coalesce(m.delivered_at, now()) else m.delivered_at end,
               read_at = case when $5 >= 3 then coalesce(m.read_at, now()) else m.read_at end,
               finished_at = case when $2 = 'queued' then null else now() end,
               wa_message_id = case when $6 then null else m.wa_message_id end
             where m.id = $1 and m.status = 'sending'
               and m.session_id = $7 and (select s.runner_id from wa_session s where s.id = $7) = $8",
        )
        .bind(id)
        .bind(status)
        .bind(code)
        .bind(error)
        .bind(ack)
        .bind(new_id)
        .bind(session_id)
        .bind(shared.id)
        .execute(&shared.pool),
    )
    .await?;
    Ok(())
}

pub use crate::driver::bare_id;

#[cfg(test)]
mod tests {
    use super::bare_id;

    #[test]
    fn acks_match_on_the_bare_id() {
        for key in [
            "true_120363012345678901@g.us_3EB0AABBCCDDEEFF0011_15550001111@c.us",
            "true_120363012345678901@g.us_3EB0AABBCCDDEEFF0011",
            "true_15550002222@c.us_3EB0AABBCCDDEEFF0011",
            "true_104857600012345@lid_3EB0AABBCCDDEEFF0011",
        ] {
            assert_eq!(bare_id(key), "3EB0AABBCCDDEEFF0011", "{key}");
        }
        assert_eq!(bare_id("garbage"), "garbage");
    }

    #[test]
    fn locations_are_checked_without_panicking() {
        use serde_json::json;
        let of = |v: serde_json::Value| super::location_of(v.as_object().unwrap());
        let ok = of(json!({"latitude": 52.52, "longitude": -13.4, "name": "Cafe", "address": " "}))
            .unwrap();
        assert_eq!((ok.latitude, ok.longitude), (52.52, -13.4));
        assert_eq!(ok.name.as_deref(), Some("Cafe"));
        assert_eq!(ok.address, None);
        assert!(of(json!({"latitude": 90, "longitude": 180})).is_ok());
        for bad in [
            json!({"latitude": 91, "longitude": 0}),
            json!({"latitude": 0, "longitude": -180.5}),
            json!({"latitude": "1", "longitude": 0}),
            json!({"longitude": 0}),
            json!({"latitude": 0}),
            json!({"latitude": 0, "longitude": 0, "name": 5}),
            json!({"latitude": f64::MAX, "longitude": 0}),
        ] {
            let e = of(bad.clone()).unwrap_err();
            assert_eq!(
                e.code(),
                crate::error_code::ErrorCode::InvalidOptions,
                "{bad}"
            );
            assert!(!e.to_string().is_empty());
        }
    }
}
