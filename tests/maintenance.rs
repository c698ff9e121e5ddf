//! Maintenance on real PostgreSQL: each task on seeded rows, batching, and leader election.
//! Service tests wait on the reports the service emits, never on sleeps.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wa_outbox::config::Config;
use wa_outbox::maintenance::{
    self, dead_runners, expire_leases, fail_logged_out, forget_idle, prune, Batching,
    MaintenanceConfig, MaintenanceReport,
};
use wa_outbox::testing::test_db;

fn config(vars: &[(&str, &str)]) -> Config {
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| env.get(k).cloned()).unwrap()
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(sql).execute(pool).await.unwrap();
}

async fn session_row(pool: &PgPool, id: &str) -> (Option<Uuid>, String, String) {
    sqlx::query_as("select runner_id, desired_state, status from wa_session where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn ids(pool: &PgPool, sql: &str) -> Vec<String> {
    let mut v: Vec<String> = sqlx::query_scalar(sql).fetch_all(pool).await.unwrap();
    v.sort();
    v
}

fn never() -> CancellationToken {
    CancellationToken::new()
}

#[tokio::test]
async fn expire_leases_clears_only_dead_runners_expired_leases() {
    let db = test_db().await;
    let live = Uuid::new_v4();
    let stale = Uuid::new_v4();
    let gone = Uuid::new_v4();
    exec(
        &db.pool,
        &format!(
            "insert into wa_runner (id, host, pid, version, capacity, heartbeat_at) values
               ('{live}', 'h', 1, 'v', 10, now()),
               ('{stale}', 'h', 2, 'v', 10, now() - interval '1 hour');
             insert into wa_session (id, status, runner_id, lease_until) values
               ('gone_expired', 'connected', '{gone}', now() - interval '1 hour'),
               ('stale_expired', 'connected', '{stale}', now() - interval '1 hour'),
               ('gone_null_lease', 'starting', '{gone}', null),
               ('live_expired', 'connected', '{live}', now() - interval '1 hour'),
               ('gone_in_grace', 'connected', '{gone}', now() - interval '1 second'),
               ('gone_leased', 'connected', '{gone}', now() + interval '1 hour'),
               ('unowned', 'hibernated', null, null);"
        ),
    )
    .await;
    let cfg = expire_leases::Config::new(Duration::from_secs(30));
    cfg.validate().unwrap();
    let r = expire_leases::run_once(&db.pool, &cfg, &never()).await;
    assert_eq!(r.error, None);
    assert_eq!(r.rows, 3);
    assert_eq!(
        ids(
            &db.pool,
            "select id from wa_session where runner_id is null and lease_until is null"
        )
        .await,
        [
            "gone_expired",
            "gone_null_lease",
            "stale_expired",
            "unowned"
        ]
    );
    assert_eq!(session_row(&db.pool, "live_expired").await.0, Some(live));
    assert_eq!(session_row(&db.pool, "gone_in_grace").await.0, Some(gone));
    assert_eq!(session_row(&db.pool, "gone_leased").await.0, Some(gone));
    // Nothing else about the session changes.
    assert_eq!(session_row(&db.pool, "gone_expired").await.2, "connected");
    assert_eq!(
        expire_leases::run_once(&db.pool, &cfg, &never()).await.rows,
        0
    );
}

#[tokio::test]
async fn dead_runners_removes_long_silent_runners_only() {
    let db = test_db().await;
    exec(
        &db.pool,
        "insert into wa_runner (id, host, pid, version, capacity, heartbeat_at) values
           (gen_random_uuid(), 'live', 1, 'v', 10, now()),
           (gen_random_uuid(), 'late', 2, 'v', 10, now() - interval '45 seconds'),
           (gen_random_uuid(), 'dead', 3, 'v', 10, now() - interval '2 minutes'),
           (gen_random_uuid(), 'long_dead', 4, 'v', 10, now() - interval '3 days');",
    )
    .await;
    let cfg = dead_runners::Config::new(Duration::from_secs(30));
    assert_eq!(cfg.dead_after, Duration::from_secs(90));
    let r = dead_runners::run_once(&db.pool, &cfg, &never()).await;
    assert_eq!((r.rows, r.error), (2, None));
    assert_eq!(
        ids(&db.pool, "select host from wa_runner").await,
        ["late", "live"]
    );
}

#[tokio::test]
async fn forget_idle_asks_for_logout_or_marks_logged_out() {
    let db = test_db().await;
    let runner = Uuid::new_v4();
    exec(
        &db.pool,
        &format!(
            "insert into wa_session (id, status, desired_state, last_active_at, runner_id, lease_until) values
               ('hib_login', 'hibernated', 'running', now() - interval '2 days', null, null),
               ('stop_login', 'stopped', 'stopped', now() - interval '2 days', null, null),
               ('stop_nologin', 'stopped', 'stopped', now() - interval '2 days', null, null),
               ('hib_nologin', 'hibernated', 'running', now() - interval '2 days', null, null),
               ('connected_old', 'connected', 'running', now() - interval '2 days', '{runner}', now() + interval '1 hour'),
               ('hib_recent', 'hibernated', 'running', now() - interval '1 hour', null, null),
               ('stop_leased', 'stopped', 'stopped', now() - interval '2 days', '{runner}', now() + interval '1 hour');
             insert into wa_session_auth (session_id, key_id, nonce, ciphertext, size_bytes, sha256)
             select id, 'k1', '\\x00', '\\x00', 1, 'x' from wa_session where id in ('hib_login', 'stop_login', 'hib_recent');"
        ),
    )
    .await;
    let cfg = forget_idle::Config::new(Duration::from_secs(86_400));
    cfg.validate().unwrap();
    let r = forget_idle::run_once(&db.pool, &cfg, &never()).await;
    assert_eq!(r.logout_requested.rows, 2, "{r:?}");
    assert_eq!(r.marked_logged_out.rows, 2, "{r:?}");

    // With a stored login: a runner must unlink the device, so only the wish changes.
    for id in ["hib_login", "stop_login"] {
        let (_, desired, status) = session_row(&db.pool, id).await;
        assert_eq!(desired, "logged_out", "{id}");
        assert_ne!(status, "logged_out", "{id}");
    }
    assert_eq!(
        ids(&db.pool, "select session_id from wa_session_auth").await,
        ["hib_login", "hib_recent", "stop_login"],
        "archives are deleted by the runner after it unlinks, not here"
    );
    // Without one: logged out here, with an event for Django.
    for id in ["hib_nologin", "stop_nologin"] {
        assert_eq!(
            session_row(&db.pool, id).await,
            (None, "logged_out".into(), "logged_out".into()),
            "{id}"
        );
    }
    assert_eq!(
        ids(
            &db.pool,
            "select session_id from wa_event where kind = 'session_status'
             and payload->>'status' = 'logged_out' and payload->>'reason' = 'forgotten'"
        )
        .await,
        ["hib_nologin", "stop_nologin"]
    );
    // Left alone: a connected session, a recently active one, one a live runner holds.
    assert_eq!(session_row(&db.pool, "connected_old").await.2, "connected");
    assert_eq!(session_row(&db.pool, "hib_recent").await.1, "running");
    assert_eq!(session_row(&db.pool, "stop_leased").await.2, "stopped");

    let again = forget_idle::run_once(&db.pool, &cfg, &never()).await;
    assert_eq!(
        (again.logout_requested.rows, again.marked_logged_out.rows),
        (0, 0)
    );

    // Zero disables forgetting.
    exec(
        &db.pool,
        "update wa_session set desired_state = 'running' where id = 'hib_recent'",
    )
    .await;
    exec(
        &db.pool,
        "update wa_session set last_active_at = now() - interval '9 days' where id = 'hib_recent'",
    )
    .await;
    let off = forget_idle::run_once(
        &db.pool,
        &forget_idle::Config::new(Duration::ZERO),
        &never(),
    )
    .await;
    assert_eq!(off, forget_idle::Report::default());
    assert_eq!(session_row(&db.pool, "hib_recent").await.1, "running");
}

#[tokio::test]
async fn delete_logins_removes_stored_logins_of_logged_out_sessions_only() {
    let db = test_db().await;
    let runner = Uuid::new_v4();
    exec(
        &db.pool,
        &format!(
            "insert into wa_session (id, status, runner_id, lease_until) values
               ('out_free', 'logged_out', null, null),
               ('out_expired', 'logged_out', '{runner}', now() - interval '1 minute'),
               ('out_held', 'logged_out', '{runner}', now() + interval '1 hour'),
               ('live', 'connected', '{runner}', now() + interval '1 hour'),
               ('asleep', 'hibernated', null, null);
             insert into wa_session_auth (session_id, key_id, nonce, ciphertext, size_bytes, sha256)
             select id, 'k1', '\\x00', '\\x00', 1, 'x' from wa_session;"
        ),
    )
    .await;
    let r = fail_logged_out::delete_logins(&db.pool, &fail_logged_out::Config::default(), &never())
        .await;
    assert_eq!((r.rows, r.error), (2, None));
    assert_eq!(
        ids(&db.pool, "select session_id from wa_session_auth").await,
        ["asleep", "live", "out_held"],
        "a login of a session a runner still holds is left to that runner"
    );
}

#[tokio::test]
async fn fail_logged_out_fails_queued_messages_of_logged_out_sessions() {
    let db = test_db().await;
    exec(
        &db.pool,
        "insert into wa_session (id, status) values ('gone', 'stopped'), ('ok', 'connected');
         insert into wa_message (session_id, recipient, body) values
           ('gone', '15551234567', 'a'), ('gone', '15551234567', 'b'), ('ok', '15551234567', 'c');
         insert into wa_message (session_id, recipient, body, status) values ('gone', '15551234567', 'd', 'sent');
         -- the logout lands after the messages were queued (the race the task exists for)
         update wa_session set status = 'logged_out' where id = 'gone';",
    )
    .await;
    let r =
        fail_logged_out::run_once(&db.pool, &fail_logged_out::Config::default(), &never()).await;
    assert_eq!((r.rows, r.error), (2, None));
    let rows: Vec<(String, String, Option<String>, bool)> = sqlx::query_as(
        "select body, status, error_code::text, finished_at is not null from wa_message order by body",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (
                "a".into(),
                "failed".into(),
                Some("session_logged_out".into()),
                true
            ),
            (
                "b".into(),
                "failed".into(),
                Some("session_logged_out".into()),
                true
            ),
            ("c".into(), "queued".into(), None, false),
            ("d".into(), "sent".into(), None, false),
        ]
    );
}

