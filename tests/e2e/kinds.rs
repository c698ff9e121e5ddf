//! More kinds than text and media (issue 13): each sent through rows by a runner with Chromium,
//! asserted on what the simulator's server recorded.

use std::time::Duration;

use serde_json::{json, Value};
use wa_outbox::dispatcher::bare_id;
use wa_outbox::testing::{test_db, wait_for};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_arrive_once_with_their_pin_and_bad_ones_fail_with_invalid_options() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_kinds_loc", "15550100131").await;

    let insert_loc = |options: Value| async move {
        sqlx::query_scalar::<_, i64>(
            "insert into wa_message (session_id, recipient, kind, options)
             values ('e2e_kinds_loc', '+1 555 020 0131', 'location', $1) returning id",
        )
        .bind(options)
        .fetch_one(p)
        .await
        .unwrap()
    };
    // Bad ones first: they must fail without anything reaching the simulator, and without
    // holding back the good ones behind them.
    let bad = [
        (json!({"latitude": 91, "longitude": 0}), "latitude"),
        (json!({"latitude": 0, "longitude": -180.5}), "longitude"),
        (json!({"latitude": "52.5", "longitude": 13.4}), "latitude"),
        (json!({"longitude": 13.4}), "latitude"),
        (
            json!({"latitude": 52.5, "longitude": 13.4, "name": 7}),
            "name",
        ),
        (
            json!({"latitude": 52.5, "longitude": 13.4, "zoom": 3}),
            "zoom",
        ),
    ];
    let mut bad_ids = Vec::new();
    for (options, names) in &bad {
        bad_ids.push((insert_loc(options.clone()).await, *names));
    }
    let full = insert_loc(json!({"latitude": 52.520008, "longitude": 13.404954,
        "name": "Fernsehturm", "address": "Panoramastraße 1A, 10178 Berlin"}))
    .await;
    let bare = insert_loc(json!({"latitude": -33.8568, "longitude": 151.2153})).await;

    wait_for(
        "every location row finished",
        Duration::from_secs(90),
        || async {
            let n: i64 = sqlx::query_scalar(
                "select count(*) from wa_message where session_id = 'e2e_kinds_loc'
                 and status in ('sent', 'delivered', 'read', 'failed')",
            )
            .fetch_one(p)
            .await
            .unwrap();
            (n == bad.len() as i64 + 2).then_some(())
        },
    )
    .await;
    for (id, names) in bad_ids {
        let (status, code, error): (String, Option<String>, Option<String>) =
            sqlx::query_as("select status, error_code, error from wa_message where id = $1")
                .bind(id)
                .fetch_one(p)
                .await
                .unwrap();
        assert_eq!(status, "failed", "row {id}");
        assert_eq!(code.as_deref(), Some("invalid_options"), "row {id}");
        let error = error.unwrap_or_default();
        assert!(error.contains(names), "row {id}: {error:?} names {names}");
    }

    // Both good ones reach `read` (acks flow back as for any message).
    let recorded = read_and_recorded(p, "both locations read", &[full, bare], "15550100131").await;
    for (id, want) in [
        (
            full,
            json!({"lat": 52.520008, "lng": 13.404954, "name": "Fernsehturm",
                   "address": "Panoramastraße 1A, 10178 Berlin"}),
        ),
        (
            bare,
            json!({"lat": -33.8568, "lng": 151.2153, "name": null, "address": null}),
        ),
    ] {
        let (_, _, wa_id) = msg(p, id).await;
        let wa_id = wa_id.expect("wa_message_id");
        let hits: Vec<&Value> = recorded
            .iter()
            .filter(|m| m["id"] == bare_id(&wa_id))
            .collect();
        assert_eq!(hits.len(), 1, "location {id} recorded {} times", hits.len());
        assert_eq!(hits[0]["kind"], "location");
        assert_eq!(hits[0]["to"], "15550200131@c.us");
        assert_eq!(hits[0]["location"], want, "location {id}");
        assert!(hits[0]["body"].is_null(), "a location has no body");
    }
    r.shutdown().await.unwrap();
}

