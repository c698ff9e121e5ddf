//! Faults production sees every week, on real parts: a runner cut off from PostgreSQL (a
//! partition, through a TCP proxy that black-holes its traffic), PostgreSQL restarted mid-burst,
//! a drain longer than the lease, a session down while messages arrive for it, and commands
//! given in quick succession. The simulator is the witness: it counts every send, and every time
//! a page took over a login another page still held live (two runners driving one device).

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use wa_outbox::testing::{test_db, wait_for, ProxyMode, TcpProxy};

use crate::fleet::{
    assert_each_once_and_no_relink, connected_on, done_count, link_all, log_tail, runner_proc_with,
    spawn_runner_proc,
};
use crate::*;

async fn takeovers() -> serde_json::Value {
    sim().await.get("/_sim/faults").await["takeovers"].clone()
}

async fn last_event(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select coalesce(max(id), 0) from wa_event")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn owner(pool: &PgPool, id: &str) -> Option<uuid::Uuid> {
    sqlx::query_scalar("select runner_id from wa_session where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A runner whose database traffic vanishes closes its browsers before its leases could pass
/// on; another runner takes the sessions without a QR; at no moment do two pages drive one
/// device; and when the network heals the cut-off runner takes nothing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_cut_off_from_postgres_closes_its_browsers_before_its_leases_can_pass() {
    let db = test_db().await;
    let p = &db.pool;
    let proxy = TcpProxy::start(&db.url).await;
    let ttl = Duration::from_secs(8);
    let a = runner_proc_with(&db, 5, "8s", &[("DATABASE_URL", &proxy.url)]).await;
    let a_id = a.id(p).await;
    let sessions: Vec<(String, String)> = (0..2)
        .map(|i| (format!("fault_bh{i}"), format!("155506000{i:02}")))
        .collect();
    link_all(p, &sessions).await;
    for (id, _) in &sessions {
        assert_eq!(owner(p, id).await, Some(a_id));
    }
    let a_dir = a.log.parent().unwrap().join("profiles");
    assert!(!chromium_pids(&a_dir.join("fault_bh0")).is_empty());
    let b = runner_proc_with(&db, 5, "8s", &[]).await;
    let b_id = b.id(p).await;
    let since = last_event(p).await;

    proxy.set(ProxyMode::BlackHole);
    let cut = Instant::now();
    // Its browsers close within the lease (at half the TTL after its last proved renewal).
    wait_for("the cut-off runner's browsers closed", ttl, || async {
        sessions
            .iter()
            .all(|(id, _)| chromium_pids(&a_dir.join(id)).is_empty())
            .then_some(())
    })
    .await;
    let closed = cut.elapsed();
    assert!(
        closed < ttl,
        "closed {closed:?} after the cut, lease {ttl:?}"
    );
    connected_on(p, b_id, 2, STEP).await;
    let moved = cut.elapsed();

    // Messages go out once, through the new owner.
    sqlx::query("insert into wa_message (session_id, recipient, body) select 'fault_bh' || (n % 2), '15550699999', 'after the cut ' || n from generate_series(0, 3) n")
        .execute(p)
        .await
        .unwrap();
    wait_for("4 sent", STEP, || async {
        (done_count(p).await == 4).then_some(())
    })
    .await;
    assert_each_once_and_no_relink(p, &sessions, 2, since).await;

    // The network heals: the cut-off runner renews again and finds nothing of its own.
    proxy.set(ProxyMode::Pass);
    let healed: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("select now()")
        .fetch_one(p)
        .await
        .unwrap();
    wait_for("the cut-off runner's heartbeat", STEP, || async {
        let hb: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("select heartbeat_at from wa_runner where id = $1")
                .bind(a_id)
                .fetch_optional(p)
                .await
                .unwrap();
        hb.filter(|t| *t > healed).map(|_| ())
    })
    .await;
    for (id, _) in &sessions {
        assert_eq!(owner(p, id).await, Some(b_id), "{id} went back");
    }
    let t = takeovers().await;
    for (_, phone) in &sessions {
        assert!(
            t.get(phone).is_none(),
            "two pages drove {phone} at once: {t}\n{}",
            log_tail(&a.log)
        );
    }
    eprintln!(
        "FIGURE partition: browsers closed {:.1} s after the cut, sessions connected on the other runner {:.1} s after it (lease TTL 8 s)",
        closed.as_secs_f64(),
        moved.as_secs_f64()
    );
    a.drain(Duration::from_secs(60)).await;
    b.drain(Duration::from_secs(60)).await;
}

/// PostgreSQL restarted (fast shutdown: every connection cut) while messages go out, acks come
/// back and incoming messages arrive: every message goes out once and ends `read`, every incoming
/// message is recorded once, no browser restarts and no QR is shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_burst_loses_nothing_and_restarts_no_session() {
    // A cluster of its own: restarting the shared one would cut every other test.
    let dir = tempfile::tempdir().unwrap();
    let pg = wa_outbox::embedded_pg::EmbeddedPg::start(
        &dir.path().join("pg"),
        wa_outbox::embedded_pg::PgOptions { fast: true },
    )
    .await
    .unwrap();
    let url = pg.url("postgres");
    let pool = wa_outbox::db::connect(&url, 5).await.unwrap();
    wa_outbox::db::migrate(&pool).await.unwrap();
    let db = wa_outbox::testing::TestDb {
        pool: pool.clone(),
        url: url.clone(),
        name: "postgres".into(),
    };
    let p = &pool;
    let r = runner_proc_with(&db, 5, "20s", &[]).await;
    let sessions: Vec<(String, String)> = (0..2)
        .map(|i| (format!("fault_pg{i}"), format!("155506100{i:02}")))
        .collect();
    link_all(p, &sessions).await;
    let since = last_event(p).await;
    let pids: Vec<Vec<i32>> = sessions
        .iter()
        .map(|(id, _)| chromium_pids(&r.log.parent().unwrap().join("profiles").join(id)))
        .collect();

    sqlx::query("insert into wa_message (session_id, recipient, body) select 'fault_pg' || (n % 2), '15550699998', 'burst ' || n from generate_series(0, 39) n")
        .execute(p)
        .await
        .unwrap();
    wait_for("a burst under way", STEP, || async {
        (done_count(p).await >= 6).then_some(())
    })
    .await;
    // Incoming messages before, during and after the restart.
    let phones: Vec<String> = sessions.iter().map(|(_, ph)| ph.clone()).collect();
    let phones = &phones;
    let send_in = |i: usize| async move {
        let phone = &phones[i % 2];
        sim()
            .await
            .post(
                "/_sim/incoming",
                json!({"to": phone, "from": "15550699997", "body": format!("in {i}")}),
            )
            .await;
    };
    for i in 0..6 {
        send_in(i).await;
    }
    let restart = tokio::spawn(async move {
        pg.restart().await.unwrap();
        pg
    });
    for i in 6..14 {
        send_in(i).await;
    }
    let pg = restart.await.unwrap();
    for i in 14..20 {
        send_in(i).await;
    }

    wait_for("all 40 messages read", Duration::from_secs(180), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from wa_message where status = 'read'")
            .fetch_one(p)
            .await
            .ok()?;
        (n == 40).then_some(())
    })
    .await;
    wait_for("all 20 incoming recorded", STEP, || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from wa_event where kind = 'message' and payload->>'body' like 'in %'",
        )
        .fetch_one(p)
        .await
        .ok()?;
        (n >= 20).then_some(())
    })
    .await;
    let (n, distinct): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct payload->>'body') from wa_event where kind = 'message'",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!((n, distinct), (20, 20), "each incoming message once");
    // Every ack went through: one ack event per step, none missing.
    let unacked: i64 = sqlx::query_scalar(
        "select count(*) from wa_message m where not exists (
           select 1 from wa_event e where e.message_id = m.id and e.kind = 'ack' and e.payload->>'status' = 'read')",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(unacked, 0, "a read ack was lost");
    assert_each_once_and_no_relink(p, &sessions, 20, since).await;
    // No session restarted: the same browsers, no status change since the link.
    for ((id, _), before) in sessions.iter().zip(&pids) {
        let now = chromium_pids(&r.log.parent().unwrap().join("profiles").join(id));
        assert_eq!(&now, before, "{id}: its browser was restarted");
    }
    let changes: i64 = sqlx::query_scalar(
        "select count(*) from wa_event where id > $1 and kind = 'session_status'",
    )
    .bind(since)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(changes, 0, "a session changed state:\n{}", log_tail(&r.log));
    r.drain(Duration::from_secs(60)).await;
    pool.close().await;
    drop(pg);
    wa_outbox::embedded_pg::EmbeddedPg::destroy(&dir.path().join("pg"))
        .await
        .unwrap();
}

