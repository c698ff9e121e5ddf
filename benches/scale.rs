//! Scale benchmark (issue 16, DESIGN.md §7 "Scale"): the table contract with a big fleet and a
//! long history. Two sizes side by side (default 1 k sessions / 100 k rows and 10 k sessions /
//! 10 M rows in `wa_message`, a tenth of that in `wa_event`, most messages finished), bulk-loaded
//! with generate_series, then runners on the in-memory driver (release build):
//!
//! - `wa-outbox status` (the release binary, wall clock) and each view's time;
//! - the cascade delete of one session's rows;
//! - the reconciler's claim and lease renewal per tick (pg_stat_statements mean);
//! - wake-ups per insert as the runner count grows 1 → N: reconciler statements (renewals and
//!   claims) and dispatcher claims per inserted message, for messages to owned sessions;
//! - throughput, database statements and transactions per sent message, insert→claim latency;
//! - maintenance's prune of the oldest tenth of the rows.
//!
//! Knobs: BENCH_SESSIONS / BENCH_ROWS (the big size), BENCH_RUNNERS (default 10),
//! BENCH_MESSAGES (throughput burst, default 20 000), BENCH_QUICK=1 (or no `--bench` argument,
//! as under `cargo test`) for a smoke run. Needs a superuser URL in WA_TEST_DATABASE_URL
//! (bulk load without triggers); per-statement figures need pg_stat_statements preloaded
//! (bench/run.sh does it), else they print as null. Runners are N child processes (this bench
//! binary started again with BENCH_RUNNER_CHILD=1, one runner each on its own in-memory driver),
//! so throughput and insert→claim latency are read from the rows (`sending_at - created_at`, the
//! database's clock), not from a driver in this process.
//!
//! Also `burst_profile`: the statements that took the burst's database time (pg_stat_statements),
//! and before the prune, one prune batch under EXPLAIN ANALYZE (the plan's nodes, so a scan
//! would show).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use wa_outbox::driver::memory::{MemoryDriver, MemoryWorld};
use wa_outbox::runner::{self, NoLoginStore, RunnerConfig, RunnerHandle, RunnerParts};
use wa_outbox::testing::{test_db, wait_for, TestDb};

const LEASE_TTL: Duration = Duration::from_secs(20);

fn env_num(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn cfg(capacity: u32) -> RunnerConfig {
    let mut c = RunnerConfig::from_config(&wa_outbox::config::Config::defaults());
    c.capacity = capacity;
    c.send_min_interval = Duration::ZERO;
    c.lease_ttl = LEASE_TTL;
    c.idle_after = Duration::from_secs(3600);
    c.data_dir = std::env::temp_dir().join(format!("wa-outbox-bench-{}", uuid::Uuid::new_v4()));
    c
}

async fn start_runner(url: &str, world: &Arc<MemoryWorld>, capacity: u32) -> RunnerHandle {
    let pool = wa_outbox::db::connect_as(url, 8, "wa-outbox-bench")
        .await
        .unwrap();
    let driver = MemoryDriver::new(world.clone()).without_acks();
    runner::spawn(RunnerParts {
        maintenance: None,
        pool,
        driver: Arc::new(driver),
        logins: Arc::new(NoLoginStore),
        media: None,
        cfg: cfg(capacity),
        metrics: None,
    })
    .await
    .unwrap()
}

/// Child mode: one runner on its own in-memory driver until stdin closes, then a clean shutdown.
async fn child_runner() {
    let url = std::env::var("BENCH_CHILD_DB").expect("BENCH_CHILD_DB");
    let capacity = env_num("BENCH_CHILD_CAPACITY", 10) as u32;
    let world = MemoryWorld::new();
    let handle = start_runner(&url, &world, capacity).await;
    println!("ready");
    let mut stdin = tokio::io::stdin();
    let mut sink = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stdin, &mut sink).await;
    handle.shutdown().await.unwrap();
}

/// A runner process: this bench binary in child mode.
struct ChildRunner(tokio::process::Child);

