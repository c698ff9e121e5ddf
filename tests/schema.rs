//! The table contract on a real PostgreSQL: what Django may insert, what the CHECKs refuse,
//! the triggers and the views.

use wa_outbox::testing::test_db;

#[tokio::test]
async fn minimal_inserts_work_as_django_does_them() {
    let db = test_db().await;
    sqlx::query("insert into wa_session (id) values ('user_1_session')")
        .execute(&db.pool)
        .await
        .unwrap();
    let id: i64 = sqlx::query_scalar(
        "insert into wa_message (session_id, recipient, body) values ('user_1_session', '15551234567', 'hi') returning id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let (status, kind, attempts, max_attempts): (String, String, i32, i32) =
        sqlx::query_as("select status, kind, attempts, max_attempts from wa_message where id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), kind.as_str(), attempts, max_attempts),
        ("queued", "text", 0, 5)
    );
    let (st, ds): (String, String) = sqlx::query_as("select status, desired_state from wa_session")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((st.as_str(), ds.as_str()), ("new", "running"));
}

#[tokio::test]
async fn check_constraints_refuse_bad_rows() {
    let db = test_db().await;
    sqlx::query("insert into wa_session (id) values ('s1')")
        .execute(&db.pool)
        .await
        .unwrap();
    let bad = [
        "insert into wa_session (id) values ('has space')",
        "insert into wa_session (id) values ('')",
        "insert into wa_session (id) values ('x1234567890123456789012345678901234567890123456789012345678901234')",
        "insert into wa_session (id, desired_state) values ('s2', 'paused')",
        "insert into wa_session (id, status) values ('s3', 'online')",
        "insert into wa_session (id, pair_phone) values ('s4', 'call me')",
        "insert into wa_session (id, error_code) values ('s5', 'oops')",
        "insert into wa_message (session_id, recipient, kind) values ('s1', '1555', 'carrier_pigeon')",
        "insert into wa_message (session_id, recipient, status) values ('s1', '1555', 'lost')",
        "insert into wa_message (session_id, recipient) values ('s1', '')",
        "insert into wa_message (session_id, recipient) values ('nope', '1555')",
        "insert into wa_message (session_id, recipient, options) values ('s1', '1555', '[1]')",
        "insert into wa_message (session_id, recipient, max_attempts) values ('s1', '1555', 0)",
        "insert into wa_message (session_id, recipient, kind, media_url, media_data) values ('s1', '1555', 'image', 'https://x/y.png', '\\x00')",
        "insert into wa_event (session_id, kind) values ('s1', 'bogus')",
        "insert into wa_command (session_id, kind) values ('s1', 'reboot')",
        "insert into wa_command (session_id, kind, status) values ('s1', 'mark_read', 'lost')",
        "insert into wa_command (session_id, kind) values ('nope', 'mark_read')",
        "insert into wa_command (session_id, kind, error_code) values ('s1', 'mark_read', 'oops')",
    ];
    for sql in bad {
        let err = sqlx::query(sql).execute(&db.pool).await.expect_err(sql);
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.to_string());
        assert!(
            matches!(
                code.as_deref(),
                Some("23514") | Some("23503") | Some("22001")
            ),
            "{sql}: unexpected error {err}"
        );
    }
    let n: i64 = sqlx::query_scalar("select count(*) from wa_message")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing half-valid is stored");
}

#[tokio::test]
async fn duplicate_idempotency_key_is_rejected() {
    let db = test_db().await;
    sqlx::query("insert into wa_session (id) values ('s1')")
        .execute(&db.pool)
        .await
        .unwrap();
    let ins = "insert into wa_message (session_id, recipient, body, idempotency_key) values ('s1', '1555', 'a', 'order-42')";
    sqlx::query(ins).execute(&db.pool).await.unwrap();
    let err = sqlx::query(ins).execute(&db.pool).await.unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some("23505")
    );
    let n: i64 = sqlx::query_scalar("select count(*) from wa_message")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn only_queued_messages_can_be_cancelled() {
    let db = test_db().await;
    sqlx::query("insert into wa_session (id) values ('s1')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("insert into wa_message (session_id, recipient, body) values ('s1', '1555', 'a'), ('s1', '1555', 'b')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("update wa_message set status = 'cancelled' where body = 'a'")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("update wa_message set status = 'sent' where body = 'b'")
        .execute(&db.pool)
        .await
        .unwrap();
    let err = sqlx::query("update wa_message set status = 'cancelled' where body = 'b'")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("only a queued message can be cancelled"),
        "{err}"
    );
}

#[tokio::test]
async fn messages_for_a_logged_out_session_fail_at_once() {
    let db = test_db().await;
    sqlx::query("insert into wa_session (id, status, desired_state) values ('s1', 'logged_out', 'logged_out')")
        .execute(&db.pool)
        .await
        .unwrap();
    let (status, code): (String, Option<String>) = sqlx::query_as(
        "insert into wa_message (session_id, recipient, body) values ('s1', '1555', 'a') returning status, error_code",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), code.as_deref()),
        ("failed", Some("session_logged_out"))
    );
    // Asking it to run again starts it afresh, and new messages queue.
    sqlx::query("update wa_session set desired_state = 'running' where id = 's1'")
        .execute(&db.pool)
        .await
        .unwrap();
    let st: String = sqlx::query_scalar("select status from wa_session")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(st, "new");
}

