//! One session's life on this runner, as an explicit state machine: an actor task per owned
//! session that starts its browser, follows its page through [`Phase`]s, obeys the reconciler's
//! commands ([`SessionCmd`]) and writes what the page reports.
//!
//! What the page reports (QR codes, connection state, acks, incoming messages) goes through a
//! bounded per-session [`Backlog`]: written in order, retried with back-off while PostgreSQL is
//! unreachable, never a reason to close a browser. An event is dropped only when the backlog is
//! full (counted in `wa_page_events_dropped_total`, and logged). After every (re)connect the page
//! is asked for the incoming messages newer than the last one recorded (backfill); each is stored
//! once (a unique index on the WhatsApp message id).
//!
//! Every write is fenced on this runner still owning the session (`runner_id` in the `where`),
//! with the database's clock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::db::bounded;
use crate::driver::proxy::Proxy;
use crate::driver::{DriverError, DriverEvent, Session, SessionSpec};
use crate::error_code::ErrorCode;
use crate::shared::{backoff, SessionCmd, SessionEntry, Shared};

mod backlog;
mod calls;
mod media_in;
mod typed_events;
mod writes;

pub use backlog::BACKLOG_CAP;
use backlog::{Backlog, Flushed};
use calls::CallBook;
pub use writes::{finish, release};
use writes::{forget, set_status, until_settled, PageWrite};

/// While connected, the login is saved this often (a no-op when it did not change), so a runner
/// killed without warning leaves a recent login behind.
const LIVE_SAVE_EVERY: Duration = Duration::from_secs(60);

/// How long the page may take to confirm an unlink before the login is forgotten anyway.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(15);

/// Typed events (reactions, votes, edits, revokes) asked from the page per backfill: the newest
/// since the last recorded message, bounded so one answer stays small.
const BACKFILL_TYPED_MAX: usize = 2_000;
/// Incoming messages asked from the page per backfill call.
const BACKFILL_BATCH: usize = 500;

/// How much earlier than the newest recorded message a backfill starts (clock skew between the
/// database and WhatsApp's timestamps).
const BACKFILL_SKEW_SECS: i64 = 5;

/// Bound on closing a page (the driver kills the browser if it does not quit in time).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the actor of a session just claimed, and registers it.
pub fn start(
    shared: &Arc<Shared>,
    id: String,
    pair_phone: Option<String>,
    proxy_url: Option<String>,
    restarts: i32,
) {
    let (tx, rx) = mpsc::channel(8);
    let lost = tokio_util::sync::CancellationToken::new();
    let mut sessions = shared.sessions();
    let task = tokio::spawn(actor(
        shared.clone(),
        id.clone(),
        pair_phone,
        proxy_url,
        restarts,
        rx,
        lost.clone(),
    ));
    sessions.insert(
        id,
        SessionEntry {
            cmd_tx: tx,
            lost,
            handle: None,
            recovered: false,
            recovering: false,
            recovery_failures: 0,
            in_flight: false,
            next_send_at: Instant::now(),
            task: Some(task),
        },
    );
}

/// Where a running page is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Starting, or showing QR codes (`qrs` so far) or a pairing code.
    Linking { qrs: u32 },
    /// Logged in and synced: the dispatcher may send.
    Connected,
    /// The socket dropped; the page reconnects by itself, until `until`.
    Reconnecting { until: Instant },
    /// An unlink was asked. `asked`: the page was told (it confirms with LoggedOut); otherwise
    /// it is not connected yet and will be told once it is. Forgotten anyway at `until`.
    LoggingOut { until: Instant, asked: bool },
}

impl Phase {
    fn deadline(self) -> Option<Instant> {
        match self {
            Phase::Reconnecting { until } | Phase::LoggingOut { until, .. } => Some(until),
            _ => None,
        }
    }
}

/// What a session's actor keeps across its browsers.
struct Kept {
    /// No browser has run yet (just claimed).
    first: bool,
    calls: CallBook,
}

/// How a browser's life ended.
enum Exit {
    /// Write nothing more (lease lost, or the final state already written).
    Quiet,
    /// Restart the browser after a back-off.
    Restart(String),
}

