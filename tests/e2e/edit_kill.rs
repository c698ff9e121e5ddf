//! Exactly once for edits and revokes (issue 13): the runner is SIGKILLed while the page's edit
//! (or revoke) is held on the server, so the row is `sending` and nobody can tell yet whether it
//! went out. A second runner takes the session over — deterministically: the first one's browser
//! dies with it (parent-death signal), its login is already stored, and its lease lapses after
//! the short TTL — and settles the row `send_failed` ("may or may not") without sending it again.
//! The held edit completes on the server; the server ends with exactly one.

use std::time::Duration;

use serde_json::{json, Value};
use wa_outbox::dispatcher::bare_id;
use wa_outbox::testing::{test_db, wait_for};

use crate::fleet::{link_all, runner_proc};
use crate::*;

const HOLD_MS: u64 = 8_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_or_revoke_interrupted_by_sigkill_is_never_sent_twice() {
    tokio::join!(
        killed_mid_send("edit", "15550800201", "e2e_edit_kill"),
        killed_mid_send("revoke", "15550800211", "e2e_revoke_kill"),
    );
}

async fn held(me: &str) -> u64 {
    sim().await.get("/_sim/faults").await["faults"]["edits_held"][me]
        .as_u64()
        .unwrap_or(0)
}

async fn killed_mid_send(kind: &str, me: &str, session: &str) {
    let db = test_db().await;
    let p = &db.pool;
    let friend = "15550810201";
    let mut r1 = runner_proc(&db, 10, "6s").await;
    link_all(p, &[(session.to_string(), me.to_string())]).await;
    let text: i64 = sqlx::query_scalar(
        "insert into wa_message (session_id, recipient, body) values ($1, $2, 'first words') returning id",
    )
    .bind(session)
    .bind(friend)
    .fetch_one(p)
    .await
    .unwrap();
    let text_wa = wait_for("the text sent", STEP, || async {
        let (status, _, wa) = msg(p, text).await;
        ["sent", "delivered", "read"]
            .contains(&status.as_str())
            .then_some(wa)
            .flatten()
    })
    .await;
    sim()
        .await
        .post(
            "/_sim/faults",
            json!({"phone": me, "edit_delay_ms": HOLD_MS}),
        )
        .await;
    let body = (kind == "edit").then_some("second words");
    let id: i64 = sqlx::query_scalar(
        "insert into wa_message (session_id, recipient, kind, body, options)
         values ($1, $2, $3, $4, jsonb_build_object('target_id', $5::bigint)) returning id",
    )
    .bind(session)
    .bind(friend)
    .bind(kind)
    .bind(body)
    .bind(text)
    .fetch_one(p)
    .await
    .unwrap();
    // The page's call reached the server, which holds it; the row says `sending`.
    wait_for("the edit held on the server", STEP, || async {
        (held(me).await == 1).then_some(())
    })
    .await;
    assert_eq!(msg(p, id).await.0, "sending");
    r1.signal(libc::SIGKILL);
    r1.child.wait().await.unwrap();

    let r2 = runner_proc(&db, 10, "6s").await;
    let (status, code, _) = wait_for("the row settled by the second runner", STEP, || async {
        let m = msg(p, id).await;
        (!["queued", "sending"].contains(&m.0.as_str())).then_some(m)
    })
    .await;
    let error: String = sqlx::query_scalar("select error from wa_message where id = $1")
        .bind(id)
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(
        (status.as_str(), code.as_deref()),
        ("failed", Some("send_failed")),
        "{kind}: {error}"
    );
    assert!(error.contains("may or may not"), "{error}");
    // The held call completes on the server whatever happened to the page: once.
    wait_for(
        "the held edit done",
        Duration::from_millis(HOLD_MS) + STEP,
        || async { (held(me).await == 0).then_some(()) },
    )
    .await;
    let all = sim().await.get(&format!("/_sim/messages?phone={me}")).await;
    let list = if kind == "edit" { "edits" } else { "revokes" };
    let done: Vec<&Value> = all[list]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["parent_id"] == bare_id(&text_wa))
        .collect();
    assert_eq!(done.len(), 1, "{kind} exactly once: {all}");
    if kind == "edit" {
        assert_eq!(done[0]["text"], "second words");
    }
    // The second runner went on with the same login (no new device), and sends as before.
    assert_eq!(sim().await.linked_devices(me).await, 1);
    let after: i64 = sqlx::query_scalar(
        "insert into wa_message (session_id, recipient, body) values ($1, $2, 'after') returning id",
    )
    .bind(session)
    .bind(friend)
    .fetch_one(p)
    .await
    .unwrap();
    wait_for("a message after the takeover sent", STEP, || async {
        (msg(p, after).await.0 != "queued" && msg(p, after).await.0 != "sending").then_some(())
    })
    .await;
    assert_ne!(msg(p, after).await.0, "failed");
    sim()
        .await
        .post("/_sim/faults", json!({"phone": me, "edit_delay_ms": 0}))
        .await;
    r2.drain(Duration::from_secs(60)).await;
}
