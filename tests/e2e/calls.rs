//! Calls and group changes from the other side (issue 14): the simulator places a call or changes
//! a group as another account; the runner records one `call` / `group_update` event, and with
//! `reject_calls` declines the call through the page (the simulator's server sees the reject).

use serde_json::{json, Value};
use sqlx::PgPool;
use wa_outbox::testing::{test_db, wait_for};

use crate::*;

/// The `kind` events of a session for one key (call id or notification key).
async fn events(pool: &PgPool, session: &str, kind: &str, key: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "select payload from wa_event where session_id = $1 and kind = $2 and wa_message_id = $3 order by id",
    )
    .bind(session)
    .bind(kind)
    .bind(key)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn the_event(pool: &PgPool, session: &str, kind: &str, key: &str) -> Value {
    wait_for(&format!("the {kind} event {key}"), STEP, || async {
        events(pool, session, kind, key).await.into_iter().next()
    })
    .await
}

async fn sim_call(phone: &str, id: &str) -> Value {
    let calls = sim().await.get(&format!("/_sim/calls?phone={phone}")).await;
    calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("the simulator has no call {id}: {calls}"))
}

async fn place_call(to: &str, from: &str, video: bool, ring_ms: u64) -> String {
    let r = sim()
        .await
        .post(
            "/_sim/call",
            json!({"to": to, "from": from, "video": video, "ring_ms": ring_ms}),
        )
        .await;
    r["id"].as_str().unwrap().to_string()
}

/// reject_calls = true: the call is declined through the page once (the server counts one
/// reject), the event says rejected; a call placed while the page reconnects is declined once
/// too, and the first one is not declined again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reject_calls_an_incoming_call_is_rejected_once_and_recorded_once() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    let (me, caller) = ("15550197001", "15550197002");
    link(p, "e2e_calls_reject", me).await;
    sqlx::query("update wa_session set reject_calls = true where id = 'e2e_calls_reject'")
        .execute(p)
        .await
        .unwrap();

    let id = place_call(me, caller, true, 60_000).await;
    let ev = the_event(p, "e2e_calls_reject", "call", &id).await;
    assert_eq!(ev["call_id"], id.as_str());
    assert_eq!(ev["from"], format!("{caller}@c.us").as_str(), "{ev}");
    assert_eq!(ev["is_video"], true);
    assert_eq!(ev["is_group"], false);
    assert_eq!(ev["rejected"], true, "{ev}");
    assert_eq!(ev["reject_calls"], true);
    assert_eq!(ev["reject_error"], Value::Null);
    assert!(ev["timestamp"].as_i64().unwrap() > 1_700_000_000, "{ev}");
    let c = sim_call(me, &id).await;
    assert_eq!(
        (c["state"].as_str(), c["rejects"].as_u64()),
        (Some("rejected"), Some(1)),
        "{c}"
    );

    // The page's socket drops and comes back while a second call rings: it is declined once,
    // recorded once, and the first call is neither declined nor recorded again.
    sim()
        .await
        .post("/_sim/faults", json!({"phone": me, "drop_socket": true}))
        .await;
    let second = place_call(me, caller, false, 60_000).await;
    let ev2 = the_event(p, "e2e_calls_reject", "call", &second).await;
    assert_eq!(ev2["rejected"], true, "{ev2}");
    assert_eq!(ev2["is_video"], false);
    let c2 = wait_for("the second call rejected on the server", STEP, || async {
        let c = sim_call(me, &second).await;
        (c["state"] == "rejected").then_some(c)
    })
    .await;
    assert_eq!(c2["rejects"], 1, "{c2}");
    assert!(c2["offers"].as_u64().unwrap() >= 1, "{c2}");
    // Another page connect offers nothing old: the first call stays declined once.
    assert_eq!(sim_call(me, &id).await["rejects"], 1);
    assert_eq!(events(p, "e2e_calls_reject", "call", &id).await.len(), 1);
    assert_eq!(
        events(p, "e2e_calls_reject", "call", &second).await.len(),
        1
    );
    let all: i64 = sqlx::query_scalar(
        "select count(*) from wa_event where session_id = 'e2e_calls_reject' and kind = 'call'",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(all, 2);
    r.shutdown().await.unwrap();
}

