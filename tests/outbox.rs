//! The runner's loops on a real PostgreSQL with the in-memory driver: claims, leases, order,
//! at-most-once recovery, drain, retries, bad rows, lost connections.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use wa_outbox::driver::memory::{MemoryDriver, MemoryWorld, SendFault};
use wa_outbox::error_code::ErrorCode;
use wa_outbox::runner::{self, NoLoginStore, RunnerConfig, RunnerHandle, RunnerParts};
use wa_outbox::testing::{test_db, wait_for, TestDb};

fn cfg(capacity: u32, ttl: Duration) -> RunnerConfig {
    let mut c = RunnerConfig::from_config(&wa_outbox::config::Config::defaults());
    c.capacity = capacity;
    c.lease_ttl = ttl;
    c.send_min_interval = Duration::ZERO;
    c.poll_interval = Duration::from_millis(200);
    c.retry_base = Duration::from_millis(100);
    c.send_timeout = Duration::from_secs(2);
    c.drain_timeout = Duration::from_secs(5);
    c.data_dir = std::env::temp_dir().join(format!("wa-outbox-test-{}", uuid::Uuid::new_v4()));
    c
}

async fn start(db: &TestDb, driver: MemoryDriver, cfg: RunnerConfig) -> RunnerHandle {
    let pool = wa_outbox::db::connect_as(&db.url, 10, "wa-outbox-runner-test")
        .await
        .unwrap();
    runner::spawn(RunnerParts {
        maintenance: None,
        pool,
        driver: Arc::new(driver),
        logins: Arc::new(NoLoginStore),
        media: None,
        cfg,
        metrics: None,
    })
    .await
    .unwrap()
}

