//! Cluster-wide housekeeping on cron schedules, run by one leader at a time (DESIGN.md §2).
//!
//! Shaped after River's maintenance services: one file per task, each with its defaults as
//! named constants and a config validated once when it is built; each task is a `run_once`
//! that works in bounded batches (one statement, one transaction, its own timeout) and reports
//! what it did. The service emits a [`MaintenanceReport`] after every run, which is what the
//! logs, the metrics and the tests look at: tests wait on reports, never on sleeps.
//!
//! Hibernating idle sessions is not here: it needs the owning runner to save the login and
//! close its browser, so each runner's reconciler does it for its own sessions.
//!
//! Leadership is a row in `wa_leader` (see [`leader`]), not a session advisory lock, so it
//! survives PgBouncer in transaction mode.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgArguments;
use sqlx::{PgPool, Postgres};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub mod dead_runners;
pub mod expire_leases;
pub mod fail_logged_out;
pub mod forget_idle;
pub mod leader;
pub mod prune;
pub mod prune_media;

/// Rows one statement touches at most: small enough to hold locks briefly, big enough that a
/// backlog of a million rows clears in one run.
pub const DEFAULT_BATCH_SIZE: i64 = 1_000;
/// Server- and client-side bound of one batch statement.
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Batches one task runs per schedule tick at most; what is left waits for the next tick.
pub const DEFAULT_MAX_BATCHES: u32 = 1_000;
/// Reports kept for slow subscribers.
const REPORT_CHANNEL: usize = 16;

/// What one task did in one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TaskReport {
    /// Rows changed or deleted.
    pub rows: u64,
    /// Statements run (the last one usually touched fewer than a batch).
    pub batches: u32,
    /// Set when the task stopped on an error; the other tasks still ran.
    pub error: Option<String>,
}

impl TaskReport {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// The batch settings every task shares, validated together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batching {
    pub size: i64,
    pub timeout: Duration,
    pub max_batches: u32,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            size: DEFAULT_BATCH_SIZE,
            timeout: DEFAULT_BATCH_TIMEOUT,
            max_batches: DEFAULT_MAX_BATCHES,
        }
    }
}

impl Batching {
    pub fn validate(&self, task: &str) -> Result<(), String> {
        if !(1..=100_000).contains(&self.size) {
            return Err(format!(
                "{task}: batch size {} is not within 1..=100000",
                self.size
            ));
        }
        if self.timeout < Duration::from_millis(100) {
            return Err(format!("{task}: batch timeout must be at least 100ms"));
        }
        if self.max_batches == 0 {
            return Err(format!("{task}: max_batches must be at least 1"));
        }
        Ok(())
    }
}

/// Everything the maintenance service needs, checked once at start-up.
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    pub schedule: cron::Schedule,
    /// Leader lease; renewed every third of it, taken over by another runner after it.
    pub leader_ttl: Duration,
    pub expire_leases: expire_leases::Config,
    pub dead_runners: dead_runners::Config,
    pub forget_idle: forget_idle::Config,
    pub fail_logged_out: fail_logged_out::Config,
    pub prune: prune::Config,
    pub prune_media: prune_media::Config,
}

