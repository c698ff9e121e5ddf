//! Incoming media (issue 13): files someone sends to a session are downloaded through the page's
//! own download manager (the simulator keeps them encrypted, as WhatsApp's media servers do) and
//! stored in `wa_media` once, beside their `message` event; over the cap or failed, they are
//! recorded without bytes and with a code, and nothing else is lost.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use sqlx::PgPool;
use wa_outbox::runner::{self, NoLoginStore, RunnerConfig, RunnerHandle, RunnerParts};
use wa_outbox::testing::{test_db, wait_for, TestDb};

use crate::{config, link, sha256_hex, sim, wait_status, STEP};

const MIB: usize = 1024 * 1024;

/// kind, bytes, mime, filename, caption.
type IncomingFile<'a> = (&'a str, &'a [u8], &'a str, Option<&'a str>, Option<&'a str>);

/// A runner like `start_runner_at`, with its own incoming-media cap and timeout.
async fn runner_with(
    db: &TestDb,
    sim_url: &str,
    max_bytes: u64,
    timeout: Duration,
) -> RunnerHandle {
    let data_dir = std::env::temp_dir().join(format!("wa-e2e-{}", uuid::Uuid::new_v4().simple()));
    let c = config(&format!("{sim_url}/"), &data_dir);
    let mut cfg = RunnerConfig::from_config(&c);
    cfg.poll_interval = Duration::from_millis(200);
    cfg.retry_base = Duration::from_millis(200);
    cfg.inbound_media_max_bytes = max_bytes;
    cfg.inbound_media_timeout = timeout;
    let pool = wa_outbox::db::connect_as(&db.url, 10, "wa-outbox-e2e")
        .await
        .unwrap();
    runner::spawn(RunnerParts {
        maintenance: None,
        pool,
        driver: Arc::new(wa_outbox::driver::chromium::ChromiumDriver::from_config(&c)),
        logins: Arc::new(NoLoginStore),
        media: None,
        cfg,
        metrics: None,
    })
    .await
    .unwrap()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Bytes that do not compress or repeat (a file of `n` bytes).
fn noise(n: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut x: u32 = 0x9E37_79B9 ^ seed as u32;
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

#[derive(Debug, sqlx::FromRow)]
struct MediaRow {
    id: i64,
    event_id: i64,
    wa_message_id: String,
    kind: String,
    mime: Option<String>,
    filename: Option<String>,
    caption: Option<String>,
    size: Option<i64>,
    sha256: Option<String>,
    data: Option<Vec<u8>>,
    error_code: Option<String>,
    error: Option<String>,
}

async fn media_rows(p: &PgPool, session: &str) -> Vec<MediaRow> {
    sqlx::query_as(
        "select id, event_id, wa_message_id, kind, mime, filename, caption, size, sha256, data, error_code, error
         from wa_media where session_id = $1 order by id",
    )
    .bind(session)
    .fetch_all(p)
    .await
    .unwrap()
}

async fn wait_media(p: &PgPool, session: &str, wa_message_id: &str) -> MediaRow {
    wait_for(&format!("wa_media of {wa_message_id}"), STEP, || async {
        media_rows(p, session)
            .await
            .into_iter()
            .find(|m| m.wa_message_id == wa_message_id)
    })
    .await
}

/// The message events of a session: (id, wa_message_id, payload).
async fn events(p: &PgPool, session: &str) -> Vec<(i64, String, Value)> {
    sqlx::query_as(
        "select id, wa_message_id, payload from wa_event where session_id = $1 and kind = 'message' order by id",
    )
    .bind(session)
    .fetch_all(p)
    .await
    .unwrap()
}

async fn fetches(sim_url: &str) -> u64 {
    let v: Value = reqwest::get(format!("{sim_url}/_sim/faults"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["faults"]["media_fetches"].as_u64().unwrap()
}

async fn post(sim_url: &str, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{sim_url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "{path}: {}",
        r.text().await.unwrap()
    );
    r.json().await.unwrap()
}

/// An image, a document (larger than one DevTools piece) and a voice note arrive: each is stored
/// once with its bytes, hash, size, mime, filename and caption, and its event names it. The same
/// messages handed over again by the backfill after a restart are neither stored nor downloaded
/// twice. A file over the cap is recorded without bytes (`media_too_large`) and never fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_media_is_stored_once_with_its_hash_and_the_cap_holds() {
    let db = test_db().await;
    let p = &db.pool;
    let s = sim().await;
    let runner = runner_with(&db, &s.url, 4 * MIB as u64, Duration::from_secs(30)).await;
    let (id, phone, from) = ("media_in", "15550700001", "15550709999");
    link(p, id, phone).await;

    let image = wa_outbox::qr::png_bytes("an incoming picture").unwrap();
    let document = noise(2 * MIB + 12_345, 1);
    let voice = noise(7_001, 2);
    let files: [IncomingFile; 3] = [
        ("image", &image, "image/png", None, Some("look at this")),
        (
            "document",
            &document,
            "application/pdf",
            Some("report.pdf"),
            Some("the report"),
        ),
        ("voice", &voice, "audio/ogg; codecs=opus", None, None),
    ];
    let mut keys = vec![];
    for (kind, data, mime, filename, caption) in files {
        let r = s
            .post(
                "/_sim/incoming",
                json!({"to": phone, "from": from, "media": {"kind": kind, "data": b64(data),
                       "mime": mime, "filename": filename, "caption": caption}}),
            )
            .await;
        assert_eq!(r["media"]["sha256"], sha256_hex(data), "{r}");
        keys.push(r["serialized"].as_str().unwrap().to_string());
    }
    for (i, (kind, data, mime, filename, caption)) in files.iter().enumerate() {
        let m = wait_media(p, id, &keys[i]).await;
        assert_eq!(m.kind, *kind);
        assert_eq!(m.error_code, None, "{:?}", m.error);
        assert_eq!(m.data.as_deref(), Some(*data), "{kind}: the bytes as sent");
        assert_eq!(m.sha256.as_deref(), Some(sha256_hex(data).as_str()));
        assert_eq!(m.size, Some(data.len() as i64));
        assert_eq!(m.mime.as_deref(), Some(*mime));
        assert_eq!(m.filename.as_deref(), *filename);
        assert_eq!(m.caption.as_deref(), *caption);
        let ev = events(p, id).await;
        let (ev_id, _, payload) = ev.iter().find(|e| e.1 == keys[i]).unwrap();
        assert_eq!(m.event_id, *ev_id);
        assert_eq!(payload["media_id"], m.id, "{payload}");
        assert_eq!(payload["type"], *kind);
        assert_eq!(payload["mimetype"], *mime);
        assert_eq!(payload["filename"], json!(filename));
        assert_eq!(payload["caption"], json!(caption));
    }

    // Over the cap: the page reports the size first, so nothing is fetched.
    let before = fetches(&s.url).await;
    let big = noise(4 * MIB + 1, 3);
    let r = s
        .post(
            "/_sim/incoming",
            json!({"to": phone, "from": from, "media": {"kind": "video", "data": b64(&big), "mime": "video/mp4"}}),
        )
        .await;
    let big_key = r["serialized"].as_str().unwrap().to_string();
    let m = wait_media(p, id, &big_key).await;
    assert_eq!(m.error_code.as_deref(), Some("media_too_large"));
    assert!(m
        .error
        .as_deref()
        .unwrap()
        .contains("WA_INBOUND_MEDIA_MAX_BYTES"));
    assert_eq!((m.data, m.sha256), (None, None));
    assert_eq!(m.size, Some(big.len() as i64));
    assert_eq!(m.kind, "video");
    assert_eq!(
        fetches(&s.url).await,
        before,
        "nothing over the cap was downloaded"
    );
    // A text after it is recorded as before, without media.
    let r = s
        .post(
            "/_sim/incoming",
            json!({"to": phone, "from": from, "body": "plain text"}),
        )
        .await;
    let text_key = r["serialized"].as_str().unwrap().to_string();
    wait_for("the text event", STEP, || async {
        events(p, id).await.into_iter().find(|e| e.1 == text_key)
    })
    .await;

    // Restart: the backfill hands the same messages over again (it starts a little before the
    // newest recorded one); nothing is stored or downloaded twice.
    let fetched = fetches(&s.url).await;
    for state in ["stopped", "running"] {
        sqlx::query("update wa_session set desired_state = $2 where id = $1")
            .bind(id)
            .bind(state)
            .execute(p)
            .await
            .unwrap();
        wait_status(
            p,
            id,
            if state == "running" {
                "connected"
            } else {
                state
            },
        )
        .await;
    }
    // A live message after the reconnect: once it is in, the backfill has run.
    let marker = noise(1000, 4);
    let r = s
        .post(
            "/_sim/incoming",
            json!({"to": phone, "from": from, "media": {"kind": "sticker", "data": b64(&marker), "mime": "image/webp"}}),
        )
        .await;
    let marker_key = r["serialized"].as_str().unwrap().to_string();
    let m = wait_media(p, id, &marker_key).await;
    assert_eq!(m.sha256.as_deref(), Some(sha256_hex(&marker).as_str()));
    let rows = media_rows(p, id).await;
    assert_eq!(rows.len(), 5, "each file once: {rows:?}");
    let ev = events(p, id).await;
    assert_eq!(ev.len(), 6, "each message once");
    let text = ev.iter().find(|e| e.1 == text_key).unwrap();
    assert_eq!(text.2["type"], "text");
    assert!(text.2.get("media_id").is_none());
    // Only the sticker was fetched since the restart (the page's own downloadMedia and the
    // download manager: two requests for one file).
    assert_eq!(fetches(&s.url).await - fetched, 2);
    runner.shutdown().await.unwrap();
}

/// A download that fails (the media server answers 404) or does not finish in time ends with a
/// row without bytes and `media_fetch_failed`; the message's event is there all the same, and the
/// messages after it (text and media) are recorded as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_slow_media_download_is_recorded_and_loses_nothing() {
    // A simulator of its own: its media faults would reach every other test's pages.
    let own = tokio::task::spawn_blocking(|| {
        wa_outbox::testing::sim_process(
            env!("CARGO_BIN_EXE_wa-outbox"),
            &["--ack-step-ms", "100", "--sync-delay-ms", "200"],
        )
    })
    .await
    .unwrap();
    let db = test_db().await;
    let p = &db.pool;
    let runner = runner_with(&db, &own, MIB as u64, Duration::from_secs(3)).await;
    let (id, phone, from) = ("media_fail", "15550710001", "15550719999");
    sqlx::query("insert into wa_session (id) values ($1)")
        .bind(id)
        .execute(p)
        .await
        .unwrap();
    let qr = wait_for("the QR", STEP, || async {
        let (status, qr, ..) = crate::session(p, id).await;
        qr.filter(|_| status == "qr_pending")
    })
    .await;
    post(
        &own,
        "/_sim/scan",
        json!({"qr": qr, "phone": phone, "name": "Media"}),
    )
    .await;
    wait_status(p, id, "connected").await;

    let send = |data: Vec<u8>| {
        let own = own.clone();
        async move {
            let r = post(
                &own,
                "/_sim/incoming",
                json!({"to": phone, "from": from, "media": {"kind": "image", "data": b64(&data), "mime": "image/jpeg", "caption": "c"}}),
            )
            .await;
            r["serialized"].as_str().unwrap().to_string()
        }
    };

    post(&own, "/_sim/faults", json!({"media_fail": true})).await;
    let failed = send(noise(5000, 5)).await;
    let m = wait_media(p, id, &failed).await;
    assert_eq!(
        m.error_code.as_deref(),
        Some("media_fetch_failed"),
        "{:?}",
        m.error
    );
    assert!(m.error.as_deref().unwrap().contains("404"), "{:?}", m.error);
    assert_eq!((m.data.is_none(), m.sha256.is_none()), (true, true));
    assert_eq!(m.size, Some(5000), "the size the page reported");
    assert_eq!(m.caption.as_deref(), Some("c"));

    post(
        &own,
        "/_sim/faults",
        json!({"media_fail": false, "media_delay_ms": 20_000}),
    )
    .await;
    let t0 = std::time::Instant::now();
    let slow = send(noise(6000, 6)).await;
    let m = wait_media(p, id, &slow).await;
    assert_eq!(
        m.error_code.as_deref(),
        Some("media_fetch_failed"),
        "{:?}",
        m.error
    );
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "given up at the 3 s timeout, not at the server's 20 s: {:?}",
        t0.elapsed()
    );

    post(&own, "/_sim/faults", json!({"media_delay_ms": 0})).await;
    let r = post(
        &own,
        "/_sim/incoming",
        json!({"to": phone, "from": from, "body": "still here"}),
    )
    .await;
    let text = r["serialized"].as_str().unwrap().to_string();
    let good_bytes = noise(7000, 7);
    let good = send(good_bytes.clone()).await;
    let m = wait_media(p, id, &good).await;
    assert_eq!(m.data.as_deref(), Some(good_bytes.as_slice()));
    let ev = events(p, id).await;
    let keys: Vec<&str> = ev.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        keys,
        [failed.as_str(), slow.as_str(), text.as_str(), good.as_str()],
        "every message once, in order"
    );
    let rows = media_rows(p, id).await;
    assert_eq!(rows.len(), 3);
    for (e, m) in [(&ev[0], &rows[0]), (&ev[1], &rows[1]), (&ev[3], &rows[2])] {
        assert_eq!(e.2["media_id"], m.id);
    }
    runner.shutdown().await.unwrap();
}

