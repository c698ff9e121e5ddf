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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::db::bounded;
use crate::driver::{DriverError, DriverEvent, IncomingMessage, Session, SessionSpec};
use crate::error_code::ErrorCode;
use crate::shared::{backoff, SessionCmd, SessionEntry, Shared};

/// While connected, the login is saved this often (a no-op when it did not change), so a runner
/// killed without warning leaves a recent login behind.
const LIVE_SAVE_EVERY: Duration = Duration::from_secs(60);

/// How long the page may take to confirm an unlink before the login is forgotten anyway.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(15);

/// Page events kept per session while they cannot be written.
pub const BACKLOG_CAP: usize = 10_000;

/// Incoming messages asked from the page per backfill call.
const BACKFILL_BATCH: usize = 500;

/// How much earlier than the newest recorded message a backfill starts (clock skew between the
/// database and WhatsApp's timestamps).
const BACKFILL_SKEW_SECS: i64 = 5;

/// Bound on closing a page (the driver kills the browser if it does not quit in time).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the actor of a session just claimed, and registers it.
pub fn start(shared: &Arc<Shared>, id: String, pair_phone: Option<String>, restarts: i32) {
    let (tx, rx) = mpsc::channel(8);
    let lost = tokio_util::sync::CancellationToken::new();
    let mut sessions = shared.sessions();
    let task = tokio::spawn(actor(
        shared.clone(),
        id.clone(),
        pair_phone,
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

/// How a browser's life ended.
enum Exit {
    /// Write nothing more (lease lost, or the final state already written).
    Quiet,
    /// Restart the browser after a back-off.
    Restart(String),
}

/// A write a page event asks for.
#[derive(Debug)]
enum PageWrite {
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
}

/// The page's writes not yet in the database, in order.
struct Backlog {
    queue: VecDeque<PageWrite>,
    failures: u32,
    retry_at: Option<Instant>,
    /// Incoming messages newer than the last recorded are to be asked from the page.
    backfill_due: bool,
}

enum Flushed {
    /// Everything written.
    Done,
    /// A write failed; the rest waits for `retry_at`.
    Waiting,
    /// The session is no longer ours.
    Lost,
}

impl Backlog {
    fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            failures: 0,
            retry_at: None,
            backfill_due: false,
        }
    }

    fn push(&mut self, shared: &Shared, id: &str, w: PageWrite) {
        if self.queue.len() >= BACKLOG_CAP {
            if let Some(m) = &shared.metrics {
                m.inc_page_events_dropped();
            }
            tracing::error!(session = %id, event = ?w, cap = BACKLOG_CAP,
                "page event dropped: the session's write backlog is full (PostgreSQL unreachable)");
            return;
        }
        self.queue.push_back(w);
    }

    /// Writes what it can, in order. A failure leaves the rest for `retry_at`.
    async fn flush(&mut self, shared: &Shared, id: &str) -> Flushed {
        if self.retry_at.is_some_and(|t| t > Instant::now()) {
            return Flushed::Waiting;
        }
        self.retry_at = None;
        while let Some(w) = self.queue.front() {
            match bounded_write(shared, id, w).await {
                Ok(true) => {
                    self.queue.pop_front();
                    self.failures = 0;
                }
                Ok(false) => return Flushed::Lost,
                Err(e) => {
                    self.fail(shared, id, &e);
                    return Flushed::Waiting;
                }
            }
        }
        Flushed::Done
    }

    fn fail(&mut self, shared: &Shared, id: &str, e: &dyn std::fmt::Display) {
        self.failures += 1;
        if let Some(m) = &shared.metrics {
            m.inc_page_write_retries();
        }
        let wait = backoff(
            self.failures,
            Duration::from_millis(100),
            Duration::from_secs(5),
        );
        tracing::warn!(session = %id, error = %e, pending = self.queue.len(), ?wait,
            "writing page events failed; the browser stays up and they are retried");
        self.retry_at = Some(Instant::now() + wait);
    }
}

async fn bounded_write(shared: &Shared, id: &str, w: &PageWrite) -> sqlx::Result<bool> {
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
    }
}

