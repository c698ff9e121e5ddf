//! `wa-outbox run`: one runner = a reconciler, a dispatcher and (when elected) maintenance,
//! sharing one pool, one registry of owned sessions and one shutdown signal.
//!
//! Shutdown (SIGTERM, as Kubernetes sends it) drains: stop claiming, let in-flight sends finish
//! within a bound, save each login, close the browsers, release the leases with a NOTIFY so
//! another runner takes the sessions at once, delete the runner row, exit 0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{Config, LogFormat};
use crate::driver::Driver;
pub use crate::shared::{
    LoginStore, NoLoginStore, RestoreError, RunnerConfig, SessionCmd, SessionEntry, Shared,
    DEFAULT_COMPLETION_BATCH, DEFAULT_MAX_RESTARTS, DEFAULT_POLL_INTERVAL,
};

pub fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,chromiumoxide=error"))
        // The trace level of chromiumoxide and of the WebSocket under it prints every DevTools
        // message whole: proxy credentials (Fetch.continueWithAuth), QR payloads, exported
        // logins. Never, whatever RUST_LOG says.
        .add_directive(
            "chromiumoxide::conn=info"
                .parse()
                .expect("a valid directive"),
        )
        .add_directive("tungstenite=info".parse().expect("a valid directive"))
        .add_directive("tokio_tungstenite=info".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
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
        // Its lease loop dies with it (a dead runner renews nothing).
        self.shared.leases_done.cancel();
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
        claim_wake: Notify::new(),
        command_wake: Notify::new(),
        draining: CancellationToken::new(),
        leases_done: CancellationToken::new(),
        leases_proved_at: Mutex::new(tokio::time::Instant::now()),
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
    let commands = tokio::spawn(crate::commands::run(shared.clone()));

    shutdown.cancelled().await;
    tracing::info!(runner = %shared.id, "draining");
    shared.draining.cancel();
    let _ = sqlx::query("update wa_runner set draining = true where id = $1")
        .bind(shared.id)
        .execute(&shared.pool)
        .await;

    // The dispatcher returns once its in-flight sends are settled (or the bound passes). The
    // reconciler keeps renewing the leases (claiming nothing) until every one is released: a
    // drain longer than the TTL must not let a lease lapse under a browser that is still open.
    let _ = dispatcher.await;
    let _ = commands.await;
    listener.abort();
    if let Some(a) = accounting {
        a.abort();
    }
    if let Some(m) = maintenance {
        let _ = tokio::time::timeout(Duration::from_secs(10), m).await;
    }
    crate::reconciler::release_all(&shared).await;
    shared.leases_done.cancel();
    let _ = reconciler.await;
    crate::db::bounded(
        sqlx::query("delete from wa_runner where id = $1")
            .bind(shared.id)
            .execute(&shared.pool),
    )
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

/// How long a starting runner waits for a database that is briefly away (a restart, a
/// failover) before it gives up: in Kubernetes, waiting beats a crash loop with growing back-off.
pub const STARTUP_DB_WAIT: Duration = Duration::from_secs(300);

pub async fn run_command(config: Config) -> anyhow::Result<()> {
    let db = crate::db::resolve(&config).await?;
    let metrics = crate::http::Metrics::new();
    // Bind before anything starts, so a taken port fails start-up rather than hiding later.
    let http = match config.http_listen {
        Some(addr) => Some(crate::http::bind(addr).await?),
        None => None,
    };
    let began = tokio::time::Instant::now();
    let mut attempt = 0u32;
    let (pool, handle) = loop {
        let tried = async {
            let pool = crate::db::connect(&db.url, 20).await?;
            if db.embedded.is_some() {
                // The local default has no separate deploy step: bring the schema up to date.
                crate::db::migrate(&pool).await?;
            }
            let handle = spawn_production(
                &config,
                pool.clone(),
                db.embedded.is_some(),
                Some(metrics.clone()),
            )
            .await?;
            anyhow::Ok((pool, handle))
        }
        .await;
        match tried {
            Ok(v) => break v,
            Err(e) if crate::db::is_transient(&e) && began.elapsed() < STARTUP_DB_WAIT => {
                attempt += 1;
                let wait = crate::shared::backoff(
                    attempt,
                    Duration::from_millis(250),
                    Duration::from_secs(5),
                );
                tracing::warn!(error = %format!("{e:#}"), ?wait, "PostgreSQL is not available yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = wait_for_signal() => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    };
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