/// A drain that lasts longer than the lease (an in-flight send that takes 6 s, lease 3 s): the
/// leases are renewed until released, so the lease never lapses under the open browser, no other
/// runner takes the session early, and the final save of the login lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_longer_than_the_lease_keeps_it_and_saves_the_login() {
    // A simulator of its own: its sends are slowed down for everyone it serves.
    let own = tokio::task::spawn_blocking(|| {
        wa_outbox::testing::sim_process(
            env!("CARGO_BIN_EXE_wa-outbox"),
            &["--ack-step-ms", "100", "--sync-delay-ms", "200"],
        )
    })
    .await
    .unwrap();
    let web = format!("{own}/");
    let http = reqwest::Client::new();
    let db = test_db().await;
    let p = &db.pool;
    let env = [("WA_WEB_URL", web.as_str()), ("WA_SEND_TIMEOUT", "20s")];
    let a = runner_proc_with(&db, 5, "3s", &env).await;
    let a_id = a.id(p).await;
    // Linked through the test's own simulator.
    sqlx::query("insert into wa_session (id) values ('fault_drain')")
        .execute(p)
        .await
        .unwrap();
    let qr = wait_for("the QR", STEP, || async {
        let (status, qr, ..) = session(p, "fault_drain").await;
        qr.filter(|_| status == "qr_pending")
    })
    .await;
    let r = http
        .post(format!("{own}/_sim/scan"))
        .json(&json!({"qr": qr, "phone": "15550620001", "name": "Drain"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_status(p, "fault_drain", "connected").await;
    wait_for("the login stored", STEP, || async {
        let n: i64 = sqlx::query_scalar("select count(*) from wa_session_auth")
            .fetch_one(p)
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    let b = runner_proc_with(&db, 5, "3s", &env).await;
    let b_id = b.id(p).await;

    // One slow send in flight, then SIGTERM.
    let r = http
        .post(format!("{own}/_sim/faults"))
        .json(&json!({"send_delay_ms": 6000}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    sqlx::query("insert into wa_message (session_id, recipient, body) values ('fault_drain', '15550699996', 'slow')")
        .execute(p)
        .await
        .unwrap();
    wait_for("the send under way", STEP, || async {
        let s: String = sqlx::query_scalar("select status from wa_message")
            .fetch_one(p)
            .await
            .unwrap();
        (s == "sending").then_some(())
    })
    .await;
    let saved_before: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select updated_at from wa_session_auth")
            .fetch_one(p)
            .await
            .unwrap();
    // Watch the lease through the whole drain: it must never lapse while it names the runner.
    let watch_pool = p.clone();
    let watching = tokio::spawn(async move {
        let mut lapses = Vec::new();
        loop {
            let row: (Option<uuid::Uuid>, bool) = sqlx::query_as(
                "select runner_id, coalesce(lease_until < now(), false) from wa_session where id = 'fault_drain'",
            )
            .fetch_one(&watch_pool)
            .await
            .unwrap();
            match row {
                (Some(r), true) if r == a_id => lapses.push(Instant::now()),
                (Some(r), _) if r == b_id => return lapses,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let log = a.log.clone();
    let signalled = a.drain(Duration::from_secs(60)).await;
    let drain = signalled.elapsed();
    assert!(
        drain > Duration::from_secs(3),
        "the drain ({drain:?}) was not longer than the lease"
    );
    let lapses = tokio::time::timeout(STEP, watching)
        .await
        .expect("the other runner took the session after the drain")
        .unwrap();
    assert!(lapses.is_empty(), "the lease lapsed during the drain");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("could not save the login"),
        "the final save was refused:\n{}",
        log_tail(&log)
    );
    let saved_after: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select updated_at from wa_session_auth")
            .fetch_one(p)
            .await
            .unwrap();
    assert!(saved_after > saved_before, "no final save");
    let sent: Vec<serde_json::Value> = http
        .get(format!("{own}/_sim/messages?phone=15550620001"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["messages"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(sent.len(), 1, "the in-flight message went out once");
    wait_status(p, "fault_drain", "connected").await;
    assert_eq!(owner(p, "fault_drain").await, Some(b_id));
    eprintln!(
        "FIGURE drain longer than the lease: exit after {:.1} s with a 3 s lease, no lapse, final save written",
        drain.as_secs_f64()
    );
    b.drain(Duration::from_secs(60)).await;
}

/// Messages that arrive while a session is stopped are recorded once it runs again (backfilled
/// from the page, which does not announce them as new), and a later reconnect does not record
/// them twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_arrive_while_a_session_is_down_are_backfilled_once() {
    let db = test_db().await;
    let p = &db.pool;
    let (runner, _dir) = start_runner(&db).await;
    link(p, "fault_back", "15550630001").await;
    let live = |body: &'static str| async move {
        sim()
            .await
            .post(
                "/_sim/incoming",
                json!({"to": "15550630001", "from": "15550639999", "body": body}),
            )
            .await;
    };
    let recorded = || async {
        let bodies: Vec<String> = sqlx::query_scalar(
            "select payload->>'body' from wa_event where session_id = 'fault_back' and kind = 'message' order by id",
        )
        .fetch_all(p)
        .await
        .unwrap();
        bodies
    };
    live("before").await;
    wait_for("the live message", STEP, || async {
        (recorded().await == ["before"]).then_some(())
    })
    .await;

    sqlx::query("update wa_session set desired_state = 'stopped' where id = 'fault_back'")
        .execute(p)
        .await
        .unwrap();
    wait_status(p, "fault_back", "stopped").await;
    let r = sim()
        .await
        .post(
            "/_sim/incoming",
            json!({"to": "15550630001", "from": "15550639999", "body": "while down 1"}),
        )
        .await;
    assert_eq!(r["delivered_to"], 0, "no page was up: {r}");
    live("while down 2").await;

    for round in 0..2 {
        sqlx::query("update wa_session set desired_state = 'running' where id = 'fault_back'")
            .execute(p)
            .await
            .unwrap();
        wait_status(p, "fault_back", "connected").await;
        wait_for("the backfill", STEP, || async {
            (recorded().await.len() >= 3).then_some(())
        })
        .await;
        // A live message after the reconnect: once it is in, the backfill has run.
        let marker: &'static str = if round == 0 { "after 1" } else { "after 2" };
        live(marker).await;
        wait_for("the live message after the reconnect", STEP, || async {
            recorded().await.iter().any(|b| b == marker).then_some(())
        })
        .await;
        if round == 0 {
            sqlx::query("update wa_session set desired_state = 'stopped' where id = 'fault_back'")
                .execute(p)
                .await
                .unwrap();
            wait_status(p, "fault_back", "stopped").await;
        }
    }
    let mut got = recorded().await;
    got.sort();
    assert_eq!(
        got,
        [
            "after 1",
            "after 2",
            "before",
            "while down 1",
            "while down 2"
        ],
        "each incoming message exactly once"
    );
    runner.shutdown().await.unwrap();
}

/// A runner started while PostgreSQL is down (a failover, a restart) waits and retries instead of
/// exiting (in Kubernetes, a crash loop with growing back-off); once the server is back it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_started_while_postgres_is_down_waits_for_it() {
    let db = test_db().await;
    let proxy = TcpProxy::start(&db.url).await;
    proxy.set(ProxyMode::Refuse);
    let r = spawn_runner_proc(&db, 5, "10s", &[("DATABASE_URL", &proxy.url)]).await;
    let log = r.log.clone();
    wait_for(
        "the runner to be refused twice and keep trying",
        STEP,
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text
                .matches("PostgreSQL is not available yet; retrying")
                .count()
                >= 2)
                .then_some(())
        },
    )
    .await;
    proxy.set(ProxyMode::Pass);
    r.registered(&db.pool).await;
    link(&db.pool, "fault_late", "15550650001").await;
    r.drain(Duration::from_secs(60)).await;
}

/// Commands given in quick succession end in the state asked last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_commands_end_in_the_state_asked_last() {
    let db = test_db().await;
    let p = &db.pool;
    let (runner, _dir) = start_runner(&db).await;
    link(p, "fault_quick", "15550640001").await;
    let set = |state: &'static str| async move {
        sqlx::query("update wa_session set desired_state = $1 where id = 'fault_quick'")
            .bind(state)
            .execute(p)
            .await
            .unwrap();
    };
    // Disconnect, then init again at once: it runs.
    set("stopped").await;
    set("running").await;
    wait_status(p, "fault_quick", "connected").await;
    // Several times over, with the stop landing in between too.
    for _ in 0..3 {
        set("stopped").await;
        wait_status(p, "fault_quick", "stopped").await;
        set("running").await;
        set("stopped").await;
        set("running").await;
        wait_status(p, "fault_quick", "connected").await;
    }
    // Init, then log out at once: logged out, nothing left linked.
    sqlx::query("insert into wa_session (id) values ('fault_quick2')")
        .execute(p)
        .await
        .unwrap();
    sqlx::query("update wa_session set desired_state = 'logged_out' where id = 'fault_quick2'")
        .execute(p)
        .await
        .unwrap();
    wait_status(p, "fault_quick2", "logged_out").await;
    // And a linked one: init (running), then log out before anything settled.
    set("logged_out").await;
    wait_status(p, "fault_quick", "logged_out").await;
    assert_eq!(sim().await.linked_devices("15550640001").await, 0);
    runner.shutdown().await.unwrap();
}
