//! The session reconciler: claims sessions that want a browser and have no live owner, keeps
//! their leases, and makes `status` follow `desired_state` through one actor task per session.
//!
//! Ownership is a lease (`runner_id`, `lease_until`) renewed in one UPDATE every third of the
//! TTL. A runner that cannot renew stops its sessions before the lease can pass to another
//! runner (self-fencing), so no session is ever driven by two runners at once.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::driver::{DriverError, DriverEvent, SessionSpec};
use crate::error_code::ErrorCode;
use crate::runner::{SessionCmd, SessionEntry, Shared};

/// While connected, the login is saved this often (a no-op when it did not change), so a runner
/// killed without warning leaves a recent login behind.
const LIVE_SAVE_EVERY: Duration = Duration::from_secs(60);

/// How long the page may take to confirm an unlink before the login is forgotten anyway.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(15);

/// Statuses in which a session holds (or is getting) a browser.
const LIVE: &str = "('new', 'starting', 'qr_pending', 'pairing', 'connected')";

pub async fn run(shared: Arc<Shared>) {
    let tick = shared.cfg.lease_ttl / 3;
    let mut last_renewed = Instant::now();
    loop {
        match tick_once(&shared).await {
            Ok(()) => last_renewed = Instant::now(),
            Err(e) => {
                tracing::warn!(runner = %shared.id, error = %e, "reconcile failed; retrying");
                // Self-fence: once our leases may have expired, someone else may own the sessions.
                if last_renewed.elapsed() > shared.cfg.lease_ttl.mul_f32(0.9) {
                    lose_all(&shared).await;
                }
            }
        }
        tokio::select! {
            _ = shared.draining.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
            _ = shared.reconcile_wake.notified() => {}
        }
    }
}

async fn tick_once(shared: &Arc<Shared>) -> anyhow::Result<()> {
    let pool = &shared.pool;
    let ttl_ms = shared.cfg.lease_ttl.as_millis() as i64;
    let hb = sqlx::query("update wa_runner set heartbeat_at = now() where id = $1")
        .bind(shared.id)
        .execute(pool)
        .await?;
    if hb.rows_affected() == 0 {
        // Maintenance removed us as dead (a long pause): come back.
        sqlx::query("insert into wa_runner (id, host, pid, version, capacity) values ($1, 'unknown', $2, $3, $4) on conflict do nothing")
            .bind(shared.id)
            .bind(std::process::id() as i32)
            .bind(env!("CARGO_PKG_VERSION"))
            .bind(shared.cfg.capacity as i32)
            .execute(pool)
            .await?;
    }

    // Renew every lease we hold in one statement; what comes back is what we still own.
    let idle_ms = shared.cfg.idle_after.as_millis() as i64;
    let rows = sqlx::query(
        "update wa_session s set lease_until = now() + make_interval(secs => $2::float8 / 1000)
         where runner_id = $1
         returning id, desired_state, status,
           (last_active_at < now() - make_interval(secs => $3::float8 / 1000)) as idle,
           exists (select 1 from wa_message m where m.session_id = s.id and m.status in ('queued', 'sending')
                   and m.not_before <= now()) as has_due",
    )
    .bind(shared.id)
    .bind(ttl_ms)
    .bind(idle_ms)
    .fetch_all(pool)
    .await?;

    let mut owned = std::collections::HashSet::new();
    for row in &rows {
        let id: String = row.get("id");
        let desired: String = row.get("desired_state");
        let status: String = row.get("status");
        let idle: bool = row.get("idle");
        let has_due: bool = row.get("has_due");
        owned.insert(id.clone());
        let cmd = match desired.as_str() {
            "stopped" => Some(SessionCmd::Stop),
            "logged_out" => Some(SessionCmd::Logout),
            _ if status == "connected" && idle && !has_due => Some(SessionCmd::Hibernate),
            _ => None,
        };
        let tx = shared.sessions().get(&id).map(|e| e.cmd_tx.clone());
        match (tx, cmd) {
            (Some(tx), Some(cmd)) => {
                let _ = tx.try_send(cmd);
            }
            (Some(_), None) => {}
            // A session we hold a lease on but no actor (our actor ended without releasing):
            // give the lease back so it is claimed through the normal path.
            (None, _) => release(shared, &id, None).await?,
        }
    }
    let lost: Vec<String> = shared
        .sessions()
        .keys()
        .filter(|id| !owned.contains(*id))
        .cloned()
        .collect();
    for id in lost {
        tracing::warn!(session = %id, "lease lost to another runner; closing");
        if let Some(tx) = shared.sessions().get(&id).map(|e| e.cmd_tx.clone()) {
            let _ = tx.try_send(SessionCmd::Lost);
        }
    }

    if !shared.draining.is_cancelled() {
        claim(shared).await?;
    }
    Ok(())
}

