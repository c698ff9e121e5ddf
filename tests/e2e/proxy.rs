//! A proxy per session (`wa_session.proxy_url`, issue 14): a `wa-outbox run` process whose
//! session goes through a local proxy that demands Basic credentials, reaches the QR, and the
//! proxy saw the simulator's host; the password appears in no log line (the runner runs at the
//! most verbose level) and no row; a proxy that refuses the credentials or the connection, and a
//! URL the browser cannot use, each end the session with their own code.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use wa_outbox::testing::{test_db, wait_for};

use crate::fleet::spawn_runner_proc;
use crate::*;

const PASSWORD: &str = "pr0xy-s3cret-pw";

/// A forwarding HTTP proxy (CONNECT and absolute-form requests) that requires
/// `Proxy-Authorization: Basic user:PASSWORD` and records the request line of each request it
/// let through, and how many it challenged.
struct TestProxy {
    port: u16,
    seen: Mutex<Vec<String>>,
    challenged: Mutex<usize>,
}

async fn test_proxy(user: &'static str) -> Arc<TestProxy> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Arc::new(TestProxy {
        port: listener.local_addr().unwrap().port(),
        seen: Mutex::new(Vec::new()),
        challenged: Mutex::new(0),
    });
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{PASSWORD}"))
    );
    let p = proxy.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (p, expected) = (p.clone(), expected.clone());
            tokio::spawn(async move {
                let _ = serve(client, &p, &expected).await;
            });
        }
    });
    proxy
}

/// One client connection: 407s until a request carries the credentials, then a tunnel (CONNECT)
/// or a forwarded connection (absolute-form) to the host it names.
async fn serve(mut client: TcpStream, p: &TestProxy, expected: &str) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // One request head.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = client.read(&mut chunk).await?;
            if n == 0 || buf.len() > 64 * 1024 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let line = head.lines().next().unwrap_or_default().to_string();
        let authorized = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("proxy-authorization") && v.trim() == expected
            })
        });
        if !authorized {
            *p.challenged.lock().unwrap() += 1;
            client
                .write_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                      Proxy-Authenticate: Basic realm=\"wa-outbox test\"\r\n\
                      Content-Length: 0\r\n\r\n",
                )
                .await?;
            buf.drain(..end);
            continue;
        }
        p.seen.lock().unwrap().push(line.clone());
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let host = if method == "CONNECT" {
            target.to_string()
        } else {
            let rest = target.strip_prefix("http://").unwrap_or(target);
            rest.split('/').next().unwrap_or("").to_string()
        };
        let mut upstream = TcpStream::connect(&host).await?;
        if method == "CONNECT" {
            client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await?;
            upstream.write_all(&buf[end..]).await?;
        } else {
            // The server takes the absolute-form target as is.
            upstream.write_all(&buf).await?;
        }
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
}

