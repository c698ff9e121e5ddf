//! Hibernation, waking by a message, and forgetting idle sessions, with the real encrypted
//! login store and the leader-run maintenance.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wa_outbox::auth_store::{AuthStore, KeyRing};
use wa_outbox::config::Config;
use wa_outbox::maintenance::MaintenanceConfig;
use wa_outbox::runner::{self, RunnerConfig, RunnerHandle, RunnerParts};
use wa_outbox::testing::{test_db, wait_for, TestDb};

use crate::*;

async fn runner_with(db: &TestDb, extra: &[(&str, &str)]) -> (RunnerHandle, std::path::PathBuf) {
    let data_dir = std::env::temp_dir().join(format!("wa-life-{}", uuid::Uuid::new_v4().simple()));
    let mut env: HashMap<&str, String> = [
        ("WA_WEB_URL", format!("{}/", sim().await.url)),
        ("WA_DATA_DIR", data_dir.display().to_string()),
        ("WA_SEND_MIN_INTERVAL", "0".into()),
        ("WA_LEASE_TTL", "6s".into()),
        (
            "WA_AUTH_KEY",
            "t1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into(),
        ),
    ]
    .into();
    for (k, v) in extra {
        env.insert(k, v.to_string());
    }
    let c = Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    let pool = wa_outbox::db::connect_as(&db.url, 10, "wa-outbox-e2e")
        .await
        .unwrap();
    let mut cfg = RunnerConfig::from_config(&c);
    cfg.poll_interval = Duration::from_millis(200);
    let keys = KeyRing::from_config(&c, false).unwrap();
    let h = runner::spawn(RunnerParts {
        maintenance: Some(MaintenanceConfig::from_config(&c).unwrap()),
        logins: Arc::new(AuthStore::new(pool.clone(), keys)),
        pool,
        driver: Arc::new(wa_outbox::driver::chromium::ChromiumDriver::from_config(&c)),
        media: None,
        cfg,
        metrics: None,
    })
    .await
    .unwrap();
    (h, data_dir)
}

async fn stored_logins(db: &TestDb) -> i64 {
    sqlx::query_scalar("select count(*) from wa_session_auth")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_hibernates_and_a_message_wakes_it_without_a_qr() {
    hibernate_and_wake("per-session", "life_h", "15550500001").await;
}

/// In shared-browser mode the login lives in the context's memory: hibernation exports it into
/// the encrypted archive, and the wake imports it into a fresh context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_browser_an_idle_session_hibernates_and_a_message_wakes_it_without_a_qr() {
    hibernate_and_wake("shared", "life_hs", "15550500003").await;
}