/// Maintenance deletes media past WA_MEDIA_RETENTION and keeps the rest (and their events); a
/// pruned event takes its media with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_old_media() {
    use wa_outbox::maintenance::prune_media;
    let db = test_db().await;
    let p = &db.pool;
    sqlx::query("insert into wa_session (id) values ('media_prune')")
        .execute(p)
        .await
        .unwrap();
    let mut media = vec![];
    for (i, age_days) in [10, 8, 1, 0].into_iter().enumerate() {
        let ev: i64 = sqlx::query_scalar(
            "insert into wa_event (session_id, kind, wa_message_id) values ('media_prune', 'message', $1) returning id",
        )
        .bind(format!("false_1@c.us_M{i}"))
        .fetch_one(p)
        .await
        .unwrap();
        let m: i64 = sqlx::query_scalar(
            "insert into wa_media (session_id, event_id, wa_message_id, kind, mime, size, sha256, data, created_at)
             values ('media_prune', $1, $2, 'image', 'image/png', 3, encode(sha256('abc'), 'hex'), 'abc',
                     now() - make_interval(days => $3)) returning id",
        )
        .bind(ev)
        .bind(format!("false_1@c.us_M{i}"))
        .bind(age_days)
        .fetch_one(p)
        .await
        .unwrap();
        media.push((ev, m));
    }
    let never = tokio_util::sync::CancellationToken::new();
    let cfg = prune_media::Config::new(Duration::from_secs(7 * 86_400));
    let r = prune_media::run_once(p, &cfg, &never).await;
    assert_eq!((r.rows, r.error), (2, None));
    let left: Vec<i64> = sqlx::query_scalar("select id from wa_media order by id")
        .fetch_all(p)
        .await
        .unwrap();
    assert_eq!(left, [media[2].1, media[3].1]);
    let events: i64 =
        sqlx::query_scalar("select count(*) from wa_event where session_id = 'media_prune'")
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(events, 4, "the events stay");
    // Zero keeps everything.
    let off = prune_media::run_once(p, &prune_media::Config::new(Duration::ZERO), &never).await;
    assert_eq!(off.rows, 0);
    // An event pruned takes its media along.
    sqlx::query("delete from wa_event where id = $1")
        .bind(media[2].0)
        .execute(p)
        .await
        .unwrap();
    let left: Vec<i64> = sqlx::query_scalar("select id from wa_media order by id")
        .fetch_all(p)
        .await
        .unwrap();
    assert_eq!(left, [media[3].1]);
    // The whole maintenance run includes it (WA_MEDIA_RETENTION from the config).
    sqlx::query("update wa_media set created_at = now() - interval '8 days'")
        .execute(p)
        .await
        .unwrap();
    let c = wa_outbox::config::Config::from_lookup(|k| {
        (k == "WA_MEDIA_RETENTION").then(|| "7d".to_string())
    })
    .unwrap();
    let cfg = wa_outbox::maintenance::MaintenanceConfig::from_config(&c).unwrap();
    let report = wa_outbox::maintenance::run_once(p, &cfg).await;
    assert_eq!(report.pruned_media.rows, 1);
    let n: i64 = sqlx::query_scalar("select count(*) from wa_media")
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(n, 0);
}