/// One session's life on this runner: browsers started (and restarted after crashes) until a
/// final state or a lost lease.
async fn actor(
    shared: Arc<Shared>,
    id: String,
    pair_phone: Option<String>,
    mut restarts: i32,
    mut cmds: mpsc::Receiver<SessionCmd>,
    lost: tokio_util::sync::CancellationToken,
) {
    let mut first = true;
    loop {
        let exit = drive(&shared, &id, pair_phone.clone(), &mut cmds, &lost, first).await;
        first = false;
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
    cmds: &mut mpsc::Receiver<SessionCmd>,
    lost: &tokio_util::sync::CancellationToken,
    first: bool,
) -> Exit {
    let profile_dir = shared.profile_dir(id);
    // Just claimed: a stored login wins over whatever an earlier run left in the local folder
    // (it may be stale, or another runner's). A restart after a crash keeps the folder as is.
    // Not knowing whether there is one is no reason to start without it (a new QR, and then the
    // good login overwritten): try again later.
    let restore = if first {
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
    };
    let mut events = started.events;
    let mut phase = Phase::Linking { qrs: 0 };
    let mut save_at: Option<Instant> = None;

    loop {
        let deadline = phase.deadline();
        tokio::select! {
            biased;
            _ = lost.cancelled() => {
                // Not ours any more (taken over, or the fence): close at once, write nothing.
                page.close().await;
                return Exit::Quiet;
            }
            _ = tokio::time::sleep_until(page.backlog.retry_at.unwrap_or_else(Instant::now)), if page.backlog.retry_at.is_some() => {
                if let Some(exit) = page.flush().await {
                    return exit;
                }
            }
            _ = tokio::time::sleep_until(save_at.unwrap_or_else(Instant::now)), if save_at.is_some() => {
                page.save_live().await;
                save_at = Some(Instant::now() + LIVE_SAVE_EVERY);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                match phase {
                    Phase::LoggingOut { .. } => {
                        tracing::warn!(session = %id, "the page did not confirm the logout in time; forgetting the login anyway");
                        page.close().await;
                        forget(shared, id, None).await;
                        return Exit::Quiet;
                    }
                    _ => {
                        // A page stuck reconnecting (UNLAUNCHED, wppconnect#2813) is restarted.
                        page.close().await;
                        return Exit::Restart(format!(
                            "the page did not reconnect within {:?}",
                            shared.cfg.reconnect_timeout
                        ));
                    }
                }
            }
            ev = events.recv() => {
                let Some(ev) = ev else {
                    page.close().await;
                    return Exit::Restart("event stream ended".into());
                };
                match page.on_event(ev, &mut phase, &mut save_at).await {
                    Step::Go => {}
                    Step::End(exit) => return exit,
                }
            }
            cmd = cmds.recv() => {
                match page.on_cmd(cmd, &mut phase).await {
                    Step::Go => {}
                    Step::End(exit) => return exit,
                }
            }
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
}

impl Page<'_> {
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
                self.push(PageWrite::Incoming(m));
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
        self.backlog.backfill_due = false;
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
            DriverEvent::Incoming(msg) => self.push(PageWrite::Incoming(msg)),
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

/// Retries a final write (a terminal status, a release) until it is written or the lease it is
/// fenced on must have passed: after that, the write would be refused anyway.
async fn until_settled<F, Fut>(shared: &Shared, what: &str, mut write: F)
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
async fn forget(shared: &Shared, id: &str, error: Option<(ErrorCode, &str)>) {
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

/// An incoming message, stored once per WhatsApp message id (a unique index); the session's
/// newest recorded message moves forward for the next backfill. Ok(false) when the session is no
/// longer ours.
async fn record_incoming(shared: &Shared, id: &str, msg: &IncomingMessage) -> sqlx::Result<bool> {
    let payload = serde_json::json!({
        "from": msg.from, "chat_id": msg.chat_id, "kind": msg.kind, "body": msg.body,
        "timestamp": msg.timestamp, "extra": msg.extra,
    });
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