impl ChildRunner {
    async fn spawn(url: &str, capacity: u32) -> Self {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .env("BENCH_RUNNER_CHILD", "1")
            .env("BENCH_CHILD_DB", url)
            .env("BENCH_CHILD_CAPACITY", capacity.to_string())
            .env("RUST_LOG", "error")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(out));
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("runner process ready within 60 s")
            .unwrap();
        assert_eq!(
            first.as_deref(),
            Some("ready"),
            "runner process did not start"
        );
        ChildRunner(child)
    }

    /// Closes its stdin (a clean shutdown: leases released); killed if it does not exit in 60 s.
    async fn stop(mut self) {
        drop(self.0.stdin.take());
        if tokio::time::timeout(Duration::from_secs(60), self.0.wait())
            .await
            .is_err()
        {
            let _ = self.0.kill().await;
        }
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// The machine's one-minute load average (2 cores shared with other work: every figure carries it).
fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// Best and median of `n` runs of `sql` (all rows fetched).
async fn time_query(pool: &PgPool, sql: &str, n: usize) -> (f64, usize) {
    let mut t = Vec::new();
    let mut rows = 0;
    for _ in 0..n {
        let t0 = Instant::now();
        rows = sqlx::query(sql).fetch_all(pool).await.unwrap().len();
        t.push(ms(t0.elapsed()));
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (t[t.len() / 2], rows)
}

/// pg_stat_statements for this database: (query, calls, mean ms). None when not preloaded.
async fn statements(pool: &PgPool) -> Option<Vec<(String, i64, f64)>> {
    let rows = sqlx::query(
        "select query, calls, mean_exec_time from pg_stat_statements
         where dbid = (select oid from pg_database where datname = current_database())
           and query not like '%/* bench */%'",
    )
    .fetch_all(pool)
    .await
    .ok()?;
    Some(
        rows.iter()
            .map(|r| (r.get("query"), r.get("calls"), r.get("mean_exec_time")))
            .collect(),
    )
}

/// Every statement of this database with its calls and total ms, the bench's own included.
async fn all_statements(pool: &PgPool) -> Vec<(String, i64, f64)> {
    sqlx::query(
        "/* bench */ select query, calls, total_exec_time from pg_stat_statements
         where dbid = (select oid from pg_database where datname = current_database())",
    )
    .fetch_all(pool)
    .await
    .map(|rows| {
        rows.iter()
            .map(|r| (r.get("query"), r.get("calls"), r.get("total_exec_time")))
            .collect()
    })
    .unwrap_or_default()
}

async fn reset_statements(pool: &PgPool) {
    let _ = sqlx::query("/* bench */ select pg_stat_statements_reset()")
        .execute(pool)
        .await;
}

/// (calls, mean ms) of the statements whose text contains `needle`.
fn pick(stats: &Option<Vec<(String, i64, f64)>>, needle: &str) -> (Option<i64>, Option<f64>) {
    let Some(s) = stats else { return (None, None) };
    let hits: Vec<_> = s.iter().filter(|(q, _, _)| q.contains(needle)).collect();
    let calls: i64 = hits.iter().map(|h| h.1).sum();
    let mean = if calls > 0 {
        hits.iter().map(|h| h.1 as f64 * h.2).sum::<f64>() / calls as f64
    } else {
        0.0
    };
    (Some(calls), Some((mean * 1000.0).round() / 1000.0))
}

const RENEWAL: &str = "update wa_session s set lease_until";
const RECONCILER_CLAIM: &str = "with unowned as";
const DISPATCHER_CLAIM: &str = "with ready as (select unnest";

async fn xacts(pool: &PgPool) -> i64 {
    count(
        pool,
        "/* bench */ select (xact_commit + xact_rollback)::bigint from pg_stat_database where datname = current_database()",
    )
    .await
}

async fn load(db: &TestDb, sessions: i64, rows: i64, live: i64) -> Value {
    let t0 = Instant::now();
    // `live` sessions for the runners to start; the rest hibernated (no browser, no owner).
    sqlx::query(
        "insert into wa_session (id, status, last_active_at)
         select 'sc' || lpad(n::text, 6, '0'), case when n <= $2 then 'new' else 'hibernated' end,
                now() - interval '1 day'
         from generate_series(1, $1) n",
    )
    .bind(sessions)
    .bind(live)
    .execute(&db.pool)
    .await
    .unwrap();
    // History: finished rows spread over rows/10 seconds (10 M rows: ~12 days), 1 % failed with
    // an error, written without triggers (no NOTIFY storm, no per-row trigger calls).
    let mut conn = db.pool.acquire().await.unwrap();
    // The pool's statement timeout is for runners, not for loading millions of rows.
    sqlx::query("set statement_timeout = 0")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("set session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    let chunk = 500_000i64;
    let mut from = 1;
    while from <= rows {
        let to = (from + chunk - 1).min(rows);
        sqlx::query(
            "insert into wa_message (session_id, recipient, body, status, error_code, error, chat_id,
                                     created_at, updated_at, sent_at, finished_at)
             select 'sc' || lpad((n % $3 + 1)::text, 6, '0'), '15551234567', 'old message ' || n,
               case when n % 100 = 0 then 'failed' when n % 3 = 0 then 'read'
                    when n % 3 = 1 then 'delivered' else 'sent' end,
               case when n % 100 = 0 then 'send_failed' end,
               case when n % 100 = 0 then 'the page did not send it' end,
               '15551234567@c.us',
               now() - make_interval(secs => ($4 - n) / 10.0 + 1),
               now() - make_interval(secs => ($4 - n) / 10.0),
               now() - make_interval(secs => ($4 - n) / 10.0),
               now() - make_interval(secs => ($4 - n) / 10.0)
             from generate_series($1::bigint, $2::bigint) n",
        )
        .bind(from)
        .bind(to)
        .bind(sessions)
        .bind(rows)
        .execute(&mut *conn)
        .await
        .unwrap();
        from = to + 1;
    }
    sqlx::query(
        "insert into wa_event (session_id, kind, payload, created_at)
         select 'sc' || lpad((n % $2 + 1)::text, 6, '0'), 'message', '{\"body\": \"hi\"}',
                now() - make_interval(secs => ($1 - n))
         from generate_series(1, $1) n",
    )
    .bind(rows / 10)
    .bind(sessions)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("set session_replication_role = origin")
        .execute(&mut *conn)
        .await
        .unwrap();
    // The triggers were off, so the counts are filled the way the counts migration fills them.
    sqlx::query(
        "insert into wa_message_count (session_id, status, backend, n)
         select session_id, status, 0, count(*) from wa_message group by 1, 2",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("vacuum analyze")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("reset statement_timeout")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    json!({"measure": "load", "sessions": sessions, "rows": rows, "events": rows / 10,
           "load_s": (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0})
}

async fn views(db: &TestDb) -> Value {
    let (stats, n) = time_query(&db.pool, "select * from wa_outbox_stats", 3).await;
    let (overview, _) = time_query(&db.pool, "select * from wa_session_overview", 3).await;
    let (runners, _) = time_query(&db.pool, "select * from wa_runner_overview", 3).await;
    // The command a person runs: process start, schema check, one snapshot, JSON out.
    let mut status = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wa-outbox"))
            .args(["status", "--json"])
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        status.push(ms(t0.elapsed()));
        assert!(
            out.status.success(),
            "wa-outbox status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    status.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // on delete cascade: one session's rows found through wa_message_session_idx.
    let mut tx = db.pool.begin().await.unwrap();
    let t0 = Instant::now();
    sqlx::query("delete from wa_session where id = 'sc000002'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let cascade = ms(t0.elapsed());
    tx.rollback().await.unwrap();
    json!({"measure": "views", "sessions": n, "wa_outbox_stats_ms": stats, "wa_session_overview_ms": overview,
           "wa_runner_overview_ms": runners, "status_cli_ms": status[1], "cascade_delete_one_session_ms": cascade})
}

/// Inserts `n` messages one statement each, round-robin over `ids`, and waits until all are sent.
async fn trickle(db: &TestDb, ids: &[String], n: usize, tag: &str) -> Duration {
    let t0 = Instant::now();
    for i in 0..n {
        sqlx::query("/* bench */ insert into wa_message (session_id, recipient, body) values ($1, '15551234567', $2)")
            .bind(&ids[(i * 7919) % ids.len()])
            .bind(format!("{tag} {i}"))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    wait_for("trickle sent", Duration::from_secs(300), || async {
        // The trickle is the only traffic: done when the kept counts show nothing queued or in
        // flight (cheap at any size, unlike a count over wa_message).
        let left = count(
            &db.pool,
            "/* bench */ select coalesce(sum(n), 0)::bigint from wa_message_count where status in ('queued', 'sending')",
        )
        .await;
        (left == 0).then_some(())
    })
    .await;
    t0.elapsed()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Insert → claim, one message at a time, on the database's clock: `sending_at` (the claim's
/// `now()`) minus `created_at` (the insert's). The next message goes in once this one is sent.
async fn latency(db: &TestDb, ids: &[String], samples: usize) -> Value {
    let mut t = Vec::with_capacity(samples);
    for i in 0..samples {
        let id: i64 = sqlx::query_scalar("/* bench */ insert into wa_message (session_id, recipient, body) values ($1, '15551234567', $2) returning id")
            .bind(&ids[(i * 7919) % ids.len()])
            .bind(format!("lat {i}"))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        let ms: f64 = wait_for("message sent", Duration::from_secs(30), || async {
            sqlx::query_scalar(
                "/* bench */ select (extract(epoch from sending_at - created_at) * 1000)::float8
                 from wa_message where id = $1 and status = 'sent'",
            )
            .bind(id)
            .fetch_optional(&db.pool)
            .await
            .unwrap()
        })
        .await;
        t.push(ms);
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let r = |v: f64| (v * 100.0).round() / 100.0;
    json!({"measure": "insert_to_claim_latency", "samples": samples,
           "p50_ms": r(pct(&t, 0.5)), "p99_ms": r(pct(&t, 0.99))})
}

/// One prune batch (maintenance's statement, src/maintenance/prune.rs) under EXPLAIN ANALYZE,
/// rolled back: its time and the plan's nodes (a sequential scan would show here).
async fn prune_plan(db: &TestDb, age_s: f64) -> Value {
    let mut tx = db.pool.begin().await.unwrap();
    let plan: Value = sqlx::query_scalar(
        "explain (analyze, buffers, format json)
         delete from wa_message where id = any(array(
           select id from wa_message
           where finished_at < now() - make_interval(secs => $1)
           order by finished_at
           limit 1000))",
    )
    .bind(age_s)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    fn nodes(p: &Value, out: &mut Vec<String>) {
        let mut n = p["Node Type"].as_str().unwrap_or_default().to_string();
        if let Some(i) = p["Index Name"].as_str() {
            n = format!("{n} using {i}");
        } else if let Some(r) = p["Relation Name"].as_str() {
            n = format!("{n} on {r}");
        }
        out.push(n);
        for c in p["Plans"].as_array().into_iter().flatten() {
            nodes(c, out);
        }
    }
    let mut out = Vec::new();
    nodes(&plan[0]["Plan"], &mut out);
    let triggers: Vec<String> = plan[0]["Triggers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{} {} ms",
                t["Trigger Name"].as_str().unwrap_or_default(),
                t["Time"]
            )
        })
        .collect();
    json!({"measure": "prune_plan", "batch_ms": plan[0]["Execution Time"],
           "nodes": out.join(" > "), "seq_scan": out.iter().any(|n| n.starts_with("Seq Scan")),
           "triggers": triggers.join(", "),
           "shared_buffers_read": plan[0]["Plan"]["Shared Read Blocks"],
           "shared_buffers_hit": plan[0]["Plan"]["Shared Hit Blocks"]})
}

async fn scale_run(sessions: i64, rows: i64, runners: usize, quick: bool) -> Vec<Value> {
    let mut out = Vec::new();
    let emit = |v: Value, out: &mut Vec<Value>| {
        let v = {
            let mut v = v;
            v["system"] = json!("wa-outbox");
            v["size"] = json!(format!("{sessions} sessions / {rows} rows"));
            v["load1"] = json!(load1());
            v
        };
        println!("{v}");
        out.push(v);
    };
    let db = test_db().await;
    let _ = sqlx::query("create extension if not exists pg_stat_statements")
        .execute(&db.pool)
        .await;
    let live = (sessions * 3 / 10).max(runners as i64);
    let per = (live / runners as i64) as u32;
    emit(load(&db, sessions, rows, live).await, &mut out);
    emit(views(&db).await, &mut out);

    // Runner processes join one by one, each taking `per` of the live sessions; wake-ups are
    // measured with 1, 2, 5 and N of them.
    let mut handles = Vec::new();
    let trickle_n = if quick { 50 } else { 300 };
    // A tenth more room than its share: every runner keeps free capacity, so every tick also
    // runs the claim (a full runner skips it) and its cost is measured.
    let capacity = per + per / 10 + 1;
    for k in 1..=runners {
        handles.push(ChildRunner::spawn(&db.url, capacity).await);
        wait_for("sessions connected", Duration::from_secs(600), || async {
            let n = count(
                &db.pool,
                "/* bench */ select count(*) from wa_session where status = 'connected'",
            )
            .await;
            (n >= k as i64 * per as i64).then_some(())
        })
        .await;
        if ![1, 2, 5, runners].contains(&k) {
            continue;
        }
        let ids: Vec<String> = sqlx::query_scalar(
            "/* bench */ select id from wa_session where status = 'connected' order by id",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        reset_statements(&db.pool).await;
        let took = trickle(&db, &ids, trickle_n, &format!("wake{k}")).await;
        let st = statements(&db.pool).await;
        let (renewals, _) = pick(&st, RENEWAL);
        let (claims, _) = pick(&st, RECONCILER_CLAIM);
        let (dispatch, _) = pick(&st, DISPATCHER_CLAIM);
        // Ticks the timers alone would run in the window (one per runner per TTL/4).
        let periodic = k as f64 * took.as_secs_f64() / (LEASE_TTL / 4).as_secs_f64();
        let per_insert =
            |c: Option<i64>| c.map(|c| ((c as f64 / trickle_n as f64) * 1000.0).round() / 1000.0);
        emit(
            json!({"measure": "wakeups", "runners": k, "inserts": trickle_n, "window_s": (took.as_secs_f64() * 10.0).round() / 10.0,
                   "periodic_ticks_expected": (periodic * 10.0).round() / 10.0,
                   "renewals": renewals, "reconciler_claims": claims, "dispatcher_claims": dispatch,
                   "reconciler_statements_per_insert": per_insert(renewals.zip(claims).map(|(a, b)| a + b)),
                   "dispatcher_claims_per_insert": per_insert(dispatch)}),
            &mut out,
        );
    }

    // Claim and renewal cost per tick with every runner up: two ticks' worth of timer ticks.
    reset_statements(&db.pool).await;
    tokio::time::sleep(LEASE_TTL / 2 + Duration::from_millis(500)).await;
    let st = statements(&db.pool).await;
    let (rn, rn_ms) = pick(&st, RENEWAL);
    let (cl, cl_ms) = pick(&st, RECONCILER_CLAIM);
    emit(
        json!({"measure": "tick_cost", "runners": runners, "sessions_per_runner": per,
               "renewals": rn, "renewal_ms": rn_ms, "claims": cl, "claim_ms": cl_ms}),
        &mut out,
    );

    // Throughput: a burst over the live sessions, with statements and transactions per message.
    let burst = if quick {
        2_000
    } else {
        env_num("BENCH_MESSAGES", 20_000)
    };
    reset_statements(&db.pool).await;
    let x0 = xacts(&db.pool).await;
    let t0 = Instant::now();
    let all_stats_before = all_statements(&db.pool).await;
    sqlx::query(
        "/* bench */ insert into wa_message (session_id, recipient, body)
         select 'sc' || lpad((n % $2 + 1)::text, 6, '0'), '15551234567', 'burst ' || n from generate_series(1, $1) n",
    )
    .bind(burst)
    .bind(live)
    .execute(&db.pool)
    .await
    .unwrap();
    let insert_s = t0.elapsed().as_secs_f64();
    // Done when nothing is queued or in flight, read from the counts the writes keep (a count
    // over wa_message every 20 ms would be a full index scan each at 10 M rows: the bench
    // itself would load the database it measures). Every 50 ms.
    loop {
        let left = count(
            &db.pool,
            "/* bench */ select coalesce(sum(n), 0)::bigint from wa_message_count where status in ('queued', 'sending')",
        )
        .await;
        if left == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1800),
            "burst not sent in 30 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let x1 = xacts(&db.pool).await;
    let st = statements(&db.pool).await;
    let calls: Option<i64> = st.as_ref().map(|s| s.iter().map(|r| r.1).sum());
    emit(
        json!({"measure": "throughput", "sessions": live, "runners": runners, "messages": burst,
               "messages_per_s": (burst as f64 / secs).round(),
               "insert_statement_s": (insert_s * 100.0).round() / 100.0,
               "statements_per_message": calls.map(|c| ((c as f64 / burst as f64) * 100.0).round() / 100.0),
               "transactions_per_message": ((x1 - x0) as f64 / burst as f64 * 100.0).round() / 100.0}),
        &mut out,
    );
    // Where the burst's database time went: the statements with the most total time (the
    // runners' and the burst's own insert, which runs the per-row triggers).
    let after = all_statements(&db.pool).await;
    let mut top: Vec<(String, i64, f64)> = after
        .into_iter()
        .map(|(q, calls, total)| {
            let (c0, t0) = all_stats_before
                .iter()
                .find(|b| b.0 == q)
                .map_or((0, 0.0), |b| (b.1, b.2));
            (q, calls - c0, total - t0)
        })
        .filter(|r| r.1 > 0 && !r.0.contains("pg_stat"))
        .collect();
    top.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap());
    for (q, calls, total) in top.into_iter().take(5) {
        let q: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
        emit(
            json!({"measure": "burst_profile", "calls": calls, "total_ms": total.round(),
                   "mean_ms": (total / calls as f64 * 1000.0).round() / 1000.0,
                   "statement": q.chars().take(110).collect::<String>()}),
            &mut out,
        );
    }
    let ids: Vec<String> = sqlx::query_scalar(
        "/* bench */ select id from wa_session where status = 'connected' order by id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut lat = latency(&db, &ids, if quick { 20 } else { 200 }).await;
    lat["sessions"] = json!(live);
    emit(lat, &mut out);

    for h in handles {
        h.stop().await;
    }

    // Prune the oldest tenth of the history with maintenance's own code and default batches.
    let span_s = rows as f64 / 10.0;
    let retention = Duration::from_secs_f64(span_s * 0.9);
    emit(prune_plan(&db, retention.as_secs_f64()).await, &mut out);
    let before = count(&db.pool, "select count(*) from wa_message").await;
    let t0 = Instant::now();
    let report = wa_outbox::maintenance::prune::run_once(
        &db.pool,
        &wa_outbox::maintenance::prune::Config::new(retention),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await;
    let took = t0.elapsed();
    let after = count(&db.pool, "select count(*) from wa_message").await;
    let batches = (report.messages.batches + report.events.batches).max(1);
    emit(
        json!({"measure": "prune", "rows_before": before, "messages_deleted": before - after,
               "events_deleted": report.events.rows, "batches": batches,
               "prune_s": (took.as_secs_f64() * 100.0).round() / 100.0,
               "ms_per_batch": ms(took / batches as u32),
               "rows_per_s": (((before - after) + report.events.rows as i64) as f64 / took.as_secs_f64()).round()}),
        &mut out,
    );
    out
}

#[tokio::main]
async fn main() {
    if std::env::var("BENCH_RUNNER_CHILD").is_ok() {
        return child_runner().await;
    }
    let quick = std::env::var("BENCH_QUICK").is_ok() || !std::env::args().any(|a| a == "--bench");
    let runners = env_num("BENCH_RUNNERS", 10) as usize;
    let mut sizes = if quick {
        vec![(200, 10_000), (1_000, 100_000)]
    } else {
        vec![
            (1_000, 100_000),
            (
                env_num("BENCH_SESSIONS", 10_000),
                env_num("BENCH_ROWS", 10_000_000),
            ),
        ]
    };
    // BENCH_SKIP_SMALL=1: only the big size (a rerun of the long half).
    if std::env::var("BENCH_SKIP_SMALL").is_ok() {
        sizes.remove(0);
    }
    let mut all = Vec::new();
    for (s, r) in sizes {
        all.push(scale_run(s, r, runners, quick).await);
    }
    // Side by side: one line per figure, one column per size.
    let figures: &[(&str, &str)] = &[
        ("prune_plan", "batch_ms"),
        ("prune_plan", "seq_scan"),
        ("views", "status_cli_ms"),
        ("views", "wa_outbox_stats_ms"),
        ("views", "wa_session_overview_ms"),
        ("views", "wa_runner_overview_ms"),
        ("views", "cascade_delete_one_session_ms"),
        ("tick_cost", "claim_ms"),
        ("tick_cost", "renewal_ms"),
        ("throughput", "messages_per_s"),
        ("throughput", "insert_statement_s"),
        ("throughput", "statements_per_message"),
        ("throughput", "transactions_per_message"),
        ("insert_to_claim_latency", "p50_ms"),
        ("insert_to_claim_latency", "p99_ms"),
        ("prune", "prune_s"),
        ("prune", "ms_per_batch"),
        ("prune", "messages_deleted"),
    ];
    println!("# scale, side by side");
    for (m, f) in figures {
        let cells: Vec<String> = all
            .iter()
            .map(|run| {
                run.iter()
                    .find(|v| v["measure"] == *m)
                    .map(|v| v[*f].to_string())
                    .unwrap_or_default()
            })
            .collect();
        println!("{m}.{f}: {}", cells.join(" | "));
    }
    for run in &all {
        for v in run.iter().filter(|v| v["measure"] == "wakeups") {
            println!(
                "wakeups {} runners ({}): reconciler statements/insert {}, dispatcher claims/insert {}",
                v["runners"], v["size"], v["reconciler_statements_per_insert"], v["dispatcher_claims_per_insert"]
            );
        }
    }
}
