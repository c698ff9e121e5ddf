//! The writes of a session's actor: what its page reports and its states, each fenced on this
//! runner still owning the session, each within the client-side statement deadline, with the
//! database's clock.

use std::time::Duration;

use tokio::time::Instant;

use crate::db::bounded;
use crate::driver::{GroupUpdate, IncomingCall, IncomingMessage, TypedEvent};
use crate::error_code::ErrorCode;
use crate::shared::{backoff, Shared};

/// A write a page event asks for.
pub(super) enum PageWrite {
    Qr {
        payload: String,
        first: bool,
    },
    Pairing {
        code: String,
    },
    Connected {
        phone: String,
        push_name: Option<String>,
    },
    Ack {
        key: String,
        ack: i32,
    },
    Incoming(IncomingMessage),
    /// An incoming call and what the runner did about it (session/calls.rs).
    Call {
        call: IncomingCall,
        reject_calls: bool,
        rejected: bool,
        reject_error: Option<String>,
    },
    GroupUpdate(GroupUpdate),
    /// An incoming message with a file, and what was downloaded of it (src/session/media_in.rs).
    IncomingMedia(IncomingMessage, Box<super::media_in::InboundMedia>),
    /// A reaction, poll vote, edit or revoke from the other side.
    Typed(TypedEvent),
}

impl PageWrite {
    /// What kind of event it is, for logs: never its content (a QR payload is a login
    /// credential while valid, a message body is the user's).
    pub(super) fn kind(&self) -> &'static str {
        match self {
            PageWrite::Qr { .. } => "qr",
            PageWrite::Pairing { .. } => "pairing_code",
            PageWrite::Connected { .. } => "connected",
            PageWrite::Ack { .. } => "ack",
            PageWrite::Incoming(_) => "incoming_message",
            PageWrite::Call { .. } => "call",
            PageWrite::GroupUpdate(_) => "group_update",
            PageWrite::IncomingMedia(..) => "incoming_media",
            PageWrite::Typed(ev) => ev.kind.as_str(),
        }
    }
}

/// Writes one page event. Ok(false) when the session is no longer ours.
pub(super) async fn write_page_event(
    shared: &Shared,
    id: &str,
    w: &PageWrite,
) -> sqlx::Result<bool> {
    match w {
        PageWrite::Qr { payload, first } => write_qr(shared, id, payload, *first).await,
        PageWrite::Pairing { code } => {
            bounded(
                sqlx::query(
                    "update wa_session set pairing_code = $3 where id = $1 and runner_id = $2",
                )
                .bind(id)
                .bind(shared.id)
                .bind(code)
                .execute(&shared.pool),
            )
            .await?;
            set_status(shared, id, "pairing", None).await
        }
        PageWrite::Connected { phone, push_name } => {
            bounded(
                sqlx::query(
                    "update wa_session set phone_number = $3, push_name = $4, restart_count = 0,
                       last_active_at = now(),
                       -- Backfill starts here on the first link: the history before it is not ours.
                       last_inbound_at = coalesce(last_inbound_at, now())
                     where id = $1 and runner_id = $2",
                )
                .bind(id)
                .bind(shared.id)
                .bind(format!("+{}", phone.trim_start_matches('+')))
                .bind(push_name)
                .execute(&shared.pool),
            )
            .await?;
            set_status(shared, id, "connected", None).await
        }
        PageWrite::Ack { key, ack } => apply_ack(shared, id, key, *ack).await,
        PageWrite::Incoming(msg) => record_incoming(shared, id, msg).await,
        PageWrite::Call {
            call,
            reject_calls,
            rejected,
            reject_error,
        } => {
            super::calls::record_call(
                shared,
                id,
                call,
                *reject_calls,
                *rejected,
                reject_error.as_deref(),
            )
            .await
        }
        PageWrite::GroupUpdate(u) => super::calls::record_group_update(shared, id, u).await,
        PageWrite::IncomingMedia(msg, media) => {
            super::media_in::record_incoming_media(shared, id, msg, media).await
        }
        PageWrite::Typed(ev) => super::typed_events::record_typed(shared, id, ev).await,
    }
}