async fn claim(shared: &Arc<Shared>) -> anyhow::Result<()> {
    let free = shared.cfg.capacity as i64 - shared.sessions().len() as i64;
    if free <= 0 {
        return Ok(());
    }
    let ttl_ms = shared.cfg.lease_ttl.as_millis() as i64;
    let rows = sqlx::query(&format!(
        "update wa_session s set runner_id = $1, lease_until = now() + make_interval(secs => $3::float8 / 1000),
            status = case when s.desired_state = 'running' and s.status in ('new', 'hibernated', 'stopped') then 'starting' else s.status end
         where s.id in (
           select c.id from wa_session c
           where (c.runner_id is null or c.lease_until < now())
             and (
               (c.desired_state = 'running' and c.status in {LIVE} and (c.next_start_at is null or c.next_start_at <= now()))
               or (c.desired_state = 'running' and c.status = 'hibernated' and exists (
                     select 1 from wa_message m where m.session_id = c.id and m.status = 'queued' and m.not_before <= now()))
               or (c.desired_state = 'stopped' and c.status not in ('stopped', 'logged_out', 'failed'))
               or (c.desired_state = 'logged_out' and c.status <> 'logged_out')
             )
           order by c.lease_until nulls first, c.id
           limit $2
           for update skip locked)
         returning s.id, s.desired_state, s.status, s.pair_phone, s.restart_count"
    ))
    .bind(shared.id)
    .bind(free)
    .bind(ttl_ms)
    .fetch_all(&shared.pool)
    .await?;
    for row in rows {
        let id: String = row.get("id");
        let desired: String = row.get("desired_state");
        let pair_phone: Option<String> = row.get("pair_phone");
        let restarts: i32 = row.get("restart_count");
        match desired.as_str() {
            "running" => start_actor(shared, id, pair_phone, restarts),
            // No browser needed unless there is a login to unlink.
            "logged_out" if shared.logins.has_login(&id).await.unwrap_or(true) => {
                start_actor(shared, id, pair_phone, restarts)
            }
            "logged_out" => finish(shared, &id, "logged_out", None).await?,
            _ => finish(shared, &id, "stopped", None).await?,
        }
    }
    Ok(())
}

fn start_actor(shared: &Arc<Shared>, id: String, pair_phone: Option<String>, restarts: i32) {
    let (tx, rx) = mpsc::channel(8);
    let mut sessions = shared.sessions();
    let task = tokio::spawn(actor(shared.clone(), id.clone(), pair_phone, restarts, rx));
    sessions.insert(
        id,
        SessionEntry {
            cmd_tx: tx,
            handle: None,
            recovered: false,
            recovering: false,
            in_flight: false,
            next_send_at: Instant::now(),
            task: Some(task),
        },
    );
}

/// Writes a session's status and the matching wa_event in one statement (on logged_out, its queued
/// messages fail in that same statement). Fenced on ownership: a runner that lost the lease
/// writes nothing.
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
    let row = sqlx::query(
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
    .fetch_optional(&shared.pool)
    .await?;
    Ok(row.is_some())
}

/// Gives a session back: no owner, and a NOTIFY so another runner picks it up at once.
async fn release(shared: &Shared, id: &str, status: Option<&str>) -> sqlx::Result<()> {
    sqlx::query(
        "with s as (update wa_session set runner_id = null, lease_until = null, status = coalesce($3, status)
                    where id = $1 and runner_id = $2 returning id)
         select pg_notify('wa_outbox', json_build_object('kind', 'released', 'session_id', id)::text) from s",
    )
    .bind(id)
    .bind(shared.id)
    .bind(status)
    .execute(&shared.pool)
    .await?;
    Ok(())
}

