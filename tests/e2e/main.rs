//! The slow end-to-end tests, in one binary so they share one simulator: real PostgreSQL, real
//! Chromium (one browser per session), the real simulator (every test links its own phone
//! numbers). `rows`: one in-process runner driven through rows; `fleet`: several `wa-outbox run`
//! processes, killed and drained as Kubernetes would.

mod calls;
mod commands;
mod faults;
mod fleet;
mod inbound_kinds;
mod kinds;
mod lifecycle;
mod media_in;
mod proxy;
mod rows;
mod sticker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::OnceCell;
use wa_outbox::config::Config;
use wa_outbox::runner::{self, NoLoginStore, RunnerConfig, RunnerHandle, RunnerParts};
use wa_outbox::testing::{wait_for, TestDb};

pub(crate) const STEP: Duration = Duration::from_secs(60);

pub(crate) struct Sim {
    pub(crate) url: String,
    http: reqwest::Client,
}

pub(crate) static SIM: OnceCell<Sim> = OnceCell::const_new();

pub(crate) async fn sim() -> &'static Sim {
    SIM.get_or_init(|| async {
        let url = tokio::task::spawn_blocking(|| {
            wa_outbox::testing::sim_process(
                env!("CARGO_BIN_EXE_wa-outbox"),
                &["--ack-step-ms", "100", "--sync-delay-ms", "200"],
            )
        })
        .await
        .expect("start the simulator");
        Sim {
            url,
            // No idle connections kept: the client outlives the test whose runtime made it, and a
            // pooled connection's task dies with that runtime ("runtime dropped the dispatch
            // task" in the next test that reuses it).
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    })
    .await
}

impl Sim {
    pub(crate) async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
    pub(crate) async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
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
    pub(crate) async fn sent_by(&self, phone: &str) -> Vec<Value> {
        self.get(&format!("/_sim/messages?phone={phone}")).await["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
    pub(crate) async fn linked_devices(&self, phone: &str) -> usize {
        self.get("/_sim/devices").await["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["state"] == "linked" && d["phone"] == phone)
            .count()
    }
}

/// Serves bytes for media_url tests; loopback is allow-listed for it.
pub(crate) async fn media_server() -> (String, Vec<u8>) {
    use axum::routing::get;
    let picture = wa_outbox::qr::png_bytes("a picture for the e2e test").unwrap();
    let pic = picture.clone();
    let app = axum::Router::new()
        .route(
            "/doc.pdf",
            get(|| async {
                (
                    [("content-type", "application/pdf")],
                    b"%PDF-1.4 wa-outbox test document".to_vec(),
                )
            }),
        )
        .route(
            "/pic.png",
            get(move || async move { ([("content-type", "image/png")], pic) }),
        )
        .route("/big.bin", get(|| async { vec![7u8; 3 * 1024 * 1024] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), picture)
}

pub(crate) fn config(web_url: &str, data_dir: &std::path::Path) -> Config {
    let env: HashMap<&str, String> = [
        ("WA_WEB_URL", web_url.to_string()),
        ("WA_DATA_DIR", data_dir.display().to_string()),
        ("WA_MEDIA_ALLOWED_HOSTS", "127.0.0.1".into()),
        ("WA_MEDIA_MAX_BYTES", (1024 * 1024).to_string()),
        ("WA_SEND_MIN_INTERVAL", "0".into()),
        ("WA_LEASE_TTL", "10s".into()),
    ]
    .into();
    Config::from_lookup(|k| env.get(k).cloned()).unwrap()
}

pub(crate) async fn start_runner(db: &TestDb) -> (RunnerHandle, PathBuf) {
    start_runner_at(db, &sim().await.url).await
}

/// A runner whose pages load the simulator at `sim_url` (a test's own, for faults that would
/// reach every other test's pages on the shared one).
pub(crate) async fn start_runner_at(db: &TestDb, sim_url: &str) -> (RunnerHandle, PathBuf) {
    let data_dir = std::env::temp_dir().join(format!("wa-e2e-{}", uuid::Uuid::new_v4().simple()));
    let c = config(&format!("{sim_url}/"), &data_dir);
    let mut cfg = RunnerConfig::from_config(&c);
    cfg.poll_interval = Duration::from_millis(200);
    cfg.retry_base = Duration::from_millis(200);
    let pool = wa_outbox::db::connect_as(&db.url, 10, "wa-outbox-e2e")
        .await
        .unwrap();
    let h = runner::spawn(RunnerParts {
        maintenance: None,
        pool,
        driver: Arc::new(wa_outbox::driver::chromium::ChromiumDriver::from_config(&c)),
        logins: Arc::new(NoLoginStore),
        media: Some(Arc::new(wa_outbox::media::MediaFetcher::from_config(&c))),
        cfg,
        metrics: None,
    })
    .await
    .unwrap();
    (h, data_dir)
}

pub(crate) async fn session(
    pool: &PgPool,
    id: &str,
) -> (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
) {
    sqlx::query_as(
        "select status, qr_code, qr_image, phone_number, error_code from wa_session where id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub(crate) async fn wait_status(pool: &PgPool, id: &str, want: &str) {
    wait_for(&format!("session {id} {want}"), STEP, || async {
        let (status, ..) = session(pool, id).await;
        (status == want).then_some(())
    })
    .await
}

/// Row → QR → the simulator's phone scans it → connected. Returns the QR payload.
pub(crate) async fn link(pool: &PgPool, id: &str, phone: &str) -> String {
    sqlx::query("insert into wa_session (id) values ($1)")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    let (qr, image) = wait_for("the QR row", STEP, || async {
        match session(pool, id).await {
            (s, Some(q), Some(i), _, _) if s == "qr_pending" => Some((q, i)),
            _ => None,
        }
    })
    .await;
    // The PNG decodes to the payload, and the payload is what the simulator shows right now.
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(image.strip_prefix("data:image/png;base64,").unwrap())
        .unwrap();
    assert_eq!(decode_qr(&png), qr);
    let devices = sim().await.get("/_sim/devices").await;
    assert!(
        devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["qr"] == qr.as_str()),
        "QR row is not the simulator's current QR"
    );
    sim()
        .await
        .post(
            "/_sim/scan",
            json!({"qr": qr, "phone": phone, "name": "E2E"}),
        )
        .await;
    wait_status(pool, id, "connected").await;
    let (_, qr_after, _, number, _) = session(pool, id).await;
    assert_eq!(number.as_deref(), Some(format!("+{phone}").as_str()));
    assert!(qr_after.is_none(), "the QR is cleared once connected");
    qr
}

pub(crate) fn decode_qr(png_bytes: &[u8]) -> String {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let (w, line) = (info.width as usize, info.line_size);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, info.height as usize, |x, y| {
        buf[y * line + x * channels]
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

pub(crate) fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub(crate) async fn insert(pool: &PgPool, sql: &str, binds: &[&str]) -> i64 {
    let mut q = sqlx::query_scalar::<_, i64>(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.fetch_one(pool).await.unwrap()
}

pub(crate) async fn msg(pool: &PgPool, id: i64) -> (String, Option<String>, Option<String>) {
    sqlx::query_as("select status, error_code, wa_message_id from wa_message where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Browser processes whose command line names this profile folder.
pub(crate) fn chromium_pids(profile: &std::path::Path) -> Vec<i32> {
    let needle = format!("--user-data-dir={}", profile.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect()
}