/// reject_calls = false (the default): the call is recorded, not rejected; the server sees no
/// reject and the call rings out (missed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reject_calls_an_incoming_call_is_recorded_and_left_ringing() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    let (me, caller) = ("15550197011", "15550197012");
    link(p, "e2e_calls_keep", me).await;
    let id = place_call(me, caller, false, 3_000).await;
    let ev = the_event(p, "e2e_calls_keep", "call", &id).await;
    assert_eq!(ev["rejected"], false, "{ev}");
    assert_eq!(ev["reject_calls"], false);
    assert_eq!(ev["is_video"], false);
    assert_eq!(ev["from"], format!("{caller}@c.us").as_str());
    let c = wait_for("the call missed on the server", STEP, || async {
        let c = sim_call(me, &id).await;
        (c["state"] != "ringing").then_some(c)
    })
    .await;
    assert_eq!(
        (c["state"].as_str(), c["rejects"].as_u64()),
        (Some("missed"), Some(0)),
        "{c}"
    );
    assert_eq!(events(p, "e2e_calls_keep", "call", &id).await.len(), 1);
    r.shutdown().await.unwrap();
}

async fn command_done(pool: &PgPool, session: &str, kind: &str, args: Value) -> Value {
    let id: i64 = sqlx::query_scalar(
        "insert into wa_command (session_id, kind, args) values ($1, $2, $3) returning id",
    )
    .bind(session)
    .bind(kind)
    .bind(args)
    .fetch_one(pool)
    .await
    .unwrap();
    let (status, result, error): (String, Option<Value>, Option<String>) =
        wait_for(&format!("command {id}"), STEP, || async {
            let r: (String, Option<Value>, Option<String>) =
                sqlx::query_as("select status, result, error from wa_command where id = $1")
                    .bind(id)
                    .fetch_one(pool)
                    .await
                    .unwrap();
            (r.0 == "done" || r.0 == "failed").then_some(r)
        })
        .await;
    assert_eq!(status, "done", "{kind}: {error:?}");
    result.unwrap()
}

/// Another member adds a participant and changes the subject: one group_update event each, with
/// the actor and participants, and group_info then shows the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_changed_by_another_member_is_recorded_once_and_group_info_shows_it() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    let (me, admin, newcomer) = ("15550197021", "15550197022", "15550197023");
    let s = "e2e_group_update";
    link(p, s, me).await;
    let created = command_done(
        p,
        s,
        "group_create",
        json!({"subject": "Before", "participants": [admin]}),
    )
    .await;
    let gid = created["id"].as_str().unwrap().to_string();
    command_done(
        p,
        s,
        "group_participants",
        json!({"group": gid, "action": "promote", "participants": [admin]}),
    )
    .await;

    let added = sim()
        .await
        .post(
            "/_sim/group_update",
            json!({"group": gid, "actor": admin, "action": "add", "participants": [newcomer]}),
        )
        .await;
    assert_eq!(added["notified_pages"], 1, "{added}");
    let key = wait_for("the group_update row", STEP, || async {
        sqlx::query_scalar::<_, String>(
            "select wa_message_id from wa_event where session_id = $1 and kind = 'group_update'",
        )
        .bind(s)
        .fetch_optional(p)
        .await
        .unwrap()
    })
    .await;
    assert!(key.contains(added["id"].as_str().unwrap()), "{key}");
    let ev = the_event(p, s, "group_update", &key).await;
    assert_eq!(ev["group_id"], gid.as_str());
    assert_eq!(ev["action"], "add");
    assert_eq!(ev["actor"], format!("{admin}@c.us").as_str());
    assert_eq!(ev["participants"], json!([format!("{newcomer}@c.us")]));
    assert_eq!(ev["subject"], Value::Null);

    sim()
        .await
        .post(
            "/_sim/group_update",
            json!({"group": gid, "actor": admin, "action": "subject", "subject": "After"}),
        )
        .await;
    let subject_ev = wait_for("the subject change", STEP, || async {
        let rows: Vec<Value> = sqlx::query_scalar(
            "select payload from wa_event where session_id = $1 and kind = 'group_update' order by id",
        )
        .bind(s)
        .fetch_all(p)
        .await
        .unwrap();
        (rows.len() == 2).then(|| rows[1].clone())
    })
    .await;
    assert_eq!(subject_ev["action"], "subject");
    assert_eq!(subject_ev["subject"], "After");
    assert_eq!(subject_ev["participants"], json!([]));

    let info = command_done(p, s, "group_info", json!({"group": gid})).await;
    assert_eq!(info["subject"], "After", "{info}");
    let members: Vec<&str> = info["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        members.contains(&format!("{newcomer}@c.us").as_str()),
        "{info}"
    );
    // Each notification once, and none recorded as an incoming message.
    let (updates, messages): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where kind = 'group_update'), count(*) filter (where kind = 'message')
         from wa_event where session_id = $1",
    )
    .bind(s)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!((updates, messages), (2, 0));
    r.shutdown().await.unwrap();
}
