//! Command rows with the in-memory driver on a real PostgreSQL: a command wakes a hibernated
//! session, and a command a dead runner left `running` is run by the session's next owner.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use wa_outbox::driver::memory::{MemoryDriver, MemoryWorld};
use wa_outbox::driver::ChatState;
use wa_outbox::runner::{self, NoLoginStore, RunnerConfig, RunnerHandle, RunnerParts};
use wa_outbox::testing::{test_db, wait_for, TestDb};

const STEP: Duration = Duration::from_secs(30);

fn cfg() -> RunnerConfig {
    let mut c = RunnerConfig::from_config(&wa_outbox::config::Config::defaults());
    c.capacity = 10;
    c.lease_ttl = Duration::from_secs(5);
    c.send_min_interval = Duration::ZERO;
    c.poll_interval = Duration::from_millis(200);
    c.retry_base = Duration::from_millis(100);
    c.send_timeout = Duration::from_secs(2);
    c.drain_timeout = Duration::from_secs(5);
    c.data_dir = std::env::temp_dir().join(format!("wa-outbox-test-{}", uuid::Uuid::new_v4()));
    c
}

async fn start(db: &TestDb, world: &Arc<MemoryWorld>, cfg: RunnerConfig) -> RunnerHandle {
    let pool = wa_outbox::db::connect_as(&db.url, 10, "wa-outbox-command-test")
        .await
        .unwrap();
    runner::spawn(RunnerParts {
        maintenance: None,
        pool,
        driver: Arc::new(MemoryDriver::new(world.clone())),
        logins: Arc::new(NoLoginStore),
        media: None,
        cfg,
        metrics: None,
    })
    .await
    .unwrap()
}

async fn session_status(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("select status from wa_session where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn command_row(pool: &PgPool, id: i64) -> (String, i32, Option<serde_json::Value>) {
    sqlx::query_as("select status, attempts, result from wa_command where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_wakes_a_hibernated_session() {
    let db = test_db().await;
    let p = &db.pool;
    let world = MemoryWorld::new();
    let mut c = cfg();
    c.idle_after = Duration::from_secs(1);
    let r = start(&db, &world, c).await;
    sqlx::query("insert into wa_session (id) values ('hib')")
        .execute(p)
        .await
        .unwrap();
    wait_for("hibernated", STEP, || async {
        (session_status(p, "hib").await == "hibernated").then_some(())
    })
    .await;
    assert_eq!(world.starts("hib"), 1);
    let id: i64 = sqlx::query_scalar(
        "insert into wa_command (session_id, kind, args) values ('hib', 'presence', $1) returning id",
    )
    .bind(json!({"chat": "15550001111", "state": "typing"}))
    .fetch_one(p)
    .await
    .unwrap();
    wait_for("the command done", STEP, || async {
        (command_row(p, id).await.0 == "done").then_some(())
    })
    .await;
    assert_eq!(world.starts("hib"), 2, "woken once");
    assert_eq!(
        world.chat_states(),
        vec![(
            "hib".to_string(),
            "15550001111@c.us".to_string(),
            ChatState::Typing
        )]
    );
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_left_running_by_a_dead_runner_is_run_by_the_next_owner() {
    let db = test_db().await;
    let p = &db.pool;
    let world = MemoryWorld::new();
    sqlx::query("insert into wa_session (id) values ('left')")
        .execute(p)
        .await
        .unwrap();
    // A runner claimed it, then died: the row is `running` under a runner that is gone.
    let id: i64 = sqlx::query_scalar(
        "insert into wa_command (session_id, kind, args, status, attempts, runner_id, started_at)
         values ('left', 'mark_read', $1, 'running', 1, gen_random_uuid(), now()) returning id",
    )
    .bind(json!({"chat": "15550002222@c.us"}))
    .fetch_one(p)
    .await
    .unwrap();
    // And one that was interrupted on every attempt already fails instead of running again.
    let spent: i64 = sqlx::query_scalar(
        "insert into wa_command (session_id, kind, args, status, attempts, runner_id, started_at)
         values ('left', 'mark_read', $1, 'running', 3, gen_random_uuid(), now()) returning id",
    )
    .bind(json!({"chat": "15550003333@c.us"}))
    .fetch_one(p)
    .await
    .unwrap();
    let r = start(&db, &world, cfg()).await;
    wait_for("both settled", STEP, || async {
        let a = command_row(p, id).await.0;
        let b = command_row(p, spent).await.0;
        (a == "done" && b == "failed").then_some(())
    })
    .await;
    let (_, attempts, result) = command_row(p, id).await;
    assert_eq!(attempts, 2);
    assert_eq!(result.unwrap()["chat"], "15550002222@c.us");
    let code: Option<String> =
        sqlx::query_scalar("select error_code from wa_command where id = $1")
            .bind(spent)
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(code.as_deref(), Some("command_failed"));
    assert_eq!(
        world.read_marks(),
        vec![("left".to_string(), "15550002222@c.us".to_string())]
    );
    r.shutdown().await.unwrap();
}