/// Logged out: the stored login deleted first (no login outlives its link; if the delete fails,
/// the maintenance sweep of logged-out sessions removes it), then the final status.
async fn forget(shared: &Shared, id: &str, error: Option<(ErrorCode, &str)>) -> sqlx::Result<()> {
    if let Err(e) = shared.logins.delete(id).await {
        tracing::warn!(session = %id, error = %e, "could not delete the stored login; maintenance will");
    }
    finish(shared, id, "logged_out", error).await
}

/// A terminal state: status written (with its event) and the lease released.
async fn finish(
    shared: &Shared,
    id: &str,
    status: &str,
    error: Option<(ErrorCode, &str)>,
) -> sqlx::Result<()> {
    write_status(shared, id, status, error, true).await?;
    Ok(())
}

async fn lose_all(shared: &Shared) {
    let txs: Vec<_> = shared
        .sessions()
        .values()
        .map(|e| e.cmd_tx.clone())
        .collect();
    for tx in txs {
        let _ = tx.try_send(SessionCmd::Lost);
    }
}

/// Drain: every actor saves its login, closes its browser and releases its lease.
pub async fn release_all(shared: &Arc<Shared>) {
    let entries: Vec<_> = shared
        .sessions()
        .values_mut()
        .map(|e| (e.cmd_tx.clone(), e.task.take()))
        .collect();
    for (tx, _) in &entries {
        let _ = tx.send(SessionCmd::Release).await;
    }
    for (_, task) in entries {
        if let Some(t) = task {
            if tokio::time::timeout(shared.cfg.drain_timeout, t)
                .await
                .is_err()
            {
                tracing::warn!("a session did not close within the drain bound");
            }
        }
    }
    // Anything still on our name (an actor that timed out) goes back too.
    let _ = sqlx::query(
        "with s as (update wa_session set runner_id = null, lease_until = null where runner_id = $1 returning id)
         select pg_notify('wa_outbox', json_build_object('kind', 'released', 'session_id', id)::text) from s",
    )
    .bind(shared.id)
    .execute(&shared.pool)
    .await;
}

enum Exit {
    /// Write nothing more (lease lost, or state already written).
    Quiet,
    /// Restart the browser after a back-off.
    Restart(String),
}

/// One session's life on this runner.
async fn actor(
    shared: Arc<Shared>,
    id: String,
    pair_phone: Option<String>,
    mut restarts: i32,
    mut cmds: mpsc::Receiver<SessionCmd>,
) {
    let mut first = true;
    loop {
        let exit = drive(&shared, &id, pair_phone.clone(), &mut cmds, first).await;
        first = false;
        match exit {
            Ok(Exit::Quiet) => break,
            Ok(Exit::Restart(reason)) => {
                restarts += 1;
                if let Some(m) = &shared.metrics {
                    m.inc_browser_restarts();
                }
                if restarts > shared.cfg.max_restarts {
                    let msg = format!("browser died {restarts} times in a row; last: {reason}");
                    let _ = finish(
                        &shared,
                        &id,
                        "failed",
                        Some((ErrorCode::BrowserCrashed, &msg)),
                    )
                    .await;
                    break;
                }
                let backoff = crate::dispatcher::backoff(
                    restarts as u32,
                    Duration::from_millis(500),
                    Duration::from_secs(60),
                );
                tracing::warn!(session = %id, restarts, ?backoff, %reason, "restarting the browser");
                let _ = sqlx::query("update wa_session set restart_count = $3, status = 'starting' where id = $1 and runner_id = $2")
                    .bind(&id)
                    .bind(shared.id)
                    .bind(restarts)
                    .execute(&shared.pool)
                    .await;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    cmd = cmds.recv() => {
                        if handle_idle_cmd(&shared, &id, cmd).await { break; }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "session actor hit a database error; releasing");
                let _ = release(&shared, &id, None).await;
                break;
            }
        }
    }
    shared.sessions().remove(&id);
    shared.dispatch_wake.notify_one();
}