#[tokio::test]
async fn prune_deletes_only_finished_rows_past_retention() {
    let db = test_db().await;
    exec(
        &db.pool,
        "insert into wa_session (id) values ('s');
         insert into wa_message (session_id, recipient, body, status, finished_at, updated_at) values
           ('s', '1555', 'old_sent_finished', 'sent', now() - interval '8 days', now() - interval '8 days'),
           ('s', '1555', 'old_delivered_no_finished_at', 'delivered', null, now() - interval '8 days'),
           ('s', '1555', 'old_failed', 'failed', now() - interval '8 days', now() - interval '8 days'),
           ('s', '1555', 'old_cancelled', 'cancelled', null, now() - interval '8 days'),
           ('s', '1555', 'old_queued', 'queued', null, now() - interval '8 days'),
           ('s', '1555', 'old_sending', 'sending', null, now() - interval '8 days'),
           ('s', '1555', 'recent_sent', 'sent', now() - interval '1 day', now() - interval '1 day');
         insert into wa_event (session_id, kind, message_id, created_at) values
           ('s', 'ack', (select id from wa_message where body = 'old_sent_finished'), now() - interval '8 days'),
           ('s', 'ack', (select id from wa_message where body = 'old_failed'), now() - interval '1 day'),
           ('s', 'message', null, now() - interval '1 hour');",
    )
    .await;
    let cfg = prune::Config::new(Duration::from_secs(7 * 86_400));
    cfg.validate().unwrap();
    let r = prune::run_once(&db.pool, &cfg, &never()).await;
    assert_eq!((r.events.rows, r.events.error.clone()), (1, None));
    assert_eq!((r.messages.rows, r.messages.error.clone()), (4, None));
    assert_eq!(
        ids(&db.pool, "select body from wa_message").await,
        ["old_queued", "old_sending", "recent_sent"]
    );
    // A recent event of a pruned message stays, without its message.
    let left: Vec<(String, Option<i64>)> =
        sqlx::query_as("select kind, message_id from wa_event order by id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(left, [("ack".into(), None), ("message".into(), None)]);

    let off = prune::run_once(&db.pool, &prune::Config::new(Duration::ZERO), &never()).await;
    assert_eq!(off, prune::Report::default());
}

#[tokio::test]
async fn pruning_works_in_bounded_batches() {
    let db = test_db().await;
    exec(
        &db.pool,
        "insert into wa_session (id) values ('s');
         insert into wa_message (session_id, recipient, body, status, finished_at, updated_at)
           select 's', '1555', 'm' || g, 'read', now() - interval '30 days', now() - interval '30 days'
           from generate_series(1, 2500) g;
         insert into wa_message (session_id, recipient, body, status) values ('s', '1555', 'keep', 'queued');
         insert into wa_event (session_id, kind, created_at)
           select 's', 'ack', now() - interval '30 days' from generate_series(1, 2345);",
    )
    .await;
    let mut cfg = prune::Config::new(Duration::from_secs(86_400));
    cfg.batching = Batching {
        size: 1000,
        timeout: Duration::from_secs(10),
        max_batches: 2,
    };
    cfg.validate().unwrap();

    // At most two statements of 1,000 per table and run; the rest waits for the next run.
    let first = prune::run_once(&db.pool, &cfg, &never()).await;
    assert_eq!((first.events.rows, first.events.batches), (2000, 2));
    assert_eq!((first.messages.rows, first.messages.batches), (2000, 2));
    let second = prune::run_once(&db.pool, &cfg, &never()).await;
    assert_eq!((second.events.rows, second.events.batches), (345, 1));
    // 500 by finished_at, then one empty look for rows without it.
    assert_eq!((second.messages.rows, second.messages.batches), (500, 2));
    let left: i64 = sqlx::query_scalar("select count(*) from wa_message")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 1);

    // A cancelled run stops before its first batch.
    let stop = CancellationToken::new();
    stop.cancel();
    let none = prune::run_once(&db.pool, &cfg, &stop).await;
    assert_eq!(none.events.batches + none.messages.batches, 0);
}