// ---- contact cards, polls and mentions -------------------------------------------------------

/// Inserts `rows` (kind, body, options) for `session` to `+1 555 020 <suffix>`, waits until
/// every one has finished (sent onwards or failed) and returns their ids in order.
async fn send_rows(
    p: &sqlx::PgPool,
    session: &str,
    to: &str,
    rows: &[(&str, Option<&str>, Value)],
) -> Vec<i64> {
    let mut ids = Vec::new();
    for (kind, body, options) in rows {
        ids.push(
            sqlx::query_scalar::<_, i64>(
                "insert into wa_message (session_id, recipient, kind, body, options)
                 values ($1, $2, $3, $4, $5) returning id",
            )
            .bind(session)
            .bind(to)
            .bind(kind)
            .bind(body)
            .bind(options)
            .fetch_one(p)
            .await
            .unwrap(),
        );
    }
    wait_for("every row finished", Duration::from_secs(90), || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from wa_message where id = any($1)
             and status in ('sent', 'delivered', 'read', 'failed')",
        )
        .bind(&ids)
        .fetch_one(p)
        .await
        .unwrap();
        (n == ids.len() as i64).then_some(())
    })
    .await;
    ids
}

/// Each of `bad` failed with invalid_options and an error naming its key.
async fn assert_invalid(p: &sqlx::PgPool, bad: &[(i64, &str)]) {
    for (id, names) in bad {
        let (status, code, error): (String, Option<String>, Option<String>) =
            sqlx::query_as("select status, error_code, error from wa_message where id = $1")
                .bind(id)
                .fetch_one(p)
                .await
                .unwrap();
        assert_eq!(status, "failed", "row {id}");
        assert_eq!(code.as_deref(), Some("invalid_options"), "row {id}");
        let error = error.unwrap_or_default();
        assert!(error.contains(names), "row {id}: {error:?} names {names}");
    }
}

/// Waits until every row in `ids` is `read` on the phone (ack 3 or more), then returns what the
/// simulator recorded from `phone`: exactly those rows (the bad ones sent nothing).
async fn read_and_recorded(p: &sqlx::PgPool, what: &str, ids: &[i64], phone: &str) -> Vec<Value> {
    wait_for(what, Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from wa_message where id = any($1) and status = 'read' and ack >= 3",
        )
        .bind(ids)
        .fetch_one(p)
        .await
        .unwrap();
        (n == ids.len() as i64).then_some(())
    })
    .await;
    let recorded = sim().await.sent_by(phone).await;
    assert_eq!(
        recorded.len(),
        ids.len(),
        "only the good ones arrived: {recorded:?}"
    );
    recorded
}

/// What the simulator recorded for row `id`, which must be there exactly once.
fn recorded_once<'a>(recorded: &'a [Value], wa_id: &str) -> &'a Value {
    let hits: Vec<&Value> = recorded
        .iter()
        .filter(|m| m["id"] == bare_id(wa_id))
        .collect();
    assert_eq!(hits.len(), 1, "{wa_id} recorded {} times", hits.len());
    hits[0]
}