/// A command while no browser runs. Returns true when the actor should end.
async fn handle_idle_cmd(shared: &Shared, id: &str, cmd: Option<SessionCmd>) -> bool {
    match cmd {
        None | Some(SessionCmd::Lost) => true,
        Some(SessionCmd::Stop) => {
            let _ = finish(shared, id, "stopped", None).await;
            true
        }
        Some(SessionCmd::Logout) => {
            let _ = forget(shared, id, None).await;
            true
        }
        Some(SessionCmd::Hibernate) => false,
        Some(SessionCmd::Release) => {
            let _ = release(shared, id, Some("starting")).await;
            true
        }
    }
}

async fn drive(
    shared: &Arc<Shared>,
    id: &str,
    pair_phone: Option<String>,
    cmds: &mut mpsc::Receiver<SessionCmd>,
    first: bool,
) -> sqlx::Result<Exit> {
    let profile_dir = shared.profile_dir(id);
    // Just claimed: a stored login wins over whatever an earlier run left in the local folder
    // (it may be stale, or another runner's). A restart after a crash keeps the folder as is.
    let restore = first && shared.logins.has_login(id).await.unwrap_or(false);
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
        .await?;
        return Ok(Exit::Quiet);
    }
    if restore {
        match shared.logins.restore(id, &profile_dir).await {
            Ok(_) => {}
            Err(e) if e.transient => {
                return Ok(Exit::Restart(format!("restoring the login: {}", e.message)))
            }
            Err(e) => {
                let err = Some((ErrorCode::AuthRestoreFailed, e.message.as_str()));
                finish(shared, id, "failed", err).await?;
                return Ok(Exit::Quiet);
            }
        }
    }
    if !set_status(shared, id, "starting", None).await? {
        return Ok(Exit::Quiet);
    }
    let spec = SessionSpec {
        session_id: id.to_string(),
        profile_dir: profile_dir.clone(),
        pair_phone: pair_phone.map(|p| p.trim_start_matches('+').to_string()),
    };
    let started =
        match tokio::time::timeout(shared.cfg.start_timeout, shared.driver.start(spec)).await {
            Ok(Ok(s)) => s,
            // A page that lacks what the driver needs will lack it on the next start too.
            Ok(Err(DriverError::Permanent { code, message })) => {
                finish(shared, id, "failed", Some((code, &message))).await?;
                return Ok(Exit::Quiet);
            }
            Ok(Err(e)) => return Ok(Exit::Restart(e.to_string())),
            Err(_) => return Ok(Exit::Restart("browser start timed out".into())),
        };
    let session = started.session;
    let mut events = started.events;
    let mut qr_count = 0u32;
    let mut logout_requested = false;
    // A logout waits for the page to be connected (there is nothing to unlink before), and is
    // bounded: if the page never confirms, the login is forgotten anyway.
    let mut logout_pending = false;
    let mut logout_deadline: Option<tokio::time::Instant> = None;
    let mut connected = false;
    let mut save_at: Option<tokio::time::Instant> = None;
    let mut reconnect_deadline: Option<tokio::time::Instant> = None;

    let close = |session: Arc<dyn crate::driver::Session>| async move {
        if tokio::time::timeout(Duration::from_secs(10), session.close())
            .await
            .is_err()
        {
            tracing::warn!("closing a session timed out");
        }
    };
    let detach = |shared: &Shared| {
        if let Some(e) = shared.sessions().get_mut(id) {
            e.handle = None;
        }
    };

    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(save_at.unwrap_or_else(tokio::time::Instant::now)), if save_at.is_some() => {
                // A shared-browser session writes its in-memory storage out first.
                if let Err(e) = session.persist().await {
                    tracing::warn!(session = %id, error = %e, "could not export the login");
                } else if let Err(e) = shared.logins.save(id, shared.id, &profile_dir).await {
                    tracing::warn!(session = %id, error = %e, "could not save the login");
                }
                save_at = Some(tokio::time::Instant::now() + LIVE_SAVE_EVERY);
            }
            _ = tokio::time::sleep_until(reconnect_deadline.unwrap_or_else(tokio::time::Instant::now)), if reconnect_deadline.is_some() => {
                detach(shared);
                close(session).await;
                return Ok(Exit::Restart(format!(
                    "the page did not reconnect within {:?}",
                    shared.cfg.reconnect_timeout
                )));
            }
            _ = tokio::time::sleep_until(logout_deadline.unwrap_or_else(tokio::time::Instant::now)), if logout_deadline.is_some() => {
                tracing::warn!(session = %id, "the page did not confirm the logout in time; forgetting the login anyway");
                detach(shared);
                close(session).await;
                forget(shared, id, None).await?;
                return Ok(Exit::Quiet);
            }
            ev = events.recv() => {
                let Some(ev) = ev else {
                    detach(shared);
                    close(session).await;
                    return Ok(Exit::Restart("event stream ended".into()));
                };
                match ev {
                    DriverEvent::Qr { .. } if logout_pending => {
                        // The stored login no longer works: nothing left to unlink.
                        detach(shared);
                        close(session).await;
                        forget(shared, id, None).await?;
                        return Ok(Exit::Quiet);
                    }
                    DriverEvent::Qr { payload } => {
                        qr_count += 1;
                        if qr_count > shared.cfg.qr_max_rotations {
                            close(session).await;
                            let msg = format!("no scan after {} QR codes", shared.cfg.qr_max_rotations);
                            finish(shared, id, "failed", Some((ErrorCode::QrTimeout, &msg))).await?;
                            return Ok(Exit::Quiet);
                        }
                        write_qr(shared, id, &payload, qr_count == 1).await?;
                    }
                    DriverEvent::PairingCode { code } => {
                        sqlx::query("update wa_session set pairing_code = $3 where id = $1 and runner_id = $2")
                            .bind(id).bind(shared.id).bind(&code).execute(&shared.pool).await?;
                        set_status(shared, id, "pairing", None).await?;
                    }
                    DriverEvent::Connected { .. } if logout_pending => {
                        connected = true;
                        logout_pending = false;
                        logout_requested = true;
                        logout_deadline = Some(tokio::time::Instant::now() + LOGOUT_TIMEOUT);
                        if let Err(e) = session.logout().await {
                            tracing::warn!(session = %id, error = %e, "logout through the page failed; forgetting the login anyway");
                            close(session).await;
                            forget(shared, id, None).await?;
                            return Ok(Exit::Quiet);
                        }
                    }
                    DriverEvent::Connected { phone, push_name } => {
                        connected = true;
                        reconnect_deadline = None;
                        sqlx::query("update wa_session set phone_number = $3, push_name = $4, restart_count = 0, next_start_at = null,
                                     last_active_at = now() where id = $1 and runner_id = $2")
                            .bind(id).bind(shared.id).bind(format!("+{}", phone.trim_start_matches('+'))).bind(&push_name)
                            .execute(&shared.pool).await?;
                        set_status(shared, id, "connected", None).await?;
                        qr_count = 0;
                        if let Some(e) = shared.sessions().get_mut(id) {
                            e.handle = Some(session.clone());
                            // A (re)started page: settle by id whatever an earlier page of this
                            // session left in `sending` before sending anything new.
                            e.recovered = false;
                        }
                        shared.dispatch_wake.notify_one();
                        // Local Storage reaches the disk seconds after the page writes it: save once
                        // it has settled, and again now and then (an unchanged login is not rewritten).
                        save_at = Some(tokio::time::Instant::now() + crate::auth_store::LIVE_SAVE_SETTLE);
                    }
                    DriverEvent::Disconnected { reason } => {
                        // The page reconnects by itself and says Connected again; meanwhile the
                        // dispatcher leaves this session alone. Not forever: a page stuck there
                        // (UNLAUNCHED, wppconnect#2813) is restarted once the deadline passes.
                        tracing::info!(session = %id, %reason, "socket dropped; the page reconnects");
                        detach(shared);
                        reconnect_deadline.get_or_insert(tokio::time::Instant::now() + shared.cfg.reconnect_timeout);
                    }
                    DriverEvent::LoggedOut { reason } => {
                        detach(shared);
                        close(session).await;
                        let err = (!logout_requested).then_some((ErrorCode::DeviceUnlinked, reason.as_str()));
                        forget(shared, id, err).await?;
                        return Ok(Exit::Quiet);
                    }
                    DriverEvent::Ack { wa_message_id, ack } => crate::dispatcher::apply_ack(shared, id, &wa_message_id, ack).await?,
                    DriverEvent::Incoming(msg) => record_incoming(shared, id, &msg).await?,
                    DriverEvent::Crashed { reason } => {
                        detach(shared);
                        close(session).await;
                        return Ok(Exit::Restart(reason));
                    }
                    DriverEvent::Failed { code, reason } => {
                        // Restarting cannot help (banned, taken over, unsupported page): the
                        // session ends failed with the page's own reason, its login kept.
                        tracing::warn!(session = %id, %code, %reason, "the page cannot go on");
                        detach(shared);
                        close(session).await;
                        finish(shared, id, "failed", Some((code, &reason))).await?;
                        return Ok(Exit::Quiet);
                    }
                }
            }
            cmd = cmds.recv() => {
                match cmd {
                    None | Some(SessionCmd::Lost) => {
                        detach(shared);
                        close(session).await;
                        return Ok(Exit::Quiet);
                    }
                    Some(SessionCmd::Logout) if !connected => {
                        logout_pending = true;
                        logout_deadline.get_or_insert(tokio::time::Instant::now() + shared.cfg.start_timeout);
                    }
                    Some(SessionCmd::Logout) => {
                        if logout_requested {
                            continue;
                        }
                        logout_requested = true;
                        logout_deadline = Some(tokio::time::Instant::now() + LOGOUT_TIMEOUT);
                        detach(shared);
                        if let Err(e) = session.logout().await {
                            tracing::warn!(session = %id, error = %e, "logout through the page failed; forgetting the login anyway");
                            close(session).await;
                            forget(shared, id, None).await?;
                            return Ok(Exit::Quiet);
                        }
                        // The LoggedOut event that follows finishes the job.
                    }
                    Some(cmd @ (SessionCmd::Stop | SessionCmd::Hibernate | SessionCmd::Release)) => {
                        if cmd == SessionCmd::Hibernate && shared.sessions().get(id).is_some_and(|e| e.in_flight) {
                            continue;
                        }
                        detach(shared);
                        // Wait for an in-flight send of this session to settle before closing its page.
                        wait_not_in_flight(shared, id).await;
                        // A normal browser shutdown writes both stores to disk: close, then save.
                        close(session).await;
                        if let Err(e) = shared.logins.save(id, shared.id, &profile_dir).await {
                            tracing::warn!(session = %id, error = %e, "could not save the login");
                        }
                        match cmd {
                            SessionCmd::Stop => finish(shared, id, "stopped", None).await?,
                            SessionCmd::Hibernate => {
                                finish(shared, id, "hibernated", None).await?
                            }
                            _ => release(shared, id, Some("starting")).await?,
                        }
                        return Ok(Exit::Quiet);
                    }
                }
            }
        }
    }
}