async fn session_row(pool: &sqlx::PgPool, id: &str) -> (String, Option<String>, Option<String>) {
    sqlx::query_as("select status, error_code, error from wa_session where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxied_session_goes_through_its_proxy_and_a_refusing_proxy_ends_it() {
    proxied("per-session").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_browser_a_proxied_session_goes_through_its_proxy_and_a_refusing_proxy_ends_it() {
    proxied("shared").await
}

/// In `mode` (WA_BROWSER_MODE): the proxy is a launch flag, or the browser context's.
async fn proxied(mode: &str) {
    let db = test_db().await;
    let p = &db.pool;
    let sim_url = sim().await.url.clone();
    let sim_host = sim_url.trim_start_matches("http://").trim_end_matches('/');
    let proxy = test_proxy("bob").await;
    let wrong = test_proxy("alice").await;
    // A port nothing listens on: bound, then closed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };

    let rows = [
        (
            "e2e_proxy_ok",
            format!("http://bob:{PASSWORD}@127.0.0.1:{}", proxy.port),
        ),
        (
            "e2e_proxy_auth",
            format!("http://bob:{PASSWORD}@127.0.0.1:{}", wrong.port),
        ),
        (
            "e2e_proxy_down",
            format!("http://bob:{PASSWORD}@127.0.0.1:{closed}"),
        ),
        (
            "e2e_proxy_bad",
            format!("http://bob:{PASSWORD}@127.0.0.1:1/a/path"),
        ),
    ];
    for (id, url) in &rows {
        sqlx::query("insert into wa_session (id, proxy_url) values ($1, $2)")
            .bind(id)
            .bind(url)
            .execute(p)
            .await
            .unwrap();
    }
    // A scheme Chromium has no use for is refused by the table itself.
    let refused = sqlx::query("insert into wa_session (id, proxy_url) values ('x', 'ftp://h:21')")
        .execute(p)
        .await;
    assert!(refused.is_err(), "the scheme check");

    // The most verbose logging there is: the password must still appear nowhere.
    let runner = spawn_runner_proc(
        &db,
        8,
        "10s",
        &[("RUST_LOG", "trace"), ("WA_BROWSER_MODE", mode)],
    )
    .await;

    wait_for("the proxied session's QR", STEP, || async {
        let (status, qr, ..) = session(p, "e2e_proxy_ok").await;
        (status == "qr_pending" && qr.is_some()).then_some(())
    })
    .await;
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|l| l.contains(sim_host)),
        "the proxy saw {seen:?}, not {sim_host}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("CONNECT") && l.contains(sim_host)),
        "the page's WebSocket went through the proxy too: {seen:?}"
    );
    assert!(
        *proxy.challenged.lock().unwrap() >= 1,
        "the browser was asked for the credentials (and answered)"
    );

    for (id, code) in [
        ("e2e_proxy_auth", "proxy_failed"),
        ("e2e_proxy_down", "proxy_failed"),
        ("e2e_proxy_bad", "proxy_invalid"),
    ] {
        wait_for(&format!("{id} failed"), STEP, || async {
            let (status, c, _) = session_row(p, id).await;
            (status == "failed").then_some(()).filter(|_| c.is_some())
        })
        .await;
        let (_, c, error) = session_row(p, id).await;
        assert_eq!(c.as_deref(), Some(code), "{id}: {error:?}");
        let error = error.unwrap_or_default();
        assert!(!error.contains(PASSWORD), "{id}: {error}");
        assert!(
            error.contains("bob:***@"),
            "{id} names its proxy redacted: {error}"
        );
    }
    assert!(
        wrong.seen.lock().unwrap().is_empty(),
        "the wrong proxy let nothing through"
    );

    // No row keeps the password: each session's runner sealed it when it started the browser
    // and left `bob:***@` (the unusable URL too: it was sealed before it was parsed).
    let urls: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("select id, proxy_url, proxy_password_sealed from wa_session order by id")
            .fetch_all(p)
            .await
            .unwrap();
    for (id, url, sealed) in &urls {
        let url = url.as_deref().unwrap_or_default();
        assert!(url.contains("bob:***@"), "{id}: {url}");
        let sealed = sealed.as_deref().unwrap_or_default();
        assert!(!sealed.is_empty(), "{id}: nothing sealed");
        assert!(
            !url.contains(PASSWORD) && !sealed.contains(PASSWORD),
            "{id}"
        );
    }
    // Stopped and started again, the session opens the sealed password and goes through its
    // proxy with it once more.
    sqlx::query("update wa_session set desired_state = 'stopped' where id = 'e2e_proxy_ok'")
        .execute(p)
        .await
        .unwrap();
    wait_for("the proxied session stopped", STEP, || async {
        (session_row(p, "e2e_proxy_ok").await.0 == "stopped").then_some(())
    })
    .await;
    let before = proxy.seen.lock().unwrap().len();
    sqlx::query("update wa_session set desired_state = 'running' where id = 'e2e_proxy_ok'")
        .execute(p)
        .await
        .unwrap();
    wait_for("the proxied session's QR again", STEP, || async {
        let (status, qr, ..) = session(p, "e2e_proxy_ok").await;
        let more = proxy.seen.lock().unwrap().len() > before;
        (status == "qr_pending" && qr.is_some() && more).then_some(())
    })
    .await;
    // A sealed password opens for its own session and URL only: copied to another session with
    // the same URL, it does not, and that session fails with a sentence instead of a bad login.
    sqlx::query(
        "insert into wa_session (id, proxy_url, proxy_password_sealed)
         select 'e2e_proxy_copy', proxy_url, proxy_password_sealed from wa_session where id = 'e2e_proxy_ok'",
    )
    .execute(p)
    .await
    .unwrap();
    wait_for("the copied proxy refused", STEP, || async {
        let (status, c, _) = session_row(p, "e2e_proxy_copy").await;
        (status == "failed").then_some(()).filter(|_| c.is_some())
    })
    .await;
    let (_, c, error) = session_row(p, "e2e_proxy_copy").await;
    assert_eq!(c.as_deref(), Some("proxy_invalid"), "{error:?}");
    assert!(error.unwrap_or_default().contains("write the URL again"));

    let events: Vec<String> = sqlx::query_scalar("select payload::text from wa_event")
        .fetch_all(p)
        .await
        .unwrap();
    assert!(events.iter().all(|e| !e.contains(PASSWORD)));

    let log_path = runner.log.clone();
    runner.drain(Duration::from_secs(30)).await;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!log.is_empty(), "the runner logged");
    assert!(
        !log.contains(PASSWORD),
        "the password is in the runner's log:\n{}",
        log.lines()
            .filter(|l| l.contains(PASSWORD))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
