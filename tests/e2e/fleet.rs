//! Several `wa-outbox run` processes standing in for pods: SIGKILL mid-burst (failover from the
//! stored login), SIGTERM (drain; sessions move at once), and a new runner taking new sessions.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use wa_outbox::child::DieWithParent as _;
use wa_outbox::testing::{test_db, wait_for, TestDb};

use crate::*;

/// A test key (base64 of 32 bytes); never a real deployment's.
const AUTH_KEY: &str = "test:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

pub(crate) struct RunnerProc {
    pub(crate) child: tokio::process::Child,
    pub(crate) pid: i32,
    pub(crate) log: PathBuf,
}

pub(crate) async fn runner_proc(db: &TestDb, capacity: u32, ttl: &str) -> RunnerProc {
    runner_proc_with(db, capacity, ttl, &[]).await
}

pub(crate) async fn runner_proc_with(
    db: &TestDb,
    capacity: u32,
    ttl: &str,
    extra: &[(&str, &str)],
) -> RunnerProc {
    let r = spawn_runner_proc(db, capacity, ttl, extra).await;
    r.registered(&db.pool).await;
    r
}

/// A `wa-outbox run` process, not yet waited for.
pub(crate) async fn spawn_runner_proc(
    db: &TestDb,
    capacity: u32,
    ttl: &str,
    extra: &[(&str, &str)],
) -> RunnerProc {
    let dir = std::env::temp_dir().join(format!("wa-fleet-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("runner.log");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-outbox"))
        .arg("run")
        .env("DATABASE_URL", &db.url)
        .env("WA_WEB_URL", format!("{}/", sim().await.url))
        .env("WA_DATA_DIR", &dir)
        .env("WA_AUTH_KEY", AUTH_KEY)
        .env("WA_RUNNER_CAPACITY", capacity.to_string())
        .env("WA_LEASE_TTL", ttl)
        .env("WA_SEND_MIN_INTERVAL", "0")
        .env("RUST_LOG", "info")
        // Last, so a test can point a runner elsewhere (a proxy, its own simulator).
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .die_with_parent()
        .spawn()
        .unwrap();
    let pid = child.id().unwrap() as i32;
    RunnerProc { child, pid, log }
}

impl RunnerProc {
    /// Waits for the runner's row: it is up and serving.
    pub(crate) async fn registered(&self, pool: &PgPool) {
        wait_for("the runner row", STEP, || async {
            let n: i64 = sqlx::query_scalar("select count(*) from wa_runner where pid = $1")
                .bind(self.pid)
                .fetch_one(pool)
                .await
                .unwrap();
            (n == 1).then_some(())
        })
        .await;
    }

    pub(crate) async fn id(&self, pool: &PgPool) -> uuid::Uuid {
        sqlx::query_scalar("select id from wa_runner where pid = $1")
            .bind(self.pid)
            .fetch_one(pool)
            .await
            .unwrap()
    }
    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// SIGTERM, then the exit within `within`, which must be a success. Returns when the signal
    /// was sent.
    pub(crate) async fn drain(self, within: Duration) -> Instant {
        self.signal(libc::SIGTERM);
        let signalled = Instant::now();
        let mut child = self.child;
        let status = tokio::time::timeout(within, child.wait())
            .await
            .expect("exit within the grace period")
            .unwrap();
        assert!(
            status.success(),
            "exit status {status:?}\n{}",
            log_tail(&self.log)
        );
        signalled
    }
}

/// After a burst began: SIGKILL the victim; every session comes back connected on the survivor,
/// the victim's browsers die with it, every message goes out exactly once without a relink or a
/// QR, and the survivor still drains cleanly. Returns the time from the kill to all connected.
#[allow(clippy::too_many_arguments)]
async fn kill_and_recover(
    p: &PgPool,
    victim: RunnerProc,
    survivor: RunnerProc,
    sessions: &[(String, String)],
    messages: i64,
    since_event: i64,
    reconnect_within: Duration,
    send_within: Duration,
) -> Duration {
    let survivor_id = survivor.id(p).await;
    let victim_dir = victim.log.parent().unwrap().to_path_buf();
    victim.signal(libc::SIGKILL);
    let killed = Instant::now();
    connected_on(p, survivor_id, sessions.len() as i64, reconnect_within).await;
    let recovery = killed.elapsed();
    // Its browsers died with it (no orphan keeps a page of the session open).
    wait_for(
        "the killed runner's browsers gone",
        Duration::from_secs(20),
        || async { chromium_pids(&victim_dir).is_empty().then_some(()) },
    )
    .await;
    wait_for(&format!("all {messages} sent"), send_within, || async {
        (done_count(p).await == messages).then_some(())
    })
    .await;
    let per_session = messages as usize / sessions.len();
    assert_each_once_and_no_relink(p, sessions, per_session, since_event).await;
    survivor.drain(Duration::from_secs(60)).await;
    drop(victim);
    recovery
}