async fn hibernate_and_wake(mode: &str, sid: &str, phone: &str) {
    let db = test_db().await;
    let p = &db.pool;
    let (r, data_dir) =
        runner_with(&db, &[("WA_IDLE_AFTER", "15s"), ("WA_BROWSER_MODE", mode)]).await;
    link(p, sid, phone).await;
    wait_for("the login stored", STEP, || async {
        (stored_logins(&db).await == 1).then_some(())
    })
    .await;
    let t_idle = Instant::now();
    wait_status(p, sid, "hibernated").await;
    eprintln!(
        "FIGURE hibernated {:.1} s after going idle (WA_IDLE_AFTER 15 s)",
        t_idle.elapsed().as_secs_f64()
    );
    let owner: Option<uuid::Uuid> =
        sqlx::query_scalar("select runner_id from wa_session where id = $1")
            .bind(sid)
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(owner, None, "a hibernated session holds no lease");
    if mode == "per-session" {
        wait_for("its browser gone", Duration::from_secs(15), || async {
            chromium_pids(&data_dir.join("profiles").join(sid))
                .is_empty()
                .then_some(())
        })
        .await;
    }
    // What wakes it is the archive in the database, not what this runner left on disk.
    std::fs::remove_dir_all(data_dir.join("profiles").join(sid)).unwrap();
    let since: i64 = sqlx::query_scalar("select coalesce(max(id), 0) from wa_event")
        .fetch_one(p)
        .await
        .unwrap();

    let t0 = Instant::now();
    let id = insert(p, "insert into wa_message (session_id, recipient, body) values ($1, '15550599999', 'wake up') returning id", &[sid]).await;
    wait_for("the waking message sent", STEP, || async {
        matches!(msg(p, id).await.0.as_str(), "sent" | "delivered" | "read").then_some(())
    })
    .await;
    let wake = t0.elapsed();
    eprintln!(
        "FIGURE wake ({mode}): INSERT for a hibernated session → message sent in {:.2} s",
        wake.as_secs_f64()
    );
    let qr: i64 = sqlx::query_scalar(
        "select count(*) from wa_event where id > $1 and payload->>'status' = 'qr_pending'",
    )
    .bind(since)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(qr, 0, "waking showed a QR");
    assert_eq!(
        sim().await.linked_devices(phone).await,
        1,
        "a new device was linked"
    );
    assert_eq!(sim().await.sent_by(phone).await.len(), 1);
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_idle_past_forget_after_is_logged_out_and_its_login_deleted() {
    let db = test_db().await;
    let p = &db.pool;
    let (r, _) = runner_with(
        &db,
        &[
            ("WA_IDLE_AFTER", "12s"),
            ("WA_FORGET_AFTER", "20s"),
            ("WA_MAINTENANCE_CRON", "* * * * * *"),
        ],
    )
    .await;
    link(p, "life_f", "15550500002").await;
    wait_status(p, "life_f", "hibernated").await;
    assert_eq!(stored_logins(&db).await, 1);
    wait_status(p, "life_f", "logged_out").await;
    assert_eq!(stored_logins(&db).await, 0, "the archive is gone");
    wait_for(
        "device unlinked at the simulator",
        Duration::from_secs(20),
        || async { (sim().await.linked_devices("15550500002").await == 0).then_some(()) },
    )
    .await;
    r.shutdown().await.unwrap();
}

/// A page stuck disconnected (UNLAUNCHED, wppconnect#2813) is restarted once
/// WA_RECONNECT_TIMEOUT passes and comes back from its login without a QR; a page in a state it
/// never leaves (TOS_BLOCK) ends its session as failed with that state's code, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_page_is_restarted_and_a_banned_account_fails_with_its_code() {
    let db = test_db().await;
    let (r, _) = runner_with(&db, &[("WA_RECONNECT_TIMEOUT", "3s")]).await;
    let p = &db.pool;
    let (stuck, banned) = ("15550100041", "15550100042");
    link(p, "e2e_stuck", stuck).await;
    link(p, "e2e_banned", banned).await;
    let since: i64 = sqlx::query_scalar("select coalesce(max(id), 0) from wa_event")
        .fetch_one(p)
        .await
        .unwrap();

    sim()
        .await
        .post(
            "/_sim/state",
            json!({"phone": stuck, "state": "UNLAUNCHED"}),
        )
        .await;
    sim()
        .await
        .post(
            "/_sim/state",
            json!({"phone": banned, "state": "TOS_BLOCK"}),
        )
        .await;

    wait_for("the banned session failed", STEP, || async {
        let (status, _, _, _, code) = session(p, "e2e_banned").await;
        (status == "failed").then_some(code)
    })
    .await
    .filter(|c| c == "account_banned")
    .expect("account_banned");

    // Restarted (restart_count goes up) and connected again from its login.
    wait_for("the stuck page restarted and connected", STEP, || async {
        let (restarts, status): (i32, String) =
            sqlx::query_as("select restart_count, status from wa_session where id = 'e2e_stuck'")
                .fetch_one(p)
                .await
                .unwrap();
        let starting: i64 = sqlx::query_scalar(
            "select count(*) from wa_event where id > $1 and session_id = 'e2e_stuck' and payload->>'status' = 'starting'",
        )
        .bind(since)
        .fetch_one(p)
        .await
        .unwrap();
        (status == "connected" && (restarts > 0 || starting > 0)).then_some(())
    })
    .await;
    let qr: i64 = sqlx::query_scalar(
        "select count(*) from wa_event where id > $1 and session_id = 'e2e_stuck' and payload->>'status' = 'qr_pending'",
    )
    .bind(since)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(qr, 0, "the restarted page showed a QR");
    assert_eq!(sim().await.linked_devices(stuck).await, 1);
    r.shutdown().await.unwrap();
}