#[tokio::test]
async fn run_once_runs_every_task() {
    let db = test_db().await;
    exec(
        &db.pool,
        "insert into wa_runner (id, host, pid, version, capacity, heartbeat_at)
           values (gen_random_uuid(), 'dead', 1, 'v', 1, now() - interval '1 day');
         insert into wa_session (id, status, runner_id, lease_until, last_active_at) values
           ('orphan', 'connected', gen_random_uuid(), now() - interval '1 hour', now()),
           ('idle', 'hibernated', null, null, now() - interval '60 days');
         insert into wa_event (session_id, kind, created_at) values ('orphan', 'ack', now() - interval '30 days');",
    )
    .await;
    let cfg = MaintenanceConfig::from_config(&config(&[])).unwrap();
    let r = maintenance::run_once(&db.pool, &cfg).await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.expired_leases.rows, 1);
    assert_eq!(r.dead_runners.rows, 1);
    assert_eq!(r.forget_idle.marked_logged_out.rows, 1);
    // The forget event is fresh; only the 30-day-old one goes.
    assert_eq!(r.prune.events.rows, 1);
    assert!(!r.interrupted);
}

#[test]
fn config_is_validated_once_at_build() {
    assert!(MaintenanceConfig::from_config(&config(&[])).is_ok());
    let mut c = config(&[]);
    c.maintenance_cron = "every minute".into();
    assert!(MaintenanceConfig::from_config(&c)
        .unwrap_err()
        .contains("WA_MAINTENANCE_CRON"));
    let mut c = config(&[]);
    c.retention = Duration::from_millis(10);
    assert!(MaintenanceConfig::from_config(&c)
        .unwrap_err()
        .contains("WA_RETENTION"));
    let mut cfg = MaintenanceConfig::from_config(&config(&[])).unwrap();
    cfg.prune.batching.size = 0;
    assert!(cfg.validate().is_err());
}