/// One session's life on this runner: browsers started (and restarted after crashes) until a
/// final state or a lost lease.
async fn actor(
    shared: Arc<Shared>,
    id: String,
    pair_phone: Option<String>,
    proxy_url: Option<String>,
    mut restarts: i32,
    mut cmds: mpsc::Receiver<SessionCmd>,
    lost: tokio_util::sync::CancellationToken,
) {
    let mut kept = Kept {
        first: true,
        calls: CallBook::default(),
    };
    loop {
        let exit = drive(
            &shared,
            &id,
            pair_phone.clone(),
            proxy_url.as_deref(),
            &mut cmds,
            &lost,
            &mut kept,
        )
        .await;
        kept.first = false;
        match exit {
            Exit::Quiet => break,
            Exit::Restart(reason) => {
                restarts += 1;
                if let Some(m) = &shared.metrics {
                    m.inc_browser_restarts();
                }
                if restarts > shared.cfg.max_restarts {
                    let msg = format!("browser died {restarts} times in a row; last: {reason}");
                    finish(
                        &shared,
                        &id,
                        "failed",
                        Some((ErrorCode::BrowserCrashed, &msg)),
                    )
                    .await;
                    break;
                }
                let backoff = backoff(
                    restarts as u32,
                    Duration::from_millis(500),
                    Duration::from_secs(60),
                );
                tracing::warn!(session = %id, restarts, ?backoff, %reason, "restarting the browser");
                // Best effort: the count is advisory; the next status write says `starting`.
                let _ = bounded(
                    sqlx::query("update wa_session set restart_count = $3, status = 'starting' where id = $1 and runner_id = $2")
                        .bind(&id)
                        .bind(shared.id)
                        .bind(restarts)
                        .execute(&shared.pool),
                )
                .await;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = lost.cancelled() => break,
                    cmd = cmds.recv() => {
                        if handle_idle_cmd(&shared, &id, cmd).await { break; }
                    }
                }
            }
        }
    }
    shared.sessions().remove(&id);
    shared.dispatch_wake.notify_one();
}

/// A command while no browser runs. Returns true when the actor should end.
async fn handle_idle_cmd(shared: &Shared, id: &str, cmd: Option<SessionCmd>) -> bool {
    match cmd {
        None => true,
        Some(SessionCmd::Stop) => {
            finish(shared, id, "stopped", None).await;
            true
        }
        Some(SessionCmd::Logout) => {
            forget(shared, id, None).await;
            true
        }
        Some(SessionCmd::Hibernate) => false,
        Some(SessionCmd::Release) => {
            until_settled(shared, "the lease release", || {
                release(shared, Some(id), Some("starting"))
            })
            .await;
            true
        }
    }
}

