//! `wa-outbox run`: one runner = a reconciler, a dispatcher and (when elected) maintenance,
//! sharing one pool, one registry of owned sessions and one shutdown signal.
//!
//! Shutdown (SIGTERM, as Kubernetes sends it) drains: stop claiming, let in-flight sends finish
//! within a bound, save each login, close the browsers, release the leases with a NOTIFY so
//! another runner takes the sessions at once, delete the runner row, exit 0.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{Config, LogFormat};
use crate::driver::{Driver, Session};

pub fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,chromiumoxide=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// What the loops need from the configuration, validated once.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub capacity: u32,
    pub lease_ttl: Duration,
    pub send_min_interval: Duration,
    pub send_timeout: Duration,
    pub start_timeout: Duration,
    pub reconnect_timeout: Duration,
    pub idle_after: Duration,
    pub qr_max_rotations: u32,
    pub data_dir: PathBuf,
    /// Fallback poll when no NOTIFY arrives (lost notification, listener reconnecting).
    pub poll_interval: Duration,
    /// How long a drain waits for in-flight sends.
    pub drain_timeout: Duration,
    /// Browser restarts in a row before the session fails with browser_crashed.
    pub max_restarts: i32,
    /// Completions written per statement.
    pub completion_batch: usize,
    /// First retry delay after a transient send failure (doubles each attempt).
    pub retry_base: Duration,
}

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_MAX_RESTARTS: i32 = 5;
pub const DEFAULT_COMPLETION_BATCH: usize = 512;

impl RunnerConfig {
    pub fn from_config(c: &Config) -> Self {
        Self {
            capacity: c.runner_capacity,
            lease_ttl: c.lease_ttl,
            send_min_interval: c.send_min_interval,
            send_timeout: c.send_timeout,
            start_timeout: c.start_timeout,
            reconnect_timeout: c.reconnect_timeout,
            idle_after: c.idle_after,
            qr_max_rotations: c.qr_max_rotations,
            data_dir: c.data_dir.clone(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            drain_timeout: c.send_timeout + Duration::from_secs(5),
            max_restarts: DEFAULT_MAX_RESTARTS,
            completion_batch: DEFAULT_COMPLETION_BATCH,
            retry_base: crate::dispatcher::RETRY_BASE,
        }
    }
}

/// Where a session's login is kept between browsers (the encrypted archive store in
/// production; nothing in the loops' unit tests).
#[async_trait]
pub trait LoginStore: Send + Sync + 'static {
    /// Restores the stored login into `profile_dir`; Ok(false) if there is none.
    async fn restore(
        &self,
        session_id: &str,
        profile_dir: &std::path::Path,
    ) -> Result<bool, RestoreError>;
    /// Stores the login, fenced on `runner_id` still holding the session's lease.
    async fn save(
        &self,
        session_id: &str,
        runner_id: Uuid,
        profile_dir: &std::path::Path,
    ) -> Result<(), String>;
    async fn delete(&self, session_id: &str) -> Result<(), String>;
    async fn has_login(&self, session_id: &str) -> Result<bool, String>;
}

/// Why a stored login could not be put back. A transient cause (database, disk) is retried;
/// anything else fails the session with auth_restore_failed rather than silently showing a QR.
#[derive(Debug)]
pub struct RestoreError {
    pub transient: bool,
    pub message: String,
}

/// No stored logins: every new browser starts from its local profile folder only.
pub struct NoLoginStore;

