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
    wait_for("both locations read", Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from wa_message where id = any($1) and status = 'read' and ack >= 3",
        )
        .bind(vec![full, bare])
        .fetch_one(p)
        .await
        .unwrap();
        (n == 2).then_some(())
    })
    .await;
    let recorded = sim().await.sent_by("15550100131").await;
    assert_eq!(
        recorded.len(),
        2,
        "only the two good locations reached the simulator: {recorded:?}"
    );
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
