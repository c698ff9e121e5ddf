//! One in-process runner with Chromium, driven through rows.

use std::time::Duration;

use serde_json::{json, Value};
use wa_outbox::dispatcher::bare_id;
use wa_outbox::testing::{test_db, wait_for};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_links_by_qr_and_twenty_mixed_messages_arrive_once_and_are_read() {
    let db = test_db().await;
    let (media_url, picture) = media_server().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_main", "15550100001").await;

    let mut expect: Vec<(i64, &str, Option<String>, Option<String>)> = Vec::new(); // id, kind, body/caption, sha256
    for i in 0..14 {
        let body = format!("text {i} ✓");
        let id: i64 = sqlx::query_scalar("insert into wa_message (session_id, recipient, body) values ('e2e_main', '+1 (555) 020-0001', $1) returning id")
            .bind(&body).fetch_one(p).await.unwrap();
        expect.push((id, "text", Some(body), None));
        if i % 4 == 0 {
            let caption = format!("picture {i}");
            let id: i64 = sqlx::query_scalar("insert into wa_message (session_id, recipient, kind, body, media_data, media_mime) values ('e2e_main', '15550200001', 'image', $1, $2, 'image/png') returning id")
                .bind(&caption).bind(&picture).fetch_one(p).await.unwrap();
            expect.push((id, "image", Some(caption), Some(sha256_hex(&picture))));
        }
    }
    let doc = b"%PDF-1.4 wa-outbox test document".to_vec();
    let id = insert(p, "insert into wa_message (session_id, recipient, kind, body, media_url, media_filename) values ('e2e_main', '15550200001@c.us', 'document', 'the doc', $1, 'doc.pdf') returning id", &[&format!("{media_url}/doc.pdf")]).await;
    expect.push((
        id,
        "document",
        Some("the doc".into()),
        Some(sha256_hex(&doc)),
    ));
    let id = insert(p, "insert into wa_message (session_id, recipient, kind, body, media_url) values ('e2e_main', '15550200001', 'image', 'fetched', $1) returning id", &[&format!("{media_url}/pic.png")]).await;
    expect.push((
        id,
        "image",
        Some("fetched".into()),
        Some(sha256_hex(&picture)),
    ));
    assert_eq!(expect.len(), 20);

    wait_for("all twenty read", Duration::from_secs(120), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from wa_message where status = 'read'")
            .fetch_one(p)
            .await
            .unwrap();
        (n == 20).then_some(())
    })
    .await;
    let recorded = sim().await.sent_by("15550100001").await;
    assert_eq!(
        recorded.len(),
        20,
        "the simulator received each message exactly once"
    );
    for (id, kind, text, sha) in expect {
        let (_, _, wa_id) = msg(p, id).await;
        let wa_id = wa_id.unwrap();
        let hits: Vec<&Value> = recorded
            .iter()
            .filter(|m| m["id"] == bare_id(&wa_id))
            .collect();
        assert_eq!(hits.len(), 1, "message {id} recorded {} times", hits.len());
        let m = hits[0];
        assert_eq!(m["to"], "15550200001@c.us");
        if kind == "text" {
            assert_eq!(m["body"].as_str(), text.as_deref());
        } else {
            assert_eq!(m["caption"].as_str(), text.as_deref(), "caption of {id}");
            assert_eq!(
                m["media"]["sha256"].as_str(),
                sha.as_deref(),
                "media of {id}"
            );
        }
    }
    let acks: i64 = sqlx::query_scalar("select count(*) from wa_event where kind = 'ack'")
        .fetch_one(p)
        .await
        .unwrap();
    assert!(acks >= 20, "ack events recorded: {acks}");
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_arrive_byte_for_byte_and_nothing_runs_in_the_page() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_hostile", "15550100002").await;
    let bodies = [
        r#"quotes " ' ` and backslashes \ \\ \n \u0041"#.to_string(),
        "</script><script>alert(1)</script>".to_string(),
        "'); alert(1);//".to_string(),
        "\"); throw new Error('x'); (\"".to_string(),
        "emoji 🧪👩‍👩‍👧‍👦 and 𝄞 (4-byte)".to_string(),
        "${alert(1)} {{7*7}}".to_string(),
    ];
    let mut ids = Vec::new();
    for b in &bodies {
        ids.push(insert(p, "insert into wa_message (session_id, recipient, body) values ('e2e_hostile', '15550200002', $1) returning id", &[b]).await);
    }
    // If any of those had run as script (an alert blocks the page), this one would never go out.
    let last = insert(p, "insert into wa_message (session_id, recipient, body) values ('e2e_hostile', '15550200002', 'still alive') returning id", &[]).await;
    wait_for("all sent", STEP, || async {
        let n: i64 = sqlx::query_scalar("select count(*) from wa_message where session_id = 'e2e_hostile' and status in ('sent', 'delivered', 'read')").fetch_one(p).await.unwrap();
        (n == bodies.len() as i64 + 1).then_some(())
    })
    .await;
    let recorded = sim().await.sent_by("15550100002").await;
    for (id, body) in ids.iter().zip(&bodies) {
        let wa_id = msg(p, *id).await.2.unwrap();
        let m = recorded
            .iter()
            .find(|m| m["id"] == bare_id(&wa_id))
            .expect("recorded");
        assert_eq!(m["body"].as_str(), Some(body.as_str()));
    }
    assert_eq!(msg(p, last).await.1, None);
    assert_eq!(session(p, "e2e_hostile").await.0, "connected");
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_forbidden_and_oversized_fail_with_their_codes_and_nothing_is_sent() {
    let db = test_db().await;
    let (media_url, _) = media_server().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_bad", "15550100003").await;
    sim()
        .await
        .post("/_sim/unregistered", json!({"numbers": ["15550299999"]}))
        .await;
    let cases = [
        (insert(p, "insert into wa_message (session_id, recipient, body) values ('e2e_bad', '15550299999', 'hello?') returning id", &[]).await, "not_on_whatsapp"),
        (insert(p, "insert into wa_message (session_id, recipient, kind, media_url) values ('e2e_bad', '15550200003', 'image', 'http://169.254.169.254/latest/meta-data/') returning id", &[]).await, "media_host_forbidden"),
        (insert(p, "insert into wa_message (session_id, recipient, kind, media_url) values ('e2e_bad', '15550200003', 'image', 'http://example.com/cat.png') returning id", &[]).await, "media_host_forbidden"),
        (insert(p, "insert into wa_message (session_id, recipient, kind, media_url) values ('e2e_bad', '15550200003', 'document', $1) returning id", &[&format!("{media_url}/big.bin")]).await, "media_too_large"),
        (
            sqlx::query_scalar("insert into wa_message (session_id, recipient, kind, media_data, media_mime) values ('e2e_bad', '15550200003', 'document', $1, 'application/octet-stream') returning id")
                .bind(vec![1u8; 2 * 1024 * 1024]).fetch_one(p).await.unwrap(),
            "media_too_large",
        ),
    ];
    wait_for("all failed", STEP, || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from wa_message where session_id = 'e2e_bad' and status = 'failed'",
        )
        .fetch_one(p)
        .await
        .unwrap();
        (n == cases.len() as i64).then_some(())
    })
    .await;
    for (id, code) in cases {
        assert_eq!(msg(p, id).await.1.as_deref(), Some(code), "message {id}");
    }
    assert!(
        sim().await.sent_by("15550100003").await.is_empty(),
        "nothing reached the simulator"
    );
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_browser_comes_back_without_a_qr_and_queued_messages_go_out_once() {
    let db = test_db().await;
    let (r, data_dir) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_crash", "15550100004").await;
    let before = insert(p, "insert into wa_message (session_id, recipient, body) values ('e2e_crash', '15550200004', 'before the crash') returning id", &[]).await;
    wait_for("first sent", STEP, || async {
        (msg(p, before).await.0 != "queued" && msg(p, before).await.0 != "sending").then_some(())
    })
    .await;
    let last_event: i64 = sqlx::query_scalar("select coalesce(max(id), 0) from wa_event")
        .fetch_one(p)
        .await
        .unwrap();

    // Chromium commits the page's localStorage (where the login keeps `WANoiseInfo`, as on
    // WhatsApp Web) about 5 s after the write; a browser killed before that comes back to a QR,
    // as the real page would. What this test proves is a crash after the login is on disk.
    let local_storage = data_dir.join("profiles/e2e_crash/Default/Local Storage");
    wait_for("the login's localStorage on disk", STEP, || async {
        wa_outbox::testing::dir_contains(&local_storage, b"WANoiseInfo").then_some(())
    })
    .await;
    let pids = chromium_pids(&data_dir.join("profiles/e2e_crash"));
    assert!(!pids.is_empty(), "no Chromium found for the session");
    for pid in &pids {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let mut queued = Vec::new();
    for i in 0..5 {
        queued.push(insert(p, "insert into wa_message (session_id, recipient, body) values ('e2e_crash', '15550200004', $1) returning id", &[&format!("after {i}")]).await);
    }
    // Back to connected after going through a restart, with no QR on the way.
    wait_for("a restart", STEP, || async {
        let n: i64 = sqlx::query_scalar("select count(*) from wa_event where id > $1 and kind = 'session_status' and payload->>'status' = 'starting'")
            .bind(last_event).fetch_one(p).await.unwrap();
        (n >= 1).then_some(())
    })
    .await;
    wait_status(p, "e2e_crash", "connected").await;
    let qr_events: i64 = sqlx::query_scalar(
        "select count(*) from wa_event where id > $1 and payload->>'status' = 'qr_pending'",
    )
    .bind(last_event)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(qr_events, 0, "the restart showed a QR");
    // Settled means sent (or further) or failed; a failure is reported with its code below.
    let deadline = std::time::Instant::now() + STEP * 2;
    loop {
        let rows: Vec<(i64, String, Option<String>, i32)> =
            sqlx::query_as("select id, status, error_code, attempts from wa_message where id = any($1) order by id")
                .bind(&queued)
                .fetch_all(p)
                .await
                .unwrap();
        if rows
            .iter()
            .all(|r| matches!(r.1.as_str(), "sent" | "delivered" | "read"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && !rows.iter().any(|r| r.1 == "failed"),
            "queued messages not all sent: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recorded = sim().await.sent_by("15550100004").await;
    assert_eq!(recorded.len(), 6, "each message exactly once: {recorded:?}");
    assert_eq!(
        sim().await.linked_devices("15550100004").await,
        1,
        "no new device link"
    );
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_from_the_phone_ends_the_session_and_fails_its_queued_messages() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_logout", "15550100005").await;
    let later = insert(p, "insert into wa_message (session_id, recipient, body, not_before) values ('e2e_logout', '15550200005', 'later', now() + interval '1 hour') returning id", &[]).await;
    sim()
        .await
        .post("/_sim/logout", json!({"phone": "15550100005"}))
        .await;
    wait_status(p, "e2e_logout", "logged_out").await;
    assert_eq!(
        session(p, "e2e_logout").await.4.as_deref(),
        Some("device_unlinked")
    );
    assert_eq!(msg(p, later).await.0, "failed");
    assert_eq!(msg(p, later).await.1.as_deref(), Some("session_logged_out"));
    // Later messages fail at once too.
    let after = insert(p, "insert into wa_message (session_id, recipient, body) values ('e2e_logout', '15550200005', 'after') returning id", &[]).await;
    assert_eq!(msg(p, after).await.1.as_deref(), Some("session_logged_out"));
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_state_stopped_and_logged_out_are_honoured_within_seconds() {
    let db = test_db().await;
    let (r, data_dir) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_desired", "15550100006").await;
    let profile = data_dir.join("profiles/e2e_desired");
    sqlx::query("update wa_session set desired_state = 'stopped' where id = 'e2e_desired'")
        .execute(p)
        .await
        .unwrap();
    wait_status(p, "e2e_desired", "stopped").await;
    wait_for("browser closed", Duration::from_secs(15), || async {
        chromium_pids(&profile).is_empty().then_some(())
    })
    .await;
    let queued = insert(p, "insert into wa_message (session_id, recipient, body) values ('e2e_desired', '15550200006', 'waits') returning id", &[]).await;
    assert_eq!(msg(p, queued).await.0, "queued");
    let last_event: i64 = sqlx::query_scalar("select coalesce(max(id), 0) from wa_event")
        .fetch_one(p)
        .await
        .unwrap();
    sqlx::query("update wa_session set desired_state = 'running' where id = 'e2e_desired'")
        .execute(p)
        .await
        .unwrap();
    wait_status(p, "e2e_desired", "connected").await;
    let qr_events: i64 = sqlx::query_scalar(
        "select count(*) from wa_event where id > $1 and payload->>'status' = 'qr_pending'",
    )
    .bind(last_event)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(qr_events, 0, "resuming a stopped session showed a QR");
    wait_for("the waiting message sent", STEP, || async {
        (msg(p, queued).await.0 != "queued").then_some(())
    })
    .await;
    sqlx::query("update wa_session set desired_state = 'logged_out' where id = 'e2e_desired'")
        .execute(p)
        .await
        .unwrap();
    wait_status(p, "e2e_desired", "logged_out").await;
    assert_eq!(
        session(p, "e2e_desired").await.4,
        None,
        "a requested logout is not an error"
    );
    wait_for(
        "device unlinked at the simulator",
        Duration::from_secs(15),
        || async { (sim().await.linked_devices("15550100006").await == 0).then_some(()) },
    )
    .await;
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_pair_phone_links_by_pairing_code() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    sqlx::query("insert into wa_session (id, pair_phone) values ('e2e_pair', '+15550100007')")
        .execute(p)
        .await
        .unwrap();
    let code: String = wait_for("the pairing code row", STEP, || async {
        let (status, code): (String, Option<String>) =
            sqlx::query_as("select status, pairing_code from wa_session where id = 'e2e_pair'")
                .fetch_one(p)
                .await
                .unwrap();
        code.filter(|_| status == "pairing")
    })
    .await;
    assert_eq!(
        code.chars().filter(|c| c.is_ascii_alphanumeric()).count(),
        8,
        "{code}"
    );
    let (_, qr, ..) = session(p, "e2e_pair").await;
    assert!(qr.is_none(), "a pairing-code session shows no QR");
    sim()
        .await
        .post("/_sim/pair", json!({"code": code, "phone": "15550100007"}))
        .await;
    wait_status(p, "e2e_pair", "connected").await;
    assert_eq!(
        session(p, "e2e_pair").await.3.as_deref(),
        Some("+15550100007")
    );
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_send_is_retried_under_a_new_id_and_arrives_once() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_refused", "15550100008").await;
    // WhatsApp refuses this account's next send: the page marks it ack -1 and keeps it.
    sim()
        .await
        .post(
            "/_sim/faults",
            json!({"phone": "15550100008", "fail_sends": 1}),
        )
        .await;
    let id = insert(p, "insert into wa_message (session_id, recipient, body) values ('e2e_refused', '15550200008', 'second time lucky') returning id", &[]).await;
    // The simulator acks up to read by default; a row stuck short of it (or failed) times out.
    let (status, code, attempts, wa_id): (String, Option<String>, i32, String) = wait_for(
        "the refused message read",
        Duration::from_secs(60),
        || async {
            let row: (String, Option<String>, i32, Option<String>) = sqlx::query_as(
                "select status, error_code, attempts, wa_message_id from wa_message where id = $1",
            )
            .bind(id)
            .fetch_one(p)
            .await
            .unwrap();
            matches!(row.0.as_str(), "read" | "failed")
                .then(|| (row.0, row.1, row.2, row.3.unwrap()))
        },
    )
    .await;
    assert_eq!(status, "read", "{code:?}");
    assert_eq!(attempts, 2, "one refusal, then one send");
    let recorded = sim().await.sent_by("15550100008").await;
    assert_eq!(recorded.len(), 1, "exactly once: {recorded:?}");
    assert_eq!(recorded[0]["id"], bare_id(&wa_id));
    assert_eq!(recorded[0]["body"], "second time lucky");
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_is_sent_once_and_its_acks_reach_the_row() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_group", "15550100009").await;
    let group = "120363000000000002@g.us";
    let id = insert(p, "insert into wa_message (session_id, recipient, body) values ('e2e_group', $1, 'hello group') returning id", &[group]).await;
    // The page keys a group message with our JID appended; the acks (matched on the bare id)
    // must find the row.
    wait_for(
        "the group message read",
        Duration::from_secs(60),
        || async { (msg(p, id).await.0 == "read").then_some(()) },
    )
    .await;
    let (_, code, wa_id) = msg(p, id).await;
    assert_eq!(code, None);
    let wa_id = wa_id.unwrap();
    assert!(wa_id.starts_with(&format!("true_{group}_3EB0")), "{wa_id}");
    let recorded = sim().await.sent_by("15550100009").await;
    assert_eq!(recorded.len(), 1, "exactly once: {recorded:?}");
    assert_eq!(recorded[0]["to"], group);
    assert_eq!(recorded[0]["body"], "hello group");
    // The row keeps the key the page filed it under (our JID appended for a group).
    assert_eq!(recorded[0]["id"], bare_id(&wa_id));
    let acks: Vec<i64> = sqlx::query_scalar(
        "select (payload->>'ack')::bigint from wa_event where message_id = $1 and kind = 'ack' order by id",
    )
    .bind(id)
    .fetch_all(p)
    .await
    .unwrap();
    assert_eq!(acks.last(), Some(&3), "ack events: {acks:?}");
    r.shutdown().await.unwrap();
}

/// Today's page reloads itself (after pairing, on service-worker updates: OpenWA PR #1181). A
/// reload in the middle of a send tears down the page's send: the message is in the page's own
/// store, pending (ack 0), and the server never got it. On the reloaded page (which files
/// one-to-one messages under the contact's LID) that leftover must not pass for sent: the row is
/// sent again under its id, and every message reaches WhatsApp exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reloaded_mid_send_loses_nothing_and_sends_nothing_twice() {
    let db = test_db().await;
    // A simulator of this test's own: the slow server below must not slow the other tests.
    let (url, _sim) = wa_outbox::sim::spawn("127.0.0.1:0", wa_outbox::sim::SimConfig::default())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let (r, _) = start_runner_at(&db, &url).await;
    let p = &db.pool;
    let phone = "15550100031";
    sqlx::query("insert into wa_session (id) values ('e2e_reload')")
        .execute(p)
        .await
        .unwrap();
    let qr = wait_for("the QR", STEP, || async {
        match session(p, "e2e_reload").await {
            (s, Some(q), ..) if s == "qr_pending" => Some(q),
            _ => None,
        }
    })
    .await;
    let scan = http
        .post(format!("{url}/_sim/scan"))
        .json(&json!({"qr": qr, "phone": phone, "name": "Reload"}))
        .send()
        .await
        .unwrap();
    assert!(scan.status().is_success());
    wait_status(p, "e2e_reload", "connected").await;

    let faults = |body: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(format!("{url}/_sim/faults"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
    };
    // The first send leaves the page (in Msg and the page's own store, ack 0) and is lost on the
    // way; the page reloads before anything answers it.
    faults(json!({"lose_sends": true})).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            insert(
                p,
                "insert into wa_message (session_id, recipient, body) values ('e2e_reload', '15550100032', $1) returning id",
                &[&format!("reload {i}")],
            )
            .await,
        );
    }
    wait_for("a send lost on its way", STEP, || async {
        let v: Value = http
            .get(format!("{url}/_sim/faults"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (v["faults"]["lost_sends"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    let reload = http
        .post(format!("{url}/_sim/reload"))
        .json(&json!({"phone": phone}))
        .send()
        .await
        .unwrap();
    assert!(reload.status().is_success());
    faults(json!({"lose_sends": false})).await;

    wait_for("every message sent", Duration::from_secs(120), || async {
        let mut done = 0;
        for id in &ids {
            let s = msg(p, *id).await.0;
            assert!(s != "failed", "message {id} failed");
            done += usize::from(["sent", "delivered", "read"].contains(&s.as_str()));
        }
        (done == ids.len()).then_some(())
    })
    .await;
    let recorded: Value = http
        .get(format!("{url}/_sim/messages?phone={phone}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let recorded = recorded["messages"].as_array().cloned().unwrap_or_default();
    for id in &ids {
        let wa_id = msg(p, *id).await.2.unwrap();
        let hits = recorded
            .iter()
            .filter(|m| m["id"] == bare_id(&wa_id))
            .count();
        assert_eq!(hits, 1, "message {id} recorded {hits} times: {recorded:?}");
    }
    assert_eq!(recorded.len(), ids.len(), "{recorded:?}");
    r.shutdown().await.unwrap();
}
