//! Health, readiness and Prometheus metrics on WA_HTTP_LISTEN.
//!
//! - `GET /healthz` answers 200 as long as the process serves requests. It never touches the
//!   database: a database outage must not make Kubernetes restart every runner at once, which
//!   would throw away all their browsers for nothing.
//! - `GET /readyz` answers 200 when the database answers within [`READY_DB_TIMEOUT`] and the
//!   runner is not draining, 503 otherwise. Nothing routes traffic to a runner, so readiness is
//!   for people and dashboards: it says "this runner can take work".
//! - `GET /metrics` is the OpenMetrics text exposition (what Prometheus negotiates by default),
//!   encoded by `prometheus-client`. Series, all `wa_`-prefixed:
//!   `wa_sessions{status}`, `wa_messages{status}` (counted in the database at scrape time, so
//!   every runner reports the same cluster-wide numbers: aggregate them with `max`, not `sum`),
//!   `wa_metrics_db_up` (0 when that count failed or timed out), `wa_draining`,
//!   `wa_claim_latency_seconds`, `wa_send_latency_seconds` (histograms),
//!   `wa_browser_restarts_total`, `wa_live_browsers`, `wa_session_memory_bytes{session_id}`.
//!
//! The runner owns a [`Metrics`] (cheap to clone) and feeds it; [`serve`] exposes it;
//! [`process_tree_pss_bytes`] measures a browser for `set_session_memory_bytes`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long `/readyz` waits for `select 1`. Short: a probe that hangs is worse than a 503.
pub const READY_DB_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/metrics` may spend counting rows. The same bound is set as the statement timeout
/// so that PostgreSQL stops the count too, not only our side.
pub const SCRAPE_DB_TIMEOUT: Duration = Duration::from_secs(3);

/// Every `wa_session.status` (the CHECK in the migration). Each is always exported, 0 when no
/// row has it, so a status does not vanish from dashboards when its last row leaves it.
pub const SESSION_STATUSES: &[&str] = &[
    "new",
    "starting",
    "qr_pending",
    "pairing",
    "connected",
    "hibernated",
    "stopped",
    "logged_out",
    "failed",
];
/// Every `wa_message.status` (the CHECK in the migration).
pub const MESSAGE_STATUSES: &[&str] = &[
    "queued",
    "sending",
    "sent",
    "delivered",
    "read",
    "played",
    "failed",
    "cancelled",
];

/// The OpenMetrics content type: Prometheus parses `_total`, units and `# EOF` correctly only
/// when it is told the body is OpenMetrics rather than the classic text format.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabel {
    session_id: String,
}