const ANN: &str = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ann Lee\r\nTEL;type=CELL;waid=15550300001:+1 555 030 0001\r\nEND:VCARD";
const BO: &str = "BEGIN:VCARD\nVERSION:3.0\nN:Ng;Bo;;;\nFN:Bo Ng\nTEL;type=CELL;waid=15550300002:+1 555 030 0002\nEND:VCARD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_cards_arrive_once_and_bad_ones_fail_with_invalid_options() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_kinds_contact", "15550100132").await;
    let to = "+1 555 020 0132";
    let rows: Vec<(&str, Option<&str>, Value)> = vec![
        ("contact", None, json!({})),
        ("contact", None, json!({"vcards": []})),
        ("contact", None, json!({"vcards": ANN})),
        ("contact", None, json!({"vcards": ["FN:Ann"]})),
        (
            "contact",
            None,
            json!({"vcards": ["BEGIN:VCARD\nVERSION:3.0\nEND:VCARD"]}),
        ),
        ("contact", Some("hello"), json!({"vcards": [ANN]})),
        (
            "contact",
            None,
            json!({"vcards": [ANN], "mentions": ["15550300001"]}),
        ),
        ("contact", None, json!({"vcards": [ANN]})),
        ("contact", None, json!({"vcards": [ANN, BO]})),
    ];
    let ids = send_rows(p, "e2e_kinds_contact", to, &rows).await;
    assert_invalid(
        p,
        &[
            (ids[0], "vcards"),
            (ids[1], "vcards"),
            (ids[2], "vcards"),
            (ids[3], "vcards[0]"),
            (ids[4], "FN"),
            (ids[5], "body"),
            (ids[6], "mentions"),
        ],
    )
    .await;
    let (one, two) = (ids[7], ids[8]);
    let recorded = read_and_recorded(p, "both contacts read", &[one, two], "15550100132").await;
    for (id, want) in [
        (one, json!([{"display_name": "Ann Lee", "vcard": ANN}])),
        (
            two,
            json!([{"display_name": "Ann Lee", "vcard": ANN},
                   {"display_name": "Bo Ng", "vcard": BO}]),
        ),
    ] {
        let (_, _, wa_id) = msg(p, id).await;
        let m = recorded_once(&recorded, &wa_id.expect("wa_message_id"));
        assert_eq!(m["kind"], "contact");
        assert_eq!(m["to"], "15550200132@c.us");
        assert_eq!(m["contacts"], want, "contact {id}");
        assert!(m["body"].is_null(), "a contact message has no text body");
    }
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_arrive_once_with_their_choices_and_bad_ones_fail_with_invalid_options() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_kinds_poll", "15550100133").await;
    let to = "+1 555 020 0133";
    let rows: Vec<(&str, Option<&str>, Value)> = vec![
        ("poll", None, json!({"choices": ["a", "b"]})),
        ("poll", None, json!({"question": "Q", "choices": ["a"]})),
        (
            "poll",
            None,
            json!({"question": "Q", "choices": ["a", " a"]}),
        ),
        (
            "poll",
            None,
            json!({"question": "Q", "choices": ["a", "b"], "selectable_count": 3}),
        ),
        (
            "poll",
            None,
            json!({"question": "Q", "choices": ["a", "b"], "anonymous": true}),
        ),
        (
            "poll",
            Some("Q?"),
            json!({"question": "Q", "choices": ["a", "b"]}),
        ),
        (
            "poll",
            None,
            json!({"question": " Lunch? ", "choices": ["Pizza", " Sushi ", "Salad"]}),
        ),
        (
            "poll",
            None,
            json!({"question": "Which days?", "choices": ["Mon", "Tue", "Wed", "Thu"],
                   "selectable_count": 0}),
        ),
    ];
    let ids = send_rows(p, "e2e_kinds_poll", to, &rows).await;
    assert_invalid(
        p,
        &[
            (ids[0], "question"),
            (ids[1], "choices"),
            (ids[2], "choices[1]"),
            (ids[3], "selectable_count"),
            (ids[4], "anonymous"),
            (ids[5], "body"),
        ],
    )
    .await;
    let (single, multi) = (ids[6], ids[7]);
    let recorded = read_and_recorded(p, "both polls read", &[single, multi], "15550100133").await;
    for (id, want) in [
        (
            single,
            json!({"name": "Lunch?", "options": ["Pizza", "Sushi", "Salad"], "selectable": 1}),
        ),
        (
            multi,
            json!({"name": "Which days?", "options": ["Mon", "Tue", "Wed", "Thu"], "selectable": 0}),
        ),
    ] {
        let (_, _, wa_id) = msg(p, id).await;
        let m = recorded_once(&recorded, &wa_id.expect("wa_message_id"));
        assert_eq!(m["kind"], "poll");
        assert_eq!(m["to"], "15550200133@c.us");
        assert_eq!(m["poll"], want, "poll {id}");
    }
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentions_reach_the_page_as_jids_and_bad_ones_fail_with_invalid_options() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_kinds_mention", "15550100134").await;
    let to = "+1 555 020 0134";
    let rows: Vec<(&str, Option<&str>, Value)> = vec![
        (
            "text",
            Some("hi @15550300001"),
            json!({"mentions": "15550300001"}),
        ),
        ("text", Some("hi @x"), json!({"mentions": ["not a number"]})),
        (
            "text",
            Some("hi"),
            json!({"mentions": ["120363000000000001@g.us"]}),
        ),
        (
            "text",
            Some("hi @15550300001 and @15550300002"),
            json!({"mentions": ["+1 555 030 0001", "15550300002@c.us", "15550300001"]}),
        ),
        ("text", Some("no one"), json!({})),
    ];
    let ids = send_rows(p, "e2e_kinds_mention", to, &rows).await;
    assert_invalid(
        p,
        &[
            (ids[0], "mentions"),
            (ids[1], "mentions[0]"),
            (ids[2], "mentions[0]"),
        ],
    )
    .await;
    let recorded = sim().await.sent_by("15550100134").await;
    assert_eq!(
        recorded.len(),
        2,
        "only the good ones arrived: {recorded:?}"
    );
    let (_, _, wa_id) = msg(p, ids[3]).await;
    let m = recorded_once(&recorded, &wa_id.expect("wa_message_id"));
    assert_eq!(m["body"], "hi @15550300001 and @15550300002");
    assert_eq!(
        m["mentions"],
        json!(["15550300001@c.us", "15550300002@c.us"]),
        "each person once, as a JID"
    );
    let (_, _, wa_id) = msg(p, ids[4]).await;
    let m = recorded_once(&recorded, &wa_id.expect("wa_message_id"));
    assert!(m.get("mentions").is_none(), "no mentions recorded: {m}");
    r.shutdown().await.unwrap();
}