/// Retries a final write (a terminal status, a release) until it is written or the lease it is
/// fenced on must have passed: after that, the write would be refused anyway.
pub(super) async fn until_settled<F, Fut>(shared: &Shared, what: &str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<bool>>,
{
    let give_up = Instant::now() + shared.cfg.lease_ttl;
    let mut failures = 0;
    loop {
        match write().await {
            Ok(_) => return,
            Err(e) => {
                failures += 1;
                let wait = backoff(failures, Duration::from_millis(100), Duration::from_secs(2));
                if Instant::now() + wait > give_up {
                    tracing::error!(error = %e, "writing {what} failed until the lease lapsed; the next owner takes over");
                    return;
                }
                tracing::warn!(error = %e, ?wait, "writing {what} failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Writes a session's status and the matching wa_event in one statement (on logged_out, its
/// queued messages fail in that same statement). Fenced on ownership: Ok(false) when this runner
/// no longer owns the session, and nothing is written.
pub async fn set_status(
    shared: &Shared,
    id: &str,
    status: &str,
    error: Option<(ErrorCode, &str)>,
) -> sqlx::Result<bool> {
    write_status(shared, id, status, error, false).await
}

/// [`set_status`], and with `release` the lease given back in the same statement, so nobody
/// reads a final status (`hibernated`, `stopped`, …) on a session that still names this runner.
async fn write_status(
    shared: &Shared,
    id: &str,
    status: &str,
    error: Option<(ErrorCode, &str)>,
    release: bool,
) -> sqlx::Result<bool> {
    let row = bounded(
        sqlx::query(
            "with s as (
               update wa_session set status = $3, error_code = $4, error = $5,
                 qr_code = case when $3 in ('qr_pending', 'pairing') then qr_code else null end,
                 qr_image = case when $3 in ('qr_pending', 'pairing') then qr_image else null end,
                 qr_expires_at = case when $3 in ('qr_pending', 'pairing') then qr_expires_at else null end,
                 pairing_code = case when $3 = 'pairing' then pairing_code else null end,
                 runner_id = case when $6 then null else runner_id end,
                 lease_until = case when $6 then null else lease_until end
               where id = $1 and runner_id = $2 returning id, status, error_code, phone_number),
             -- A logged-out session's queued messages fail in the same statement, so nobody who
             -- reads status = 'logged_out' can still see one of them queued.
             f as (
               update wa_message m set status = 'failed', error_code = 'session_logged_out',
                 error = 'session ' || m.session_id || ' is logged out', finished_at = now()
               from s where m.session_id = s.id and s.status = 'logged_out' and m.status = 'queued'),
             e as (
               insert into wa_event (session_id, kind, payload)
               select id, 'session_status', jsonb_build_object('status', status, 'error_code', error_code, 'phone_number', phone_number) from s)
             -- Released: a NOTIFY so another runner can pick it up at once.
             select id, case when $6 then pg_notify('wa_outbox', json_build_object('kind', 'released', 'session_id', id)::text)::text end as notified
             from s",
        )
        .bind(id)
        .bind(shared.id)
        .bind(status)
        .bind(error.map(|(c, _)| c.as_str()))
        .bind(error.map(|(_, m)| m))
        .bind(release)
        .fetch_optional(&shared.pool),
    )
    .await?;
    Ok(row.is_some())
}

/// The one way a lease is given back: `id`'s (or, with `None`, every session still on this
/// runner's name), with an optional status, and a NOTIFY per session so another runner picks it
/// up at once. Ok(false) when there was nothing of ours to release.
pub async fn release(
    shared: &Shared,
    id: Option<&str>,
    status: Option<&str>,
) -> sqlx::Result<bool> {
    let released: Vec<String> = bounded(
        sqlx::query_scalar(
            "with s as (update wa_session set runner_id = null, lease_until = null, status = coalesce($3, status)
                        where runner_id = $2 and ($1::text is null or id = $1) returning id),
                  n as (select id, pg_notify('wa_outbox', json_build_object('kind', 'released', 'session_id', id)::text) from s)
             select id from n",
        )
        .bind(id)
        .bind(shared.id)
        .bind(status)
        .fetch_all(&shared.pool),
    )
    .await?;
    Ok(!released.is_empty())
}

/// Logged out: the stored login deleted first (no login outlives its link; if the delete fails,
/// the maintenance sweep of logged-out sessions removes it), then the final status.
pub(super) async fn forget(shared: &Shared, id: &str, error: Option<(ErrorCode, &str)>) {
    if let Err(e) = shared.logins.delete(id).await {
        tracing::warn!(session = %id, error = %e, "could not delete the stored login; maintenance will");
    }
    finish(shared, id, "logged_out", error).await
}

/// A final state: status written (with its event) and the lease released, retried.
pub async fn finish(shared: &Shared, id: &str, status: &str, error: Option<(ErrorCode, &str)>) {
    until_settled(shared, "a final status", || {
        write_status(shared, id, status, error, true)
    })
    .await
}

async fn write_qr(shared: &Shared, id: &str, payload: &str, first: bool) -> sqlx::Result<bool> {
    let image = crate::qr::png_data_url(payload);
    bounded(
        sqlx::query(
            "update wa_session set qr_code = $3, qr_image = $4, qr_expires_at = now() + make_interval(secs => $5), pairing_code = null
             where id = $1 and runner_id = $2",
        )
        .bind(id)
        .bind(shared.id)
        .bind(payload)
        .bind(image)
        // WhatsApp Web shows its first code for 60 s and each later one for 20 s.
        .bind(if first { 60.0f64 } else { 20.0 })
        .execute(&shared.pool),
    )
    .await?;
    set_status(shared, id, "qr_pending", None).await
}

/// An incoming message's `wa_event` payload: who, where, what, and its `type` with the typed
/// fields of a location or contact cards (`crate::driver::typed::message_fields`). A media kind's
/// `type` is ours (`voice` for the page's `ptt`; src/session/media_in.rs), the rest the page's
/// reading of it.
pub(super) fn message_payload(msg: &IncomingMessage) -> serde_json::Value {
    let (typed, extra) = crate::driver::typed::message_fields(&msg.kind, &msg.extra);
    let mut payload = serde_json::json!({
        "from": msg.from, "chat_id": msg.chat_id, "kind": msg.kind, "body": msg.body,
        "timestamp": msg.timestamp, "extra": extra,
    });
    if let Some(p) = payload.as_object_mut() {
        p.extend(typed);
        if crate::driver::inbound_media::media_kind(&msg.kind).is_some() {
            p.insert(
                "type".into(),
                super::media_in::payload_type(&msg.kind).into(),
            );
        }
    }
    payload
}

/// An incoming message, stored once per WhatsApp message id (a unique index); the session's
/// newest recorded message moves forward for the next backfill. Ok(false) when the session is no
/// longer ours.
async fn record_incoming(shared: &Shared, id: &str, msg: &IncomingMessage) -> sqlx::Result<bool> {
    let payload = message_payload(msg);
    let owned: bool = bounded(
        sqlx::query_scalar(
            "with own as (select id from wa_session where id = $1 and runner_id = $4),
             e as (insert into wa_event (session_id, kind, wa_message_id, payload)
                   select id, 'message', $2, $3 from own
                   on conflict (session_id, wa_message_id) where kind = 'message' do nothing returning session_id),
             u as (update wa_session set last_active_at = case when exists (select 1 from e) then now() else last_active_at end,
                     last_inbound_at = greatest(coalesce(last_inbound_at, to_timestamp($5)), to_timestamp($5))
                   where id in (select id from own) returning id)
             select exists (select 1 from own)",
        )
        .bind(id)
        .bind(&msg.wa_message_id)
        .bind(payload)
        .bind(shared.id)
        .bind(msg.timestamp as f64)
        .fetch_one(&shared.pool),
    )
    .await?;
    Ok(owned)
}

/// An ack from the page: move the row forward (never back) and record an ack event. An error ack
/// (-1) fails only a row already `sent`: during a send the refusal comes back through the send
/// itself, which retries it under a new id. Ok(false) when the session is no longer ours.
pub async fn apply_ack(
    shared: &Shared,
    session_id: &str,
    wa_message_id: &str,
    ack: i32,
) -> sqlx::Result<bool> {
    let owned: bool = bounded(
        sqlx::query_scalar(
            "with own as (select id from wa_session where id = $3 and runner_id = $5),
             upd as (
               update wa_message set
                 ack = $2,
                 status = case when $2 < 0 then 'failed' else $6 end,
                 error_code = case when $2 < 0 then 'send_failed' end,
                 error = case when $2 < 0 then 'WhatsApp reported an error for this message' end,
                 sent_at = case when $2 >= 0 then coalesce(sent_at, now()) else sent_at end,
                 delivered_at = case when $2 >= 2 then coalesce(delivered_at, now()) else delivered_at end,
                 read_at = case when $2 >= 3 then coalesce(read_at, now()) else read_at end,
                 played_at = case when $2 >= 4 then coalesce(played_at, now()) else played_at end,
                 finished_at = coalesce(finished_at, now())
               where session_id in (select id from own) and split_part(wa_message_id, '_', 3) = $4
                 and (($2 < 0 and status = 'sent' and coalesce(ack, 0) <= 0)
                      or ($2 >= 0 and status in ('sending', 'sent', 'delivered', 'read') and coalesce(ack, -2) < $2))
               returning id, session_id, status),
             ev as (
               insert into wa_event (session_id, kind, message_id, wa_message_id, payload)
               select session_id, 'ack', id, $1, jsonb_build_object('ack', $2, 'status', status) from upd)
             select exists (select 1 from own)",
        )
        .bind(wa_message_id)
        .bind(ack as i16)
        .bind(session_id)
        .bind(crate::driver::bare_id(wa_message_id))
        .bind(shared.id)
        .bind(crate::shared::status_for_ack(ack))
        .fetch_one(&shared.pool),
    )
    .await?;
    Ok(owned)
}

/// What a session's proxy password is bound to when sealed: the session and the URL it belongs
/// to (redacted), so it opens for nothing else.
fn proxy_aad(id: &str, redacted: &str) -> String {
    format!("wa_session.proxy_url\0{id}\0{redacted}")
}

/// The `proxy_url` the browser uses, with its password in the clear (in memory only):
/// - written with a password: sealed into `proxy_password_sealed`, and the row left with
///   `user:***@…` (fenced on this runner holding the session, and only if the URL is still the
///   one read: a newer one wins and is sealed at the next start);
/// - `user:***@…`: the sealed password put back. Ok(Err(sentence)) when it does not open (the
///   host changed, or it was sealed under a key this runner does not have): `proxy_invalid`.
///
/// Without keys (no login store) the URL is used as written.
pub(super) async fn unseal_proxy_url(
    shared: &Shared,
    id: &str,
    raw: &str,
) -> sqlx::Result<Result<String, String>> {
    use crate::driver::proxy::{redact, split_password, with_password};
    let Some(keys) = shared.logins.keys() else {
        return Ok(Ok(raw.to_string()));
    };
    if let Some((redacted, password)) = split_password(raw) {
        let sealed = keys.seal_line(&proxy_aad(id, &redacted), password.as_bytes());
        let moved = bounded(
            sqlx::query(
                "update wa_session set proxy_url = $3, proxy_password_sealed = $4
                 where id = $1 and runner_id = $2 and proxy_url = $5",
            )
            .bind(id)
            .bind(shared.id)
            .bind(&redacted)
            .bind(&sealed)
            .bind(raw)
            .execute(&shared.pool),
        )
        .await?
        .rows_affected();
        if moved == 1 {
            tracing::info!(session = %id, proxy = %redacted, "sealed the proxy password; the row keeps user:***@");
        }
        return Ok(Ok(raw.to_string()));
    }
    let redacted = raw.trim();
    if with_password(redacted, "").is_none() {
        return Ok(Ok(raw.to_string()));
    }
    let sealed: Option<String> = bounded(
        sqlx::query_scalar("select proxy_password_sealed from wa_session where id = $1")
            .bind(id)
            .fetch_optional(&shared.pool),
    )
    .await?
    .flatten();
    let shown = redact(redacted);
    let opened = sealed
        .ok_or_else(|| {
            format!("proxy_url {shown}: no sealed password is stored for it; write the URL again with its password")
        })
        .and_then(|line| {
            keys.open_line(&proxy_aad(id, redacted), &line).map_err(|_| {
                format!("proxy_url {shown}: the sealed password belongs to another proxy URL or key; write the URL again with its password")
            })
        })
        .and_then(|pw| {
            String::from_utf8(pw).map_err(|_| format!("proxy_url {shown}: the sealed password is not text"))
        });
    Ok(opened.map(|pw| with_password(redacted, &pw).expect("the URL carries the mark")))
}