/// The runner's metrics. Clone it freely: clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    claim_latency: Histogram,
    send_latency: Histogram,
    browser_restarts: Counter,
    page_events_dropped: Counter,
    page_write_retries: Counter,
    fences: Counter,
    live_browsers: Gauge,
    session_memory: Family<SessionLabel, Gauge<u64, AtomicU64>>,
    sessions: Family<StatusLabel, Gauge>,
    messages: Family<StatusLabel, Gauge>,
    db_up: Gauge,
    draining: Gauge,
    // Two scrapes at once would interleave "reset to 0" and "set counts"; one at a time keeps
    // each exposition consistent.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wa");
        // Claims are single index scans: sub-millisecond normally, seconds only under contention.
        let claim_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        // A send is a round trip through the page to WhatsApp's server: tens of ms to
        // WA_SEND_TIMEOUT (10 s by default).
        let send_latency = Histogram::new(exponential_buckets(0.025, 2.0, 12));
        let browser_restarts = Counter::default();
        let page_events_dropped = Counter::default();
        let page_write_retries = Counter::default();
        let fences = Counter::default();
        let live_browsers = Gauge::default();
        let session_memory = Family::<SessionLabel, Gauge<u64, AtomicU64>>::default();
        let sessions = Family::<StatusLabel, Gauge>::default();
        let messages = Family::<StatusLabel, Gauge>::default();
        let db_up = Gauge::default();
        let draining = Gauge::default();

        registry.register_with_unit(
            "claim_latency",
            "Time to claim work (sessions or messages) from PostgreSQL",
            Unit::Seconds,
            claim_latency.clone(),
        );
        registry.register_with_unit(
            "send_latency",
            "Time from asking the page to send until WhatsApp accepted the message",
            Unit::Seconds,
            send_latency.clone(),
        );
        registry.register(
            "browser_restarts",
            "Browsers restarted after a crash or hang",
            browser_restarts.clone(),
        );
        registry.register(
            "page_events_dropped",
            "Page events (acks, incoming messages, status) dropped because a session's write buffer was full while PostgreSQL was unreachable",
            page_events_dropped.clone(),
        );
        registry.register(
            "page_write_retries",
            "Failed writes of page events, each retried",
            page_write_retries.clone(),
        );
        registry.register(
            "fences",
            "Times this runner closed its browsers because it could not prove its leases in time",
            fences.clone(),
        );
        registry.register(
            "live_browsers",
            "Browsers this runner has open",
            live_browsers.clone(),
        );
        registry.register_with_unit(
            "session_memory",
            "Memory of one session's browser processes (PSS), where measurable; a shared browser's is split evenly between its sessions",
            Unit::Bytes,
            session_memory.clone(),
        );
        registry.register(
            "sessions",
            "Sessions by status, counted in the database (cluster-wide)",
            sessions.clone(),
        );
        registry.register(
            "messages",
            "Messages by status, counted in the database (cluster-wide)",
            messages.clone(),
        );
        registry.register(
            "metrics_db_up",
            "1 when the last scrape could count rows in the database",
            db_up.clone(),
        );
        registry.register(
            "draining",
            "1 while this runner drains for shutdown",
            draining.clone(),
        );

        Metrics {
            inner: Arc::new(Inner {
                registry,
                claim_latency,
                send_latency,
                browser_restarts,
                page_events_dropped,
                page_write_retries,
                fences,
                live_browsers,
                session_memory,
                sessions,
                messages,
                db_up,
                draining,
                scrape: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn observe_claim_latency(&self, d: Duration) {
        self.inner.claim_latency.observe(d.as_secs_f64());
    }

    pub fn observe_send_latency(&self, d: Duration) {
        self.inner.send_latency.observe(d.as_secs_f64());
    }

    pub fn inc_browser_restarts(&self) {
        self.inner.browser_restarts.inc();
    }

    pub fn inc_page_events_dropped(&self) {
        self.inner.page_events_dropped.inc();
    }

    pub fn inc_page_write_retries(&self) {
        self.inner.page_write_retries.inc();
    }

    pub fn inc_fences(&self) {
        self.inner.fences.inc();
    }

    pub fn set_live_browsers(&self, n: i64) {
        self.inner.live_browsers.set(n);
    }

    pub fn set_session_memory_bytes(&self, session_id: &str, bytes: u64) {
        self.inner
            .session_memory
            .get_or_create(&SessionLabel {
                session_id: session_id.to_string(),
            })
            .set(bytes);
    }

    /// Forgets a session's per-session series when it leaves this runner, so the label set
    /// stays bounded by the runner's capacity.
    pub fn remove_session(&self, session_id: &str) {
        self.inner.session_memory.remove(&SessionLabel {
            session_id: session_id.to_string(),
        });
    }

    /// Refreshes the database-derived gauges and encodes everything. Never fails: a database
    /// that is down or slow yields `wa_metrics_db_up 0` and no status series, because stale
    /// counts would look like a healthy, idle queue.
    pub async fn render(&self, pool: &PgPool, draining: bool) -> String {
        let _one_at_a_time = self.inner.scrape.lock().await;
        self.inner.draining.set(i64::from(draining));
        match tokio::time::timeout(SCRAPE_DB_TIMEOUT + Duration::from_secs(1), count_rows(pool))
            .await
        {
            Ok(Ok((sessions, messages))) => {
                fill(&self.inner.sessions, SESSION_STATUSES, &sessions);
                fill(&self.inner.messages, MESSAGE_STATUSES, &messages);
                self.inner.db_up.set(1);
            }
            Ok(Err(e)) => self.db_down(&format!("{e:#}")),
            Err(_) => self.db_down("timed out"),
        }
        self.encode()
    }

    fn db_down(&self, why: &str) {
        tracing::warn!(error = %why, "metrics: cannot count sessions and messages");
        self.inner.sessions.clear();
        self.inner.messages.clear();
        self.inner.db_up.set(0);
    }

    /// The exposition as it stands, without touching the database.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an Err here would be a bug in the encoder.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            tracing::error!(error = %e, "metrics: encoding failed");
        }
        out
    }
}

fn fill(family: &Family<StatusLabel, Gauge>, known: &[&str], counts: &[(String, i64)]) {
    for status in known {
        family
            .get_or_create(&StatusLabel {
                status: (*status).to_string(),
            })
            .set(0);
    }
    for (status, n) in counts {
        family
            .get_or_create(&StatusLabel {
                status: status.clone(),
            })
            .set(*n);
    }
}

type Counts = (Vec<(String, i64)>, Vec<(String, i64)>);

