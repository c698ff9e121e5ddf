//! Incoming calls through the runner's loop with the in-memory driver on a real PostgreSQL: one
//! `call` event per call, a decline never repeated, and a decline the page could not send tried
//! again once the page is connected again (session/calls.rs).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use wa_outbox::driver::memory::{MemoryDriver, MemoryWorld};
use wa_outbox::driver::{DriverEvent, IncomingCall};
use wa_outbox::runner::{self, NoLoginStore, RunnerConfig, RunnerHandle, RunnerParts};
use wa_outbox::testing::{test_db, wait_for, TestDb};

const STEP: Duration = Duration::from_secs(30);

fn cfg() -> RunnerConfig {
    let mut c = RunnerConfig::from_config(&wa_outbox::config::Config::defaults());
    c.lease_ttl = Duration::from_secs(5);
    c.poll_interval = Duration::from_millis(200);
    c.retry_base = Duration::from_millis(100);
    c.send_timeout = Duration::from_secs(2);
    c.drain_timeout = Duration::from_secs(5);
    c.data_dir = std::env::temp_dir().join(format!("wa-outbox-test-{}", uuid::Uuid::new_v4()));
    c
}

async fn start(db: &TestDb, world: &Arc<MemoryWorld>) -> RunnerHandle {
    let pool = wa_outbox::db::connect_as(&db.url, 10, "wa-outbox-calls-test")
        .await
        .unwrap();
    runner::spawn(RunnerParts {
        maintenance: None,
        pool,
        driver: Arc::new(MemoryDriver::new(world.clone())),
        logins: Arc::new(NoLoginStore),
        media: None,
        cfg: cfg(),
        metrics: None,
    })
    .await
    .unwrap()
}

fn call(id: &str) -> DriverEvent {
    DriverEvent::Call(IncomingCall {
        id: id.into(),
        from: Some("15557654321@c.us".into()),
        from_lid: None,
        is_video: false,
        is_group: false,
        group_id: None,
        timestamp: 1_786_380_794,
        ringing: true,
    })
}

async fn call_events(pool: &PgPool, session: &str) -> Vec<(String, Value)> {
    sqlx::query_as(
        "select wa_message_id, payload from wa_event where session_id = $1 and kind = 'call' order by id",
    )
    .bind(session)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits until the session's call events are `n`, and returns them.
async fn wait_calls(pool: &PgPool, session: &str, n: usize) -> Vec<(String, Value)> {
    wait_for(&format!("{n} call events"), STEP, || async {
        let e = call_events(pool, session).await;
        (e.len() == n).then_some(e)
    })
    .await
}

async fn connected(db: &TestDb, world: &Arc<MemoryWorld>, id: &str, reject: bool) -> RunnerHandle {
    let r = start(db, world).await;
    sqlx::query("insert into wa_session (id, reject_calls) values ($1, $2)")
        .bind(id)
        .bind(reject)
        .execute(&db.pool)
        .await
        .unwrap();
    wait_for("connected", STEP, || async {
        let s: String = sqlx::query_scalar("select status from wa_session where id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (s == "connected").then_some(())
    })
    .await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_the_page_could_not_send_goes_out_once_after_the_reconnect() {
    let db = test_db().await;
    let p = &db.pool;
    let world = MemoryWorld::new();
    let r = connected(&db, &world, "rc", true).await;

    // The page's socket is down: the decline fails and the call waits, unrecorded.
    world.fail_next_rejects("rc", 1);
    assert!(world.emit("rc", call("CALL1")).await);
    // A second call, declined at once, shows the first was handled (events go in order).
    assert!(world.emit("rc", call("CALL2")).await);
    let events = wait_calls(p, "rc", 1).await;
    assert_eq!(events[0].0, "CALL2");
    assert_eq!(events[0].1["rejected"], true);
    assert_eq!(world.rejects(), vec![("rc".into(), "CALL2".into())]);

    // The page reconnects: the waiting decline goes out, once, and the call is recorded.
    assert!(
        world
            .emit(
                "rc",
                DriverEvent::Disconnected {
                    reason: "OPENING".into()
                }
            )
            .await
    );
    assert!(
        world
            .emit(
                "rc",
                DriverEvent::Connected {
                    phone: "15550000000".into(),
                    push_name: None
                }
            )
            .await
    );
    let events = wait_calls(p, "rc", 2).await;
    assert_eq!(events[1].0, "CALL1");
    assert_eq!(
        (
            events[1].1["rejected"].clone(),
            events[1].1["reject_error"].clone()
        ),
        (Value::Bool(true), Value::Null)
    );

    // The page reports both calls again (a re-offer, a reload): nothing is declined or
    // recorded twice. CALL3 marks the end of what the runner has handled.
    assert!(world.emit("rc", call("CALL1")).await);
    assert!(world.emit("rc", call("CALL2")).await);
    assert!(world.emit("rc", call("CALL3")).await);
    let events = wait_calls(p, "rc", 3).await;
    assert_eq!(events[2].0, "CALL3");
    assert_eq!(
        world.rejects(),
        vec![
            ("rc".into(), "CALL2".into()),
            ("rc".into(), "CALL1".into()),
            ("rc".into(), "CALL3".into())
        ]
    );
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reject_calls_nothing_is_declined_and_a_recorded_call_is_left_alone() {
    let db = test_db().await;
    let p = &db.pool;
    let world = MemoryWorld::new();
    let r = connected(&db, &world, "keep", false).await;
    assert!(world.emit("keep", call("K1")).await);
    let events = wait_calls(p, "keep", 1).await;
    assert_eq!(
        (
            events[0].1["rejected"].clone(),
            events[0].1["reject_calls"].clone()
        ),
        (Value::Bool(false), Value::Bool(false))
    );

    // Turned on while running: the next call is declined. A call an earlier runner already
    // recorded is neither declined nor recorded again.
    sqlx::query("update wa_session set reject_calls = true where id = 'keep'")
        .execute(p)
        .await
        .unwrap();
    sqlx::query(
        "insert into wa_event (session_id, kind, wa_message_id, payload) values ('keep', 'call', 'OLD', '{}')",
    )
    .execute(p)
    .await
    .unwrap();
    assert!(world.emit("keep", call("OLD")).await);
    assert!(world.emit("keep", call("K2")).await);
    let events = wait_calls(p, "keep", 3).await;
    assert_eq!(events[2].0, "K2");
    assert_eq!(events[2].1["rejected"], true);
    assert_eq!(world.rejects(), vec![("keep".into(), "K2".into())]);
    r.shutdown().await.unwrap();
}