// ---------- the leader ----------

/// A runner config for the service tests: maintenance every second, a short leader lease.
fn service_config(lease_ttl: &str) -> Config {
    config(&[
        ("WA_MAINTENANCE_CRON", "* * * * * *"),
        ("WA_LEASE_TTL", lease_ttl),
    ])
}

async fn leader_row(pool: &PgPool) -> Option<(Uuid, chrono::DateTime<chrono::Utc>)> {
    sqlx::query_as("select runner_id, lease_until from wa_leader where name = 'maintenance'")
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn next_report(
    rx: &mut broadcast::Receiver<MaintenanceReport>,
    within: Duration,
) -> MaintenanceReport {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("a maintenance report in time")
        .expect("report channel open")
}

#[tokio::test]
async fn only_one_of_two_competing_leaders_runs() {
    let db = test_db().await;
    exec(
        &db.pool,
        "insert into wa_session (id) values ('s');
         insert into wa_event (session_id, kind, created_at) values ('s', 'ack', now() - interval '30 days');",
    )
    .await;
    // A lease far longer than the run cadence: a loaded CI machine stalling the leader for a
    // few seconds must not look like a dead leader here.
    let cfg = service_config("15s");
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let stop = CancellationToken::new();
    let (ha, mut ra) = maintenance::spawn(db.pool.clone(), a, &cfg, stop.clone()).unwrap();
    let (hb, mut rb) = maintenance::spawn(db.pool.clone(), b, &cfg, stop.clone()).unwrap();

    let mut runs: HashMap<Uuid, Vec<MaintenanceReport>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while runs.values().map(Vec::len).max().unwrap_or(0) < 4 {
        let r = tokio::select! {
            r = ra.recv() => r.unwrap(),
            r = rb.recv() => r.unwrap(),
            _ = tokio::time::sleep_until(deadline) => panic!("no leader ran 4 times within 20s: {runs:?}"),
        };
        runs.entry(r.runner_id.unwrap()).or_default().push(r);
    }
    assert_eq!(runs.len(), 1, "both runners ran maintenance: {runs:?}");
    let (leader, reports) = runs.into_iter().next().unwrap();
    assert_eq!(leader_row(&db.pool).await.unwrap().0, leader);
    // The work was done once, by the leader's first run.
    assert_eq!(reports[0].prune.events.rows, 1);
    assert!(reports[1..].iter().all(|r| r.prune.events.rows == 0));
    assert!(reports.iter().all(MaintenanceReport::ok));

    stop.cancel();
    for h in [ha, hb] {
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("service stops on shutdown")
            .unwrap();
    }
    assert_eq!(
        leader_row(&db.pool).await,
        None,
        "the leader resigned on shutdown"
    );
}

#[tokio::test]
async fn a_leader_that_stops_renewing_is_replaced_after_its_lease() {
    let db = test_db().await;
    let cfg = service_config("3s");
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let stop = CancellationToken::new();
    let (ha, mut ra) = maintenance::spawn(db.pool.clone(), a, &cfg, stop.clone()).unwrap();
    let first = next_report(&mut ra, Duration::from_secs(10)).await;
    assert_eq!(first.runner_id, Some(a));
    let (hb, mut rb) = maintenance::spawn(db.pool.clone(), b, &cfg, stop.clone()).unwrap();

    // As with SIGKILL: no resignation, the lease just stops being renewed.
    ha.abort();
    assert!(ha.await.unwrap_err().is_cancelled());
    let (holder, lease_until) = leader_row(&db.pool).await.unwrap();
    assert_eq!(holder, a);

    let r = next_report(&mut rb, Duration::from_secs(15)).await;
    assert_eq!(r.runner_id, Some(b));
    assert!(
        r.started_at >= lease_until,
        "B ran at {} while A's lease lasted until {lease_until}",
        r.started_at
    );
    assert_eq!(leader_row(&db.pool).await.unwrap().0, b);
    // A's channel closes once its buffered reports are read: it runs no more.
    loop {
        match ra.recv().await {
            Ok(r) => assert!(r.started_at < lease_until),
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), hb)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_leader_that_shuts_down_hands_over_without_waiting_for_its_lease() {
    let db = test_db().await;
    // A long lease: waiting it out would take far longer than a hand-over.
    let cfg = service_config("30s");
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let stop_a = CancellationToken::new();
    let stop_b = CancellationToken::new();
    let (ha, mut ra) = maintenance::spawn(db.pool.clone(), a, &cfg, stop_a.clone()).unwrap();
    next_report(&mut ra, Duration::from_secs(10)).await;
    let (hb, mut rb) = maintenance::spawn(db.pool.clone(), b, &cfg, stop_b.clone()).unwrap();
    let (_, lease_until) = leader_row(&db.pool).await.unwrap();

    stop_a.cancel();
    tokio::time::timeout(Duration::from_secs(10), ha)
        .await
        .unwrap()
        .unwrap();
    // B renews (and so competes) every 10s; it wins at its next attempt, well before A's lease ends.
    let r = next_report(&mut rb, Duration::from_secs(20)).await;
    assert_eq!(r.runner_id, Some(b));
    assert!(r.started_at < lease_until);

    stop_b.cancel();
    tokio::time::timeout(Duration::from_secs(10), hb)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn election_is_one_statement_that_respects_a_live_lease() {
    let db = test_db().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let ttl = Duration::from_secs(60);
    use maintenance::leader::acquire;
    assert!(acquire(&db.pool, "maintenance", a, ttl).await.unwrap());
    assert!(!acquire(&db.pool, "maintenance", b, ttl).await.unwrap());
    assert!(
        acquire(&db.pool, "maintenance", a, ttl).await.unwrap(),
        "renewal"
    );
    // Another duty is independent.
    assert!(acquire(&db.pool, "other", b, ttl).await.unwrap());
    exec(
        &db.pool,
        "update wa_leader set lease_until = now() - interval '1 second' where name = 'maintenance'",
    )
    .await;
    assert!(
        acquire(&db.pool, "maintenance", b, ttl).await.unwrap(),
        "takeover after expiry"
    );
    assert!(!acquire(&db.pool, "maintenance", a, ttl).await.unwrap());
}

#[tokio::test]
async fn a_blocked_batch_times_out_and_the_other_tasks_still_run() {
    let db = test_db().await;
    exec(
        &db.pool,
        "insert into wa_runner (id, host, pid, version, capacity, heartbeat_at)
           values (gen_random_uuid(), 'dead', 1, 'v', 1, now() - interval '1 day');
         insert into wa_session (id) values ('s');
         insert into wa_event (session_id, kind, created_at) values ('s', 'ack', now() - interval '30 days');",
    )
    .await;
    // Someone holds wa_event locked (a long migration, a stuck admin session).
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("lock table wa_event in access exclusive mode")
        .execute(&mut *blocker)
        .await
        .unwrap();

    let mut cfg = MaintenanceConfig::from_config(&config(&[])).unwrap();
    let short = Duration::from_millis(300);
    cfg.prune.batching.timeout = short;
    // Its event insert needs wa_event too, even when it has nothing to mark.
    cfg.forget_idle.batching.timeout = short;
    cfg.validate().unwrap();
    let t0 = std::time::Instant::now();
    let r = maintenance::run_once(&db.pool, &cfg).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        t0.elapsed()
    );
    let err = r
        .prune
        .events
        .error
        .clone()
        .expect("the blocked batch failed");
    assert!(err.contains("statement timeout"), "{err}");
    assert!(r.forget_idle.marked_logged_out.error.is_some());
    assert!(!r.ok());
    assert_eq!(r.dead_runners.rows, 1, "the other tasks ran");
    assert!(r.dead_runners.ok() && r.expired_leases.ok() && r.failed_logged_out.ok());

    blocker.rollback().await.unwrap();
    let r = maintenance::run_once(&db.pool, &cfg).await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.prune.events.rows, 1);
}

/// What wa_outbox_stats shows, and what counting wa_message itself gives, per session and status.
async fn counts_both_ways(
    pool: &PgPool,
) -> (
    Vec<(String, i64, i64, i64, i64)>,
    Vec<(String, i64, i64, i64, i64)>,
) {
    let shown = sqlx::query_as(
        "select session_id, queued, sending, sent, failed from wa_outbox_stats order by session_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let counted = sqlx::query_as(
        "select s.id, count(m.id) filter (where m.status = 'queued'), count(m.id) filter (where m.status = 'sending'),
                count(m.id) filter (where m.status = 'sent'), count(m.id) filter (where m.status = 'failed')
         from wa_session s left join wa_message m on m.session_id = s.id group by s.id order by s.id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (shown, counted)
}

#[tokio::test]
async fn message_counts_follow_every_write_and_survive_compaction() {
    let db = test_db().await;
    exec(
        &db.pool,
        "insert into wa_session (id) values ('a'), ('b'), ('gone')",
    )
    .await;
    // Bulk and single inserts, a status change of some rows, a delete, a cascade from a session.
    exec(
        &db.pool,
        "insert into wa_message (session_id, recipient, body) select s, '1555', 'x' from unnest(array['a','b','gone']) s, generate_series(1, 5)",
    )
    .await;
    exec(
        &db.pool,
        "update wa_message set status = 'sending' where session_id = 'a' and id % 2 = 0",
    )
    .await;
    exec(
        &db.pool,
        "update wa_message set status = 'sent' where session_id = 'a' and status = 'sending'",
    )
    .await;
    exec(
        &db.pool,
        "update wa_message set body = 'y' where session_id = 'b'",
    )
    .await;
    exec(&db.pool, "update wa_message set status = 'cancelled' where session_id = 'b' and id = (select min(id) from wa_message where session_id = 'b')").await;
    exec(&db.pool, "delete from wa_message where session_id = 'b' and status = 'queued' and id = (select max(id) from wa_message where session_id = 'b')").await;
    exec(&db.pool, "delete from wa_session where id = 'gone'").await;
    // A message for a logged-out session is inserted failed.
    exec(
        &db.pool,
        "update wa_session set status = 'logged_out' where id = 'b'",
    )
    .await;
    exec(
        &db.pool,
        "insert into wa_message (session_id, recipient, body) values ('b', '1555', 'late')",
    )
    .await;

    let (shown, counted) = counts_both_ways(&db.pool).await;
    assert_eq!(shown, counted);
    assert_eq!(shown.len(), 2);
    let rows_before: i64 = sqlx::query_scalar("select count(*) from wa_message_count")
        .fetch_one(&db.pool)
        .await
        .unwrap();

    let r = prune::compact_counts(&db.pool, &Batching::default()).await;
    assert!(r.ok(), "{r:?}");
    let (shown, counted) = counts_both_ways(&db.pool).await;
    assert_eq!(shown, counted);
    // Folded: one row per session and status still counted, none for the deleted session.
    let left: Vec<(String, String, i32, i64)> = sqlx::query_as(
        "select session_id, status, backend, n from wa_message_count order by session_id, status",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        left.iter()
            .all(|(s, _, backend, n)| s != "gone" && *backend == 0 && *n > 0),
        "{left:?}"
    );
    assert!(left.len() as i64 <= rows_before);
    let wanted: i64 = sqlx::query_scalar(
        "select count(*) from (select distinct session_id, status from wa_message) x",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(left.len() as i64, wanted);
}
