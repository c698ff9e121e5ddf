//! Typed inbound events (issue 13): the simulator plays the other side of a chat — it reacts,
//! votes, edits, revokes, sends a location or contact cards — and the runner records each as one
//! `wa_event` of its kind (once, even when the page raises it again after a reload), with
//! `message_id` pointing at our row where the target is one of ours.

use serde_json::{json, Value};
use sqlx::PgPool;
use wa_outbox::dispatcher::bare_id;
use wa_outbox::testing::{test_db, wait_for};

use crate::*;

/// The session's events of `kind`, oldest first: (message_id, wa_message_id, payload).
async fn events(
    p: &PgPool,
    session: &str,
    kind: &str,
) -> Vec<(Option<i64>, Option<String>, Value)> {
    sqlx::query_as(
        "select message_id, wa_message_id, payload from wa_event
         where session_id = $1 and kind = $2 order by id",
    )
    .bind(session)
    .bind(kind)
    .fetch_all(p)
    .await
    .unwrap()
}

/// Waits until the session has `n` events of `kind`, and returns them.
async fn wait_events(
    p: &PgPool,
    session: &str,
    kind: &str,
    n: usize,
) -> Vec<(Option<i64>, Option<String>, Value)> {
    wait_for(
        &format!("{n} {kind} event(s) of {session}"),
        STEP,
        || async {
            let e = events(p, session, kind).await;
            (e.len() >= n).then_some(e)
        },
    )
    .await
}

