//! Sessions benchmark (DESIGN.md §7, issues 4 and 5): our runner and whatsapp-web.js 1.34.7 side
//! by side on one simulator and one Chromium, in one run.
//!
//! 1. Cold start to QR: ours = INSERT of a wa_session row → qr_code written by the runner;
//!    theirs = `new Client(...).initialize()` → the `qr` event. Median of several samples.
//! 2. Memory per connected session at 1 and 10 sessions: PSS summed over every Chromium process
//!    of the sessions (browser plus all its descendants), after `connected` / `ready` (both come
//!    after the page's history sync, `hasSynced`).
//! 3. Wake from hibernation to connected (no QR) and to the waking message sent, against cold
//!    start to connected (QR scanned at once by the simulator's phone). Ours only.
//! 4. One `wa-outbox run` process holding 50 hibernated and 5 connected sessions: PSS/RSS of the
//!    runner process alone and with its Chromium processes.
//!
//! Figures 1 and 2 are taken for both of our browser modes: `wa-outbox` (a browser per session)
//! and `wa-outbox (shared browser)` (`WA_BROWSER_MODE=shared`: one browser, a context per
//! session; its memory is the whole shared browser's PSS divided by the sessions).
//!
//! Release build: `cargo bench --bench sessions`. Prints one JSON object per figure, then one per
//! ratio ours/theirs. Under `cargo test` (no `--bench` argument) or with `BENCH_QUICK=1` it is a
//! smoke run: one session, one sample, whatsapp-web.js only if bench/wwebjs/node_modules exists.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use wa_outbox::config::Config;
use wa_outbox::runner::{self, LoginStore, RunnerConfig, RunnerHandle, RunnerParts};
use wa_outbox::testing::{test_db, wait_for, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_wa-outbox");
/// Deadline of any one step (a browser start, a link, a wake) on a busy machine.
const STEP: Duration = Duration::from_secs(180);
/// How often a row is looked at while timing; the resolution of our figures.
const POLL: Duration = Duration::from_millis(5);
const SHARED: &str = "wa-outbox (shared browser)";
const AUTH_KEY: &str = "bench:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

struct Plan {
    quick: bool,
    samples: usize,
    sizes: Vec<usize>,
    hibernated: usize,
    connected_with_hibernated: usize,
}

impl Plan {
    fn new() -> Self {
        let quick =
            std::env::var("BENCH_QUICK").is_ok() || !std::env::args().any(|a| a == "--bench");
        if quick {
            Plan {
                quick,
                samples: 1,
                sizes: vec![1],
                hibernated: 1,
                connected_with_hibernated: 1,
            }
        } else {
            Plan {
                quick,
                samples: 5,
                sizes: vec![1, 10],
                hibernated: 50,
                connected_with_hibernated: 5,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The simulator and its control API.

struct Sim {
    url: String,
    http: reqwest::Client,
    _child: tokio::process::Child,
}

async fn start_sim() -> Sim {
    let mut child = tokio::process::Command::new(BIN)
        .args(["sim", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the simulator");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the simulator prints its address within 30 s")
        .unwrap()
        .expect("the simulator printed nothing");
    let url = first
        .strip_prefix("sim listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the simulator: {first}"))
        .trim()
        .trim_end_matches('/')
        .to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Sim {
        url,
        http,
        _child: child,
    }
}

impl Sim {
    async fn scan(&self, qr: &str, phone: &str) {
        let r = self
            .http
            .post(format!("{}/_sim/scan", self.url))
            .json(&json!({"qr": qr, "phone": phone, "name": "Bench"}))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "scan: {}",
            r.text().await.unwrap_or_default()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Memory: PSS/RSS of process trees, from /proc.

#[derive(Debug, Default, Clone)]
struct Mem {
    pss_kb: u64,
    rss_kb: u64,
    procs: usize,
    /// Chromium's `--type=` of each process (`browser` for the main one): count and PSS (kB).
    by_type: std::collections::BTreeMap<String, (usize, u64)>,
}

impl Mem {
    fn mb(kb: u64) -> f64 {
        (kb as f64 / 1024.0 * 10.0).round() / 10.0
    }
}

fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The roots and every process below them.
fn tree(roots: &[i32]) -> HashSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for pid in pids() {
        if let Some(pp) = parent_of(pid) {
            children.entry(pp).or_default().push(pid);
        }
    }
    let mut seen: HashSet<i32> = HashSet::new();
    let mut todo: Vec<i32> = roots.to_vec();
    while let Some(p) = todo.pop() {
        if seen.insert(p) {
            todo.extend(children.get(&p).into_iter().flatten().copied());
        }
    }
    seen
}

fn mem_of(pids: &HashSet<i32>) -> Mem {
    let mut m = Mem::default();
    for pid in pids {
        // A process may exit between the listing and the read; it then holds no memory.
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let field = |name: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let pss = field("Pss:");
        m.pss_kb += pss;
        m.rss_kb += field("Rss:");
        m.procs += 1;
        // Chromium rewrites its children's titles, joining argv with spaces: look for the word.
        let kind = std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .and_then(|c| {
                String::from_utf8_lossy(&c)
                    .split(['\0', ' '])
                    .find_map(|a| a.strip_prefix("--type=").map(str::to_string))
            })
            .unwrap_or_else(|| "browser".into());
        let e = m.by_type.entry(kind).or_default();
        e.0 += 1;
        e.1 += pss;
    }
    m
}

/// Browser processes started on this profile folder (exact argument, so `s1` is not `s10`).
fn browsers_on(profile: &Path) -> Vec<i32> {
    let want = format!("--user-data-dir={}", profile.display());
    pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == want.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Median of three readings half a second apart: one reading can land in a garbage collection.
async fn settled_mem(procs: impl Fn() -> HashSet<i32>) -> Mem {
    let mut readings = Vec::new();
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        readings.push(mem_of(&procs()));
    }
    readings.sort_by_key(|m| m.pss_kb);
    readings.swap_remove(1)
}

// ---------------------------------------------------------------------------------------------
// Our runner, in process, with the real Chromium driver and media fetcher.

fn config(sim: &Sim, data_dir: &Path, idle_after: &str, lease_ttl: &str, shared: bool) -> Config {
    let env: HashMap<&str, String> = [
        (
            "WA_BROWSER_MODE",
            if shared { "shared" } else { "per-session" }.into(),
        ),
        ("WA_WEB_URL", format!("{}/", sim.url)),
        ("WA_DATA_DIR", data_dir.display().to_string()),
        ("WA_SEND_MIN_INTERVAL", "0".into()),
        ("WA_LEASE_TTL", lease_ttl.into()),
        ("WA_IDLE_AFTER", idle_after.into()),
        ("WA_AUTH_KEY", AUTH_KEY.into()),
    ]
    .into();
    Config::from_lookup(|k| env.get(k).cloned()).expect("bench configuration")
}

fn tmp_dir(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("wa-bench-{what}-{}", uuid::Uuid::new_v4().simple()))
}

async fn start_runner(
    db: &TestDb,
    sim: &Sim,
    data_dir: &Path,
    capacity: u32,
    idle_after: &str,
    lease_ttl: &str,
    shared: bool,
) -> RunnerHandle {
    let c = config(sim, data_dir, idle_after, lease_ttl, shared);
    let mut cfg = RunnerConfig::from_config(&c);
    cfg.capacity = capacity;
    cfg.poll_interval = Duration::from_millis(200);
    let pool = wa_outbox::db::connect_as(&db.url, 10, "wa-outbox-bench")
        .await
        .unwrap();
    let logins = login_store(&c, &pool);
    runner::spawn(RunnerParts {
        maintenance: None,
        pool,
        driver: Arc::new(wa_outbox::driver::chromium::ChromiumDriver::from_config(&c)),
        logins,
        media: Some(Arc::new(wa_outbox::media::MediaFetcher::from_config(&c))),
        cfg,
        metrics: None,
    })
    .await
    .unwrap()
}

/// The production login store: encrypted archives in wa_session_auth, saved on connect and on
/// hibernation, restored into a fresh profile when a session is claimed again (a wake).
fn login_store(c: &Config, pool: &PgPool) -> Arc<dyn LoginStore> {
    let keys = wa_outbox::auth_store::KeyRing::from_config(c, false).expect("WA_AUTH_KEY");
    Arc::new(wa_outbox::auth_store::AuthStore::new(pool.clone(), keys))
}

fn login_store_name() -> &'static str {
    "AuthStore (encrypted archive in wa_session_auth, restored into a fresh profile)"
}

/// Looks at the row every POLL until `check` gives a value; panics after STEP.
async fn watch<T>(
    pool: &PgPool,
    what: &str,
    sql: &str,
    id: &str,
    check: impl Fn(&sqlx::postgres::PgRow) -> Option<T>,
) -> T {
    let deadline = Instant::now() + STEP;
    loop {
        let row = sqlx::query(sql).bind(id).fetch_one(pool).await.unwrap();
        if let Some(v) = check(&row) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {STEP:?} waiting for {what} of {id}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn session_status(pool: &PgPool, id: &str) -> (String, Option<String>, Option<String>) {
    sqlx::query_as("select status, qr_code, error_code from wa_session where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_status(pool: &PgPool, id: &str, want: &str) {
    wait_for(&format!("session {id} {want}"), STEP, || async {
        let (status, _, err) = session_status(pool, id).await;
        assert!(status != "failed", "session {id} failed: {err:?}");
        (status == want).then_some(())
    })
    .await
}

async fn wait_qr(pool: &PgPool, id: &str) -> String {
    use sqlx::Row;
    watch(
        pool,
        "the QR",
        "select status, qr_code, error_code from wa_session where id = $1",
        id,
        |r| {
            let status: String = r.get("status");
            assert!(
                status != "failed",
                "session {id} failed: {:?}",
                r.get::<Option<String>, _>("error_code")
            );
            r.get::<Option<String>, _>("qr_code")
        },
    )
    .await
}

async fn insert_session(pool: &PgPool, id: &str) {
    sqlx::query("insert into wa_session (id) values ($1)")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
}

/// Row → QR → the simulator's phone scans it → connected. Returns ms from the INSERT.
async fn link(pool: &PgPool, sim: &Sim, id: &str, phone: &str) -> f64 {
    let t0 = Instant::now();
    insert_session(pool, id).await;
    let qr = wait_qr(pool, id).await;
    sim.scan(&qr, phone).await;
    watch(
        pool,
        "connected",
        "select status, error_code from wa_session where id = $1",
        id,
        |r| {
            use sqlx::Row;
            let status: String = r.get("status");
            assert!(status != "failed", "session {id} failed");
            (status == "connected").then_some(())
        },
    )
    .await;
    ms(t0.elapsed())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

// ---------------------------------------------------------------------------------------------
// Figures.

struct Report {
    lines: Vec<Value>,
}

impl Report {
    fn emit(&mut self, v: Value) {
        println!("{v}");
        self.lines.push(v);
    }
    fn find(&self, system: &str, measure: &str, sessions: Option<u64>) -> Option<f64> {
        self.lines.iter().find_map(|l| {
            (l["system"] == system
                && l["measure"] == measure
                && sessions.is_none_or(|n| l["sessions"].as_u64() == Some(n)))
            .then(|| l["value"].as_f64())
            .flatten()
        })
    }
    fn ratio(&mut self, measure: &str, sessions: Option<u64>) {
        self.ratio_of("wa-outbox", measure, sessions);
    }
    fn ratio_of(&mut self, system: &str, measure: &str, sessions: Option<u64>) {
        let ours = self.find(system, measure, sessions);
        let theirs = self.find("whatsapp-web.js", measure, sessions);
        if let (Some(o), Some(t)) = (ours, theirs) {
            self.emit(json!({"measure": "ratio", "system": system, "of": measure, "sessions": sessions, "ours": o, "theirs": t,
                             "ours_over_theirs": (o / t * 1000.0).round() / 1000.0}));
        }
    }
}

/// Figure 1 (ours): INSERT → qr_code, on a fresh profile each time; the session is stopped
/// before the next sample so one browser runs at a time.
async fn ours_cold_qr(db: &TestDb, report: &mut Report, samples: usize, system: &str) {
    let mut v = Vec::new();
    for i in 0..samples {
        let id = format!("cold{i}");
        let t0 = Instant::now();
        insert_session(&db.pool, &id).await;
        wait_qr(&db.pool, &id).await;
        let took = ms(t0.elapsed());
        report.emit(json!({"system": system, "measure": "cold_start_to_qr_sample_ms", "sample": i, "value": took}));
        v.push(took);
        sqlx::query("update wa_session set desired_state = 'stopped' where id = $1")
            .bind(&id)
            .execute(&db.pool)
            .await
            .unwrap();
        wait_status(&db.pool, &id, "stopped").await;
    }
    report.emit(json!({"system": system, "measure": "cold_start_to_qr_ms", "samples": samples, "value": median(&v), "all": v}));
}

/// Figure 2 (ours): sessions linked until each size is reached, then PSS of all their browsers.
async fn ours_memory(
    db: &TestDb,
    sim: &Sim,
    data_dir: &Path,
    report: &mut Report,
    sizes: &[usize],
    system: &str,
    shared: bool,
) {
    let mut linked = 0usize;
    for &n in sizes {
        let batch: Vec<_> = (linked..n)
            .map(|k| {
                let (pool, id, phone) = (
                    db.pool.clone(),
                    format!("mem{k}"),
                    format!("{}", 15551000000u64 + k as u64),
                );
                async move { link(&pool, sim, &id, &phone).await }
            })
            .collect();
        let times = futures::future::join_all(batch).await;
        for (k, t) in (linked..n).zip(times) {
            report.emit(json!({"system": system, "measure": "cold_start_to_connected_sample_ms", "session": k, "concurrent": n - linked, "value": t}));
        }
        linked = n;
        let profiles: Vec<PathBuf> = if shared {
            vec![data_dir.join("browser")]
        } else {
            (0..n)
                .map(|k| data_dir.join("profiles").join(format!("mem{k}")))
                .collect()
        };
        let m = settled_mem(|| {
            tree(
                &profiles
                    .iter()
                    .flat_map(|p| browsers_on(p))
                    .collect::<Vec<_>>(),
            )
        })
        .await;
        assert!(
            m.procs >= if shared { 2 } else { n },
            "found {} Chromium processes for {n} sessions",
            m.procs
        );
        memory_figure(report, system, n, m);
    }
}

fn memory_figure(report: &mut Report, system: &str, n: usize, m: Mem) {
    report.emit(
        json!({"system": system, "measure": "pss_per_connected_session_mb", "sessions": n,
                       "value": Mem::mb(m.pss_kb / n as u64), "pss_total_mb": Mem::mb(m.pss_kb),
                       "rss_total_mb": Mem::mb(m.rss_kb), "processes": m.procs,
                       "by_type": m.by_type.iter().map(|(k, (n, kb))| (k.clone(), json!({"processes": n, "pss_mb": Mem::mb(*kb)})))
                           .collect::<serde_json::Map<_, _>>()}),
    );
}

/// Figures 1 and 2 for whatsapp-web.js: bench/wwebjs/run.mjs as a child, reading its lines.
async fn theirs(sim: &Sim, report: &mut Report, plan: &Plan) -> Result<(), String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/wwebjs");
    if !dir.join("node_modules/whatsapp-web.js").exists() {
        if plan.quick {
            return Err(
                "bench/wwebjs/node_modules missing (smoke run skips whatsapp-web.js)".into(),
            );
        }
        let st = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .env("PUPPETEER_SKIP_DOWNLOAD", "1")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .status()
            .await
            .map_err(|e| format!("cannot run npm: {e}"))?;
        if !st.success() {
            return Err(format!("npm ci failed: {st}"));
        }
    }
    let sizes: Vec<String> = plan.sizes.iter().map(|n| n.to_string()).collect();
    let mut child = tokio::process::Command::new("node")
        .arg("run.mjs")
        .args([
            "--sim",
            &sim.url,
            "--samples",
            &plan.samples.to_string(),
            "--sessions",
            &sizes.join(","),
        ])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run node: {e}"))?;
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut cold = Vec::new();
    let mut error = None;
    loop {
        let line = match tokio::time::timeout(STEP * 2, lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            Ok(_) => break,
            Err(_) => {
                error = Some("run.mjs said nothing for too long".to_string());
                break;
            }
        };
        // whatsapp-web.js and puppeteer may print their own lines; only JSON objects are ours.
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        match (v["event"].as_str(), v["measure"].as_str()) {
            (Some("connected"), _) => {
                let n = v["sessions"].as_u64().unwrap_or(0) as usize;
                let roots: Vec<i32> = v["browser_pids"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_i64())
                            .map(|p| p as i32)
                            .collect()
                    })
                    .unwrap_or_default();
                let m = settled_mem(|| tree(&roots)).await;
                memory_figure(report, "whatsapp-web.js", n, m);
                if let Some(node) = v["node_pid"].as_i64() {
                    let nm = mem_of(&HashSet::from([node as i32]));
                    report.emit(json!({"system": "whatsapp-web.js", "measure": "node_process_pss_mb", "sessions": n,
                                       "value": Mem::mb(nm.pss_kb), "rss_mb": Mem::mb(nm.rss_kb)}));
                }
                stdin
                    .write_all(b"next\n")
                    .await
                    .map_err(|e| e.to_string())?;
                stdin.flush().await.map_err(|e| e.to_string())?;
            }
            (Some("error"), _) => error = Some(v["error"].as_str().unwrap_or("?").to_string()),
            (Some("done"), _) => break,
            (_, Some("cold_start_to_qr_ms")) => {
                let x = v["ms"].as_f64().unwrap_or(f64::NAN);
                cold.push(x);
                report.emit(json!({"system": "whatsapp-web.js", "measure": "cold_start_to_qr_sample_ms", "sample": v["sample"], "value": x}));
            }
            (_, Some("cold_start_to_connected_ms")) => {
                report.emit(json!({"system": "whatsapp-web.js", "measure": "cold_start_to_connected_sample_ms", "session": v["session"], "value": v["ms"]}));
            }
            _ => {}
        }
    }
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    if !cold.is_empty() {
        report.emit(json!({"system": "whatsapp-web.js", "measure": "cold_start_to_qr_ms", "samples": cold.len(), "value": median(&cold), "all": cold}));
    }
    error.map_or(Ok(()), Err)
}

/// Figure 3: sessions linked one at a time (cold start to connected), left to hibernate, then
/// each woken by a message: time to `connected` (with no QR on the way) and to the message sent.
/// Then more sessions linked and hibernated, for figure 4.
async fn ours_wake(db: &TestDb, sim: &Sim, report: &mut Report, plan: &Plan) {
    let data_dir = tmp_dir("wake");
    // A short idle time and lease (the reconciler looks every third of the lease) so sessions
    // hibernate within seconds of connecting.
    let r = start_runner(db, sim, &data_dir, 10, "1s", "3s", false).await;
    let mut cold = Vec::new();
    for k in 0..plan.samples {
        let t = link(
            &db.pool,
            sim,
            &format!("wake{k}"),
            &format!("{}", 15551100000u64 + k as u64),
        )
        .await;
        report.emit(json!({"system": "wa-outbox", "measure": "cold_start_to_connected_sample_ms", "session": k, "concurrent": 1, "value": t}));
        cold.push(t);
        wait_status(&db.pool, &format!("wake{k}"), "hibernated").await;
    }
    let mut to_connected = Vec::new();
    let mut to_sent = Vec::new();
    for k in 0..plan.samples {
        let id = format!("wake{k}");
        let mark: i64 = sqlx::query_scalar("select coalesce(max(id), 0) from wa_event")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        let t0 = Instant::now();
        let msg: i64 = sqlx::query_scalar(
            "insert into wa_message (session_id, recipient, body) values ($1, '15559990000', 'wake up') returning id",
        )
        .bind(&id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let mut connected_at = None;
        let sent_at = loop {
            let (s, m): (String, String) = sqlx::query_as(
                "select s.status, m.status from wa_session s join wa_message m on m.session_id = s.id where m.id = $1",
            )
            .bind(msg)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert!(
                s != "failed" && m != "failed",
                "wake of {id}: session {s}, message {m}"
            );
            if connected_at.is_none()
                && (s == "connected" || ["sent", "delivered", "read"].contains(&m.as_str()))
            {
                connected_at = Some(t0.elapsed());
            }
            if ["sent", "delivered", "read"].contains(&m.as_str()) {
                break t0.elapsed();
            }
            assert!(
                t0.elapsed() < STEP,
                "wake of {id} timed out (session {s}, message {m})"
            );
            tokio::time::sleep(POLL).await;
        };
        let qrs: i64 = sqlx::query_scalar(
            "select count(*) from wa_event where session_id = $1 and id > $2 and kind = 'session_status'
               and payload->>'status' in ('qr_pending', 'pairing')",
        )
        .bind(&id)
        .bind(mark)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(qrs, 0, "{id} asked for a QR on wake");
        let (c, s) = (ms(connected_at.unwrap()), ms(sent_at));
        report.emit(json!({"system": "wa-outbox", "measure": "wake_sample_ms", "sample": k, "to_connected": c, "to_sent": s}));
        to_connected.push(c);
        to_sent.push(s);
        wait_status(&db.pool, &id, "hibernated").await;
    }
    let (cold_m, wake_m) = (median(&cold), median(&to_connected));
    report.emit(json!({"system": "wa-outbox", "measure": "cold_start_to_connected_ms", "samples": cold.len(), "value": cold_m, "all": cold}));
    report.emit(json!({"system": "wa-outbox", "measure": "wake_to_connected_ms", "samples": to_connected.len(), "value": wake_m,
                       "all": to_connected, "login_from": login_store_name()}));
    report.emit(json!({"system": "wa-outbox", "measure": "wake_to_message_sent_ms", "samples": to_sent.len(), "value": median(&to_sent), "all": to_sent}));
    report.emit(json!({"measure": "ratio", "of": "wake_to_connected / cold_start_to_connected", "ours": wake_m, "theirs": cold_m,
                       "ours_over_theirs": (wake_m / cold_m * 1000.0).round() / 1000.0}));

    // The rest of the hibernated population for figure 4, linked ten at a time.
    let mut next = plan.samples;
    while next < plan.hibernated {
        let end = (next + 10).min(plan.hibernated);
        let batch: Vec<_> = (next..end)
            .map(|k| {
                let (pool, id, phone) = (
                    db.pool.clone(),
                    format!("wake{k}"),
                    format!("{}", 15551100000u64 + k as u64),
                );
                async move { link(&pool, sim, &id, &phone).await }
            })
            .collect();
        futures::future::join_all(batch).await;
        for k in next..end {
            wait_status(&db.pool, &format!("wake{k}"), "hibernated").await;
        }
        next = end;
    }
    r.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Figure 4: a `wa-outbox run` process while the database holds `plan.hibernated` hibernated
/// sessions and it drives `plan.connected_with_hibernated` connected ones.
async fn runner_process_memory(db: &TestDb, sim: &Sim, report: &mut Report, plan: &Plan) {
    let hibernated: i64 =
        sqlx::query_scalar("select count(*) from wa_session where status = 'hibernated'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let data_dir = tmp_dir("proc");
    let mut child = tokio::process::Command::new(BIN)
        .arg("run")
        .env("DATABASE_URL", &db.url)
        .env("WA_WEB_URL", format!("{}/", sim.url))
        .env("WA_DATA_DIR", &data_dir)
        .env("WA_AUTH_KEY", AUTH_KEY)
        .env("WA_RUNNER_CAPACITY", "10")
        .env("WA_SEND_MIN_INTERVAL", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start wa-outbox run");
    let pid = child.id().unwrap() as i32;
    wait_for("the runner row", STEP, || async {
        let n: i64 = sqlx::query_scalar("select count(*) from wa_runner where pid = $1")
            .bind(pid)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    let alone = settled_mem(|| HashSet::from([pid])).await;
    let batch: Vec<_> = (0..plan.connected_with_hibernated)
        .map(|k| {
            let (pool, id, phone) = (
                db.pool.clone(),
                format!("live{k}"),
                format!("{}", 15551200000u64 + k as u64),
            );
            async move { link(&pool, sim, &id, &phone).await }
        })
        .collect();
    futures::future::join_all(batch).await;
    let still: i64 =
        sqlx::query_scalar("select count(*) from wa_session where status = 'hibernated'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(still, hibernated, "hibernated sessions stay asleep");
    let own = settled_mem(|| HashSet::from([pid])).await;
    let all = settled_mem(|| tree(&[pid])).await;
    report.emit(json!({"system": "wa-outbox", "measure": "runner_process_memory", "hibernated": hibernated,
                       "connected": plan.connected_with_hibernated,
                       "runner_alone_before_sessions_pss_mb": Mem::mb(alone.pss_kb), "runner_pss_mb": Mem::mb(own.pss_kb),
                       "runner_rss_mb": Mem::mb(own.rss_kb), "value": Mem::mb(all.pss_kb),
                       "with_chromium_pss_mb": Mem::mb(all.pss_kb), "with_chromium_rss_mb": Mem::mb(all.rss_kb),
                       "processes": all.procs}));
    // SIGTERM: the runner drains (closes its browsers, releases its leases) and exits.
    // SAFETY: kill(2) on a pid we spawned and still hold.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}

fn machine() -> Value {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let chromium = std::process::Command::new("/usr/bin/chromium")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({"measure": "machine", "loadavg": load.trim(), "cpus": cpus, "chromium": chromium,
           "profile": if cfg!(debug_assertions) { "debug" } else { "release" }})
}

#[tokio::main]
async fn main() {
    let plan = Plan::new();
    let mut report = Report { lines: Vec::new() };
    report.emit(machine());
    let sim = start_sim().await;

    // Figures 1 and 2, ours.
    let db = test_db().await;
    let data_dir = tmp_dir("mem");
    let r = start_runner(&db, &sim, &data_dir, 12, "30m", "10s", false).await;
    ours_cold_qr(&db, &mut report, plan.samples, "wa-outbox").await;
    ours_memory(
        &db,
        &sim,
        &data_dir,
        &mut report,
        &plan.sizes,
        "wa-outbox",
        false,
    )
    .await;
    r.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);

    // Figures 1 and 2, ours with one shared browser (a context per session). The browser starts
    // with the first session and stays for the next ones, as in a runner that holds sessions.
    let db = test_db().await;
    let data_dir = tmp_dir("shared");
    let r = start_runner(&db, &sim, &data_dir, 12, "30m", "10s", true).await;
    ours_cold_qr(&db, &mut report, plan.samples, SHARED).await;
    ours_memory(&db, &sim, &data_dir, &mut report, &plan.sizes, SHARED, true).await;
    r.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);

    // Figures 1 and 2, theirs, on the same simulator.
    if let Err(e) = theirs(&sim, &mut report, &plan).await {
        report.emit(json!({"system": "whatsapp-web.js", "measure": "not_measured", "why": e}));
    }

    // Figures 3 and 4, ours.
    let db = test_db().await;
    ours_wake(&db, &sim, &mut report, &plan).await;
    runner_process_memory(&db, &sim, &mut report, &plan).await;

    report.ratio("cold_start_to_qr_ms", None);
    report.ratio_of(SHARED, "cold_start_to_qr_ms", None);
    for &n in &plan.sizes {
        report.ratio("pss_per_connected_session_mb", Some(n as u64));
        report.ratio_of(SHARED, "pss_per_connected_session_mb", Some(n as u64));
    }
    report.emit(machine());
}
