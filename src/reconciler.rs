//! The session reconciler: claims sessions that want a browser and have no live owner, keeps
//! their leases, and passes `desired_state` changes to each session's actor (`crate::session`).
//!
//! Ownership is a lease (`runner_id`, `lease_until`) renewed in one UPDATE every quarter of the
//! TTL, from start-up until the drain has released the last one. A runner that cannot prove its
//! leases within half the TTL, measured from *before* the last renewal that succeeded, closes
//! its browsers (the fence), whatever the database is doing: a renewal that hangs on a
//! black-holed connection cannot delay it, so no session is ever driven by two runners at once.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use tokio::time::Instant;

use crate::db::bounded_by;
use crate::shared::{SessionCmd, Shared};

/// Sessions that need an owner whatever their queue holds: the predicate of
/// `wa_session_claim_idx` (migrations/20261203000020_scale.sql), word for word, so PostgreSQL
/// can prove the claim implies it. Running sessions in a live status, or stopped and asked to
/// run again before the stop was written; sessions to stop or to log out.
const CLAIMABLE: &str = "(c.desired_state = 'running' and c.status in ('new', 'starting', 'qr_pending', 'pairing', 'connected', 'stopped'))
     or (c.desired_state = 'stopped' and c.status not in ('stopped', 'logged_out', 'failed'))
     or (c.desired_state = 'logged_out' and c.status <> 'logged_out')";

/// Renews leases (and claims, unless draining) until the drain is over.
pub async fn run(shared: Arc<Shared>) {
    let tick = shared.cfg.lease_ttl / 4;
    let retry = (shared.cfg.lease_ttl / 10).min(Duration::from_secs(1));
    let fence = tokio::spawn(fence_watch(shared.clone()));
    loop {
        // Bounded: a renewal that has not come back within a tick proves nothing.
        let next = match bounded_by(tick, tick_once(&shared)).await {
            Ok(()) => tick,
            Err(e) => {
                tracing::warn!(runner = %shared.id, error = %e, "renewing leases failed; retrying");
                retry
            }
        };
        let until = Instant::now() + next;
        // Claim-only wake-ups (work for an unowned session) run the claim and keep waiting for
        // the tick: the heartbeat and the renewal of every lease keep their own pace.
        loop {
            tokio::select! {
                _ = shared.leases_done.cancelled() => {
                    fence.abort();
                    return;
                }
                _ = tokio::time::sleep_until(until) => break,
                _ = shared.reconcile_wake.notified(), if !shared.draining.is_cancelled() => break,
                _ = shared.claim_wake.notified(), if !shared.draining.is_cancelled() => {
                    if let Err(e) = bounded_by(tick, claim(&shared)).await {
                        tracing::warn!(runner = %shared.id, error = %e, "claiming sessions failed");
                    }
                }
            }
        }
    }
}

/// The fence: once the leases may have passed to another runner (half the TTL after the last
/// renewal that was proved), every browser of this runner closes at once, writing nothing.
async fn fence_watch(shared: Arc<Shared>) {
    let limit = shared.cfg.lease_ttl / 2;
    let every = (shared.cfg.lease_ttl / 20).max(Duration::from_millis(50));
    let mut fenced_at: Option<Instant> = None;
    loop {
        tokio::time::sleep(every).await;
        let proved = *shared
            .leases_proved_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if proved.elapsed() <= limit || fenced_at.is_some_and(|f| f >= proved) {
            continue;
        }
        if shared.sessions().is_empty() {
            continue;
        }
        fenced_at = Some(proved);
        tracing::error!(runner = %shared.id, since = ?proved.elapsed(),
            "cannot prove this runner's leases: closing its browsers before another runner may take them");
        if let Some(m) = &shared.metrics {
            m.inc_fences();
        }
        lose_all(&shared).await;
    }
}

async fn tick_once(shared: &Arc<Shared>) -> sqlx::Result<()> {
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

    // Renew every lease we hold in one statement; what comes back is what we still own. The
    // leases it writes end no earlier than `sent` + TTL, whatever the statement's latency.
    let sent = Instant::now();
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
    *shared
        .leases_proved_at
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = sent;

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
            (None, _) => {
                crate::session::release(shared, Some(&id), None).await?;
            }
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
        if let Some(e) = shared.sessions().get(&id) {
            e.lost.cancel();
        }
    }

    if !shared.draining.is_cancelled() {
        claim(shared).await?;
    }
    Ok(())
}