/// A page reloaded while a poll and a contact card were on their way (the server never got
/// them): the rows are settled by asking the page under their own keys and sent again under
/// them, and each arrives exactly once with its content intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_and_a_contact_lost_in_a_reload_arrive_once_with_their_content() {
    let db = test_db().await;
    // A simulator of this test's own: its faults must not touch the other tests.
    let (url, _sim) = wa_outbox::sim::spawn("127.0.0.1:0", wa_outbox::sim::SimConfig::default())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let (r, _) = start_runner_at(&db, &url).await;
    let p = &db.pool;
    let phone = "15550100135";
    sqlx::query("insert into wa_session (id) values ('e2e_kinds_reload')")
        .execute(p)
        .await
        .unwrap();
    let qr = wait_for("the QR", STEP, || async {
        match session(p, "e2e_kinds_reload").await {
            (s, Some(q), ..) if s == "qr_pending" => Some(q),
            _ => None,
        }
    })
    .await;
    let post = |path: &'static str, body: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(format!("{url}{path}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}");
        }
    };
    post(
        "/_sim/scan",
        json!({"qr": qr, "phone": phone, "name": "Kinds"}),
    )
    .await;
    wait_status(p, "e2e_kinds_reload", "connected").await;

    post("/_sim/faults", json!({"lose_sends": true})).await;
    let poll = json!({"question": "Lunch?", "choices": ["Pizza", "Sushi"]});
    let contact = json!({"vcards": [ANN]});
    let mut ids = Vec::new();
    for (kind, options) in [("poll", &poll), ("contact", &contact)] {
        ids.push(
            sqlx::query_scalar::<_, i64>(
                "insert into wa_message (session_id, recipient, kind, options)
                 values ('e2e_kinds_reload', '15550200135', $1, $2) returning id",
            )
            .bind(kind)
            .bind(options)
            .fetch_one(p)
            .await
            .unwrap(),
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
    post("/_sim/reload", json!({"phone": phone})).await;
    post("/_sim/faults", json!({"lose_sends": false})).await;

    wait_for("both sent", Duration::from_secs(120), || async {
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
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    let (_, _, wa_id) = msg(p, ids[0]).await;
    let m = recorded_once(&recorded, &wa_id.unwrap());
    assert_eq!(
        m["poll"],
        json!({"name": "Lunch?", "options": ["Pizza", "Sushi"], "selectable": 1})
    );
    let (_, _, wa_id) = msg(p, ids[1]).await;
    let m = recorded_once(&recorded, &wa_id.unwrap());
    assert_eq!(
        m["contacts"],
        json!([{"display_name": "Ann Lee", "vcard": ANN}])
    );
    r.shutdown().await.unwrap();
}

// ---- reactions ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_reach_the_message_once_each_and_bad_ones_fail_with_invalid_options() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_kinds_react", "15550100136").await;
    let to = "+1 555 020 0136";
    let first = send_rows(
        p,
        "e2e_kinds_react",
        to,
        &[("text", Some("react to me"), json!({}))],
    )
    .await;
    let never = send_rows(
        p,
        "e2e_kinds_react",
        "hello",
        &[("text", Some("no"), json!({}))],
    )
    .await;
    let (status, _, wa_id) = msg(p, first[0]).await;
    assert_ne!(status, "failed");
    let wa_id = wa_id.expect("wa_message_id");
    let rows: Vec<(&str, Option<&str>, Value)> = vec![
        ("reaction", Some("👍"), json!({})),
        (
            "reaction",
            Some("👍"),
            json!({"target_id": first[0], "target_wa_id": wa_id}),
        ),
        ("reaction", Some("👍"), json!({"target_id": 999_999_999})),
        ("reaction", Some("👍"), json!({"target_id": never[0]})),
        ("reaction", Some("👍"), json!({"target_id": "1"})),
        ("reaction", Some("👍"), json!({"target_wa_id": "nonsense"})),
        ("reaction", Some("ok"), json!({"target_id": first[0]})),
        ("reaction", None, json!({"target_id": first[0]})),
        (
            "reaction",
            Some("👍"),
            json!({"target_id": first[0], "reply_to": "x"}),
        ),
        ("reaction", Some("👍"), json!({"target_id": first[0]})),
        ("reaction", Some("❤️"), json!({"target_wa_id": wa_id})),
        ("reaction", Some(""), json!({"target_id": first[0]})),
    ];
    let ids = send_rows(p, "e2e_kinds_react", to, &rows).await;
    assert_invalid(
        p,
        &[
            (ids[0], "target"),
            (ids[1], "target"),
            (ids[2], "no wa_message"),
            (ids[3], "has not gone out"),
            (ids[4], "target_id"),
            (ids[5], "target_wa_id"),
            (ids[6], "emoji"),
            (ids[7], "body"),
            (ids[8], "reply_to"),
        ],
    )
    .await;
    for id in &ids[9..] {
        let (status, _, _) = msg(p, *id).await;
        assert_eq!(status, "sent", "reaction row {id}");
    }
    let all = sim().await.get("/_sim/messages?phone=15550100136").await;
    let reactions = all["reactions"].as_array().cloned().unwrap_or_default();
    let mut texts: Vec<&str> = reactions
        .iter()
        .map(|r| {
            assert_eq!(r["parent_id"], bare_id(&wa_id), "{r}");
            assert_eq!(r["parent_from_me"], true, "{r}");
            assert_eq!(r["chat"], "15550200136@c.us", "{r}");
            r["text"].as_str().unwrap()
        })
        .collect();
    texts.sort_unstable();
    assert_eq!(
        texts,
        vec!["", "❤️", "👍"],
        "each good reaction once: {reactions:?}"
    );
    // Only the text message itself went out as a message.
    assert_eq!(sim().await.sent_by("15550100136").await.len(), 1);
    r.shutdown().await.unwrap();
}

// ---- edits -------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_reach_our_message_once_within_the_window_and_bad_ones_fail_with_invalid_options() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_kinds_edit", "15550100138").await;
    let to = "+1 555 020 0138";
    let first = send_rows(
        p,
        "e2e_kinds_edit",
        to,
        &[
            ("text", Some("teh first"), json!({})),
            ("text", Some("an old one"), json!({})),
        ],
    )
    .await;
    let (_, _, wa_id) = msg(p, first[0]).await;
    let wa_id = wa_id.expect("wa_message_id");
    // The second one went out long ago, as far as the row says.
    sqlx::query("update wa_message set sent_at = now() - interval '16 minutes' where id = $1")
        .bind(first[1])
        .execute(p)
        .await
        .unwrap();
    let rows: Vec<(&str, Option<&str>, Value)> = vec![
        ("edit", Some("x"), json!({})),
        ("edit", None, json!({"target_id": first[0]})),
        ("edit", Some("  "), json!({"target_id": first[0]})),
        ("edit", Some("x"), json!({"target_id": first[1]})),
        (
            "edit",
            Some("x"),
            json!({"target_wa_id": "false_15550200138@c.us_3EB0AB"}),
        ),
        (
            "edit",
            Some("x"),
            json!({"target_id": first[0], "reply_to": "y"}),
        ),
        ("edit", Some("the first"), json!({"target_id": first[0]})),
        (
            "edit",
            Some("the first, again"),
            json!({"target_wa_id": wa_id}),
        ),
    ];
    let ids = send_rows(p, "e2e_kinds_edit", to, &rows).await;
    assert_invalid(
        p,
        &[
            (ids[0], "target"),
            (ids[1], "body"),
            (ids[2], "body"),
            (ids[3], "15 minutes"),
            (ids[4], "target_wa_id"),
            (ids[5], "reply_to"),
        ],
    )
    .await;
    for id in &ids[6..] {
        assert_eq!(msg(p, *id).await.0, "sent", "edit row {id}");
    }
    let all = sim().await.get("/_sim/messages?phone=15550100138").await;
    let edits = all["edits"].as_array().cloned().unwrap_or_default();
    let mut texts: Vec<&str> = edits
        .iter()
        .map(|e| {
            assert_eq!(e["parent_id"], bare_id(&wa_id), "{e}");
            assert_eq!(e["chat"], "15550200138@c.us", "{e}");
            e["text"].as_str().unwrap()
        })
        .collect();
    texts.sort_unstable();
    assert_eq!(texts, vec!["the first", "the first, again"], "{edits:?}");
    assert_eq!(sim().await.sent_by("15550100138").await.len(), 2);
    r.shutdown().await.unwrap();
}

// ---- revokes -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revokes_delete_our_message_for_everyone_once_and_bad_ones_fail_with_invalid_options() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_kinds_revoke", "15550100139").await;
    let to = "+1 555 020 0139";
    let first = send_rows(
        p,
        "e2e_kinds_revoke",
        to,
        &[("text", Some("oops"), json!({}))],
    )
    .await;
    let (_, _, wa_id) = msg(p, first[0]).await;
    let wa_id = wa_id.expect("wa_message_id");
    let rows: Vec<(&str, Option<&str>, Value)> = vec![
        ("revoke", None, json!({})),
        ("revoke", Some("why"), json!({"target_id": first[0]})),
        (
            "revoke",
            None,
            json!({"target_wa_id": "false_15550200139@c.us_3EB0AB"}),
        ),
        ("revoke", None, json!({"target_id": 999_999_999})),
        ("revoke", None, json!({"target_id": first[0]})),
    ];
    let ids = send_rows(p, "e2e_kinds_revoke", to, &rows).await;
    assert_invalid(
        p,
        &[
            (ids[0], "target"),
            (ids[1], "body"),
            (ids[2], "target_wa_id"),
            (ids[3], "no wa_message"),
        ],
    )
    .await;
    assert_eq!(msg(p, ids[4]).await.0, "sent");
    let all = sim().await.get("/_sim/messages?phone=15550100139").await;
    let revokes = all["revokes"].as_array().cloned().unwrap_or_default();
    assert_eq!(revokes.len(), 1, "{revokes:?}");
    assert_eq!(revokes[0]["parent_id"], bare_id(&wa_id));
    assert_eq!(revokes[0]["chat"], "15550200139@c.us");
    assert_eq!(sim().await.sent_by("15550100139").await.len(), 1);
    r.shutdown().await.unwrap();
}