async fn count_rows(pool: &PgPool) -> Result<Counts, sqlx::Error> {
    // One read-only transaction so both counts come from one snapshot and `set local` does not
    // leak the statement timeout into the pooled connection.
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction read only")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "set local statement_timeout = {}",
        SCRAPE_DB_TIMEOUT.as_millis()
    ))
    .execute(&mut *tx)
    .await?;
    let sessions: Vec<(String, i64)> =
        sqlx::query_as("select status, count(*) from wa_session group by 1")
            .fetch_all(&mut *tx)
            .await?;
    let messages: Vec<(String, i64)> =
        sqlx::query_as("select status, count(*) from wa_message group by 1")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok((sessions, messages))
}

/// Proportional set size (PSS) of a process and all its descendants, in bytes: what
/// `wa_session_memory_bytes` reports for a session's browser (DESIGN.md §7 measured the same way).
/// PSS shares pages mapped by several processes among them, so the numbers of several sessions
/// add up to the memory they really use. Linux only (`/proc/<pid>/smaps_rollup`); processes
/// that exit while being read are skipped, and an error means the root itself is unreadable.
pub fn process_tree_pss_bytes(root: u32) -> std::io::Result<u64> {
    let tree = process_tree(root)?;
    let mut total = 0u64;
    for (i, pid) in tree.iter().enumerate() {
        match smaps_pss_bytes(*pid) {
            Ok(n) => total += n,
            // A child may exit between listing and reading: not an error of the measurement.
            Err(_) if i > 0 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// `root` and its descendants, root first, from the parent pid of every process in /proc.
fn process_tree(root: u32) -> std::io::Result<Vec<u32>> {
    let mut parent_of: Vec<(u32, u32)> = vec![];
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split after the
        // last `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    Ok(tree)
}

fn smaps_pss_bytes(pid: u32) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    text.lines()
        .find_map(|line| {
            let kb = line.strip_prefix("Pss:")?.trim().strip_suffix("kB")?.trim();
            kb.parse::<u64>().ok()
        })
        .map(|kb| kb * 1024)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("/proc/{pid}/smaps_rollup has no Pss line"),
            )
        })
}

#[derive(Clone)]
struct AppState {
    pool: PgPool,
    metrics: Metrics,
    draining: watch::Receiver<bool>,
}

/// The routes, for embedding or for tests that bring their own server.
pub fn router(pool: PgPool, metrics: Metrics, draining: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState {
            pool,
            metrics,
            draining,
        })
}

/// Binds `listen` and serves until `shutdown` completes.
///
/// Pass as `shutdown` the end of the drain, not the arrival of SIGTERM: while the runner
/// drains, `/readyz` must keep answering 503 and `/healthz` 200, or Kubernetes would take a
/// draining pod for a dead one. A bind failure is returned at once, naming WA_HTTP_LISTEN.
pub async fn serve(
    listen: SocketAddr,
    pool: PgPool,
    metrics: Metrics,
    draining: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_listener(bind(listen).await?, pool, metrics, draining, shutdown).await
}

/// Binds WA_HTTP_LISTEN. Call it before spawning [`serve_listener`], so that a taken port stops
/// start-up with a message naming the variable instead of failing inside a background task.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("WA_HTTP_LISTEN: cannot listen on {listen}"))
}

/// As [`serve`], on a listener the caller bound (tests bind port 0 and read the address).
pub async fn serve_listener(
    listener: TcpListener,
    pool: PgPool,
    metrics: Metrics,
    draining: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "http: serving /healthz, /readyz, /metrics");
    }
    axum::serve(listener, router(pool, metrics, draining))
        .with_graceful_shutdown(shutdown)
        .await
        .context("http server")
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if *state.draining.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    match tokio::time::timeout(
        READY_DB_TIMEOUT,
        sqlx::query("select 1").execute(&state.pool),
    )
    .await
    {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readyz: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n")
        }
        Err(_) => {
            tracing::warn!("readyz: database did not answer in time");
            (StatusCode::SERVICE_UNAVAILABLE, "database timeout\n")
        }
    }
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    let draining = *state.draining.borrow();
    let body = state.metrics.render(&state.pool, draining).await;
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_side_series_are_encoded() {
        let m = Metrics::new();
        m.observe_claim_latency(Duration::from_millis(3));
        m.observe_send_latency(Duration::from_millis(120));
        m.inc_browser_restarts();
        m.set_live_browsers(4);
        m.set_session_memory_bytes("s_1", 210_000_000);
        m.set_session_memory_bytes("s_2", 1);
        m.remove_session("s_2");
        let text = m.encode();
        assert!(
            text.contains("wa_claim_latency_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("wa_send_latency_seconds_sum 0.12\n"),
            "{text}"
        );
        assert!(text.contains("wa_browser_restarts_total 1\n"), "{text}");
        assert!(text.contains("wa_live_browsers 4\n"), "{text}");
        assert!(
            text.contains("wa_session_memory_bytes{session_id=\"s_1\"} 210000000\n"),
            "{text}"
        );
        assert!(!text.contains("s_2"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
