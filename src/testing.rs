//! Test support shared by the integration tests (and the benchmarks): a throwaway PostgreSQL
//! cluster shared by every test binary, and a fresh migrated database per test.
//!
//! `WA_TEST_DATABASE_URL` (an admin URL to a running server) wins; otherwise one embedded
//! cluster under `target/test-pg` is started on first use and left running for the next binary.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::OnceCell;

use crate::embedded_pg::{EmbeddedPg, PgOptions};

static ADMIN_URL: OnceCell<String> = OnceCell::const_new();

pub async fn admin_url() -> String {
    ADMIN_URL
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("WA_TEST_DATABASE_URL") {
                return url;
            }
            let dir = std::env::var_os("WA_TEST_PG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-pg")
                });
            let mut pg = EmbeddedPg::start(&dir, PgOptions { fast: true })
                .await
                .expect("start the test PostgreSQL cluster");
            pg.detach();
            pg.url("postgres")
        })
        .await
        .clone()
}

/// A fresh database with the schema applied; dropped only when the cluster goes.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

pub async fn test_db() -> TestDb {
    let admin = admin_url().await;
    let name = format!("wa_test_{}", uuid::Uuid::new_v4().simple());
    let admin_pool = crate::db::connect(&admin, 1).await.expect("connect admin");
    sqlx::query(&format!("create database {name}"))
        .execute(&admin_pool)
        .await
        .expect("create database");
    admin_pool.close().await;
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("admin URL has no database part: {admin}"),
    };
    let pool = crate::db::connect(&url, 20).await.expect("connect test db");
    crate::db::migrate(&pool).await.expect("migrate");
    TestDb { pool, url, name }
}

/// Polls `check` until it returns Some or the deadline passes (then panics with `what`).
/// For conditions observable only by looking (rows, files); never a fixed sleep.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether any file under `dir` contains `needle` (tests look into a browser profile to know
/// that the page's storage has reached the disk).
pub fn dir_contains(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            dir_contains(&p, needle)
        } else {
            std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

/// Starts `wa-outbox sim` (the binary `bin`, with `args` after `sim --listen 127.0.0.1:0`) for a
/// whole test binary and returns its base URL. It is spawned from a thread that lives as long as
/// the process and asks the kernel to kill the simulator when that thread ends
/// (PR_SET_PDEATHSIG): a test binary that passes, fails or is interrupted leaves no simulator
/// behind. (A process held in a static is never dropped, and the death signal follows the
/// spawning thread, not the process: a tokio worker would take the simulator down with the first
/// test that finishes.)
pub fn sim_process(bin: &str, args: &[&str]) -> String {
    use crate::child::DieWithParent as _;
    use std::io::BufRead as _;
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["sim", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .die_with_parent();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut child = cmd.spawn().expect("wa-outbox sim starts");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        out.read_line(&mut line)
            .expect("the simulator prints its address");
        let url = line
            .trim()
            .strip_prefix("sim listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the simulator: {line:?}"))
            .trim_end_matches('/')
            .to_string();
        let _ = tx.send(url);
        // Keep reading so the pipe never fills; this thread ends only with the process.
        let mut sink = String::new();
        while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
        let _ = child.wait();
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the simulator started within 30 s")
}

/// What a [`TcpProxy`] does with the traffic between a runner and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Pass everything.
    Pass,
    /// Pass everything, each chunk late by this much.
    Delay(Duration),
    /// A partition: nothing gets through in either direction (held, as TCP would retransmit it
    /// once the network heals); new connections are accepted and then hear nothing.
    BlackHole,
    /// The server is down: open connections are cut and nothing listens (connects are refused).
    Refuse,
}

/// A TCP proxy between the code under test and PostgreSQL, to pass, delay or black-hole its
/// traffic (the faults production sees: a partition, a failover, a slow network).
pub struct TcpProxy {
    /// The database URL with the proxy in place of the server.
    pub url: String,
    mode: tokio::sync::watch::Sender<ProxyMode>,
    refusals: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy in front of the server that `url` names; `url` with the proxy's port instead.
    pub async fn start(url: &str) -> TcpProxy {
        use std::str::FromStr as _;
        let opts = sqlx::postgres::PgConnectOptions::from_str(url).expect("a PostgreSQL URL");
        let target = format!("{}:{}", opts.get_host(), opts.get_port());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let needle = format!(":{}/", opts.get_port());
        assert!(url.contains(&needle), "the URL names its port: {url}");
        let proxied = url.replacen(&needle, &format!(":{port}/"), 1);
        let (mode, rx) = tokio::sync::watch::channel(ProxyMode::Pass);
        let refusals = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = refusals.clone();
        let task = tokio::spawn(async move {
            let mut listener = Some(listener);
            let mut modes = rx.clone();
            loop {
                // Down: nothing listens on the port, so a connect is refused (ECONNREFUSED), as
                // when the server is stopped; it listens again when the proxy passes again.
                if *modes.borrow_and_update() == ProxyMode::Refuse {
                    listener = None;
                    if modes.wait_for(|m| *m != ProxyMode::Refuse).await.is_err() {
                        return;
                    }
                    continue;
                }
                let l = match &listener {
                    Some(l) => l,
                    None => match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => listener.insert(l),
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                };
                let client = tokio::select! {
                    c = l.accept() => match c {
                        Ok((c, _)) => c,
                        Err(_) => continue,
                    },
                    _ = modes.changed() => continue,
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let rx = rx.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        _ = pump(cr, sw, rx.clone()) => {}
                        _ = pump(sr, cw, rx.clone()) => {}
                        _ = refused(rx) => {}
                    }
                });
            }
        });
        TcpProxy {
            url: proxied,
            mode,
            refusals,
            task,
        }
    }

    pub fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.refusals.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resolves when the proxy starts refusing: the connection is then cut.
async fn refused(mut rx: tokio::sync::watch::Receiver<ProxyMode>) {
    let _ = rx.wait_for(|m| *m == ProxyMode::Refuse).await;
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: tokio::sync::watch::Receiver<ProxyMode>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Held while black-holed, delivered once the network heals.
        let mode = match rx.wait_for(|m| *m != ProxyMode::BlackHole).await {
            Ok(m) => *m,
            Err(_) => return,
        };
        if let ProxyMode::Delay(d) = mode {
            tokio::time::sleep(d).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