async fn sessions(pool: &PgPool, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("s{i:03}")).collect();
    sqlx::query("insert into wa_session (id) select unnest($1::text[])")
        .bind(&ids)
        .execute(pool)
        .await
        .unwrap();
    ids
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn status_of(pool: &PgPool, id: i64) -> (String, Option<String>, i32) {
    sqlx::query_as("select status, error_code, attempts from wa_message where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn insert(pool: &PgPool, session: &str, recipient: &str, body: &str) -> i64 {
    sqlx::query_scalar(
        "insert into wa_message (session_id, recipient, body) values ($1, $2, $3) returning id",
    )
    .bind(session)
    .bind(recipient)
    .bind(body)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Every wa_message_id the world saw, with how many times.
fn sent_counts(world: &MemoryWorld) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in world.sent() {
        *m.entry(r.wa_message_id).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_send_ten_thousand_messages_exactly_once_in_order() {
    let db = test_db().await;
    let ids = sessions(&db.pool, 50).await;
    sqlx::query(
        "insert into wa_message (session_id, recipient, body)
         select s, '1555' || lpad(n::text, 7, '0'), s || ':' || lpad(n::text, 4, '0')
         from unnest($1::text[]) s, generate_series(1, 200) n order by n, s",
    )
    .bind(&ids)
    .execute(&db.pool)
    .await
    .unwrap();
    let world = MemoryWorld::new();
    let a = start(
        &db,
        MemoryDriver::new(world.clone()),
        cfg(30, Duration::from_secs(5)),
    )
    .await;
    let b = start(
        &db,
        MemoryDriver::new(world.clone()),
        cfg(30, Duration::from_secs(5)),
    )
    .await;
    wait_for("10,000 messages sent", Duration::from_secs(180), || async {
        (count(
            &db.pool,
            "select count(*) from wa_message where status = 'sent'",
        )
        .await
            == 10_000)
            .then_some(())
    })
    .await;
    let counts = sent_counts(&world);
    assert_eq!(counts.len(), 10_000, "every message reached the server");
    assert!(
        counts.values().all(|&n| n == 1),
        "no message was sent twice"
    );
    assert_eq!(
        world.double_ownership(),
        0,
        "a session was driven by two runners at once"
    );
    // Per-session order: the server saw each session's bodies in insertion order.
    let mut per_session: HashMap<String, Vec<String>> = HashMap::new();
    for r in world.sent() {
        per_session
            .entry(r.session_id)
            .or_default()
            .push(r.body.unwrap());
    }
    for (s, bodies) in per_session {
        let mut sorted = bodies.clone();
        sorted.sort();
        assert_eq!(bodies, sorted, "session {s} out of order");
    }
    // Both runners did work.
    let drivers: HashSet<u64> = world.sent().iter().map(|r| r.driver_id).collect();
    assert_eq!(drivers.len(), 2);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runners_sessions_are_taken_over_and_its_sending_rows_settled_by_id() {
    let db = test_db().await;
    sessions(&db.pool, 2).await;
    let world = MemoryWorld::new();
    // s000's first message reaches the server and then the runner dies; s001's never does.
    world.push_fault("s000", SendFault::HangAfterRecord);
    world.push_fault("s001", SendFault::HangBeforeRecord);
    let mut ids = Vec::new();
    for n in 0..3 {
        for s in ["s000", "s001"] {
            ids.push(insert(&db.pool, s, "15550000001", &format!("{s}-{n}")).await);
        }
    }
    let ttl = Duration::from_secs(2);
    let mut c = cfg(10, ttl);
    c.send_timeout = Duration::from_secs(3600); // the hang must outlive the runner
    let driver_a = MemoryDriver::new(world.clone());
    let a_id = driver_a.id;
    let a = start(&db, driver_a, c).await;
    wait_for(
        "both sessions stuck in sending",
        Duration::from_secs(30),
        || async {
            (count(
                &db.pool,
                "select count(*) from wa_message where status = 'sending'",
            )
            .await
                == 2
                && world.sent_count() == 1)
                .then_some(())
        },
    )
    .await;
    a.kill().await;
    world.kill_driver(a_id);
    let killed_at = std::time::Instant::now();

    let b = start(&db, MemoryDriver::new(world.clone()), cfg(10, ttl)).await;
    wait_for("all six sent", Duration::from_secs(30), || async {
        (count(
            &db.pool,
            "select count(*) from wa_message where status = 'sent'",
        )
        .await
            == 6)
            .then_some(())
    })
    .await;
    assert!(
        killed_at.elapsed() >= ttl.mul_f32(0.9),
        "took over before the lease expired"
    );
    let counts = sent_counts(&world);
    assert_eq!(counts.len(), 6);
    assert!(counts.values().all(|&n| n == 1), "sent twice: {counts:?}");
    // The message that had reached the server was settled without a second send.
    let first: (i32,) = sqlx::query_as("select attempts from wa_message where id = $1")
        .bind(ids[0])
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(first.0, 1);
    assert_eq!(world.double_ownership(), 0);
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_in_flight_sends_releases_leases_and_the_other_runner_takes_over_at_once() {
    let db = test_db().await;
    let ids = sessions(&db.pool, 10).await;
    sqlx::query(
        "insert into wa_message (session_id, recipient, body)
         select s, '15551234567', s || ':' || lpad(n::text, 4, '0') from unnest($1::text[]) s, generate_series(1, 100) n order by n, s",
    )
    .bind(&ids)
    .execute(&db.pool)
    .await
    .unwrap();
    let world = MemoryWorld::new();
    // A long TTL: a takeover well inside it can only come from the drain's release + NOTIFY.
    let ttl = Duration::from_secs(60);
    let a = start(
        &db,
        MemoryDriver::new(world.clone()).with_send_delay(Duration::from_millis(5)),
        cfg(10, ttl),
    )
    .await;
    let a_id = a.id;
    wait_for("a burst under way", Duration::from_secs(30), || async {
        (world.sent_count() >= 100).then_some(())
    })
    .await;
    let b = start(&db, MemoryDriver::new(world.clone()), cfg(10, ttl)).await;
    a.shutdown().await.expect("drain exits cleanly");
    let drained_at = std::time::Instant::now();
    assert_eq!(
        count(
            &db.pool,
            &format!("select count(*) from wa_runner where id = '{a_id}'")
        )
        .await,
        0,
        "runner row deleted"
    );
    assert_eq!(
        count(
            &db.pool,
            &format!(
                "select count(*) from wa_message where status = 'sending' and runner_id = '{a_id}'"
            )
        )
        .await,
        0,
        "in-flight sends finished"
    );
    wait_for(
        "the other runner owns all ten",
        Duration::from_secs(10),
        || async {
            (count(
                &db.pool,
                &format!(
                    "select count(*) from wa_session where runner_id = '{}'",
                    b.id
                ),
            )
            .await
                == 10)
                .then_some(())
        },
    )
    .await;
    assert!(
        drained_at.elapsed() < Duration::from_secs(10),
        "takeover waited for the lease"
    );
    wait_for("all sent", Duration::from_secs(60), || async {
        (count(
            &db.pool,
            "select count(*) from wa_message where status = 'sent'",
        )
        .await
            == 1000)
            .then_some(())
    })
    .await;
    let counts = sent_counts(&world);
    assert_eq!(counts.len(), 1000);
    assert!(counts.values().all(|&n| n == 1));
    assert_eq!(world.double_ownership(), 0);
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_scheduled_and_priority_messages() {
    let db = test_db().await;
    sessions(&db.pool, 1).await;
    let p = &db.pool;
    let normal = insert(p, "s000", "15550000001", "normal").await;
    let urgent: i64 = sqlx::query_scalar("insert into wa_message (session_id, recipient, body, priority) values ('s000', '15550000001', 'urgent', -1) returning id")
        .fetch_one(p).await.unwrap();
    let later: i64 = sqlx::query_scalar("insert into wa_message (session_id, recipient, body, not_before) values ('s000', '15550000001', 'later', now() + interval '1500 milliseconds') returning id")
        .fetch_one(p).await.unwrap();
    let cancelled = insert(p, "s000", "15550000001", "cancelled").await;
    sqlx::query("update wa_message set status = 'cancelled' where id = $1")
        .bind(cancelled)
        .execute(p)
        .await
        .unwrap();

    let world = MemoryWorld::new();
    let r = start(
        &db,
        MemoryDriver::new(world.clone()),
        cfg(5, Duration::from_secs(5)),
    )
    .await;
    wait_for("three sent", Duration::from_secs(20), || async {
        (count(p, "select count(*) from wa_message where status = 'sent'").await == 3).then_some(())
    })
    .await;
    let bodies: Vec<String> = world.sent().into_iter().map(|r| r.body.unwrap()).collect();
    assert_eq!(bodies, ["urgent", "normal", "later"]);
    let on_time: bool =
        sqlx::query_scalar("select sent_at >= not_before from wa_message where id = $1")
            .bind(later)
            .fetch_one(p)
            .await
            .unwrap();
    assert!(on_time, "a scheduled message went out early");
    assert_eq!(status_of(p, cancelled).await.0, "cancelled");
    assert_eq!(status_of(p, normal).await.0, "sent");
    assert_eq!(status_of(p, urgent).await.0, "sent");
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_back_off_then_exhaust_and_permanent_ones_fail_at_once() {
    let db = test_db().await;
    sessions(&db.pool, 1).await;
    let p = &db.pool;
    let world = MemoryWorld::new();
    for _ in 0..4 {
        world.push_fault("s000", SendFault::Transient(ErrorCode::SendTimeout));
    }
    let doomed: i64 = sqlx::query_scalar("insert into wa_message (session_id, recipient, body, max_attempts) values ('s000', '15550000001', 'doomed', 4) returning id")
        .fetch_one(p).await.unwrap();
    let r = start(
        &db,
        MemoryDriver::new(world.clone()),
        cfg(5, Duration::from_secs(5)),
    )
    .await;
    wait_for("doomed failed", Duration::from_secs(30), || async {
        (status_of(p, doomed).await.0 == "failed").then_some(())
    })
    .await;
    assert_eq!(
        status_of(p, doomed).await,
        ("failed".into(), Some("attempts_exhausted".into()), 4)
    );
    let wa_id: String = sqlx::query_scalar("select wa_message_id from wa_message where id = $1")
        .bind(doomed)
        .fetch_one(p)
        .await
        .unwrap();
    let calls = world.send_calls(&wa_id);
    assert_eq!(calls.len(), 4);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    // 100 ms base doubling with ±25 % jitter: each gap is clearly longer than the one before.
    assert!(gaps[0] >= Duration::from_millis(75), "{gaps:?}");
    assert!(
        gaps[1] > gaps[0] && gaps[2] > gaps[1],
        "delays do not grow: {gaps:?}"
    );
    assert_eq!(world.sent_count(), 0);

    // One transient failure, then success.
    world.push_fault("s000", SendFault::Transient(ErrorCode::BrowserCrashed));
    let flaky = insert(p, "s000", "15550000001", "flaky").await;
    // A permanent one.
    world.set_unregistered("15550000002@c.us");
    let stranger = insert(p, "s000", "15550000002", "stranger").await;
    wait_for(
        "flaky sent, stranger failed",
        Duration::from_secs(30),
        || async {
            (status_of(p, flaky).await.0 == "sent" && status_of(p, stranger).await.0 == "failed")
                .then_some(())
        },
    )
    .await;
    assert_eq!(status_of(p, flaky).await, ("sent".into(), None, 2));
    assert_eq!(
        status_of(p, stranger).await,
        ("failed".into(), Some("not_on_whatsapp".into()), 1)
    );
    let bodies: Vec<String> = world.sent().into_iter().map(|r| r.body.unwrap()).collect();
    assert_eq!(bodies, ["flaky"], "nothing reached an unregistered number");
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_send_is_retried_under_a_new_id() {
    let db = test_db().await;
    sessions(&db.pool, 1).await;
    let p = &db.pool;
    let world = MemoryWorld::new();
    world.push_fault("s000", SendFault::Refused);
    let id = insert(p, "s000", "15550000001", "refused once").await;
    let r = start(
        &db,
        MemoryDriver::new(world.clone()),
        cfg(5, Duration::from_secs(5)),
    )
    .await;
    wait_for("sent after a refusal", Duration::from_secs(30), || async {
        (status_of(p, id).await.0 == "sent").then_some(())
    })
    .await;
    assert_eq!(status_of(p, id).await, ("sent".into(), None, 2));
    let wa_id: String = sqlx::query_scalar("select wa_message_id from wa_message where id = $1")
        .bind(id)
        .fetch_one(p)
        .await
        .unwrap();
    let calls = world.send_call_ids();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_ne!(calls[0], calls[1], "the retry reused the refused id");
    assert_eq!(calls[1], wa_id);
    let sent = world.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].wa_message_id, wa_id);
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_fail_with_their_code_and_the_runner_keeps_serving() {
    let db = test_db().await;
    sessions(&db.pool, 1).await;
    let p = &db.pool;
    let cases: Vec<(&str, &str)> = vec![
        ("insert into wa_message (session_id, recipient, body) values ('s000', 'hello', 'x') returning id", "invalid_recipient"),
        ("insert into wa_message (session_id, recipient, body) values ('s000', '12@c.us', 'x') returning id", "invalid_recipient"),
        ("insert into wa_message (session_id, recipient, body) values ('s000', '+1 (555) 000-0001 ext', 'x') returning id", "invalid_recipient"),
        ("insert into wa_message (session_id, recipient) values ('s000', '15550000001') returning id", "empty_message"),
        ("insert into wa_message (session_id, recipient, body) values ('s000', '15550000001', repeat('a', 70000)) returning id", "body_too_long"),
        ("insert into wa_message (session_id, recipient, kind) values ('s000', '15550000001', 'image') returning id", "media_missing"),
        ("insert into wa_message (session_id, recipient, kind, media_data) values ('s000', '15550000001', 'image', '\\x89504e47') returning id", "media_missing"),
        ("insert into wa_message (session_id, recipient, body, options) values ('s000', '15550000001', 'x', '{\"bold\": true}') returning id", "invalid_options"),
        ("insert into wa_message (session_id, recipient, body, options) values ('s000', '15550000001', 'x', '{\"reply_to\": 5}') returning id", "invalid_options"),
    ];
    let mut bad = Vec::new();
    for (i, (sql, code)) in cases.iter().enumerate() {
        bad.push((
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(p)
                .await
                .unwrap(),
            *code,
        ));
        insert(p, "s000", "+1 (555) 000-0001", &format!("good {i}")).await;
    }
    let world = MemoryWorld::new();
    let r = start(
        &db,
        MemoryDriver::new(world.clone()),
        cfg(5, Duration::from_secs(5)),
    )
    .await;
    wait_for("every row settled", Duration::from_secs(30), || async {
        (count(
            p,
            "select count(*) from wa_message where status in ('queued', 'sending')",
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
    for (id, code) in bad {
        let (status, got, attempts) = status_of(p, id).await;
        assert_eq!(
            (status.as_str(), got.as_deref(), attempts),
            ("failed", Some(code), 1),
            "row {id}"
        );
        let err: Option<String> = sqlx::query_scalar("select error from wa_message where id = $1")
            .bind(id)
            .fetch_one(p)
            .await
            .unwrap();
        assert!(
            err.is_some_and(|e| !e.is_empty()),
            "row {id} has no human error text"
        );
    }
    assert_eq!(
        world.sent_count(),
        cases.len(),
        "only the good rows were sent"
    );
    assert!(world.sent().iter().all(|r| r.chat_id == "15550000001@c.us"));
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_survives_its_connections_being_killed() {
    let db = test_db().await;
    sessions(&db.pool, 3).await;
    let p = &db.pool;
    let world = MemoryWorld::new();
    let r = start(
        &db,
        MemoryDriver::new(world.clone()),
        cfg(5, Duration::from_secs(5)),
    )
    .await;
    insert(p, "s000", "15550000001", "before").await;
    wait_for("first sent", Duration::from_secs(20), || async {
        (world.sent_count() == 1).then_some(())
    })
    .await;
    let killed: i64 = sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and application_name = 'wa-outbox-runner-test') t",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert!(killed >= 1, "no runner connection was found to kill");
    for s in ["s000", "s001", "s002"] {
        insert(p, s, "15550000001", &format!("after {s}")).await;
    }
    wait_for(
        "sent after the reconnect",
        Duration::from_secs(30),
        || async { (world.sent_count() == 4).then_some(()) },
    )
    .await;
    assert!(sent_counts(&world).values().all(|&n| n == 1));
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaction_that_fails_mid_send_is_never_tried_again() {
    // A reaction's key is the page's own: after a send that may have reached the page, nothing
    // can ask whether it went out, so a transient failure ends it instead of a retry.
    let db = test_db().await;
    sessions(&db.pool, 1).await;
    let p = &db.pool;
    let world = MemoryWorld::new();
    let parent = insert(p, "s000", "15550000001", "react to me").await;
    let r = start(
        &db,
        MemoryDriver::new(world.clone()),
        cfg(5, Duration::from_secs(5)),
    )
    .await;
    wait_for("parent sent", Duration::from_secs(30), || async {
        (status_of(p, parent).await.0 == "sent").then_some(())
    })
    .await;
    world.push_fault("s000", SendFault::Transient(ErrorCode::SendTimeout));
    let reaction: i64 = sqlx::query_scalar(
        "insert into wa_message (session_id, recipient, kind, body, options)
         values ('s000', '15550000001', 'reaction', '👍', jsonb_build_object('target_id', $1::bigint))
         returning id",
    )
    .bind(parent)
    .fetch_one(p)
    .await
    .unwrap();
    wait_for("reaction settled", Duration::from_secs(30), || async {
        (status_of(p, reaction).await.0 == "failed").then_some(())
    })
    .await;
    assert_eq!(
        status_of(p, reaction).await,
        ("failed".into(), Some("send_failed".into()), 1)
    );
    let wa_id: String = sqlx::query_scalar("select wa_message_id from wa_message where id = $1")
        .bind(reaction)
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(world.send_calls(&wa_id).len(), 1, "tried again");
    assert_eq!(world.sent_count(), 1, "only the parent reached the server");
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_that_fails_mid_send_is_never_tried_again() {
    // A forward's copy gets a key the page makes (WAWebForwardMessagesToChat): as a reaction, a
    // transient failure once it may have reached the page ends it instead of a retry.
    let db = test_db().await;
    sessions(&db.pool, 1).await;
    let p = &db.pool;
    let world = MemoryWorld::new();
    let original = insert(p, "s000", "15550000001", "pass this on").await;
    let r = start(
        &db,
        MemoryDriver::new(world.clone()),
        cfg(5, Duration::from_secs(5)),
    )
    .await;
    wait_for("original sent", Duration::from_secs(30), || async {
        (status_of(p, original).await.0 == "sent").then_some(())
    })
    .await;
    world.push_fault("s000", SendFault::Transient(ErrorCode::SendTimeout));
    let forward: i64 = sqlx::query_scalar(
        "insert into wa_message (session_id, recipient, kind, options)
         values ('s000', '15550000002', 'forward', jsonb_build_object('target_id', $1::bigint))
         returning id",
    )
    .bind(original)
    .fetch_one(p)
    .await
    .unwrap();
    wait_for("forward settled", Duration::from_secs(30), || async {
        (status_of(p, forward).await.0 == "failed").then_some(())
    })
    .await;
    let (status, code, attempts) = status_of(p, forward).await;
    assert_eq!(
        (status.as_str(), code.as_deref(), attempts),
        ("failed", Some("send_failed"), 1)
    );
    let (wa_id, error): (String, String) =
        sqlx::query_as("select wa_message_id, error from wa_message where id = $1")
            .bind(forward)
            .fetch_one(p)
            .await
            .unwrap();
    assert!(error.contains("may or may not"), "{error}");
    assert_eq!(world.send_calls(&wa_id).len(), 1, "tried again");
    assert_eq!(
        world.sent_count(),
        1,
        "only the original reached the server"
    );
    r.shutdown().await.unwrap();
}
