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