async fn claim(shared: &Arc<Shared>) -> sqlx::Result<()> {
    let free = shared.cfg.capacity as i64 - shared.sessions().len() as i64;
    if free <= 0 {
        return Ok(());
    }
    let ttl_ms = shared.cfg.lease_ttl.as_millis() as i64;
    // Three index-served picks (wa_session_claim_idx by a null and by an expired lease,
    // wa_session_hibernated_idx for hibernated sessions with due work), so a tick visits only
    // sessions it could take: never the ones with a live lease, never the message history.
    let rows = sqlx::query(&format!(
        "with unowned as (
           select c.id from wa_session c
           where c.lease_until is null and c.runner_id is null and ({CLAIMABLE})
           order by c.lease_until nulls first, c.id limit $2 for update skip locked),
         expired as (
           select c.id from wa_session c
           where c.lease_until < now() and ({CLAIMABLE})
           order by c.lease_until, c.id limit $2 for update skip locked),
         hibernated as (
           select c.id from wa_session c
           where c.desired_state = 'running' and c.status = 'hibernated'
             and (c.runner_id is null or c.lease_until < now())
             and c.id in (
                   select m.session_id from wa_message m where m.status = 'queued' and m.not_before <= now()
                   union
                   select k.session_id from wa_command k where k.status = 'queued' and k.not_before <= now())
           limit $2 for update skip locked),
         pick as (
           (select id from unowned) union all (select id from expired) union all (select id from hibernated) limit $2)
         update wa_session s set runner_id = $1, lease_until = now() + make_interval(secs => $3::float8 / 1000),
            status = case when s.desired_state = 'running' and s.status in ('new', 'hibernated', 'stopped') then 'starting' else s.status end
         from pick where s.id = pick.id
         returning s.id, s.desired_state, s.status, s.pair_phone, s.proxy_url, s.restart_count"
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
        let proxy_url: Option<String> = row.get("proxy_url");
        let restarts: i32 = row.get("restart_count");
        match desired.as_str() {
            "running" => crate::session::start(shared, id, pair_phone, proxy_url, restarts),
            // No browser needed unless there is a login to unlink (not knowing is a maybe).
            "logged_out" if shared.logins.has_login(&id).await.unwrap_or(true) => {
                crate::session::start(shared, id, pair_phone, proxy_url, restarts)
            }
            "logged_out" => crate::session::finish(shared, &id, "logged_out", None).await,
            _ => crate::session::finish(shared, &id, "stopped", None).await,
        }
    }
    Ok(())
}

/// The fence: every session's browser closes at once and nothing more is written for it.
async fn lose_all(shared: &Shared) {
    for e in shared.sessions().values() {
        e.lost.cancel();
    }
}

/// Drain: every actor writes what its page reported, saves its login, closes its browser and
/// releases its lease, all at once and within the drain bound; the leases are renewed meanwhile
/// (the renewal loop runs until `leases_done`). Then anything still on this runner's name goes
/// back too.
pub async fn release_all(shared: &Arc<Shared>) {
    let entries: Vec<_> = shared
        .sessions()
        .values_mut()
        .map(|e| (e.cmd_tx.clone(), e.task.take()))
        .collect();
    let mut tasks = Vec::new();
    for (tx, task) in entries {
        let _ = tx.send(SessionCmd::Release).await;
        tasks.extend(task);
    }
    let bound = shared.cfg.drain_timeout + Duration::from_secs(15);
    if tokio::time::timeout(bound, futures::future::join_all(tasks))
        .await
        .is_err()
    {
        // A browser still starting (or stuck) must not outlive the release of its lease: close
        // whatever is left at once, writing nothing, before the leases go back.
        tracing::warn!(
            ?bound,
            "sessions did not close within the drain bound; closing the rest"
        );
        lose_all(shared).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !shared.sessions().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for attempt in 1..=5u32 {
        match crate::session::release(shared, None, None).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "releasing the remaining leases failed");
                tokio::time::sleep(crate::shared::backoff(
                    attempt,
                    Duration::from_millis(200),
                    Duration::from_secs(2),
                ))
                .await;
            }
        }
    }
}