pub(crate) fn log_tail(log: &std::path::Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    s.lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until `runner` holds `n` sessions, all connected.
pub(crate) async fn connected_on(pool: &PgPool, runner: uuid::Uuid, n: i64, within: Duration) {
    wait_for(
        &format!("{n} sessions connected on runner {runner}"),
        within,
        || async {
            let got: i64 = sqlx::query_scalar(
                "select count(*) from wa_session where runner_id = $1 and status = 'connected'",
            )
            .bind(runner)
            .fetch_one(pool)
            .await
            .unwrap();
            (got == n).then_some(())
        },
    )
    .await;
}

pub(crate) async fn owned(pool: &PgPool, runner: uuid::Uuid) -> i64 {
    sqlx::query_scalar(
        "select count(*) from wa_session where runner_id = $1 and lease_until > now()",
    )
    .bind(runner)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub(crate) async fn done_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from wa_message where status in ('sent', 'delivered', 'read', 'played')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

pub(crate) async fn link_all(pool: &PgPool, sessions: &[(String, String)]) {
    for (id, phone) in sessions {
        link(pool, id, phone).await;
    }
    wait_for("every login stored", STEP, || async {
        let n: i64 = sqlx::query_scalar("select count(*) from wa_session_auth")
            .fetch_one(pool)
            .await
            .unwrap();
        (n == sessions.len() as i64).then_some(())
    })
    .await;
}

pub(crate) async fn assert_each_once_and_no_relink(
    pool: &PgPool,
    sessions: &[(String, String)],
    per_session: usize,
    since_event: i64,
) {
    for (id, phone) in sessions {
        let recorded = sim().await.sent_by(phone).await;
        let mut ids: Vec<&str> = recorded
            .iter()
            // The bare id: on today's page one message may be keyed under a LID or a number.
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(
            recorded.len(),
            per_session,
            "{id}: {} recorded",
            recorded.len()
        );
        assert_eq!(ids.len(), per_session, "{id}: a message was sent twice");
        assert_eq!(
            sim().await.linked_devices(phone).await,
            1,
            "{id}: a new device was linked"
        );
    }
    let qr: i64 = sqlx::query_scalar(
        "select count(*) from wa_event where id > $1 and payload->>'status' = 'qr_pending'",
    )
    .bind(since_event)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(qr, 0, "a session showed a new QR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_moves_sessions_without_a_qr_and_every_message_arrives_once() {
    let db = test_db().await;
    let p = &db.pool;
    let r1 = runner_proc(&db, 10, "6s").await;
    let r2 = runner_proc(&db, 10, "6s").await;
    let sessions: Vec<(String, String)> = (0..10)
        .map(|i| (format!("fleet_k{i}"), format!("155503000{i:02}")))
        .collect();
    link_all(p, &sessions).await;
    let since_event: i64 = sqlx::query_scalar("select coalesce(max(id), 0) from wa_event")
        .fetch_one(p)
        .await
        .unwrap();

    sqlx::query(
        "insert into wa_message (session_id, recipient, body)
         select 'fleet_k' || (n % 10), '15550399999', 'burst ' || n from generate_series(0, 499) n",
    )
    .execute(p)
    .await
    .unwrap();
    wait_for("a burst under way", Duration::from_secs(120), || async {
        (done_count(p).await >= 50).then_some(())
    })
    .await;
    let (id1, id2) = (r1.id(p).await, r2.id(p).await);
    let (victim, survivor) = if owned(p, id1).await >= owned(p, id2).await {
        (r1, r2)
    } else {
        (r2, r1)
    };
    let recovery = kill_and_recover(
        p,
        victim,
        survivor,
        &sessions,
        500,
        since_event,
        Duration::from_secs(180),
        Duration::from_secs(300),
    )
    .await;
    eprintln!("FIGURE failover: SIGKILL → all 10 sessions connected on the survivor in {:.1} s (lease TTL 6 s)", recovery.as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_moves_sessions_at_once_and_a_new_runner_takes_new_sessions() {
    let db = test_db().await;
    let p = &db.pool;
    // A long TTL: a move well inside it can only come from the drain.
    let runners = vec![
        runner_proc(&db, 3, "60s").await,
        runner_proc(&db, 3, "60s").await,
        runner_proc(&db, 3, "60s").await,
    ];
    let sessions: Vec<(String, String)> = (0..6)
        .map(|i| (format!("fleet_t{i}"), format!("155504000{i:02}")))
        .collect();
    link_all(p, &sessions).await;
    let since_event: i64 = sqlx::query_scalar("select coalesce(max(id), 0) from wa_event")
        .fetch_one(p)
        .await
        .unwrap();
    sqlx::query("insert into wa_message (session_id, recipient, body) select 'fleet_t' || (n % 6), '15550499999', 'before ' || n from generate_series(0, 59) n")
        .execute(p)
        .await
        .unwrap();
    // Scale down: SIGTERM the runner holding the most sessions.
    let mut best = 0;
    for (i, r) in runners.iter().enumerate() {
        if owned(p, r.id(p).await).await > owned(p, runners[best].id(p).await).await {
            best = i;
        }
    }
    let mut runners = runners;
    let victim = runners.remove(best);
    let victim_id = victim.id(p).await;
    let had = owned(p, victim_id).await;
    assert!(had > 0, "the victim owned no session");
    let t0 = victim.drain(Duration::from_secs(45)).await;
    let exited = t0.elapsed();
    let gone: i64 = sqlx::query_scalar("select count(*) from wa_runner where id = $1")
        .bind(victim_id)
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(gone, 0, "runner row deleted on drain");
    wait_for("all six connected elsewhere", Duration::from_secs(45), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from wa_session where status = 'connected' and runner_id is not null and runner_id <> $1")
            .bind(victim_id)
            .fetch_one(p)
            .await
            .unwrap();
        (n == 6).then_some(())
    })
    .await;
    let moved = t0.elapsed();
    assert!(
        moved < Duration::from_secs(45),
        "the move waited for the lease"
    );
    eprintln!("FIGURE drain: SIGTERM → exit 0 in {:.1} s; its {had} sessions connected elsewhere {:.1} s after the signal (lease TTL 60 s)", exited.as_secs_f64(), moved.as_secs_f64());
    wait_for("all 60 sent", Duration::from_secs(120), || async {
        (done_count(p).await == 60).then_some(())
    })
    .await;
    assert_each_once_and_no_relink(p, &sessions, 10, since_event).await;

    // Scale up: the two survivors are full (3 + 3); a new session can only land on a new runner.
    let fresh = runner_proc(&db, 3, "60s").await;
    let fresh_id = fresh.id(p).await;
    link(p, "fleet_new", "15550400099").await;
    let owner: Option<uuid::Uuid> =
        sqlx::query_scalar("select runner_id from wa_session where id = 'fleet_new'")
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(owner, Some(fresh_id));
    for r in runners.iter().chain(std::iter::once(&fresh)) {
        r.signal(libc::SIGTERM);
    }
    for r in runners.into_iter().chain(std::iter::once(fresh)) {
        let mut c = r.child;
        let st = tokio::time::timeout(Duration::from_secs(60), c.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(st.success());
    }
}

/// Shared-browser mode: a draining runner exports each session's login from its browser context
/// before it lets go, and the next runner imports it into a fresh context of its own browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_browser_sigterm_moves_sessions_to_another_runner_without_a_qr() {
    let db = test_db().await;
    let p = &db.pool;
    let shared = [("WA_BROWSER_MODE", "shared")];
    let a = runner_proc_with(&db, 3, "60s", &shared).await;
    let sessions: Vec<(String, String)> = (0..2)
        .map(|i| (format!("fleet_s{i}"), format!("155504100{i:02}")))
        .collect();
    link_all(p, &sessions).await;
    let a_id = a.id(p).await;
    assert_eq!(owned(p, a_id).await, 2);
    let b = runner_proc_with(&db, 3, "60s", &shared).await;
    let b_id = b.id(p).await;
    let since_event: i64 = sqlx::query_scalar("select coalesce(max(id), 0) from wa_event")
        .fetch_one(p)
        .await
        .unwrap();
    sqlx::query("insert into wa_message (session_id, recipient, body) select 'fleet_s' || (n % 2), '15550499998', 'moving ' || n from generate_series(0, 9) n")
        .execute(p)
        .await
        .unwrap();
    a.drain(Duration::from_secs(45)).await;
    connected_on(p, b_id, 2, Duration::from_secs(45)).await;
    wait_for("all 10 sent", Duration::from_secs(120), || async {
        (done_count(p).await == 10).then_some(())
    })
    .await;
    assert_each_once_and_no_relink(p, &sessions, 5, since_event).await;
    b.drain(Duration::from_secs(60)).await;
}

/// Shared-browser mode after SIGKILL: nothing was exported at the end, so the survivor restores
/// each login from its last periodic save in the database, mid-burst, without a QR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_browser_sigkill_mid_burst_moves_sessions_without_a_qr() {
    let db = test_db().await;
    let p = &db.pool;
    let shared = [("WA_BROWSER_MODE", "shared")];
    let victim = runner_proc_with(&db, 3, "6s", &shared).await;
    let sessions: Vec<(String, String)> = (0..2)
        .map(|i| (format!("fleet_sk{i}"), format!("155504200{i:02}")))
        .collect();
    link_all(p, &sessions).await;
    let survivor = runner_proc_with(&db, 3, "6s", &shared).await;
    let since_event: i64 = sqlx::query_scalar("select coalesce(max(id), 0) from wa_event")
        .fetch_one(p)
        .await
        .unwrap();
    sqlx::query("insert into wa_message (session_id, recipient, body) select 'fleet_sk' || (n % 2), '15550499997', 'burst ' || n from generate_series(0, 39) n")
        .execute(p)
        .await
        .unwrap();
    wait_for("a burst under way", Duration::from_secs(120), || async {
        (done_count(p).await >= 4).then_some(())
    })
    .await;
    let recovery = kill_and_recover(
        p,
        victim,
        survivor,
        &sessions,
        40,
        since_event,
        Duration::from_secs(120),
        Duration::from_secs(180),
    )
    .await;
    eprintln!(
        "FIGURE failover (shared browser): SIGKILL → both sessions connected on the survivor in {:.1} s (lease TTL 6 s)",
        recovery.as_secs_f64()
    );
}
