//! Outbox benchmark (DESIGN.md §7): claimed→sent throughput with the in-memory driver at 1, 8
//! and 64 sessions, insert→claim latency through LISTEN/NOTIFY, and claim cost as the table
//! grows from 10 k to 1 M finished rows. Release build: `cargo bench --bench outbox`.
//! Prints one JSON object per figure, then a table.
//!
//! Under `cargo test` (no `--bench` argument) or with `BENCH_QUICK=1` every size shrinks: a smoke
//! run that proves the benchmark works, not figures to report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use wa_outbox::driver::memory::{MemoryDriver, MemoryWorld};
use wa_outbox::runner::{self, NoLoginStore, RunnerConfig, RunnerHandle, RunnerParts};
use wa_outbox::testing::{test_db, wait_for, TestDb};

fn cfg(capacity: u32) -> RunnerConfig {
    let mut c = RunnerConfig::from_config(&wa_outbox::config::Config::defaults());
    c.capacity = capacity;
    c.send_min_interval = Duration::ZERO;
    c.data_dir = std::env::temp_dir().join(format!("wa-outbox-bench-{}", uuid::Uuid::new_v4()));
    c
}

async fn start(db: &TestDb, world: &Arc<MemoryWorld>, sessions: u32) -> RunnerHandle {
    let pool = wa_outbox::db::connect_as(&db.url, 16, "wa-outbox-bench")
        .await
        .unwrap();
    let driver = MemoryDriver::new(world.clone()).without_acks();
    let h = runner::spawn(RunnerParts {
        maintenance: None,
        pool,
        driver: Arc::new(driver),
        logins: Arc::new(NoLoginStore),
        media: None,
        cfg: cfg(sessions),
        metrics: None,
    })
    .await
    .unwrap();
    wait_for("sessions connected", Duration::from_secs(60), || async {
        let n: i64 =
            sqlx::query_scalar("select count(*) from wa_session where status = 'connected'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        (n == sessions as i64).then_some(())
    })
    .await;
    h
}

async fn make_sessions(pool: &PgPool, n: u32) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("bench{i:03}")).collect();
    sqlx::query("insert into wa_session (id) select unnest($1::text[])")
        .bind(&ids)
        .execute(pool)
        .await
        .unwrap();
    ids
}

async fn throughput(sessions: u32, messages: u32) -> serde_json::Value {
    let db = test_db().await;
    let ids = make_sessions(&db.pool, sessions).await;
    let world = MemoryWorld::new();
    let r = start(&db, &world, sessions).await;
    let t0 = Instant::now();
    sqlx::query(
        "insert into wa_message (session_id, recipient, body)
         select ($1::text[])[1 + (n % array_length($1::text[], 1))], '15551234567', 'bench ' || n from generate_series(1, $2) n",
    )
    .bind(&ids)
    .bind(messages as i32)
    .execute(&db.pool)
    .await
    .unwrap();
    let inserted = t0.elapsed();
    let t1 = Instant::now();
    wait_for("all sent", Duration::from_secs(600), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from wa_message where status = 'sent'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (n == messages as i64).then_some(())
    })
    .await;
    let secs = t1.elapsed().as_secs_f64();
    assert_eq!(world.sent_count(), messages as usize);
    r.shutdown().await.unwrap();
    json!({"system": "wa-outbox", "measure": "throughput", "sessions": sessions, "messages": messages,
           "messages_per_s": (messages as f64 / secs).round(), "insert_s": inserted.as_secs_f64()})
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Insert one message at a time into an idle runner; time from the INSERT's commit to the
/// driver's send call (claim included).
async fn latency(
    db: &TestDb,
    world: &Arc<MemoryWorld>,
    ids: &[String],
    samples: usize,
) -> (f64, f64) {
    let mut ms = Vec::with_capacity(samples);
    for i in 0..samples {
        let sid = &ids[i % ids.len()];
        let body = format!("lat {i}");
        let t0 = Instant::now();
        let id: i64 = sqlx::query_scalar("insert into wa_message (session_id, recipient, body) values ($1, '15551234567', $2) returning id")
            .bind(sid)
            .bind(&body)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        let wa_id = loop {
            let notified = world.changed.notified();
            if let Some(r) = world
                .sent()
                .into_iter()
                .rev()
                .find(|r| r.body.as_deref() == Some(body.as_str()))
            {
                break r.wa_message_id;
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), notified).await;
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "message {id} not sent"
            );
        };
        let sent = world.send_calls(&wa_id)[0];
        ms.push(sent.duration_since(t0).as_secs_f64() * 1000.0);
        // Let the completion land so the next sample starts from an idle runner.
        wait_for("completion", Duration::from_secs(10), || async {
            let s: String = sqlx::query_scalar("select status from wa_message where id = $1")
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap();
            (s == "sent").then_some(())
        })
        .await;
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (pct(&ms, 0.5), pct(&ms, 0.99))
}

async fn latency_at(sessions: u32, samples: usize, filler_rows: i64) -> serde_json::Value {
    let db = test_db().await;
    let ids = make_sessions(&db.pool, sessions).await;
    if filler_rows > 0 {
        // Finished rows the claim must not wade through, in one statement that may outlast the
        // pool's statement timeout (every row goes through the triggers).
        let mut tx = db.pool.begin().await.unwrap();
        sqlx::query("set local statement_timeout = 0")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "insert into wa_message (session_id, recipient, body, status, finished_at)
             select ($1::text[])[1 + (n % array_length($1::text[], 1))], '15551234567', 'old', 'sent', now()
             from generate_series(1, $2) n",
        )
        .bind(&ids)
        .bind(filler_rows)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        sqlx::query("analyze wa_message")
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let world = MemoryWorld::new();
    let r = start(&db, &world, sessions).await;
    let (p50, p99) = latency(&db, &world, &ids, samples).await;
    r.shutdown().await.unwrap();
    json!({"system": "wa-outbox", "measure": "insert_to_claim_latency", "sessions": sessions, "table_rows": filler_rows,
           "samples": samples, "latency_p50_ms": (p50 * 100.0).round() / 100.0, "latency_p99_ms": (p99 * 100.0).round() / 100.0})
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok() || !std::env::args().any(|a| a == "--bench");
    let scale = |n: u32| if quick { (n / 20).max(50) } else { n };
    let samples = if quick { 20 } else { 300 };
    let mut results = Vec::new();
    for (sessions, messages) in [(1, 5_000), (8, 20_000), (64, 40_000)] {
        let r = throughput(sessions, scale(messages)).await;
        println!("{r}");
        results.push(r);
    }
    // BENCH_OUTBOX_THROUGHPUT_ONLY=1: the throughput figures alone (bench/run.sh's side-by-side
    // comparison with graphile-worker, when the scale benchmark follows in the same run).
    if std::env::var("BENCH_OUTBOX_THROUGHPUT_ONLY").is_ok() {
        return;
    }
    for sessions in [1, 8, 64] {
        let r = latency_at(sessions, samples, 0).await;
        println!("{r}");
        results.push(r);
    }
    let sizes: &[i64] = if quick {
        &[10_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    for &rows in sizes {
        let r = latency_at(8, samples, rows).await;
        println!("{r}");
        results.push(r);
    }
}
