//! Calls and group changes from the other side (issue 14).
//!
//! Every incoming call the page reports becomes one `wa_event` of kind `call`, keyed by the
//! call's id (a unique index: stored once however often the page reports it). With
//! `wa_session.reject_calls` (read when the call comes, so a change applies at once) the call is
//! first declined through the page's own VoIP module and the event says whether that worked.
//!
//! Never twice, never lost: a call already recorded, or settled by this actor, is left alone (the
//! page's reject function also refuses to decline one call twice); a reject that could not reach
//! the page (its socket down, a timeout) is kept and tried again when the page is connected again,
//! at most [`REJECT_ATTEMPTS`] times, after which the event records the last error.

use std::collections::{HashSet, VecDeque};

use crate::db::bounded;
use crate::driver::{GroupUpdate, IncomingCall, RejectOutcome};
use crate::shared::Shared;

use super::writes::PageWrite;
use super::Page;

/// Tries at rejecting one call before its event records the failure.
const REJECT_ATTEMPTS: u32 = 3;

/// How many settled call ids an actor remembers (the database's unique index is the real guard).
const REMEMBERED: usize = 1_000;

/// What a session's actor knows about calls, across its browser restarts.
#[derive(Default)]
pub(super) struct CallBook {
    done: HashSet<String>,
    order: VecDeque<String>,
    /// Calls to decline once the page is connected again, with the tries so far.
    pending: Vec<(IncomingCall, u32)>,
    /// `reject_calls` as last read (used when the database cannot be asked).
    reject_calls: Option<bool>,
}

impl CallBook {
    fn is_done(&self, id: &str) -> bool {
        self.done.contains(id)
    }

    fn mark_done(&mut self, id: &str) {
        if self.done.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            if self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.done.remove(&old);
                }
            }
        }
    }
}

impl Page<'_> {
    /// An incoming call the page reported.
    pub(super) async fn on_call(&mut self, call: IncomingCall) {
        if self.calls.is_done(&call.id) || self.calls.pending.iter().any(|(c, _)| c.id == call.id) {
            return;
        }
        let known: sqlx::Result<Option<(bool, bool)>> = bounded(
            sqlx::query_as(
                "select s.reject_calls,
                        exists (select 1 from wa_event e
                                where e.session_id = s.id and e.kind = 'call' and e.wa_message_id = $2)
                 from wa_session s where s.id = $1 and s.runner_id = $3",
            )
            .bind(self.id)
            .bind(&call.id)
            .bind(self.shared.id)
            .fetch_optional(&self.shared.pool),
        )
        .await;
        let reject = match known {
            Ok(Some((_, true))) => {
                // Recorded by an earlier page or runner: settled there.
                self.calls.mark_done(&call.id);
                return;
            }
            Ok(Some((reject, false))) => {
                self.calls.reject_calls = Some(reject);
                reject
            }
            // No longer ours: the fence closes this page; the next owner sees the call if it
            // still rings.
            Ok(None) => return,
            Err(e) => {
                let reject = self.calls.reject_calls.unwrap_or(false);
                tracing::warn!(session = %self.id, error = %e, reject,
                    "could not read reject_calls; using the last value read");
                reject
            }
        };
        if reject {
            self.decline(call, 1).await;
        } else {
            self.record_call(call, false, false, None);
        }
    }

    /// Declines a call through the page; records it unless the page could not be reached, in
    /// which case it waits for the next connect.
    async fn decline(&mut self, call: IncomingCall, attempt: u32) {
        let r = tokio::time::timeout(
            self.shared.cfg.send_timeout,
            self.session.reject_call(&call.id),
        )
        .await;
        let failed = match r {
            Ok(Ok(RejectOutcome::Rejected)) => return self.record_call(call, true, true, None),
            Ok(Ok(RejectOutcome::NotRejected(why))) => {
                return self.record_call(call, true, false, Some(why))
            }
            Ok(Err(e)) if !e.is_transient() => {
                return self.record_call(call, true, false, Some(e.to_string()))
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the page did not answer in time".to_string(),
        };
        if attempt >= REJECT_ATTEMPTS {
            tracing::warn!(session = %self.id, attempt, error = %failed, "giving up rejecting a call");
            return self.record_call(call, true, false, Some(failed));
        }
        tracing::info!(session = %self.id, attempt, error = %failed,
            "could not reject a call yet; trying again once the page is connected");
        self.calls.pending.push((call, attempt));
    }

    /// After a (re)connect: the declines that could not reach the page before.
    pub(super) async fn retry_pending_calls(&mut self) {
        for (call, attempt) in std::mem::take(&mut self.calls.pending) {
            if !self.calls.is_done(&call.id) {
                self.decline(call, attempt + 1).await;
            }
        }
    }

    fn record_call(
        &mut self,
        call: IncomingCall,
        reject_calls: bool,
        rejected: bool,
        reject_error: Option<String>,
    ) {
        self.calls.mark_done(&call.id);
        self.push(PageWrite::Call {
            call,
            reject_calls,
            rejected,
            reject_error,
        });
    }
}

/// Writes a call's event once (unique on session + call id). Ok(false) when the session is no
/// longer ours.
pub(super) async fn record_call(
    shared: &Shared,
    id: &str,
    call: &IncomingCall,
    reject_calls: bool,
    rejected: bool,
    reject_error: Option<&str>,
) -> sqlx::Result<bool> {
    let payload = serde_json::json!({
        "call_id": call.id, "from": call.from, "from_lid": call.from_lid,
        "is_video": call.is_video, "is_group": call.is_group, "group_id": call.group_id,
        "timestamp": call.timestamp, "reject_calls": reject_calls, "rejected": rejected,
        "reject_error": reject_error,
    });
    insert_once(shared, id, "call", &call.id, payload).await
}

/// Writes a group change's event once (unique on session + notification key).
pub(super) async fn record_group_update(
    shared: &Shared,
    id: &str,
    u: &GroupUpdate,
) -> sqlx::Result<bool> {
    let payload = serde_json::json!({
        "group_id": u.group_id, "action": u.subtype, "participants": u.participants,
        "actor": u.author, "actor_lid": u.author_lid,
        "subject": if u.subtype == "subject" { u.body.as_deref() } else { None },
        "timestamp": u.timestamp,
    });
    insert_once(shared, id, "group_update", &u.wa_message_id, payload).await
}

async fn insert_once(
    shared: &Shared,
    id: &str,
    kind: &str,
    key: &str,
    payload: serde_json::Value,
) -> sqlx::Result<bool> {
    // `on conflict` names each kind's own partial unique index.
    let sql = match kind {
        "call" => {
            "with own as (select id from wa_session where id = $1 and runner_id = $4),
             e as (insert into wa_event (session_id, kind, wa_message_id, payload)
                   select id, 'call', $2, $3 from own
                   on conflict (session_id, wa_message_id) where kind = 'call' do nothing returning id)
             select exists (select 1 from own)"
        }
        _ => {
            "with own as (select id from wa_session where id = $1 and runner_id = $4),
             e as (insert into wa_event (session_id, kind, wa_message_id, payload)
                   select id, 'group_update', $2, $3 from own
                   on conflict (session_id, wa_message_id) where kind = 'group_update' do nothing returning id)
             select exists (select 1 from own)"
        }
    };
    bounded(
        sqlx::query_scalar(sql)
            .bind(id)
            .bind(key)
            .bind(payload)
            .bind(shared.id)
            .fetch_one(&shared.pool),
    )
    .await
}