#[async_trait]
impl LoginStore for NoLoginStore {
    async fn restore(&self, _: &str, _: &std::path::Path) -> Result<bool, RestoreError> {
        Ok(false)
    }
    async fn save(&self, _: &str, _: Uuid, _: &std::path::Path) -> Result<(), String> {
        Ok(())
    }
    async fn delete(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    async fn has_login(&self, _: &str) -> Result<bool, String> {
        Ok(false)
    }
}

/// The production store: encrypted archives in wa_session_auth.
#[async_trait]
impl LoginStore for crate::auth_store::AuthStore {
    async fn restore(
        &self,
        session_id: &str,
        profile_dir: &std::path::Path,
    ) -> Result<bool, RestoreError> {
        crate::auth_store::AuthStore::restore(self, session_id, profile_dir)
            .await
            .map_err(|e| RestoreError {
                transient: e.is_transient(),
                message: e.to_string(),
            })
    }
    async fn save(
        &self,
        session_id: &str,
        runner_id: Uuid,
        profile_dir: &std::path::Path,
    ) -> Result<(), String> {
        self.save_owned(session_id, runner_id, profile_dir)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    async fn delete(&self, session_id: &str) -> Result<(), String> {
        crate::auth_store::AuthStore::delete(self, session_id)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    async fn has_login(&self, session_id: &str) -> Result<bool, String> {
        crate::auth_store::AuthStore::has_login(self, session_id)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What the reconciler tells a session's actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCmd {
    /// desired_state = stopped: close the browser, keep the login.
    Stop,
    /// desired_state = logged_out: unlink the device, delete the login.
    Logout,
    /// Idle: save the login, close the browser, release the lease.
    Hibernate,
    /// Runner draining: save the login, close the browser, release the lease for another runner.
    Release,
    /// The lease is no longer ours: close at once, write nothing.
    Lost,
}

/// One owned session, as the dispatcher and reconciler see it.
pub struct SessionEntry {
    pub cmd_tx: mpsc::Sender<SessionCmd>,
    /// Set while the page is connected.
    pub handle: Option<Arc<dyn Session>>,
    /// `sending` rows left by an earlier owner have been settled.
    pub recovered: bool,
    pub recovering: bool,
    pub in_flight: bool,
    pub next_send_at: Instant,
    pub task: Option<JoinHandle<()>>,
}

pub struct Shared {
    pub id: Uuid,
    pub pool: PgPool,
    pub driver: Arc<dyn Driver>,
    pub logins: Arc<dyn LoginStore>,
    pub media: Option<Arc<crate::media::MediaFetcher>>,
    pub cfg: RunnerConfig,
    pub sessions: Mutex<HashMap<String, SessionEntry>>,
    pub dispatch_wake: Notify,
    pub reconcile_wake: Notify,
    /// Cancelled when the runner starts draining: stop claiming.
    pub draining: CancellationToken,
    pub metrics: Option<crate::http::Metrics>,
}

impl Shared {
    pub fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn profile_dir(&self, session_id: &str) -> PathBuf {
        self.cfg.data_dir.join("profiles").join(session_id)
    }
}

pub struct RunnerParts {
    /// Cluster-wide housekeeping (run by whichever runner is elected); None in loop tests.
    pub maintenance: Option<crate::maintenance::MaintenanceConfig>,
    pub pool: PgPool,
    pub driver: Arc<dyn Driver>,
    pub logins: Arc<dyn LoginStore>,
    pub media: Option<Arc<crate::media::MediaFetcher>>,
    pub cfg: RunnerConfig,
    pub metrics: Option<crate::http::Metrics>,
}

/// A running runner. Dropping it does not stop it: call `shutdown` (drain) or `kill` (crash).
pub struct RunnerHandle {
    pub id: Uuid,
    pub shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunnerHandle {
    /// Graceful drain, as on SIGTERM.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }
    /// Sudden death, as on SIGKILL: nothing is written, leases stay until they expire.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        let tasks: Vec<_> = self
            .shared
            .sessions()
            .values_mut()
            .filter_map(|e| e.task.take())
            .collect();
        for t in tasks {
            t.abort();
        }
        self.shared.pool.close().await;
    }
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

pub async fn spawn(parts: RunnerParts) -> anyhow::Result<RunnerHandle> {
    crate::db::check_schema(&parts.pool).await?;
    let id = Uuid::new_v4();
    let host = hostname();
    sqlx::query(
        "insert into wa_runner (id, host, pid, version, capacity) values ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(&host)
    .bind(std::process::id() as i32)
    .bind(env!("CARGO_PKG_VERSION"))
    .bind(parts.cfg.capacity as i32)
    .execute(&parts.pool)
    .await?;
    let maintenance = parts.maintenance;
    let shared = Arc::new(Shared {
        id,
        pool: parts.pool,
        driver: parts.driver,
        logins: parts.logins,
        media: parts.media,
        cfg: parts.cfg,
        sessions: Mutex::new(HashMap::new()),
        dispatch_wake: Notify::new(),
        reconcile_wake: Notify::new(),
        draining: CancellationToken::new(),
        metrics: parts.metrics,
    });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_loops(shared.clone(), shutdown.clone(), maintenance));
    tracing::info!(runner = %id, %host, capacity = shared.cfg.capacity, "runner started");
    Ok(RunnerHandle {
        id,
        shared,
        shutdown,
        task,
    })
}

async fn run_loops(
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    maintenance: Option<crate::maintenance::MaintenanceConfig>,
) -> anyhow::Result<()> {
    let listener = tokio::spawn(crate::dispatcher::listen(shared.clone()));
    let maintenance = maintenance.map(|cfg| {
        crate::maintenance::spawn_with(shared.pool.clone(), shared.id, cfg, shared.draining.clone())
            .0
    });
    let reconciler = tokio::spawn(crate::reconciler::run(shared.clone()));
    let accounting = shared
        .metrics
        .clone()
        .map(|m| tokio::spawn(account(shared.clone(), m)));
    let dispatcher = tokio::spawn(crate::dispatcher::run(shared.clone()));

    shutdown.cancelled().await;
    tracing::info!(runner = %shared.id, "draining");
    shared.draining.cancel();
    let _ = sqlx::query("update wa_runner set draining = true where id = $1")
        .bind(shared.id)
        .execute(&shared.pool)
        .await;

    // The dispatcher returns once its in-flight sends are settled (or the bound passes).
    let _ = dispatcher.await;
    let _ = reconciler.await;
    listener.abort();
    if let Some(a) = accounting {
        a.abort();
    }
    if let Some(m) = maintenance {
        let _ = tokio::time::timeout(Duration::from_secs(10), m).await;
    }
    crate::reconciler::release_all(&shared).await;
    sqlx::query("delete from wa_runner where id = $1")
        .bind(shared.id)
        .execute(&shared.pool)
        .await?;
    tracing::info!(runner = %shared.id, "drained");
    Ok(())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

pub async fn run_command(config: Config) -> anyhow::Result<()> {
    let db = crate::db::resolve(&config).await?;
    let pool = crate::db::connect(&db.url, 20).await?;
    if db.embedded.is_some() {
        // The local default has no separate deploy step: bring the schema up to date here.
        crate::db::migrate(&pool).await?;
    }
    let metrics = crate::http::Metrics::new();
    // Bind before anything starts, so a taken port fails start-up rather than hiding later.
    let http = match config.http_listen {
        Some(addr) => Some(crate::http::bind(addr).await?),
        None => None,
    };
    let handle = spawn_production(
        &config,
        pool.clone(),
        db.embedded.is_some(),
        Some(metrics.clone()),
    )
    .await?;
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let server = http.map(|listener| {
        // /healthz keeps answering until the drain is over, not just until the signal.
        tokio::spawn(crate::http::serve_listener(
            listener,
            pool,
            metrics,
            drain_rx,
            async move {
                let _ = done_rx.await;
            },
        ))
    });
    wait_for_signal().await;
    tracing::info!("signal received; draining");
    let _ = drain_tx.send(true);
    let result = handle.shutdown().await;
    let _ = done_tx.send(());
    if let Some(s) = server {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }
    result
}

/// A runner with the real parts: Chromium, the media fetcher, the stored-login store.
pub async fn spawn_production(
    config: &Config,
    pool: PgPool,
    embedded: bool,
    metrics: Option<crate::http::Metrics>,
) -> anyhow::Result<RunnerHandle> {
    // Without a key no login can be stored safely; only the local default may make its own.
    let keys = crate::auth_store::KeyRing::from_config(config, embedded)?;
    let maintenance =
        crate::maintenance::MaintenanceConfig::from_config(config).map_err(anyhow::Error::msg)?;
    let driver = crate::driver::chromium::ChromiumDriver::from_config(config);
    let media = crate::media::MediaFetcher::from_config(config);
    spawn(RunnerParts {
        maintenance: Some(maintenance),
        logins: Arc::new(crate::auth_store::AuthStore::new(pool.clone(), keys)),
        pool,
        driver: Arc::new(driver),
        media: Some(Arc::new(media)),
        cfg: RunnerConfig::from_config(config),
        metrics,
    })
    .await
}

/// SIGTERM (Kubernetes, systemd) or SIGINT (Ctrl-C).
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// How often live browsers and their memory are measured for /metrics.
const ACCOUNTING_EVERY: Duration = Duration::from_secs(15);

/// Feeds wa_live_browsers and wa_session_memory_bytes (PSS of each browser's process tree).
async fn account(shared: Arc<Shared>, metrics: crate::http::Metrics) {
    let mut known: std::collections::HashSet<String> = Default::default();
    loop {
        let live: Vec<(String, Option<u32>)> = shared
            .sessions()
            .iter()
            .map(|(id, e)| (id.clone(), e.handle.as_ref().and_then(|h| h.process_id())))
            .collect();
        // Sessions of a shared browser share its process: its memory is split between them.
        let mut by_pid: std::collections::HashMap<u32, Vec<String>> = Default::default();
        for (id, pid) in &live {
            if let Some(pid) = pid {
                by_pid.entry(*pid).or_default().push(id.clone());
            }
        }
        let without_pid = live.iter().filter(|(_, p)| p.is_none()).count();
        metrics.set_live_browsers((by_pid.len() + without_pid) as i64);
        let ids: std::collections::HashSet<String> =
            live.iter().map(|(id, _)| id.clone()).collect();
        for gone in known.difference(&ids) {
            metrics.remove_session(gone);
        }
        for (pid, sessions) in by_pid {
            if let Ok(Ok(bytes)) =
                tokio::task::spawn_blocking(move || crate::http::process_tree_pss_bytes(pid)).await
            {
                let each = bytes / sessions.len() as u64;
                for id in sessions {
                    metrics.set_session_memory_bytes(&id, each);
                }
            }
        }
        known = ids;
        tokio::select! {
            _ = tokio::time::sleep(ACCOUNTING_EVERY) => {}
            _ = shared.draining.cancelled() => return,
        }
    }
}