impl MaintenanceConfig {
    /// Builds and validates the whole service config from the runner's config.
    pub fn from_config(c: &Config) -> Result<Self, String> {
        let schedule: cron::Schedule = c
            .maintenance_cron
            .parse()
            .map_err(|e| format!("WA_MAINTENANCE_CRON `{}`: {e}", c.maintenance_cron))?;
        let cfg = Self {
            schedule,
            leader_ttl: c.lease_ttl,
            expire_leases: expire_leases::Config::new(c.lease_ttl),
            dead_runners: dead_runners::Config::new(c.lease_ttl),
            forget_idle: forget_idle::Config::new(c.forget_after),
            fail_logged_out: fail_logged_out::Config::default(),
            prune: prune::Config::new(c.retention),
            prune_media: prune_media::Config::new(c.media_retention),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.leader_ttl < Duration::from_secs(1) {
            return Err("maintenance leader TTL must be at least 1s".into());
        }
        if self.schedule.upcoming(Utc).next().is_none() {
            return Err(format!(
                "WA_MAINTENANCE_CRON `{}` never fires",
                self.schedule.source()
            ));
        }
        self.expire_leases.validate()?;
        self.dead_runners.validate()?;
        self.forget_idle.validate()?;
        self.fail_logged_out.validate()?;
        self.prune.validate()?;
        self.prune_media.validate()?;
        Ok(())
    }
}

/// What one maintenance run did.
#[derive(Debug, Clone, Serialize)]
pub struct MaintenanceReport {
    /// The leader that ran it (None for a direct [`run_once`]).
    pub runner_id: Option<uuid::Uuid>,
    pub started_at: DateTime<Utc>,
    pub elapsed: Duration,
    /// Session leases of dead runners cleared.
    pub expired_leases: TaskReport,
    /// wa_runner rows with a long-stale heartbeat deleted.
    pub dead_runners: TaskReport,
    pub forget_idle: forget_idle::Report,
    /// Queued messages of logged-out sessions failed with session_logged_out.
    pub failed_logged_out: TaskReport,
    /// Stored logins of logged-out sessions deleted (one the runner could not delete).
    pub deleted_logins: TaskReport,
    pub prune: prune::Report,
    /// wa_media rows older than WA_MEDIA_RETENTION deleted.
    pub pruned_media: TaskReport,
    /// wa_message_count rows folded into backend 0 (or dropped at zero or with their session).
    pub counts: TaskReport,
    /// True when the run stopped early (shutdown or leadership lost).
    pub interrupted: bool,
}

impl MaintenanceReport {
    pub fn ok(&self) -> bool {
        self.expired_leases.ok()
            && self.dead_runners.ok()
            && self.forget_idle.logout_requested.ok()
            && self.forget_idle.marked_logged_out.ok()
            && self.failed_logged_out.ok()
            && self.deleted_logins.ok()
            && self.prune.events.ok()
            && self.prune.messages.ok()
            && self.pruned_media.ok()
            && self.counts.ok()
    }
}

/// Runs every task once, in an order where each step helps the next: dead runners' leases go
/// first, forgotten sessions become logged out before their queued messages are failed, and
/// pruning comes last.
pub async fn run_once(pool: &PgPool, cfg: &MaintenanceConfig) -> MaintenanceReport {
    run_once_with(pool, cfg, &CancellationToken::new()).await
}

/// [`run_once`] that stops between batches once `stop` is cancelled.
pub async fn run_once_with(
    pool: &PgPool,
    cfg: &MaintenanceConfig,
    stop: &CancellationToken,
) -> MaintenanceReport {
    let started_at = Utc::now();
    let t0 = Instant::now();
    let expired_leases = expire_leases::run_once(pool, &cfg.expire_leases, stop).await;
    let dead_runners = dead_runners::run_once(pool, &cfg.dead_runners, stop).await;
    let forget_idle = forget_idle::run_once(pool, &cfg.forget_idle, stop).await;
    let failed_logged_out = fail_logged_out::run_once(pool, &cfg.fail_logged_out, stop).await;
    let deleted_logins = fail_logged_out::delete_logins(pool, &cfg.fail_logged_out, stop).await;
    let prune = prune::run_once(pool, &cfg.prune, stop).await;
    let pruned_media = prune_media::run_once(pool, &cfg.prune_media, stop).await;
    let counts = prune::compact_counts(pool, &cfg.prune.batching).await;
    MaintenanceReport {
        runner_id: None,
        started_at,
        elapsed: t0.elapsed(),
        expired_leases,
        dead_runners,
        forget_idle,
        failed_logged_out,
        deleted_logins,
        prune,
        pruned_media,
        counts,
        interrupted: stop.is_cancelled(),
    }
}

/// Runs one batch statement in its own transaction under a server-side `statement_timeout`
/// (SET LOCAL, so it also holds behind PgBouncer) and a client-side timeout a little longer,
/// and returns the rows it touched.
pub(crate) async fn execute_bounded(
    pool: &PgPool,
    timeout: Duration,
    query: sqlx::query::Query<'_, Postgres, PgArguments>,
) -> Result<u64, String> {
    let work = async {
        let mut tx = pool.begin().await?;
        sqlx::query("select set_config('statement_timeout', $1, true)")
            .bind(format!("{}ms", timeout.as_millis()))
            .execute(&mut *tx)
            .await?;
        let n = query.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok::<u64, sqlx::Error>(n)
    };
    match tokio::time::timeout(timeout + Duration::from_secs(2), work).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("batch did not finish within {timeout:?}")),
    }
}

/// Repeats `batch` until it touches fewer rows than a full batch, hits `max_batches`, fails,
/// or `stop` fires.
pub(crate) async fn drain<F, Fut>(
    batching: &Batching,
    stop: &CancellationToken,
    mut batch: F,
) -> TaskReport
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, String>>,
{
    let mut report = TaskReport::default();
    while report.batches < batching.max_batches && !stop.is_cancelled() {
        match batch().await {
            Ok(n) => {
                report.rows += n;
                report.batches += 1;
                if (n as i64) < batching.size {
                    break;
                }
            }
            Err(e) => {
                report.error = Some(e);
                break;
            }
        }
    }
    report
}

/// Seconds as the float `make_interval(secs => …)` takes.
pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Starts the maintenance service: it competes for leadership, and while leader runs
/// [`run_once`] on the cron schedule, sending each report to the returned receiver (and to
/// later [`broadcast::Receiver::resubscribe`]s). It resigns leadership when `shutdown` fires.
pub fn spawn(
    pool: PgPool,
    runner_id: uuid::Uuid,
    config: &Config,
    shutdown: CancellationToken,
) -> anyhow::Result<(JoinHandle<()>, broadcast::Receiver<MaintenanceReport>)> {
    let cfg = MaintenanceConfig::from_config(config).map_err(anyhow::Error::msg)?;
    Ok(spawn_with(pool, runner_id, cfg, shutdown))
}