/// One browser's life: start it, follow its page, end it.
async fn drive(
    shared: &Arc<Shared>,
    id: &str,
    pair_phone: Option<String>,
    proxy_url: Option<&str>,
    cmds: &mut mpsc::Receiver<SessionCmd>,
    lost: &tokio_util::sync::CancellationToken,
    kept: &mut Kept,
) -> Exit {
    let profile_dir = shared.profile_dir(id);
    let proxy_url = match proxy_url {
        None => None,
        Some(raw) => match writes::unseal_proxy_url(shared, id, raw).await {
            Ok(Ok(url)) => Some(url),
            Ok(Err(msg)) => {
                finish(shared, id, "failed", Some((ErrorCode::ProxyInvalid, &msg))).await;
                return Exit::Quiet;
            }
            Err(e) => return Exit::Restart(format!("sealing the proxy password: {e}")),
        },
    };
    // A proxy URL the browser cannot use will not become usable by restarting.
    let proxy = match proxy_url.as_deref().map(Proxy::parse).transpose() {
        Ok(p) => p,
        Err((code, msg)) => {
            finish(shared, id, "failed", Some((code, &msg))).await;
            return Exit::Quiet;
        }
    };
    // Just claimed: a stored login wins over whatever an earlier run left in the local folder
    // (it may be stale, or another runner's). A restart after a crash keeps the folder as is.
    // Not knowing whether there is one is no reason to start without it (a new QR, and then the
    // good login overwritten): try again later.
    let restore = if kept.first {
        match shared.logins.has_login(id).await {
            Ok(has) => has,
            Err(e) => return Exit::Restart(format!("looking up the stored login: {e}")),
        }
    } else {
        false
    };
    if restore {
        let _ = tokio::fs::remove_dir_all(&profile_dir).await;
    }
    if let Err(e) = tokio::fs::create_dir_all(&profile_dir).await {
        let msg = format!("cannot create the profile folder: {e}");
        finish(
            shared,
            id,
            "failed",
            Some((ErrorCode::BrowserStartFailed, &msg)),
        )
        .await;
        return Exit::Quiet;
    }
    if restore {
        match shared.logins.restore(id, &profile_dir).await {
            Ok(_) => {}
            Err(e) if e.transient => {
                return Exit::Restart(format!("restoring the login: {}", e.message))
            }
            Err(e) => {
                let err = Some((ErrorCode::AuthRestoreFailed, e.message.as_str()));
                finish(shared, id, "failed", err).await;
                return Exit::Quiet;
            }
        }
    }
    match set_status(shared, id, "starting", None).await {
        Ok(true) => {}
        Ok(false) => return Exit::Quiet,
        Err(e) => return Exit::Restart(format!("writing the status: {e}")),
    }
    let spec = SessionSpec {
        session_id: id.to_string(),
        profile_dir: profile_dir.clone(),
        pair_phone: pair_phone.map(|p| p.trim_start_matches('+').to_string()),
        proxy,
    };
    // Dropping a start under way kills the browser it launched.
    let start = tokio::select! {
        r = tokio::time::timeout(shared.cfg.start_timeout, shared.driver.start(spec)) => r,
        _ = lost.cancelled() => return Exit::Quiet,
    };
    let started = match start {
        Ok(Ok(s)) => s,
        // A page that lacks what the driver needs will lack it on the next start too.
        Ok(Err(DriverError::Permanent { code, message })) => {
            finish(shared, id, "failed", Some((code, &message))).await;
            return Exit::Quiet;
        }
        Ok(Err(e)) => return Exit::Restart(e.to_string()),
        Err(_) => return Exit::Restart("browser start timed out".into()),
    };
    let mut page = Page {
        shared,
        id,
        session: started.session,
        profile_dir,
        backlog: Backlog::new(),
        calls: &mut kept.calls,
    };
    let mut events = started.events;
    let mut phase = Phase::Linking { qrs: 0 };
    let mut save_at: Option<Instant> = None;

    loop {
        // The page's turn (a timer, an event or a command, and the writes it causes) races the
        // loss of the lease: a write stuck on a database that does not answer, or a slow
        // backfill, never holds the browser open past the fence.
        let step = tokio::select! {
            biased;
            _ = lost.cancelled() => None,
            step = page.turn(&mut events, cmds, &mut phase, &mut save_at) => Some(step),
        };
        match step {
            None => {
                // Not ours any more (taken over, or the fence): close at once, write nothing.
                page.close().await;
                return Exit::Quiet;
            }
            Some(Step::Go) => {}
            Some(Step::End(exit)) => return exit,
        }
    }
}

enum Step {
    Go,
    End(Exit),
}

/// A running page and what it still has to write.
struct Page<'a> {
    shared: &'a Arc<Shared>,
    id: &'a str,
    session: Arc<dyn Session>,
    profile_dir: std::path::PathBuf,
    backlog: Backlog,
    /// Calls seen and declines still to do, kept across this session's browser restarts.
    calls: &'a mut CallBook,
}