/// A row sent and acked by the server; its wa_message_id.
async fn sent_row(
    p: &PgPool,
    session: &str,
    to: &str,
    kind: &str,
    body: Option<&str>,
    options: Value,
) -> (i64, String) {
    let id: i64 = sqlx::query_scalar(
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
    .unwrap();
    let wa_id = wait_for(&format!("row {id} sent"), STEP, || async {
        let (status, code, wa_id) = msg(p, id).await;
        assert_ne!(status, "failed", "row {id}: {code:?}");
        ["sent", "delivered", "read"]
            .contains(&status.as_str())
            .then_some(wa_id)
            .flatten()
    })
    .await;
    (id, wa_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_votes_edits_and_revokes_of_the_other_side_are_recorded_once() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    let (s, me, them) = ("e2e_in_addons", "15550800101", "15550810101");
    link(p, s, me).await;
    let sim = sim().await;

    let (text_row, text_wa) = sent_row(p, s, them, "text", Some("react to me"), json!({})).await;
    let (poll_row, poll_wa) = sent_row(
        p,
        s,
        them,
        "poll",
        None,
        json!({"question": "Lunch?", "choices": ["Pizza", "Sushi", "Soup"], "selectable_count": 2}),
    )
    .await;
    let theirs = sim
        .post(
            "/_sim/incoming",
            json!({"to": me, "from": them, "body": "tpyo"}),
        )
        .await;
    let incoming = wait_events(p, s, "message", 1).await;
    let their_key = incoming[0].1.clone().expect("the message's key");
    assert_eq!(bare_id(&their_key), theirs["id"].as_str().unwrap());

    // Reactions: on our message (then taken back), and on theirs.
    let r1 = sim
        .post(
            "/_sim/react",
            json!({"to": me, "from": them, "id": text_wa, "emoji": "👍"}),
        )
        .await;
    wait_events(p, s, "reaction", 1).await;
    sim.post(
        "/_sim/react",
        json!({"to": me, "from": them, "id": bare_id(&text_wa), "emoji": ""}),
    )
    .await;
    sim.post(
        "/_sim/react",
        json!({"to": me, "from": them, "id": their_key, "emoji": "❤️"}),
    )
    .await;
    let reactions = wait_events(p, s, "reaction", 3).await;
    let contact = format!("{them}@c.us");
    for (i, (emoji, row)) in [("👍", Some(text_row)), ("", Some(text_row)), ("❤️", None)]
        .into_iter()
        .enumerate()
    {
        let (message_id, key, payload) = &reactions[i];
        assert_eq!(payload["emoji"], emoji, "{payload}");
        assert_eq!(payload["from"], contact, "{payload}");
        assert_eq!(payload["chat_id"], contact, "{payload}");
        assert!(
            payload["timestamp"].as_i64().unwrap() > 1_700_000_000,
            "{payload}"
        );
        assert_eq!(*message_id, row, "reaction {i}: {payload}");
        let target = payload["target_wa_id"].as_str().unwrap();
        match row {
            Some(_) => assert_eq!(bare_id(target), bare_id(&text_wa), "{payload}"),
            None => assert_eq!(target, their_key, "{payload}"),
        }
        // The event's key is the reaction message's own.
        assert!(key.as_deref().unwrap().starts_with("false_"), "{key:?}");
    }
    assert_eq!(
        bare_id(reactions[0].1.as_deref().unwrap()),
        r1["id"].as_str().unwrap()
    );

    // A vote in our poll, then a changed vote.
    sim.post(
        "/_sim/vote",
        json!({"to": me, "from": them, "poll": poll_wa, "options": ["Sushi"]}),
    )
    .await;
    sim.post(
        "/_sim/vote",
        json!({"to": me, "from": them, "poll": poll_wa, "options": ["Soup", "Pizza"]}),
    )
    .await;
    let votes = wait_events(p, s, "poll_vote", 2).await;
    for ((message_id, _, payload), want) in votes
        .iter()
        .zip([json!(["Sushi"]), json!(["Soup", "Pizza"])])
    {
        assert_eq!(*message_id, Some(poll_row), "{payload}");
        assert_eq!(payload["selected_options"], want, "{payload}");
        assert_eq!(payload["from"], contact, "{payload}");
        assert_eq!(
            bare_id(payload["poll_wa_id"].as_str().unwrap()),
            bare_id(&poll_wa)
        );
    }

    // They fix their message, then delete it for everyone.
    sim.post(
        "/_sim/edit",
        json!({"to": me, "from": them, "id": their_key, "body": "typo"}),
    )
    .await;
    let edits = wait_events(p, s, "edit", 1).await;
    assert_eq!(edits[0].0, None);
    assert_eq!(edits[0].2["body"], "typo", "{}", edits[0].2);
    assert_eq!(edits[0].2["target_wa_id"], their_key.as_str());
    assert_eq!(edits[0].2["from"], contact);
    sim.post(
        "/_sim/revoke",
        json!({"to": me, "from": them, "id": their_key}),
    )
    .await;
    let revokes = wait_events(p, s, "revoke", 1).await;
    assert_eq!(revokes[0].2["target_wa_id"], their_key.as_str());
    assert_eq!(revokes[0].2["from"], contact);
    assert_ne!(
        revokes[0].1.as_deref(),
        Some(their_key.as_str()),
        "keyed by the revoke message"
    );

    // The page reloads (a service-worker update): it reads its history again and the add-ons
    // with it. A message after the reload, recorded after whatever the reload raised, shows that
    // nothing was recorded twice.
    sim.post("/_sim/reload", json!({"phone": me})).await;
    wait_for("the page back after the reload", STEP, || async {
        let devs = sim.get("/_sim/devices").await;
        devs["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["phone"] == me && d["connected"] == true)
            .then_some(())
    })
    .await;
    // Recorded live, or by the backfill that follows the page's reconnect if it came before the
    // hooks were back; either way after what the page raised while reading its history.
    sim.post(
        "/_sim/incoming",
        json!({"to": me, "from": them, "body": "after reload"}),
    )
    .await;
    wait_for("the message after the reload", STEP, || async {
        events(p, s, "message")
            .await
            .iter()
            .any(|e| e.2["body"] == "after reload")
            .then_some(())
    })
    .await;
    for (kind, n) in [
        ("reaction", 3),
        ("poll_vote", 2),
        ("edit", 1),
        ("revoke", 1),
    ] {
        assert_eq!(
            events(p, s, kind).await.len(),
            n,
            "{kind} events after the reload"
        );
    }
    // Nothing of it was sent by our account.
    let ours = sim.get(&format!("/_sim/messages?phone={me}")).await;
    assert_eq!(ours["reactions"], json!([]));
    assert_eq!(ours["edits"], json!([]));
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_locations_and_contact_cards_become_typed_message_events() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    let (s, me, them) = ("e2e_in_typed_msgs", "15550800102", "15550810102");
    link(p, s, me).await;
    let sim = sim().await;
    let ann = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ann Lee\r\nTEL;type=CELL;waid=15551234567:+1 555 123 4567\r\nEND:VCARD";
    let bob = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Bob Roe\r\nEND:VCARD";
    sim.post(
        "/_sim/location",
        json!({"to": me, "from": them, "latitude": 52.520008, "longitude": 13.404954,
        "name": "Fernsehturm", "address": "Panoramastraße 1A, Berlin"}),
    )
    .await;
    sim.post(
        "/_sim/location",
        json!({"to": me, "from": them, "latitude": -33.5, "longitude": 151.25}),
    )
    .await;
    sim.post(
        "/_sim/contact",
        json!({"to": me, "from": them, "vcards": [ann]}),
    )
    .await;
    sim.post(
        "/_sim/contact",
        json!({"to": me, "from": them, "vcards": [ann, bob]}),
    )
    .await;
    sim.post(
        "/_sim/incoming",
        json!({"to": me, "from": them, "body": "plain"}),
    )
    .await;
    let msgs = wait_events(p, s, "message", 5).await;
    let payloads: Vec<&Value> = msgs.iter().map(|e| &e.2).collect();
    assert_eq!(payloads[0]["type"], "location", "{}", payloads[0]);
    assert_eq!(
        payloads[0]["location"],
        json!({"latitude": 52.520008, "longitude": 13.404954, "name": "Fernsehturm",
               "address": "Panoramastraße 1A, Berlin"})
    );
    assert_eq!(payloads[0]["body"], Value::Null);
    assert_eq!(
        payloads[1]["location"],
        json!({"latitude": -33.5, "longitude": 151.25, "name": null, "address": null})
    );
    assert_eq!(payloads[2]["type"], "contact", "{}", payloads[2]);
    assert_eq!(
        payloads[2]["vcards"],
        json!([{"display_name": "Ann Lee", "vcard": ann}])
    );
    assert_eq!(
        payloads[3]["vcards"],
        json!([{"display_name": "Ann Lee", "vcard": ann}, {"display_name": "Bob Roe", "vcard": bob}])
    );
    assert_eq!(payloads[4]["type"], "text");
    assert_eq!(payloads[4]["body"], "plain");
    for pl in &payloads {
        assert_eq!(pl["from"], format!("{them}@c.us"), "{pl}");
        assert!(pl["extra"].get("typed").is_none(), "{pl}");
    }
    // Bad calls to the control API say why and deliver nothing.
    let bad = |path: &'static str, body: Value| async move {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", sim.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{path} {body}");
    };
    bad(
        "/_sim/location",
        json!({"to": me, "from": them, "latitude": 91, "longitude": 0}),
    )
    .await;
    bad(
        "/_sim/contact",
        json!({"to": me, "from": them, "vcards": ["FN:no begin"]}),
    )
    .await;
    bad(
        "/_sim/contact",
        json!({"to": me, "from": them, "vcards": []}),
    )
    .await;
    bad(
        "/_sim/react",
        json!({"to": me, "from": me, "id": "x", "emoji": "👍"}),
    )
    .await;
    sim.post(
        "/_sim/incoming",
        json!({"to": me, "from": them, "body": "last"}),
    )
    .await;
    let msgs = wait_events(p, s, "message", 6).await;
    assert_eq!(msgs.len(), 6, "nothing from the refused calls");
    r.shutdown().await.unwrap();
}

async fn set_desired(p: &PgPool, s: &str, desired: &str) {
    sqlx::query("update wa_session set desired_state = $2 where id = $1")
        .bind(s)
        .bind(desired)
        .execute(p)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_other_side_did_while_the_session_was_down_is_backfilled_once() {
    let db = test_db().await;
    let (r, _) = start_runner(&db).await;
    let p = &db.pool;
    let (s, me, them) = ("e2e_in_backfill", "15550800103", "15550810103");
    link(p, s, me).await;
    let sim = sim().await;
    let (text_row, text_wa) = sent_row(p, s, them, "text", Some("hello"), json!({})).await;
    let (poll_row, poll_wa) = sent_row(
        p,
        s,
        them,
        "poll",
        None,
        json!({"question": "When?", "choices": ["Now", "Later"]}),
    )
    .await;
    // The one they will delete was written an hour ago (its sender's time): older than where
    // the backfill starts, which follows the newest message recorded.
    let an_hour_ago = chrono::Utc::now().timestamp() - 3600;
    sim.post(
        "/_sim/incoming",
        json!({"to": me, "from": them, "body": "to delete", "t": an_hour_ago}),
    )
    .await;
    wait_events(p, s, "message", 1).await;
    sim.post(
        "/_sim/incoming",
        json!({"to": me, "from": them, "body": "to edit"}),
    )
    .await;
    let msgs = wait_events(p, s, "message", 2).await;
    let (to_delete, to_edit) = (msgs[0].1.clone().unwrap(), msgs[1].1.clone().unwrap());

    set_desired(p, s, "stopped").await;
    wait_status(p, s, "stopped").await;
    // While no page is up: held by the server, the page's offline queue at the next login.
    for (path, body) in [
        (
            "/_sim/react",
            json!({"to": me, "from": them, "id": text_wa, "emoji": "🎉"}),
        ),
        (
            "/_sim/vote",
            json!({"to": me, "from": them, "poll": poll_wa, "options": ["Later"]}),
        ),
        (
            "/_sim/edit",
            json!({"to": me, "from": them, "id": to_edit, "body": "edited"}),
        ),
        (
            "/_sim/revoke",
            json!({"to": me, "from": them, "id": to_delete}),
        ),
    ] {
        let a = sim.post(path, body).await;
        assert_eq!(a["delivered_to"], 0, "{path}: {a}");
    }
    // The next page of this account cannot reach the add-on table modes for a while, so the
    // hooks come too late for the offline queue: only the backfill can see what it held.
    sim.post(
        "/_sim/faults",
        json!({"late_modules": ["WAWebAddonReactionTableMode", "WAWebAddonPollVoteTableMode"],
               "late_ms": 4000, "phone": me}),
    )
    .await;
    for round in 0..2 {
        set_desired(p, s, "running").await;
        wait_status(p, s, "connected").await;
        // A live message after the reconnect: once it is in, the backfill has run (the session
        // backfills before it takes the page's next event).
        let marker = format!("after reconnect {round}");
        sim.post(
            "/_sim/incoming",
            json!({"to": me, "from": them, "body": marker}),
        )
        .await;
        wait_for("the message after the reconnect", STEP, || async {
            events(p, s, "message")
                .await
                .iter()
                .any(|e| e.2["body"] == marker.as_str())
                .then_some(())
        })
        .await;
        let reactions = events(p, s, "reaction").await;
        assert_eq!(reactions.len(), 1, "round {round}: {reactions:?}");
        assert_eq!(reactions[0].0, Some(text_row));
        assert_eq!(reactions[0].2["emoji"], "🎉");
        let votes = events(p, s, "poll_vote").await;
        assert_eq!(votes.len(), 1, "round {round}: {votes:?}");
        assert_eq!(votes[0].0, Some(poll_row));
        assert_eq!(votes[0].2["selected_options"], json!(["Later"]));
        let edits = events(p, s, "edit").await;
        assert_eq!(edits.len(), 1, "round {round}: {edits:?}");
        assert_eq!(edits[0].2["target_wa_id"], to_edit.as_str());
        assert_eq!(edits[0].2["body"], "edited");
        let revokes = events(p, s, "revoke").await;
        assert_eq!(revokes.len(), 1, "round {round}: {revokes:?}");
        assert_eq!(revokes[0].2["target_wa_id"], to_delete.as_str());
        if round == 0 {
            sim.post("/_sim/faults", json!({"late_modules": [], "phone": me}))
                .await;
            // The page comes back from its profile: it reads its history (the add-ons again)
            // with its hooks in place; the backfill reads them once more. Still one each.
            set_desired(p, s, "stopped").await;
            wait_status(p, s, "stopped").await;
        }
    }
    r.shutdown().await.unwrap();
}
