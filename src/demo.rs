//! `wa-outbox demo`: the whole product on the embedded defaults, end to end, narrated.
//!
//! Embedded PostgreSQL (or DATABASE_URL) → the simulator → a runner with real Chromium → a
//! session row → its QR (printed, and saved as a PNG) → the simulator's phone scans it → a text
//! and an image go out → each status change shown live → the rows to look at.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt;

use crate::child::DieWithParent as _;
use crate::config::Config;

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Session id to create.
    #[arg(long, default_value = "demo_session")]
    pub session: String,
    /// Number of the simulator's phone that links the session.
    #[arg(long, default_value = "15550001111")]
    pub phone: String,
    /// Recipient of the demo messages, written the way people write numbers.
    #[arg(long, default_value = "+1 (555) 000-2222")]
    pub to: String,
}

const STEP_TIMEOUT: Duration = Duration::from_secs(90);

fn say(s: impl AsRef<str>) {
    println!("\x1b[1m==>\x1b[0m {}", s.as_ref());
}

/// The simulator, as a child process of this binary (killed when dropped).
struct Sim {
    url: String,
    _child: tokio::process::Child,
}

async fn start_sim() -> anyhow::Result<Sim> {
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["sim", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .die_with_parent()
        .spawn()
        .context("starting the simulator")?;
    let stdout = child.stdout.take().context("simulator stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .context("the simulator did not start within 20 s")??
        .unwrap_or_default();
    let url = first
        .strip_prefix("sim listening on ")
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .with_context(|| format!("unexpected first line from the simulator: {first:?}"))?;
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Sim { url, _child: child })
}

async fn session_row(
    pool: &PgPool,
    id: &str,
) -> anyhow::Result<(
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
)> {
    Ok(sqlx::query_as(
        "select status, qr_code, qr_image, phone_number, error_code from wa_session where id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await?)
}

/// Waits (on wa_event notifications, with a slow poll as a fallback) until `done` says so.
async fn until<T, F, Fut>(listener: &mut PgListener, what: &str, mut done: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(v) = done().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {STEP_TIMEOUT:?} waiting for {what}");
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    }
}

pub async fn main(mut config: Config, args: DemoArgs) -> anyhow::Result<()> {
    say("starting PostgreSQL");
    let db = crate::db::resolve(&config).await?;
    let pool = crate::db::connect(&db.url, 20).await?;
    crate::db::migrate(&pool).await?;

    say("starting the simulator (a local WhatsApp Web)");
    let sim = start_sim().await?;
    println!(
        "    simulator at {}/  (open it in a browser to watch)",
        sim.url
    );
    config.web_url = format!("{}/", sim.url);

    say("starting a runner (headless Chromium, one page per session)");
    let runner =
        crate::runner::spawn_production(&config, pool.clone(), db.embedded.is_some(), None).await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen("wa_event").await?;

    // A fresh session every run, so the demo always shows the QR step.
    sqlx::query("delete from wa_session where id = $1")
        .bind(&args.session)
        .execute(&pool)
        .await?;
    sqlx::query("insert into wa_session (id, user_id) values ($1, 1)")
        .bind(&args.session)
        .execute(&pool)
        .await?;
    say(format!(
        "inserted the session row: insert into wa_session (id, user_id) values ('{}', 1)",
        args.session
    ));

    let (qr, image) = until(&mut listener, "the QR code", || async {
        let (status, qr, image, _, err) = session_row(&pool, &args.session).await?;
        if status == "failed" {
            bail!("the session failed: {}", err.unwrap_or_default());
        }
        Ok(match (qr, image) {
            (Some(q), Some(i)) if status == "qr_pending" => Some((q, i)),
            _ => None,
        })
    })
    .await?;
    say("the runner wrote the QR to wa_session.qr_code / qr_image:");
    println!("{}", crate::qr::terminal(&qr));
    let png_path = config.data_dir.join("demo-qr.png");
    if let Some(b64) = image.strip_prefix("data:image/png;base64,") {
        std::fs::create_dir_all(&config.data_dir)?;
        std::fs::write(
            &png_path,
            base64::engine::general_purpose::STANDARD.decode(b64)?,
        )?;
        println!("    PNG saved to {}", png_path.display());
    }

    say(format!(
        "the simulator's phone (+{}) scans the QR",
        args.phone
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let resp = http
        .post(format!("{}/_sim/scan", sim.url))
        .json(&serde_json::json!({"qr": qr, "phone": args.phone, "name": "Demo Phone"}))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "the simulator refused the scan: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let phone = until(&mut listener, "the session to connect", || async {
        let (status, _, _, phone, err) = session_row(&pool, &args.session).await?;
        if status == "failed" {
            bail!("the session failed: {}", err.unwrap_or_default());
        }
        Ok((status == "connected").then_some(phone.unwrap_or_default()))
    })
    .await?;
    say(format!("connected as {phone}"));

    let picture = crate::qr::png_bytes("wa-outbox demo picture")?;
    let text_id: i64 = sqlx::query_scalar(
        "insert into wa_message (session_id, recipient, body) values ($1, $2, $3) returning id",
    )
    .bind(&args.session)
    .bind(&args.to)
    .bind("Hello from wa-outbox 👋 — sent through a plain INSERT")
    .fetch_one(&pool)
    .await?;
    let image_id: i64 = sqlx::query_scalar(
        "insert into wa_message (session_id, recipient, kind, body, media_data, media_mime, media_filename)
         values ($1, $2, 'image', 'A picture, with a caption', $3, 'image/png', 'demo.png') returning id",
    )
    .bind(&args.session)
    .bind(&args.to)
    .bind(&picture)
    .fetch_one(&pool)
    .await?;
    say(format!(
        "inserted two messages to {} (ids {text_id} and {image_id}); watching their status:",
        args.to
    ));

    let mut last: HashMap<i64, String> = HashMap::new();
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "select id, status, error_code from wa_message where id = any($1) order by id",
        )
        .bind(vec![text_id, image_id])
        .fetch_all(&pool)
        .await?;
        for (id, status, err) in &rows {
            if last.get(id) != Some(status) {
                let kind = if *id == text_id { "text " } else { "image" };
                println!(
                    "    message {id} ({kind}): {status}{}",
                    err.as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                );
                last.insert(*id, status.clone());
            }
            if status == "failed" {
                bail!(
                    "message {id} failed: {}",
                    err.as_deref().unwrap_or_default()
                );
            }
        }
        if rows.iter().all(|(_, s, _)| s == "read") {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {STEP_TIMEOUT:?} waiting for both messages to be read");
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    }

    let recorded: serde_json::Value = http
        .get(format!("{}/_sim/messages", sim.url))
        .query(&[("phone", args.phone.as_str())])
        .send()
        .await?
        .json()
        .await?;
    let n = recorded
        .as_array()
        .map(|a| a.len())
        .or_else(|| recorded["messages"].as_array().map(|a| a.len()))
        .unwrap_or(0);
    say(format!(
        "the simulator's server recorded {n} message(s) from +{}",
        args.phone
    ));

    say("wa-outbox status:");
    print!(
        "{}",
        crate::status::render(&crate::status::snapshot(&pool).await?)
    );

    runner.shutdown().await?;
    say("runner drained and stopped");
    pool.close().await;
    println!("\nLook at the rows yourself: run `wa-outbox run` (same WA_DATA_DIR) in one terminal; it starts the");
    println!("embedded PostgreSQL again and prints its psql command. Then, in psql:");
    for q in [
        "select * from wa_session_overview;",
        "select id, recipient, kind, status, wa_message_id, sent_at, read_at from wa_message order by id;",
        "select id, kind, message_id, payload from wa_event order by id;",
        "select * from wa_outbox_stats;",
    ] {
        println!("    {q}");
    }
    if db.embedded.is_none() {
        println!("(DATABASE_URL is set: psql \"$DATABASE_URL\")");
    }
    Ok(())
}