// ---- forwards ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_reach_the_other_chat_once_as_forwarded_copies_and_bad_ones_fail_with_invalid_options(
) {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    link(p, "e2e_kinds_fwd", "15550100140").await;
    let first = send_rows(
        p,
        "e2e_kinds_fwd",
        "+1 555 020 0140",
        &[("text", Some("pass this on"), json!({}))],
    )
    .await;
    let never = send_rows(
        p,
        "e2e_kinds_fwd",
        "hello",
        &[("text", Some("no"), json!({}))],
    )
    .await;
    let (_, _, wa_id) = msg(p, first[0]).await;
    let wa_id = wa_id.expect("wa_message_id");
    // Bad ones: none of them may reach the simulator.
    let bad: Vec<(&str, Option<&str>, Value)> = vec![
        ("forward", None, json!({})),
        ("forward", Some("hi"), json!({"target_id": first[0]})),
        ("forward", None, json!({"target_id": 999_999_999})),
        ("forward", None, json!({"target_id": never[0]})),
        ("forward", None, json!({"target_wa_id": "nonsense"})),
        (
            "forward",
            None,
            json!({"target_id": first[0], "target_wa_id": wa_id}),
        ),
        (
            "forward",
            None,
            json!({"target_id": first[0], "reply_to": "x"}),
        ),
        // Well-formed, but no such message on the page: refused there, nothing sent.
        (
            "forward",
            None,
            json!({"target_wa_id": "true_15550200140@c.us_3EB0DEADBEEF0000"}),
        ),
    ];
    let bad_ids = send_rows(p, "e2e_kinds_fwd", "+1 555 020 0141", &bad).await;
    assert_invalid(
        p,
        &[
            (bad_ids[0], "target"),
            (bad_ids[1], "body"),
            (bad_ids[2], "no wa_message"),
            (bad_ids[3], "has not gone out"),
            (bad_ids[4], "target_wa_id"),
            (bad_ids[5], "target"),
            (bad_ids[6], "reply_to"),
            (bad_ids[7], "not on the page"),
        ],
    )
    .await;
    assert_eq!(sim().await.sent_by("15550100140").await.len(), 1);

    let by_row = send_rows(
        p,
        "e2e_kinds_fwd",
        "+1 555 020 0141",
        &[("forward", None, json!({"target_id": first[0]}))],
    )
    .await;
    let by_wa_id = send_rows(
        p,
        "e2e_kinds_fwd",
        "+1 555 020 0142",
        &[("forward", None, json!({"target_wa_id": wa_id}))],
    )
    .await;
    let sent = sim().await.sent_by("15550100140").await;
    assert_eq!(sent.len(), 3, "the original and two forwards: {sent:?}");
    for (id, chat) in [
        (by_row[0], "15550200141@c.us"),
        (by_wa_id[0], "15550200142@c.us"),
    ] {
        // The copy's key is the row's, so the copy's delivery acks reach the row.
        wait_for(
            "the forwarded copy delivered",
            Duration::from_secs(30),
            || async {
                ["delivered", "read"]
                    .contains(&msg(p, id).await.0.as_str())
                    .then_some(())
            },
        )
        .await;
        let (_, code, fwd_wa_id) = msg(p, id).await;
        assert_eq!(code, None, "forward row {id}");
        // The row holds the forwarded copy's own key, made by the page.
        let fwd_wa_id = fwd_wa_id.expect("wa_message_id");
        assert_ne!(bare_id(&fwd_wa_id), bare_id(&wa_id));
        let copy = recorded_once(&sent, &fwd_wa_id);
        assert_eq!(copy["to"], chat, "{copy}");
        assert_eq!(copy["kind"], "text", "{copy}");
        assert_eq!(copy["body"], "pass this on", "{copy}");
        assert_eq!(copy["forwarded"]["score"], 1, "{copy}");
        let from = copy["forwarded"]["from"].as_str().expect("the original");
        assert_eq!(bare_id(from), bare_id(&wa_id), "{copy}");
    }
    // The original stays where it was, not marked forwarded.
    let orig = recorded_once(&sent, &wa_id);
    assert_eq!(orig["to"], "15550200140@c.us");
    assert!(orig.get("forwarded").is_none(), "{orig}");
    r.shutdown().await.unwrap();
}