/// [`spawn`] with a config built by [`MaintenanceConfig::from_config`] (or adjusted after it
/// and re-validated by the caller).
pub fn spawn_with(
    pool: PgPool,
    runner_id: uuid::Uuid,
    cfg: MaintenanceConfig,
    shutdown: CancellationToken,
) -> (JoinHandle<()>, broadcast::Receiver<MaintenanceReport>) {
    let (tx, rx) = broadcast::channel(REPORT_CHANNEL);
    let handle = tokio::spawn(service(pool, runner_id, cfg, shutdown, tx));
    (handle, rx)
}

/// The time until the next cron fire after now.
fn until_next(schedule: &cron::Schedule) -> Duration {
    let now = Utc::now();
    schedule
        .after(&now)
        .next()
        .and_then(|t| (t - now).to_std().ok())
        // A schedule that stopped firing (a past year): check again in an hour.
        .unwrap_or(Duration::from_secs(3600))
}

async fn service(
    pool: PgPool,
    runner_id: uuid::Uuid,
    cfg: MaintenanceConfig,
    shutdown: CancellationToken,
    reports: broadcast::Sender<MaintenanceReport>,
) {
    let renew_every = cfg.leader_ttl / 3;
    let mut lease =
        leader::Lease::new(pool.clone(), leader::MAINTENANCE, runner_id, cfg.leader_ttl);
    let mut next_renew = Instant::now();
    let mut next_run = Instant::now() + until_next(&cfg.schedule);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(next_renew.min(next_run)) => {}
        }
        let now = Instant::now();
        if now >= next_renew {
            lease.try_acquire().await;
            next_renew = Instant::now() + renew_every;
        }
        if now < next_run {
            continue;
        }
        if lease.is_held() {
            let report = run_as_leader(
                &pool,
                &cfg,
                &mut lease,
                &mut next_renew,
                renew_every,
                &shutdown,
            )
            .await;
            let r = MaintenanceReport {
                runner_id: Some(runner_id),
                ..report
            };
            log_report(&r);
            // No receiver is fine: nobody is watching.
            let _ = reports.send(r);
        }
        next_run = Instant::now() + until_next(&cfg.schedule);
    }
    lease.resign().await;
}

/// One run, with the lease renewed alongside it; stops between batches when the lease is lost
/// (another runner may take over) or on shutdown.
async fn run_as_leader(
    pool: &PgPool,
    cfg: &MaintenanceConfig,
    lease: &mut leader::Lease,
    next_renew: &mut Instant,
    renew_every: Duration,
    shutdown: &CancellationToken,
) -> MaintenanceReport {
    let stop = shutdown.child_token();
    let run = run_once_with(pool, cfg, &stop);
    tokio::pin!(run);
    loop {
        tokio::select! {
            report = &mut run => return report,
            _ = tokio::time::sleep_until(*next_renew) => {
                lease.try_acquire().await;
                *next_renew = Instant::now() + renew_every;
                if !lease.is_held() {
                    tracing::warn!("maintenance leadership lost mid-run; stopping after this batch");
                    stop.cancel();
                }
            }
        }
    }
}

fn log_report(r: &MaintenanceReport) {
    let level_warn = !r.ok();
    macro_rules! emit {
        ($lvl:ident) => {
            tracing::$lvl!(
                elapsed_ms = r.elapsed.as_millis() as u64,
                expired_leases = r.expired_leases.rows,
                dead_runners = r.dead_runners.rows,
                logout_requested = r.forget_idle.logout_requested.rows,
                marked_logged_out = r.forget_idle.marked_logged_out.rows,
                failed_logged_out = r.failed_logged_out.rows,
                deleted_logins = r.deleted_logins.rows,
                pruned_messages = r.prune.messages.rows,
                pruned_events = r.prune.events.rows,
                pruned_media = r.pruned_media.rows,
                interrupted = r.interrupted,
                "maintenance run done"
            )
        };
    }
    if level_warn {
        emit!(warn);
        for (task, t) in [
            ("expire_leases", &r.expired_leases),
            ("dead_runners", &r.dead_runners),
            ("forget_idle", &r.forget_idle.logout_requested),
            ("forget_idle", &r.forget_idle.marked_logged_out),
            ("fail_logged_out", &r.failed_logged_out),
            ("delete_logins", &r.deleted_logins),
            ("prune_events", &r.prune.events),
            ("prune_messages", &r.prune.messages),
            ("prune_media", &r.pruned_media),
        ] {
            if let Some(e) = &t.error {
                tracing::warn!(task, error = %e, "maintenance task failed");
            }
        }
    } else if r.expired_leases.rows
        + r.dead_runners.rows
        + r.forget_idle.logout_requested.rows
        + r.forget_idle.marked_logged_out.rows
        + r.failed_logged_out.rows
        + r.deleted_logins.rows
        + r.prune.messages.rows
        + r.prune.events.rows
        + r.pruned_media.rows
        > 0
    {
        emit!(info);
    } else {
        emit!(debug);
    }
}