impl Page<'_> {
    /// Waits for the next thing to happen to this page and handles it.
    async fn turn(
        &mut self,
        events: &mut mpsc::Receiver<DriverEvent>,
        cmds: &mut mpsc::Receiver<SessionCmd>,
        phase: &mut Phase,
        save_at: &mut Option<Instant>,
    ) -> Step {
        let (shared, id) = (self.shared, self.id);
        let deadline = phase.deadline();
        let retry_at = self.backlog.retry_at;
        tokio::select! {
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                match self.flush().await {
                    Some(exit) => Step::End(exit),
                    None => Step::Go,
                }
            }
            _ = tokio::time::sleep_until(save_at.unwrap_or_else(Instant::now)), if save_at.is_some() => {
                self.save_live().await;
                *save_at = Some(Instant::now() + LIVE_SAVE_EVERY);
                Step::Go
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                self.close().await;
                if let Phase::LoggingOut { .. } = phase {
                    tracing::warn!(session = %id, "the page did not confirm the logout in time; forgetting the login anyway");
                    forget(shared, id, None).await;
                    return Step::End(Exit::Quiet);
                }
                // A page stuck reconnecting (UNLAUNCHED, wppconnect#2813) is restarted.
                Step::End(Exit::Restart(format!(
                    "the page did not reconnect within {:?}",
                    shared.cfg.reconnect_timeout
                )))
            }
            ev = events.recv() => match ev {
                Some(ev) => self.on_event(ev, phase, save_at).await,
                None => {
                    self.close().await;
                    Step::End(Exit::Restart("event stream ended".into()))
                }
            },
            cmd = cmds.recv() => self.on_cmd(cmd, phase).await,
        }
    }

    /// Writes the backlog; then, if one is due and nothing waits, the backfill.
    async fn flush(&mut self) -> Option<Exit> {
        loop {
            match self.backlog.flush(self.shared, self.id).await {
                Flushed::Lost => {
                    tracing::warn!(session = %self.id, "lease lost to another runner; closing");
                    self.close().await;
                    return Some(Exit::Quiet);
                }
                Flushed::Waiting => return None,
                Flushed::Done if self.backlog.backfill_due => self.backfill().await,
                Flushed::Done => return None,
            }
        }
    }

    fn push(&mut self, w: PageWrite) {
        self.backlog.push(self.shared, self.id, w);
    }

    /// Asks the page for the incoming messages newer than the last one recorded and queues them
    /// (each stored once). A failure leaves the backfill due for the next retry.
    async fn backfill(&mut self) {
        let since: sqlx::Result<Option<i64>> = bounded(
            sqlx::query_scalar(
                // Whole seconds, rounded down (the page's timestamps are whole seconds), and a
                // little earlier to absorb clock skew: what comes back twice is stored once.
                "select floor(extract(epoch from last_inbound_at))::bigint - $2 from wa_session where id = $1",
            )
            .bind(self.id)
            .bind(BACKFILL_SKEW_SECS)
            .fetch_one(&self.shared.pool),
        )
        .await;
        let mut since = match since {
            Ok(s) => s.unwrap_or(0),
            Err(e) => {
                self.backlog.fail(self.shared, self.id, &e);
                return;
            }
        };
        let typed_from = since;
        let mut found = 0usize;
        loop {
            let batch = match tokio::time::timeout(
                self.shared.cfg.send_timeout,
                self.session.inbound_since(since, BACKFILL_BATCH),
            )
            .await
            {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    tracing::warn!(session = %self.id, error = %e, "backfill: the page did not answer; retried later");
                    self.backlog.fail(self.shared, self.id, &e);
                    return;
                }
                Err(_) => {
                    self.backlog.fail(
                        self.shared,
                        self.id,
                        &"backfill: the page did not answer in time",
                    );
                    return;
                }
            };
            let full = batch.len() >= BACKFILL_BATCH;
            let newest = batch.iter().map(|m| m.timestamp).max().unwrap_or(since);
            found += batch.len();
            for m in batch {
                self.incoming(m).await;
            }
            // `since` is inclusive: a full batch of one second would come back again.
            if !full || newest <= since {
                break;
            }
            since = newest;
        }
        if found > 0 {
            tracing::info!(session = %self.id, found, "backfill: incoming messages the page holds since the last one recorded");
        }
        if !self.backfill_typed(typed_from).await {
            return;
        }
        self.backlog.backfill_due = false;
    }

    /// The typed events (reactions, votes, edits, revokes) the page holds from `since` on, queued
    /// like the incoming messages (each stored once per key). False when the page did not answer:
    /// the backfill stays due.
    async fn backfill_typed(&mut self, since: i64) -> bool {
        let batch = match tokio::time::timeout(
            self.shared.cfg.send_timeout,
            self.session.typed_since(since, BACKFILL_TYPED_MAX),
        )
        .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!(session = %self.id, error = %e, "backfill of typed events: the page did not answer; retried later");
                self.backlog.fail(self.shared, self.id, &e);
                return false;
            }
            Err(_) => {
                self.backlog.fail(
                    self.shared,
                    self.id,
                    &"backfill of typed events: the page did not answer in time",
                );
                return false;
            }
        };
        if !batch.is_empty() {
            tracing::info!(session = %self.id, found = batch.len(), "backfill: reactions, votes, edits and revokes the page holds");
        }
        for ev in batch {
            self.push(PageWrite::Typed(ev));
        }
        true
    }

    fn detach(&self) {
        if let Some(e) = self.shared.sessions().get_mut(self.id) {
            e.handle = None;
        }
    }

    async fn close(&self) {
        self.detach();
        if tokio::time::timeout(CLOSE_TIMEOUT, self.session.close())
            .await
            .is_err()
        {
            tracing::warn!(session = %self.id, "closing a session timed out");
        }
    }

    async fn save_live(&self) {
        // A shared-browser session writes its in-memory storage out first.
        if let Err(e) = self.session.persist().await {
            tracing::warn!(session = %self.id, error = %e, "could not export the login");
        } else if let Err(e) = self
            .shared
            .logins
            .save(self.id, self.shared.id, &self.profile_dir)
            .await
        {
            tracing::warn!(session = %self.id, error = %e, "could not save the login");
        }
    }

    /// Tells the page to unlink. If it cannot, the login is forgotten anyway.
    async fn ask_logout(&self, phase: &mut Phase) -> Step {
        *phase = Phase::LoggingOut {
            until: Instant::now() + LOGOUT_TIMEOUT,
            asked: true,
        };
        self.detach();
        if let Err(e) = self.session.logout().await {
            tracing::warn!(session = %self.id, error = %e, "logout through the page failed; forgetting the login anyway");
            self.close().await;
            forget(self.shared, self.id, None).await;
            return Step::End(Exit::Quiet);
        }
        // The LoggedOut event that follows finishes the job.
        Step::Go
    }

    async fn on_event(
        &mut self,
        ev: DriverEvent,
        phase: &mut Phase,
        save_at: &mut Option<Instant>,
    ) -> Step {
        let (shared, id) = (self.shared, self.id);
        match ev {
            DriverEvent::Qr { .. } if matches!(phase, Phase::LoggingOut { .. }) => {
                // The stored login no longer works: nothing left to unlink.
                self.close().await;
                forget(shared, id, None).await;
                return Step::End(Exit::Quiet);
            }
            DriverEvent::Qr { payload } => {
                let qrs = match *phase {
                    Phase::Linking { qrs } => qrs + 1,
                    _ => 1,
                };
                *phase = Phase::Linking { qrs };
                if qrs > shared.cfg.qr_max_rotations {
                    self.close().await;
                    let msg = format!("no scan after {} QR codes", shared.cfg.qr_max_rotations);
                    finish(shared, id, "failed", Some((ErrorCode::QrTimeout, &msg))).await;
                    return Step::End(Exit::Quiet);
                }
                self.push(PageWrite::Qr {
                    payload,
                    first: qrs == 1,
                });
            }
            DriverEvent::PairingCode { code } => self.push(PageWrite::Pairing { code }),
            DriverEvent::Connected { .. }
                if matches!(phase, Phase::LoggingOut { asked: true, .. }) => {}
            DriverEvent::Connected { .. } if matches!(phase, Phase::LoggingOut { .. }) => {
                return self.ask_logout(phase).await;
            }
            DriverEvent::Connected { phone, push_name } => {
                *phase = Phase::Connected;
                self.push(PageWrite::Connected { phone, push_name });
                self.backlog.backfill_due = true;
                if let Some(e) = shared.sessions().get_mut(id) {
                    e.handle = Some(self.session.clone());
                    // A (re)started page: settle by id whatever an earlier page of this session
                    // left in `sending` before sending anything new.
                    e.recovered = false;
                }
                shared.dispatch_wake.notify_one();
                // Declines that could not reach the page while it was away.
                self.retry_pending_calls().await;
                // Local Storage reaches the disk seconds after the page writes it: save once it
                // has settled, and again now and then (an unchanged login is not rewritten).
                *save_at = Some(Instant::now() + crate::auth_store::LIVE_SAVE_SETTLE);
            }
            DriverEvent::Disconnected { reason } => {
                // The page reconnects by itself and says Connected again; meanwhile the
                // dispatcher leaves this session alone. Not forever: see the deadline.
                tracing::info!(session = %id, %reason, "socket dropped; the page reconnects");
                self.detach();
                if matches!(phase, Phase::Linking { .. } | Phase::Connected) {
                    *phase = Phase::Reconnecting {
                        until: Instant::now() + shared.cfg.reconnect_timeout,
                    };
                }
            }
            DriverEvent::LoggedOut { reason } => {
                let asked = matches!(phase, Phase::LoggingOut { asked: true, .. });
                self.close().await;
                let err = (!asked).then_some((ErrorCode::DeviceUnlinked, reason.as_str()));
                forget(shared, id, err).await;
                return Step::End(Exit::Quiet);
            }
            DriverEvent::Ack { wa_message_id, ack } => self.push(PageWrite::Ack {
                key: wa_message_id,
                ack,
            }),
            DriverEvent::Incoming(msg) => self.incoming(msg).await,
            DriverEvent::Call(call) => self.on_call(call).await,
            DriverEvent::GroupUpdate(u) => self.push(PageWrite::GroupUpdate(u)),
            DriverEvent::Typed(ev) => self.push(PageWrite::Typed(ev)),
            DriverEvent::Crashed { reason } => {
                self.close().await;
                return Step::End(Exit::Restart(reason));
            }
            DriverEvent::Failed { code, reason } => {
                // Restarting cannot help (banned, taken over, unsupported page): the session
                // ends failed with the page's own reason, its login kept.
                tracing::warn!(session = %id, %code, %reason, "the page cannot go on");
                self.close().await;
                finish(shared, id, "failed", Some((code, &reason))).await;
                return Step::End(Exit::Quiet);
            }
        }
        match self.flush().await {
            Some(exit) => Step::End(exit),
            None => Step::Go,
        }
    }

    async fn on_cmd(&mut self, cmd: Option<SessionCmd>, phase: &mut Phase) -> Step {
        let (shared, id) = (self.shared, self.id);
        match cmd {
            None => {
                self.close().await;
                Step::End(Exit::Quiet)
            }
            Some(SessionCmd::Logout) => match *phase {
                Phase::LoggingOut { asked: true, .. } => Step::Go,
                Phase::Connected | Phase::Reconnecting { .. } => self.ask_logout(phase).await,
                // A page showing QR codes has no login: nothing to unlink.
                Phase::Linking { qrs } if qrs > 0 => {
                    self.close().await;
                    forget(shared, id, None).await;
                    Step::End(Exit::Quiet)
                }
                // Nothing to unlink before the page is connected: wait for it (bounded).
                _ => {
                    *phase = Phase::LoggingOut {
                        until: Instant::now() + shared.cfg.start_timeout,
                        asked: false,
                    };
                    Step::Go
                }
            },
            Some(cmd @ (SessionCmd::Stop | SessionCmd::Hibernate | SessionCmd::Release)) => {
                if cmd == SessionCmd::Hibernate
                    && shared.sessions().get(id).is_some_and(|e| e.in_flight)
                {
                    return Step::Go;
                }
                self.detach();
                // Wait for an in-flight send of this session to settle before closing its page.
                wait_not_in_flight(shared, id).await;
                // A normal browser shutdown writes both stores to disk: close, then save.
                self.close().await;
                if let Err(e) = shared.logins.save(id, shared.id, &self.profile_dir).await {
                    tracing::warn!(session = %id, error = %e, "could not save the login");
                }
                // What the page reported before it closed is written before the final state.
                self.write_backlog_before_end().await;
                match cmd {
                    SessionCmd::Stop => finish(shared, id, "stopped", None).await,
                    SessionCmd::Hibernate => finish(shared, id, "hibernated", None).await,
                    _ => {
                        until_settled(shared, "the lease release", || {
                            release(shared, Some(id), Some("starting"))
                        })
                        .await
                    }
                }
                Step::End(Exit::Quiet)
            }
        }
    }

    /// The backlog, retried until written, the lease lost, or the drain bound passed.
    async fn write_backlog_before_end(&mut self) {
        let deadline = Instant::now() + self.shared.cfg.drain_timeout;
        loop {
            match self.backlog.flush(self.shared, self.id).await {
                Flushed::Done | Flushed::Lost => return,
                Flushed::Waiting => {}
            }
            let at = self.backlog.retry_at.unwrap_or_else(Instant::now);
            if at > deadline {
                tracing::error!(session = %self.id, dropped = self.backlog.queue.len(),
                    "page events could not be written before the session closed");
                if let Some(m) = &self.shared.metrics {
                    for _ in 0..self.backlog.queue.len() {
                        m.inc_page_events_dropped();
                    }
                }
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }
}

async fn wait_not_in_flight(shared: &Shared, id: &str) {
    let deadline = Instant::now() + shared.cfg.drain_timeout;
    while shared.sessions().get(id).is_some_and(|e| e.in_flight) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