// ---- an edit or revoke interrupted by SIGKILL ---------------------------------------------------

/// Exactly once: the runner is SIGKILLed while the server holds the page's edit (and, in a second
/// session, its revoke); a second runner takes the session over and finds the row `sending`. An
/// edit or revoke gets a key of the page's making, so nobody can ask whether it went out: the row
/// fails `send_failed` ("may or may not") and is never sent again. The server, which had the
/// request, does it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_or_revoke_interrupted_by_sigkill_is_done_once_and_never_repeated() {
    tokio::join!(
        edit_killed("15550190031", "e2e_edit_kill", "edit"),
        edit_killed("15550190041", "e2e_revoke_kill", "revoke"),
    );
}

async fn edit_killed(me: &str, session: &str, kind: &str) {
    use crate::fleet::{link_all, runner_proc};
    const HOLD_MS: u64 = 8_000;
    let db = test_db().await;
    let p = &db.pool;
    let r1 = runner_proc(&db, 10, "6s").await;
    link_all(p, &[(session.to_string(), me.to_string())]).await;
    let first = send_rows(
        p,
        session,
        "+1 555 020 0031",
        &[("text", Some("teh text"), json!({}))],
    )
    .await;
    let (status, _, wa_id) = msg(p, first[0]).await;
    assert_ne!(status, "failed");
    let wa_id = wa_id.expect("wa_message_id");
    sim()
        .await
        .post(
            "/_sim/faults",
            json!({"phone": me, "edit_delay_ms": HOLD_MS}),
        )
        .await;
    let body = (kind == "edit").then_some("the text");
    let id: i64 = sqlx::query_scalar(
        "insert into wa_message (session_id, recipient, kind, body, options)
         values ($1, '+1 555 020 0031', $2, $3, $4) returning id",
    )
    .bind(session)
    .bind(kind)
    .bind(body)
    .bind(json!({"target_id": first[0]}))
    .fetch_one(p)
    .await
    .unwrap();
    let pending = || async {
        sim().await.get(&format!("/_sim/messages?phone={me}")).await["edits_pending"]
            .as_u64()
            .unwrap()
    };
    // The page's call reached the server, which holds it.
    wait_for("the edit held on the server", STEP, || async {
        (pending().await == 1).then_some(())
    })
    .await;
    assert_eq!(msg(p, id).await.0, "sending");
    r1.signal(libc::SIGKILL);
    let r2 = runner_proc(&db, 10, "6s").await;
    wait_for("the row settled", Duration::from_secs(90), || async {
        let (status, ..) = msg(p, id).await;
        (status != "sending" && status != "queued").then_some(())
    })
    .await;
    let (status, code, error): (String, Option<String>, Option<String>) =
        sqlx::query_as("select status, error_code, error from wa_message where id = $1")
            .bind(id)
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(status, "failed", "{kind}: {error:?}");
    assert_eq!(code.as_deref(), Some("send_failed"));
    assert!(error.unwrap_or_default().contains("may or may not"));
    // The held edit completes on the server whatever happened to the page, once.
    wait_for(
        "the held edit done",
        Duration::from_millis(HOLD_MS) + STEP,
        || async { (pending().await == 0).then_some(()) },
    )
    .await;
    let all = sim().await.get(&format!("/_sim/messages?phone={me}")).await;
    let list = if kind == "edit" { "edits" } else { "revokes" };
    let marks = all[list].as_array().cloned().unwrap_or_default();
    assert_eq!(marks.len(), 1, "{kind} done exactly once: {marks:?}");
    assert_eq!(marks[0]["parent_id"], bare_id(&wa_id));
    if kind == "edit" {
        assert_eq!(marks[0]["text"], "the text");
    }
    // Nothing else went out: the original text only.
    assert_eq!(sim().await.sent_by(me).await.len(), 1);
    sim()
        .await
        .post("/_sim/faults", json!({"phone": me, "edit_delay_ms": 0}))
        .await;
    r2.drain(Duration::from_secs(60)).await;
    drop(r1);
}