async fn wait_not_in_flight(shared: &Shared, id: &str) {
    let deadline = Instant::now() + shared.cfg.drain_timeout;
    while shared.sessions().get(id).is_some_and(|e| e.in_flight) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write_qr(shared: &Shared, id: &str, payload: &str, first: bool) -> sqlx::Result<()> {
    let image = crate::qr::png_data_url(payload);
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
    .execute(&shared.pool)
    .await?;
    set_status(shared, id, "qr_pending", None).await?;
    Ok(())
}

async fn record_incoming(
    shared: &Shared,
    id: &str,
    msg: &crate::driver::IncomingMessage,
) -> sqlx::Result<()> {
    let payload = serde_json::json!({
        "from": msg.from, "chat_id": msg.chat_id, "kind": msg.kind, "body": msg.body,
        "timestamp": msg.timestamp, "extra": msg.extra,
    });
    sqlx::query(
        "with e as (insert into wa_event (session_id, kind, wa_message_id, payload) values ($1, 'message', $2, $3)
                    on conflict (session_id, wa_message_id) where kind = 'message' do nothing returning session_id)
         update wa_session set last_active_at = now() where id in (select session_id from e)",
    )
    .bind(id)
    .bind(&msg.wa_message_id)
    .bind(payload)
    .execute(&shared.pool)
    .await?;
    Ok(())
}