#[tokio::test]
async fn notifications_fire_for_messages_sessions_and_events() {
    let db = test_db().await;
    let mut outbox = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    outbox.listen_all(["wa_outbox", "wa_event"]).await.unwrap();
    sqlx::query("insert into wa_session (id) values ('s1')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("insert into wa_message (session_id, recipient, body) values ('s1', '1555', 'a')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("insert into wa_event (session_id, kind) values ('s1', 'session_status')")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), outbox.recv())
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(n.payload()).unwrap();
        got.push((
            n.channel().to_string(),
            v["kind"].as_str().unwrap().to_string(),
            v["session_id"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(
        got,
        vec![
            ("wa_outbox".into(), "session".into(), "s1".into()),
            ("wa_outbox".into(), "message".into(), "s1".into()),
            ("wa_event".into(), "session_status".into(), "s1".into()),
        ]
    );
}

#[tokio::test]
async fn views_answer() {
    let db = test_db().await;
    sqlx::query("insert into wa_session (id) values ('s1')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("insert into wa_message (session_id, recipient, body) values ('s1', '1555', 'a'), ('s1', '1555', 'b')")
        .execute(&db.pool)
        .await
        .unwrap();
    let queued: i64 =
        sqlx::query_scalar("select queued from wa_outbox_stats where session_id = 's1'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(queued, 2);
    let q: i64 = sqlx::query_scalar("select queued from wa_session_overview where id = 's1'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(q, 2);
    sqlx::query("select * from wa_runner_overview")
        .fetch_all(&db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn schema_check_refuses_unmigrated_and_newer() {
    let db = test_db().await;
    wa_outbox::db::check_schema(&db.pool).await.unwrap();
    sqlx::query("insert into _sqlx_migrations (version, description, success, checksum, execution_time) values (99990101000000, 'future', true, '\\x00', 0)")
        .execute(&db.pool)
        .await
        .unwrap();
    let err = wa_outbox::db::check_schema(&db.pool).await.unwrap_err();
    assert!(
        err.to_string().contains("newer than this wa-outbox binary"),
        "{err}"
    );
    sqlx::query("drop table _sqlx_migrations")
        .execute(&db.pool)
        .await
        .unwrap();
    let err = wa_outbox::db::check_schema(&db.pool).await.unwrap_err();
    assert!(err.to_string().contains("not migrated"), "{err}");
}

#[tokio::test]
async fn commands_notify_on_insert_and_completion_and_only_queued_ones_cancel() {
    let db = test_db().await;
    sqlx::query("insert into wa_session (id) values ('s1')")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut l = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    l.listen_all(["wa_outbox", "wa_command"]).await.unwrap();
    let id: i64 = sqlx::query_scalar(
        "insert into wa_command (session_id, kind, args, idempotency_key) values ('s1', 'mark_read', '{\"chat\": \"15551234567\"}', 'k1') returning id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let dup = sqlx::query(
        "insert into wa_command (session_id, kind, idempotency_key) values ('s1', 'mark_read', 'k1')",
    )
    .execute(&db.pool)
    .await;
    assert!(dup.is_err(), "idempotency_key is unique");
    sqlx::query("update wa_command set status = 'running' where id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    let cancel = sqlx::query("update wa_command set status = 'cancelled' where id = $1")
        .bind(id)
        .execute(&db.pool)
        .await;
    assert!(cancel.is_err(), "a running command cannot be cancelled");
    sqlx::query("update wa_command set status = 'done', result = '{}' where id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), l.recv())
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(n.payload()).unwrap();
        if v["id"].as_i64() != Some(id) {
            continue;
        }
        got.push((
            n.channel().to_string(),
            v["kind"]
                .as_str()
                .or(v["status"].as_str())
                .unwrap()
                .to_string(),
        ));
    }
    // The command's insert wakes runners; its completion tells callers (the session's own
    // notification and the refused cancel are skipped).
    assert_eq!(
        got[..2],
        [
            ("wa_outbox".to_string(), "command".to_string()),
            ("wa_command".to_string(), "done".to_string()),
        ]
    );
    // A command for a logged-out session fails at once.
    sqlx::query("update wa_session set status = 'logged_out' where id = 's1'")
        .execute(&db.pool)
        .await
        .unwrap();
    let (status, code): (String, Option<String>) = sqlx::query_as(
        "insert into wa_command (session_id, kind) values ('s1', 'presence') returning status, error_code",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), code.as_deref()),
        ("failed", Some("session_logged_out"))
    );
}

/// Work for a session with a live lease is announced to its owner only; work for a session
/// nobody holds goes to every runner (issue 16: wake-ups per insert do not grow with runners).
#[tokio::test]
async fn notifications_go_to_the_owner_while_its_lease_is_live() {
    let db = test_db().await;
    let owner = uuid::Uuid::new_v4();
    let own = format!("wa_outbox_{owner}");
    let mut l = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    l.listen_all(["wa_outbox", own.as_str()]).await.unwrap();
    sqlx::query("insert into wa_session (id) values ('held'), ('free')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("update wa_session set runner_id = $1, lease_until = now() + interval '1 minute' where id = 'held'")
        .bind(owner)
        .execute(&db.pool)
        .await
        .unwrap();
    // Expired lease: nobody holds it.
    sqlx::query("update wa_session set runner_id = $1, lease_until = now() - interval '1 second' where id = 'free'")
        .bind(owner)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        // The two inserts of the sessions themselves.
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), l.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n.channel(), "wa_outbox");
    }
    sqlx::query("insert into wa_message (session_id, recipient, body) values ('held', '1555', 'a'), ('free', '1555', 'b')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("insert into wa_command (session_id, kind, args) values ('held', 'presence', '{\"state\": \"available\"}')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("update wa_session set desired_state = 'stopped' where id in ('held', 'free')")
        .execute(&db.pool)
        .await
        .unwrap();
    for _ in 0..5 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), l.recv())
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(n.payload()).unwrap();
        got.push((
            n.channel().to_string(),
            v["kind"].as_str().unwrap().to_string(),
            v["session_id"].as_str().unwrap().to_string(),
        ));
    }
    got.sort();
    let mut want = vec![
        (own.clone(), "message".to_string(), "held".to_string()),
        ("wa_outbox".into(), "message".into(), "free".into()),
        (own.clone(), "command".into(), "held".into()),
        (own.clone(), "session".into(), "held".into()),
        ("wa_outbox".into(), "session".into(), "free".into()),
    ];
    want.sort();
    assert_eq!(got, want);
}

/// wa_media (issue 13): bytes come with their hash and size, or not at all and with a code; one
/// row per event; it goes with its event and its session.
#[tokio::test]
async fn wa_media_holds_bytes_with_their_hash_or_a_code_once_per_event() {
    let db = test_db().await;
    let p = &db.pool;
    sqlx::query("insert into wa_session (id) values ('s1')")
        .execute(p)
        .await
        .unwrap();
    let ev: i64 = sqlx::query_scalar(
        "insert into wa_event (session_id, kind, wa_message_id) values ('s1', 'message', 'false_1@c.us_A') returning id",
    )
    .fetch_one(p)
    .await
    .unwrap();
    let ok = "insert into wa_media (session_id, event_id, wa_message_id, kind, size, sha256, data)
              values ('s1', $1, 'false_1@c.us_A', 'voice', 3, encode(sha256('abc'), 'hex'), 'abc')";
    let bad = [
        // bytes without their hash, a wrong size, an upper-case hash, bytes and a code
        "insert into wa_media (session_id, event_id, wa_message_id, kind, size, data) values ('s1', $1, 'k', 'image', 3, 'abc')",
        "insert into wa_media (session_id, event_id, wa_message_id, kind, size, sha256, data) values ('s1', $1, 'k', 'image', 4, encode(sha256('abc'), 'hex'), 'abc')",
        "insert into wa_media (session_id, event_id, wa_message_id, kind, size, sha256, data) values ('s1', $1, 'k', 'image', 3, upper(encode(sha256('abc'), 'hex')), 'abc')",
        "insert into wa_media (session_id, event_id, wa_message_id, kind, size, sha256, data, error_code) values ('s1', $1, 'k', 'image', 3, encode(sha256('abc'), 'hex'), 'abc', 'media_too_large')",
        // no bytes and no code, an unknown code, an unknown kind, no such event
        "insert into wa_media (session_id, event_id, wa_message_id, kind) values ('s1', $1, 'k', 'image')",
        "insert into wa_media (session_id, event_id, wa_message_id, kind, error_code) values ('s1', $1, 'k', 'image', 'oops')",
        "insert into wa_media (session_id, event_id, wa_message_id, kind, error_code) values ('s1', $1, 'k', 'gif', 'media_too_large')",
        "insert into wa_media (session_id, event_id, wa_message_id, kind, error_code) values ('s1', $1 + 1000, 'k', 'image', 'media_too_large')",
    ];
    for sql in bad {
        let err = sqlx::query(sql).bind(ev).execute(p).await.expect_err(sql);
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.to_string());
        assert!(
            matches!(code.as_deref(), Some("23514") | Some("23503")),
            "{sql}: unexpected error {err}"
        );
    }
    sqlx::query(ok).bind(ev).execute(p).await.unwrap();
    let twice = sqlx::query(ok)
        .bind(ev)
        .execute(p)
        .await
        .expect_err("one row per event");
    assert_eq!(
        twice.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("23505")
    );
    sqlx::query(
        "insert into wa_media (session_id, event_id, wa_message_id, kind, size, error_code, error)
         values ('s1', (select id from wa_event limit 0), 'k', 'image', 9, 'media_too_large', 'big')",
    )
    .execute(p)
    .await
    .expect_err("event_id is required");
    sqlx::query("delete from wa_event where id = $1")
        .bind(ev)
        .execute(p)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("select count(*) from wa_media")
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(n, 0, "media goes with its event");
}
