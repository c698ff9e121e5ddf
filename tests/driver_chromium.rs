//! The Chromium driver against real Chromium and the real simulator (`wa-outbox sim`), one
//! simulator per test binary. Every wait is bounded; nothing sleeps to synchronise.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sha2::Digest as _;
use tokio::sync::mpsc;
use wa_outbox::driver::chromium::{ChromiumConfig, ChromiumDriver, ChromiumSession};
use wa_outbox::driver::{DriverEvent, Media, MessageKind, OutgoingMessage, Session, SessionSpec};
use wa_outbox::error_code::ErrorCode;

/// Generous bound on any single expected event (debug build, 2 shared cores).
const EVENT_WAIT: Duration = Duration::from_secs(45);

struct Sim {
    url: String,
}

/// One simulator for the whole binary (gone when the test binary exits: `sim_process`).
fn sim() -> &'static Sim {
    static SIM: OnceLock<Sim> = OnceLock::new();
    SIM.get_or_init(|| Sim {
        // QR refs rotate every few seconds so that rotation is exercised too, and a page goes
        // idle (UNPAIRED_IDLE) after three of them, as WhatsApp Web does after six.
        url: wa_outbox::testing::sim_process(
            env!("CARGO_BIN_EXE_wa-outbox"),
            &[
                "--qr-first-ms",
                "4000",
                "--qr-interval-ms",
                "4000",
                "--qr-refs",
                "3",
            ],
        ),
    })
}

/// Shared-browser mode: one Chromium (its user-data-dir under `dir`), a context per session.
fn shared_driver(dir: &std::path::Path) -> ChromiumDriver {
    let mut c = driver().config().clone();
    c.shared_dir = Some(dir.join("browser"));
    ChromiumDriver::new(c)
}

fn driver() -> ChromiumDriver {
    // RUST_LOG=wa_outbox=debug shows the driver's own timings.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut c = ChromiumConfig::from_config(&wa_outbox::config::Config::defaults());
    c.web_url = sim().url.clone();
    c.start_timeout = Duration::from_secs(60);
    c.send_timeout = Duration::from_secs(30);
    c.cdp_timeout = Duration::from_secs(15);
    ChromiumDriver::new(c)
}

fn spec(dir: &std::path::Path, id: &str, pair_phone: Option<&str>) -> SessionSpec {
    SessionSpec {
        session_id: id.into(),
        profile_dir: dir.join(id),
        pair_phone: pair_phone.map(str::to_string),
        proxy: None,
    }
}

async fn get(path: &str) -> serde_json::Value {
    let r = reqwest::Client::new()
        .get(format!("{}{}", sim().url, path))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

async fn post(path: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, v) = post_status(path, body).await;
    assert!(status.is_success(), "POST {path}: {status} {v}");
    v
}

async fn post_status(
    path: &str,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    post_status_at(&sim().url, path, body).await
}

async fn post_status_at(
    base: &str,
    path: &str,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .timeout(Duration::from_secs(10))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: serde_json::Value =
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(serde_json::Value::Null);
    (status, v)
}

/// Events as printed in failure messages: QR payloads are credentials, even in tests.
fn redacted(events: &[DriverEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            DriverEvent::Qr { .. } => "Qr { <redacted> }".to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Waits for the first event `pick` accepts; returns it and everything seen before it.
async fn wait_for<T>(
    rx: &mut mpsc::Receiver<DriverEvent>,
    what: &str,
    mut pick: impl FnMut(&DriverEvent) -> Option<T>,
) -> (T, Vec<DriverEvent>) {
    let deadline = Instant::now() + EVENT_WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(ev)) => {
                if let Some(t) = pick(&ev) {
                    return (t, seen);
                }
                seen.push(ev);
            }
            Ok(None) => panic!(
                "event channel closed while waiting for {what}; saw {:?}",
                redacted(&seen)
            ),
            Err(_) => panic!("no {what} within {EVENT_WAIT:?}; saw {:?}", redacted(&seen)),
        }
    }
}

/// Polls the simulator's record (an HTTP read, not a sleep-and-hope) until `ok` holds.
async fn sim_until(
    path: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + EVENT_WAIT;
    loop {
        let v = get(path).await;
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: last {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn login(
    driver: &ChromiumDriver,
    spec: SessionSpec,
    phone: &str,
    name: &str,
) -> (Arc<ChromiumSession>, mpsc::Receiver<DriverEvent>, Duration) {
    login_at(&sim().url, driver, spec, phone, name).await
}

async fn login_at(
    base: &str,
    driver: &ChromiumDriver,
    spec: SessionSpec,
    phone: &str,
    name: &str,
) -> (Arc<ChromiumSession>, mpsc::Receiver<DriverEvent>, Duration) {
    let started = Instant::now();
    let (session, mut rx) = driver.launch(spec).await.expect("session starts");
    let mut to_qr = None;
    loop {
        let (qr, _) = wait_for(&mut rx, "Qr", |e| match e {
            DriverEvent::Qr { payload } => Some(payload.clone()),
            _ => None,
        })
        .await;
        to_qr.get_or_insert(started.elapsed());
        assert_eq!(qr.split(',').count(), 5, "five comma-separated fields");
        let (status, _) = post_status_at(
            base,
            "/_sim/scan",
            serde_json::json!({"qr": qr, "phone": phone, "name": name}),
        )
        .await;
        if status.is_success() {
            break;
        }
        // The ref rotated between the event and the scan: the next Qr event carries the new one.
        assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    }
    let to_qr = to_qr.unwrap();
    let ((p, n), _) = wait_for(&mut rx, "Connected", |e| match e {
        DriverEvent::Connected { phone, push_name } => Some((phone.clone(), push_name.clone())),
        _ => None,
    })
    .await;
    assert_eq!(p, phone);
    assert_eq!(n.as_deref(), Some(name));
    (session, rx, to_qr)
}

fn text(to: &str, id: &str, body: &str) -> OutgoingMessage {
    let chat_id = format!("{to}@c.us");
    OutgoingMessage {
        wa_message_id: format!("true_{chat_id}_{id}"),
        chat_id,
        id: id.into(),
        kind: MessageKind::Text,
        body: Some(body.into()),
        media: None,
        location: None,
        data: None,
        options: serde_json::json!({}),
    }
}

fn sent_messages(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["messages"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_send_ack_resume() {
    let dir = tempfile::tempdir().unwrap();
    let driver = driver();
    let phone = "15550001001";
    let (session, mut rx, to_qr) = login(
        &driver,
        spec(dir.path(), "s-main", None),
        phone,
        "Main Phone",
    )
    .await;
    eprintln!("start() → first Qr event: {to_qr:?}");
    eprintln!(
        "connected session, all its Chromium processes: PSS {} MiB",
        session.browser_pss_bytes().unwrap_or(0) / (1024 * 1024)
    );

    // Text.
    let to = "15550009001";
    let m1 = text(to, "3EB0AA00000000000001", "hello from wa-outbox");
    session.send(&m1).await.expect("text sent");

    // Image, with a caption.
    let png = wa_outbox::qr::png_bytes("an image").unwrap();
    let png_sha = hex::encode(sha2::Sha256::digest(&png));
    let mut m2 = text(to, "3EB0AA00000000000002", "a caption");
    m2.kind = MessageKind::Image;
    m2.media = Some(Media {
        data: png.clone().into(),
        mime: "image/png".into(),
        filename: Some("qr.png".into()),
    });
    session.send(&m2).await.expect("image sent");

    // Hostile text: must arrive byte for byte, and nothing in it may run.
    let nasty =
        "quote \" apostrophe ' backslash \\ </script><script>alert(1)</script> '); alert(1);// \
                 `${alert(1)}` 😀🚀 \u{1F9D1}\u{200D}\u{1F4BB} end";
    let m3 = text(to, "3EB0AA00000000000003", nasty);
    session.send(&m3).await.expect("hostile text sent");

    // A document and a voice note: the kind reaches the page as WhatsApp's media params.
    let doc = b"%PDF-1.4\n% not really a pdf\n".to_vec();
    let mut m4 = text(to, "3EB0AA00000000000004", "the report");
    m4.kind = MessageKind::Document;
    m4.media = Some(Media {
        data: doc.clone().into(),
        mime: "application/pdf".into(),
        filename: Some("report.pdf".into()),
    });
    session.send(&m4).await.expect("document sent");
    let ogg = vec![0x4f, 0x67, 0x67, 0x53, 0, 2, 0, 0, 1, 2, 3, 4];
    let mut m5 = text(to, "3EB0AA00000000000005", "");
    m5.body = None;
    m5.kind = MessageKind::Voice;
    m5.media = Some(Media {
        data: ogg.clone().into(),
        mime: "audio/ogg; codecs=opus".into(),
        filename: None,
    });
    session.send(&m5).await.expect("voice note sent");

    // Sending the same id again is a no-op (at most once).
    session
        .send(&m1)
        .await
        .expect("re-send of a known id is accepted");

    let path = format!("/_sim/messages?phone={phone}");
    let record = sim_until(&path, "five messages recorded", |v| {
        sent_messages(v).len() >= 5
    })
    .await;
    let msgs = sent_messages(&record);
    assert_eq!(msgs.len(), 5, "each message exactly once: {record}");
    let by_id = |id: &str| {
        msgs.iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} not recorded: {record}"))
            .clone()
    };
    let r1 = by_id("3EB0AA00000000000001");
    assert_eq!(r1["body"], "hello from wa-outbox");
    assert_eq!(r1["to"].as_str().unwrap().trim_end_matches("@c.us"), to);
    let r2 = by_id("3EB0AA00000000000002");
    assert_eq!(r2["kind"], "image");
    assert_eq!(r2["caption"], "a caption");
    assert_eq!(r2["media"]["sha256"], png_sha.as_str());
    assert_eq!(r2["media"]["size"], png.len());
    let r3 = by_id("3EB0AA00000000000003");
    assert_eq!(r3["body"].as_str(), Some(nasty));
    let r4 = by_id("3EB0AA00000000000004");
    assert_eq!(r4["kind"], "document");
    assert_eq!(r4["caption"], "the report");
    assert_eq!(
        r4["media"]["sha256"],
        hex::encode(sha2::Sha256::digest(&doc)).as_str()
    );
    let r5 = by_id("3EB0AA00000000000005");
    assert_eq!(r5["kind"], "voice");
    assert_eq!(
        r5["media"]["sha256"],
        hex::encode(sha2::Sha256::digest(&ogg)).as_str()
    );

    // Acks reach us as events under the ids we chose.
    let mut want: std::collections::HashSet<String> = [&m1, &m2, &m3]
        .iter()
        .map(|m| m.wa_message_id.clone())
        .collect();
    wait_for(&mut rx, "Ack ≥ 1 for all three", |e| {
        if let DriverEvent::Ack { wa_message_id, ack } = e {
            if *ack >= 1 {
                want.remove(wa_message_id);
            }
        }
        want.is_empty().then_some(())
    })
    .await;
    assert_eq!(
        session
            .find_message(&m1.chat_id, &m1.wa_message_id)
            .await
            .unwrap()
            .map(|a| a >= 1),
        Some(true)
    );
    assert_eq!(
        session
            .find_message(&m1.chat_id, "true_15550009001@c.us_3EB0FFFFFFFFFFFFFFFF")
            .await
            .unwrap(),
        None
    );

    // A group: the page keys our message with our own JID appended; the lookup by the key we
    // stored (without it) still finds it, so recovery after a crash does not send it twice.
    let group = "120363000000000001@g.us";
    let g = OutgoingMessage {
        wa_message_id: format!("true_{group}_3EB0AA00000000000009"),
        chat_id: group.into(),
        ..text(to, "3EB0AA00000000000009", "to the group")
    };
    session.send(&g).await.expect("group message sent");
    let ack_id = wait_for(&mut rx, "Ack for the group message", |e| match e {
        DriverEvent::Ack { wa_message_id, ack } if *ack >= 1 && wa_message_id.contains(group) => {
            Some(wa_message_id.clone())
        }
        _ => None,
    })
    .await;
    assert!(
        ack_id.0.starts_with(&g.wa_message_id),
        "ack id {} for {}",
        ack_id.0,
        g.wa_message_id
    );
    assert!(
        session
            .find_message(group, &g.wa_message_id)
            .await
            .unwrap()
            .is_some_and(|a| a >= 1),
        "the group message is found under the stored key"
    );
    assert_eq!(
        session
            .find_message(group, &format!("true_{group}_3EB0FFFFFFFFFFFFFFFF"))
            .await
            .unwrap(),
        None
    );

    // Incoming.
    post(
        "/_sim/incoming",
        serde_json::json!({"to": phone, "from": "15550009002", "body": "hi there"}),
    )
    .await;
    let (inc, _) = wait_for(&mut rx, "Incoming", |e| match e {
        DriverEvent::Incoming(m) => Some(m.clone()),
        _ => None,
    })
    .await;
    assert_eq!(inc.body.as_deref(), Some("hi there"));
    assert!(inc.from.starts_with("15550009002"), "{inc:?}");

    // resolve_chat: none for a number without WhatsApp, the page's own wid otherwise.
    post(
        "/_sim/unregistered",
        serde_json::json!({"numbers": ["15550009999"]}),
    )
    .await;
    assert_eq!(
        session.resolve_chat("15550009999@c.us").await.unwrap(),
        None
    );
    assert!(session
        .resolve_chat("15550009001@c.us")
        .await
        .unwrap()
        .is_some());

    // Close (idempotent), then start again from the same profile: no QR, straight to Connected.
    let pid = session.browser_pid();
    session.close().await.unwrap();
    session.close().await.unwrap();
    assert!(!process_alive(pid), "browser process gone after close()");
    assert!(!group_alive(pid), "no helper process left after close()");
    drop(rx);

    let started = Instant::now();
    let (session, mut rx) = driver
        .launch(spec(dir.path(), "s-main", None))
        .await
        .expect("restart");
    let (p, before) = wait_for(&mut rx, "Connected after restart", |e| match e {
        DriverEvent::Connected { phone, .. } => Some(phone.clone()),
        _ => None,
    })
    .await;
    eprintln!("restart from profile → Connected: {:?}", started.elapsed());
    assert_eq!(p, phone);
    assert!(
        !before.iter().any(|e| matches!(e, DriverEvent::Qr { .. })),
        "no QR on resume: {:?}",
        redacted(&before)
    );
    session.close().await.unwrap();
}

/// Is any (non-zombie) process of this process group left? The driver starts each browser as
/// its own group, so this covers the zygote, renderers and other helpers.
fn group_alive(pgid: u32) -> bool {
    !group_members(pgid).is_empty()
}

fn group_members(pgid: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let rest = stat.rsplit(')').next().unwrap_or("");
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // fields[0] = state, fields[2] = pgrp
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .collect()
}

fn process_alive(pid: u32) -> bool {
    // A zombie still "exists" for kill(0); read its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .map(|rest| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_browser_is_reported_and_resumes_without_qr() {
    let dir = tempfile::tempdir().unwrap();
    let driver = driver();
    let phone = "15550001002";
    let (session, mut rx, _) = login(
        &driver,
        spec(dir.path(), "s-crash", None),
        phone,
        "Crash Phone",
    )
    .await;
    let m = text("15550009003", "3EB0BB00000000000001", "before the crash");
    session.send(&m).await.unwrap();

    // The page keeps part of its login in localStorage (`WANoiseInfo`, as WhatsApp Web does),
    // which Chromium commits to disk about 5 s after the write; IndexedDB, even with relaxed
    // durability, is on disk when the transaction completes. A browser killed before that commit
    // comes back with half a login, and the page (like the real one) shows a fresh QR. What
    // this test proves is the resume of a login that is on disk, so it waits for that first.
    let local_storage = dir.path().join("s-crash/Default/Local Storage");
    let deadline = Instant::now() + EVENT_WAIT;
    while !wa_outbox::testing::dir_contains(&local_storage, b"WANoiseInfo") {
        assert!(
            Instant::now() < deadline,
            "localStorage never reached the profile"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let pid = session.browser_pid();
    // SAFETY: plain syscall on the browser we started.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    let (reason, _) = wait_for(&mut rx, "Crashed", |e| match e {
        DriverEvent::Crashed { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(!reason.is_empty());
    let err = session
        .send(&text("15550009003", "3EB0BB00000000000002", "x"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.code(), ErrorCode::BrowserCrashed);
    session.close().await.unwrap();
    assert!(!process_alive(pid), "killed browser reaped");
    assert!(
        !group_alive(pid),
        "no helper process of the killed browser left"
    );

    let (session, mut rx) = driver
        .launch(spec(dir.path(), "s-crash", None))
        .await
        .expect("restart after crash");
    let (_, before) = wait_for(&mut rx, "Connected after crash", |e| {
        matches!(e, DriverEvent::Connected { .. }).then_some(())
    })
    .await;
    assert!(
        !before.iter().any(|e| matches!(e, DriverEvent::Qr { .. })),
        "no QR after a crash: {:?}",
        redacted(&before)
    );
    // The message sent before the crash is known to the page under our id.
    assert!(session
        .find_message(&m.chat_id, &m.wa_message_id)
        .await
        .unwrap()
        .is_some());
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_code_links_without_qr() {
    let dir = tempfile::tempdir().unwrap();
    let driver = driver();
    let phone = "15550001003";
    let (session, mut rx) = driver
        .launch(spec(dir.path(), "s-pair", Some(phone)))
        .await
        .unwrap();
    let (code, before) = wait_for(&mut rx, "PairingCode", |e| match e {
        DriverEvent::PairingCode { code } => Some(code.clone()),
        _ => None,
    })
    .await;
    assert_eq!(code.len(), 8);
    assert!(!before.iter().any(|e| matches!(e, DriverEvent::Qr { .. })));
    post(
        "/_sim/pair",
        serde_json::json!({"code": code, "phone": phone}),
    )
    .await;
    let (p, _) = wait_for(&mut rx, "Connected by code", |e| match e {
        DriverEvent::Connected { phone, .. } => Some(phone.clone()),
        _ => None,
    })
    .await;
    assert_eq!(p, phone);

    // Logout from the phone → LoggedOut.
    post("/_sim/logout", serde_json::json!({"phone": phone})).await;
    wait_for(&mut rx, "LoggedOut", |e| {
        matches!(e, DriverEvent::LoggedOut { .. }).then_some(())
    })
    .await;
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_drop_refused_send_and_hung_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = driver().config().clone();
    // Short bounds so the hung page is detected quickly.
    c.send_timeout = Duration::from_secs(4);
    c.cdp_timeout = Duration::from_secs(3);
    let driver = ChromiumDriver::new(c);
    let phone = "15550001004";
    let (session, mut rx, _) = login(
        &driver,
        spec(dir.path(), "s-faults", None),
        phone,
        "Fault Phone",
    )
    .await;

    // The socket drops: Disconnected, then Connected again on the page's own reconnect.
    post(
        "/_sim/faults",
        serde_json::json!({"phone": phone, "drop_socket": true}),
    )
    .await;
    wait_for(&mut rx, "Disconnected", |e| {
        matches!(e, DriverEvent::Disconnected { .. }).then_some(())
    })
    .await;
    wait_for(&mut rx, "Connected after reconnect", |e| {
        matches!(e, DriverEvent::Connected { .. }).then_some(())
    })
    .await;

    // The server refuses one send: a transient send_failed, nothing recorded.
    post(
        "/_sim/faults",
        serde_json::json!({"phone": phone, "fail_sends": 1}),
    )
    .await;
    let err = session
        .send(&text("15550009004", "3EB0CC00000000000001", "refused"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, wa_outbox::driver::DriverError::Refused { .. }),
        "a refusal spends the id: {err}"
    );
    assert_eq!(err.code(), ErrorCode::SendFailed, "{err}");
    // The id stays spent: the page holds the refused message with ack -1, and sending under it
    // again is refused without reaching WhatsApp.
    assert_eq!(
        session
            .find_message(
                "15550009004@c.us",
                "true_15550009004@c.us_3EB0CC00000000000001"
            )
            .await
            .unwrap(),
        Some(-1)
    );
    let again = session
        .send(&text("15550009004", "3EB0CC00000000000001", "refused"))
        .await
        .unwrap_err();
    assert!(
        matches!(again, wa_outbox::driver::DriverError::Refused { .. }),
        "{again}"
    );
    session
        .send(&text("15550009004", "3EB0CC00000000000002", "accepted"))
        .await
        .unwrap();
    let record = get(&format!("/_sim/messages?phone={phone}")).await;
    let ids: Vec<&str> = record["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["3EB0CC00000000000002"]);

    // The app vanishes from a live renderer: the failed send reveals it and it is a crash.
    post(
        "/_sim/faults",
        serde_json::json!({"phone": phone, "crash_page": "blank"}),
    )
    .await;
    // It closes the page's socket first; wait for that so the send surely meets the blank page.
    wait_for(&mut rx, "Disconnected by the blank page", |e| {
        matches!(e, DriverEvent::Disconnected { .. }).then_some(())
    })
    .await;
    let err = session
        .send(&text(
            "15550009004",
            "3EB0CC00000000000004",
            "to a blank page",
        ))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    let (reason, _) = wait_for(&mut rx, "Crashed after the app vanished", |e| match e {
        DriverEvent::Crashed { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("gone"), "{reason}");
    session.close().await.unwrap();

    // Back from the profile without a QR, then the next fault.
    let (session, mut rx) = driver
        .launch(spec(dir.path(), "s-faults", None))
        .await
        .unwrap();
    let (_, before) = wait_for(&mut rx, "Connected after restart", |e| {
        matches!(e, DriverEvent::Connected { .. }).then_some(())
    })
    .await;
    assert!(!before.iter().any(|e| matches!(e, DriverEvent::Qr { .. })));

    // The page stops running script: the send times out and the session reports a crash.
    post(
        "/_sim/faults",
        serde_json::json!({"phone": phone, "crash_page": "hang"}),
    )
    .await;
    let started = Instant::now();
    let err = session
        .send(&text(
            "15550009004",
            "3EB0CC00000000000003",
            "into the void",
        ))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    wait_for(&mut rx, "Crashed after hang", |e| {
        matches!(e, DriverEvent::Crashed { .. }).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "hang detected in bounded time"
    );
    let pid = session.browser_pid();
    session.close().await.unwrap();
    assert!(!process_alive(pid));
    assert!(!group_alive(pid), "{:?}", group_members(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_rotations_are_pushed_and_match_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let driver = driver();
    let (session, mut rx) = driver
        .launch(spec(dir.path(), "s-rotate", None))
        .await
        .unwrap();
    let mut seen: Vec<String> = Vec::new();
    // Five QRs: three refs, then the page goes idle, the driver asks for a new run
    // (Cmd.refreshQR), and two more.
    for round in 0..5 {
        let (qr, _) = wait_for(&mut rx, "Qr", |e| match e {
            DriverEvent::Qr { payload } => Some(payload.clone()),
            _ => None,
        })
        .await;
        assert!(
            !seen.contains(&qr),
            "round {round}: a new payload each rotation"
        );
        // What the simulator shows now is what we were just told (rotations are 4 s apart).
        let devices = get("/_sim/devices").await;
        assert!(
            devices["devices"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["qr"].as_str() == Some(qr.as_str())),
            "round {round}: the pushed QR is the page's current one"
        );
        seen.push(qr);
    }
    // Same keys, new ref: only the first field changes.
    let tail = |q: &str| q.split_once(',').unwrap().1.to_string();
    assert_eq!(tail(&seen[0]), tail(&seen[4]));
    let devices = get("/_sim/devices").await;
    let device = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["qr"].as_str() == Some(seen[4].as_str()))
        .cloned();
    assert!(
        device.as_ref().is_some_and(|d| d["qr_refreshes"] == 1),
        "the page went idle once and the driver refreshed it: {device:?}"
    );
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renderer_crash_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let driver = driver();
    let (session, mut rx) = driver
        .launch(spec(dir.path(), "s-renderer", None))
        .await
        .unwrap();
    wait_for(&mut rx, "Qr", |e| {
        matches!(e, DriverEvent::Qr { .. }).then_some(())
    })
    .await;
    // Kill the page's renderer only; the browser process stays up.
    let renderers: Vec<u32> = group_members_pids(session.browser_pid())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("--type=renderer"))
                .unwrap_or(false)
        })
        .collect();
    assert!(!renderers.is_empty(), "a renderer process exists");
    for pid in &renderers {
        // SAFETY: plain syscall on a process of the browser this test started.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let (reason, _) = wait_for(&mut rx, "Crashed after renderer kill", |e| match e {
        DriverEvent::Crashed { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("page"), "{reason}");
    assert!(process_alive(session.browser_pid()), "only the page died");
    let pid = session.browser_pid();
    session.close().await.unwrap();
    assert!(!group_alive(pid), "{:?}", group_members(pid));
}

fn group_members_pids(pgid: u32) -> Vec<u32> {
    group_members(pgid)
        .iter()
        .filter_map(|stat| stat.split_whitespace().next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_browser_keeps_sessions_apart_and_restores_a_login_from_its_export() {
    let dir = tempfile::tempdir().unwrap();
    let driver = shared_driver(dir.path());
    let (pa, pb) = ("15550009101", "15550009102");
    let (a, _ra, _) = login(&driver, spec(dir.path(), "sh-a", None), pa, "Shared A").await;
    let (b, mut rb, _) = login(&driver, spec(dir.path(), "sh-b", None), pb, "Shared B").await;
    assert_eq!(a.browser_pid(), b.browser_pid(), "one browser for both");

    // Each context is its own linked device: each message goes out from its own account.
    a.send(&text("15550009103", "3EB0DD00000000000001", "from a"))
        .await
        .unwrap();
    b.send(&text("15550009103", "3EB0DD00000000000002", "from b"))
        .await
        .unwrap();
    let ids = |phone: &str| {
        let phone = phone.to_string();
        async move {
            sent_messages(&get(&format!("/_sim/messages?phone={phone}")).await)
                .iter()
                .filter_map(|m| m["id"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(pa).await, ["3EB0DD00000000000001"]);
    assert_eq!(ids(pb).await, ["3EB0DD00000000000002"]);

    // Closing A exports its login (a context keeps storage only in memory) ...
    a.close().await.unwrap();
    let export = dir.path().join("sh-a/wa-outbox-context/storage.json");
    let text_of_export = std::fs::read_to_string(&export).expect("the login was exported");
    assert!(
        text_of_export.contains("\"databases\""),
        "{text_of_export:.200}"
    );
    // ... and a fresh context restored from it resumes without a QR, as the same device.
    let (a2, mut ra2) = driver.launch(spec(dir.path(), "sh-a", None)).await.unwrap();
    let (phone, seen) = wait_for(&mut ra2, "Connected after the restore", |e| match e {
        DriverEvent::Connected { phone, .. } => Some(phone.clone()),
        _ => None,
    })
    .await;
    assert_eq!(phone, pa);
    assert!(
        !seen.iter().any(|e| matches!(e, DriverEvent::Qr { .. })),
        "no QR on a restored login: {seen:?}"
    );
    let devices = get("/_sim/devices").await;
    let linked_a = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["state"] == "linked" && d["phone"] == pa)
        .count();
    assert_eq!(linked_a, 1, "no new device link");
    a2.send(&text("15550009103", "3EB0DD00000000000003", "a again"))
        .await
        .unwrap();
    b.send(&text("15550009103", "3EB0DD00000000000004", "b still"))
        .await
        .unwrap();
    assert_eq!(
        ids(pa).await,
        ["3EB0DD00000000000001", "3EB0DD00000000000003"]
    );

    // The shared browser dies: every session in it reports a crash.
    let pid = b.browser_pid();
    assert_eq!(a2.browser_pid(), pid);
    // SAFETY: plain syscall on the browser this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    for (rx, who) in [(&mut ra2, "A"), (&mut rb, "B")] {
        wait_for(rx, &format!("Crashed ({who})"), |e| {
            matches!(e, DriverEvent::Crashed { .. }).then_some(())
        })
        .await;
    }
    a2.close().await.unwrap();
    b.close().await.unwrap();
    // The watcher kills the dead browser's whole group; its helpers take a moment to go.
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!group_alive(pid), "{:?}", group_members(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_shared_browser_is_killed_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = shared_driver(dir.path()).config().clone();
    c.cdp_timeout = Duration::from_secs(3);
    let driver = ChromiumDriver::new(c);
    let (first, mut rx1) = driver
        .launch(spec(dir.path(), "hang-1", None))
        .await
        .unwrap();
    let pid = first.browser_pid();
    // The whole browser stops answering (its process group frozen).
    // SAFETY: plain syscall on the browser's process group, which this test started.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGSTOP);
    }
    let started = Instant::now();
    let err = match driver.launch(spec(dir.path(), "hang-2", None)).await {
        Ok(_) => panic!("a session started in a frozen browser"),
        Err(e) => e,
    };
    assert_eq!(err.code(), ErrorCode::BrowserStartFailed, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded: {:?}",
        started.elapsed()
    );
    // It was killed: the session in it hears of it, and the next start gets a new browser.
    wait_for(&mut rx1, "Crashed after the kill", |e| {
        matches!(e, DriverEvent::Crashed { .. }).then_some(())
    })
    .await;
    let (next, mut rx3) = driver
        .launch(spec(dir.path(), "hang-3", None))
        .await
        .unwrap();
    assert_ne!(next.browser_pid(), pid, "a fresh browser");
    wait_for(&mut rx3, "Qr from the new browser", |e| {
        matches!(e, DriverEvent::Qr { .. }).then_some(())
    })
    .await;
    first.close().await.unwrap();
    next.close().await.unwrap();
    assert!(!process_alive(pid));
}

// ---------------------------------------------------------------------------------------------
// Today's page (the simulator's newest model, its default): LID chats, sibling-wid indexing,
// minified message keys, terminal states, post_logout navigation, late and missing modules.

/// A simulator of this test's own (faults that act on every page, or on the next page loaded,
/// must not reach the other tests' pages), and a driver pointed at it.
async fn private_sim(
    adjust: impl FnOnce(&mut ChromiumConfig),
) -> (String, tokio::task::JoinHandle<()>, ChromiumDriver) {
    let (url, task) = wa_outbox::sim::spawn("127.0.0.1:0", wa_outbox::sim::SimConfig::default())
        .await
        .expect("a private simulator");
    let mut c = driver().config().clone();
    c.web_url = url.clone();
    adjust(&mut c);
    (url, task, ChromiumDriver::new(c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lid_chats_each_message_once_found_under_either_wid_and_inbound_by_phone_number() {
    let dir = tempfile::tempdir().unwrap();
    let driver = driver();
    let (me, them) = ("15550001201", "15550001202");
    let (session, mut rx, _) =
        login(&driver, spec(dir.path(), "s-lid", None), me, "LID Phone").await;

    // The chat is the contact's LID, as queryWidExists answers on today's page.
    let chat = session
        .resolve_chat(&format!("{them}@c.us"))
        .await
        .unwrap()
        .expect("registered");
    assert!(chat.ends_with("@lid"), "{chat}");

    // Sent as the dispatcher sends it: the claim's key guesses the phone-number form.
    let id = "3EB0AA11BB22CC33DD44";
    let mut m = text(them, id, "to a LID chat");
    m.chat_id = chat.clone();
    let sent = session.send(&m).await.expect("sent");
    assert_eq!(wa_outbox::dispatcher::bare_id(&sent.wa_message_id), id);
    let record = sim_until(
        &format!("/_sim/messages?phone={me}"),
        "the message at the server",
        |v| sent_messages(v).iter().any(|r| r["id"] == id),
    )
    .await;
    let mine: Vec<_> = sent_messages(&record)
        .into_iter()
        .filter(|r| r["id"] == id)
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["to"], format!("{them}@c.us"));

    // Acks come keyed as the page filed the message; the bare id is ours.
    let (ack_key, _) = wait_for(&mut rx, "an ack", |e| match e {
        DriverEvent::Ack { wa_message_id, .. }
            if wa_outbox::dispatcher::bare_id(wa_message_id) == id =>
        {
            Some(wa_message_id.clone())
        }
        _ => None,
    })
    .await;
    assert!(!ack_key.contains("undefined"), "{ack_key}");

    // "Already sent?" answers yes whichever wid the caller holds, and a retry sends nothing.
    for (chat_id, key) in [
        (format!("{them}@c.us"), m.wa_message_id.clone()),
        (chat.clone(), format!("true_{chat}_{id}")),
        (sent.chat_id.clone(), sent.wa_message_id.clone()),
    ] {
        let found = session.find_message(&chat_id, &key).await.unwrap();
        assert!(found.is_some_and(|a| a >= 0), "{chat_id} {key}: {found:?}");
    }
    session.send(&m).await.expect("a retry is answered");
    let mut plain = text(them, id, "to a LID chat");
    plain.wa_message_id = format!("true_{them}@c.us_{id}");
    session
        .send(&plain)
        .await
        .expect("a phone-number retry too");
    let v = get(&format!("/_sim/messages?phone={me}")).await;
    assert_eq!(
        sent_messages(&v).iter().filter(|r| r["id"] == id).count(),
        1,
        "sent twice: {v}"
    );

    // Inbound from a LID contact: from and chat are phone numbers, the LID kept beside.
    post(
        "/_sim/incoming",
        serde_json::json!({"to": me, "from": them, "body": "from a LID contact"}),
    )
    .await;
    let (inc, _) = wait_for(&mut rx, "Incoming", |e| match e {
        DriverEvent::Incoming(m) if m.body.as_deref() == Some("from a LID contact") => {
            Some(m.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(inc.from, format!("{them}@c.us"), "{inc:?}");
    assert_eq!(inc.chat_id, format!("{them}@c.us"), "{inc:?}");
    assert!(
        inc.extra["fromLid"]
            .as_str()
            .is_some_and(|l| l.ends_with("@lid")),
        "{inc:?}"
    );
    assert!(!inc.wa_message_id.contains("undefined"), "{inc:?}");

    // One that arrives undecryptable (a `ciphertext` placeholder) is reported once it decrypts,
    // with its body.
    post(
        "/_sim/incoming",
        serde_json::json!({"to": me, "from": them, "body": "decrypted later", "ciphertext_ms": 300}),
    )
    .await;
    let (inc, before) = wait_for(&mut rx, "the decrypted Incoming", |e| match e {
        DriverEvent::Incoming(m) if m.body.as_deref() == Some("decrypted later") => Some(m.clone()),
        _ => None,
    })
    .await;
    assert_eq!(inc.kind, "chat", "{inc:?}");
    assert!(
        !before
            .iter()
            .any(|e| matches!(e, DriverEvent::Incoming(m) if m.kind == "ciphertext")),
        "the placeholder itself was reported: {:?}",
        redacted(&before)
    );
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_timed_out_is_joined_by_its_retry_and_goes_out_once() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _sim, driver) = private_sim(|c| c.send_timeout = Duration::from_millis(1500)).await;
    let (me, them) = ("15550001211", "15550001212");
    let (session, _rx, _) =
        login_at(&url, &driver, spec(dir.path(), "s-slow", None), me, "Slow").await;
    let chat = session
        .resolve_chat(&format!("{them}@c.us"))
        .await
        .unwrap()
        .unwrap();
    // The server answers sends 4 s late: the runner gives up at 1.5 s, the page goes on.
    let (st, v) = post_status_at(
        &url,
        "/_sim/faults",
        serde_json::json!({"send_delay_ms": 4000}),
    )
    .await;
    assert!(st.is_success(), "{v}");
    let id = "3EB0FF00EE11DD22CC33";
    let mut m = text(them, id, "slow");
    m.chat_id = chat;
    let err = session.send(&m).await.expect_err("timed out");
    assert_eq!(err.code(), ErrorCode::SendTimeout, "{err}");
    // The recovery question waits for the send still running in the page, then finds it.
    let found = session
        .find_message(&format!("{them}@c.us"), &m.wa_message_id)
        .await
        .unwrap();
    assert!(found.is_some_and(|a| a >= 0), "{found:?}");
    // The retry is answered from the page, not sent again.
    session.send(&m).await.expect("the retry");
    let records = reqwest::get(format!("{url}/_sim/messages?phone={me}"))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(
        sent_messages(&records)
            .iter()
            .filter(|r| r["id"] == id)
            .count(),
        1,
        "{records}"
    );
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_states_and_a_post_logout_page_end_the_session_with_their_own_code() {
    let dir = tempfile::tempdir().unwrap();
    let driver = driver();
    for (i, (state, code)) in [
        ("CONFLICT", ErrorCode::SessionConflict),
        ("TOS_BLOCK", ErrorCode::AccountBanned),
        ("SMB_TOS_BLOCK", ErrorCode::AccountBanned),
        ("PROXYBLOCK", ErrorCode::ProxyBlocked),
        ("DEPRECATED_VERSION", ErrorCode::WebVersionUnsupported),
    ]
    .into_iter()
    .enumerate()
    {
        let phone = format!("1555000130{i}");
        let (session, mut rx, _) = login(
            &driver,
            spec(dir.path(), &format!("s-term-{i}"), None),
            &phone,
            "Terminal",
        )
        .await;
        post(
            "/_sim/state",
            serde_json::json!({"phone": phone, "state": state}),
        )
        .await;
        let (got, _) = wait_for(&mut rx, "Failed", |e| match e {
            DriverEvent::Failed { code, reason } => Some((*code, reason.clone())),
            _ => None,
        })
        .await;
        assert_eq!(got.0, code, "{state}: {}", got.1);
        assert!(got.1.contains(state), "{}", got.1);
        session.close().await.unwrap();
    }

    // The phone unlinks the device: today's page navigates to ?post_logout=1.
    let phone = "15550001309";
    let (session, mut rx, _) = login(
        &driver,
        spec(dir.path(), "s-post-logout", None),
        phone,
        "Gone",
    )
    .await;
    post("/_sim/logout", serde_json::json!({"phone": phone})).await;
    let (reason, _) = wait_for(&mut rx, "LoggedOut", |e| match e {
        DriverEvent::LoggedOut { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(!reason.is_empty());
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_module_is_waited_for_and_a_missing_one_fails_with_web_version_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _sim, driver) = private_sim(|c| c.start_timeout = Duration::from_secs(6)).await;

    // Registered 2 s after load, as today's page does: the session starts as usual.
    let (st, v) = post_status_at(
        &url,
        "/_sim/faults",
        serde_json::json!({"late_modules": ["WAWebQueryExistsJob"], "late_ms": 2000}),
    )
    .await;
    assert!(st.is_success(), "{v}");
    let (session, mut rx) = driver
        .launch(spec(dir.path(), "s-late", None))
        .await
        .expect("starts once the module is there");
    wait_for(&mut rx, "Qr", |e| {
        matches!(e, DriverEvent::Qr { .. }).then_some(())
    })
    .await;
    session.close().await.unwrap();

    // Never there within the start timeout: a clear, permanent error naming it.
    let (st, v) = post_status_at(
        &url,
        "/_sim/faults",
        serde_json::json!({"late_modules": ["WAWebSendMsgChatAction"], "late_ms": 600000}),
    )
    .await;
    assert!(st.is_success(), "{v}");
    let err = match driver.launch(spec(dir.path(), "s-missing", None)).await {
        Ok(_) => panic!("started without WAWebSendMsgChatAction"),
        Err(e) => e,
    };
    assert_eq!(err.code(), ErrorCode::WebVersionUnsupported, "{err}");
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .contains("WAWebSendMsgChatAction.addAndSendMsgToChat"),
        "{err}"
    );
}

/// Reads the page's `wawc_db_enc`/`keys` record and what a page script can see of our wrappers.
const KEY_PROBE: &str = "async function () {
    const db = await new Promise((ok, ko) => {
        const r = indexedDB.open('wawc_db_enc'); r.onsuccess = () => ok(r.result); r.onerror = () => ko(r.error); });
    const recs = await new Promise((ok, ko) => {
        const r = db.transaction('keys').objectStore('keys').getAll(); r.onsuccess = () => ok(r.result); r.onerror = () => ko(r.error); });
    db.close();
    const k = recs.length === 1 ? recs[0].key : null;
    const names = (await indexedDB.databases()).map((d) => d.name);
    return {
        crypto_key: k instanceof CryptoKey, extractable: k ? k.extractable : null,
        algorithm: k ? k.algorithm.name : null, usages: k ? k.usages : null,
        shadow_listed: names.includes('wa-outbox-shadow'),
        wrappers: [crypto.subtle.importKey.name, crypto.subtle.importKey.length,
                   IDBObjectStore.prototype.put.name, IDBObjectStore.prototype.put.length],
    };
}";

/// A non-extractable key the shadow never saw (a deriveKey output), stored by a page script.
const UNSHADOWED_KEY: &str = "async function () {
    const base = await crypto.subtle.importKey('raw', new Uint8Array(32), 'HKDF', false, ['deriveKey']);
    const key = await crypto.subtle.deriveKey(
        { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(16), info: new Uint8Array(0) },
        base, { name: 'AES-GCM', length: 256 }, false, ['encrypt']);
    const db = await new Promise((ok, ko) => {
        const r = indexedDB.open('probe-db', 1);
        r.onupgradeneeded = () => r.result.createObjectStore('k');
        r.onsuccess = () => ok(r.result); r.onerror = () => ko(r.error); });
    const tx = db.transaction('k', 'readwrite');
    tx.objectStore('k').put({ key }, 'x');
    await new Promise((ok, ko) => { tx.oncomplete = ok; tx.onerror = () => ko(tx.error); });
    db.close();
    return true;
}";

const DROP_PROBE_DB: &str = "async function () {
    await new Promise((ok, ko) => { const r = indexedDB.deleteDatabase('probe-db'); r.onsuccess = ok; r.onerror = () => ko(r.error); });
    return true;
}";

/// Today's page keeps a non-extractable CryptoKey in its login (the simulator models it). Shared
/// mode exports it through the key shadow and restores it into a fresh context, twice over; a
/// CryptoKey the shadow never saw fails the export with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_browser_carries_the_pages_non_extractable_cryptokey() {
    let dir = tempfile::tempdir().unwrap();
    let driver = shared_driver(dir.path());
    let phone = "15550009201";
    let (s, _rx, _) = login(&driver, spec(dir.path(), "sh-key", None), phone, "Key").await;
    let want = serde_json::json!({
        "crypto_key": true, "extractable": false, "algorithm": "HKDF", "usages": ["deriveKey"],
        "shadow_listed": false, "wrappers": ["importKey", 5, "put", 1],
    });
    assert_eq!(s.evaluate_for_test(KEY_PROBE, vec![]).await.unwrap(), want);

    // A key the shadow did not see: the export refuses it, naming where it is.
    s.evaluate_for_test(UNSHADOWED_KEY, vec![]).await.unwrap();
    let err = s.persist().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot export a non-extractable CryptoKey stored in probe-db/k"),
        "{err}"
    );
    s.evaluate_for_test(DROP_PROBE_DB, vec![]).await.unwrap();
    s.persist().await.expect("the page's own login exports");
    s.close().await.unwrap();

    let export = dir.path().join("sh-key/wa-outbox-context/storage.json");
    for round in 1..=2 {
        check_export(&export);
        let (again, mut rx) = driver
            .launch(spec(dir.path(), "sh-key", None))
            .await
            .unwrap();
        let (p, seen) = wait_for(&mut rx, "Connected after the restore", |e| match e {
            DriverEvent::Connected { phone, .. } => Some(phone.clone()),
            _ => None,
        })
        .await;
        assert_eq!(p, phone, "round {round}");
        assert!(
            !seen.iter().any(|e| matches!(e, DriverEvent::Qr { .. })),
            "round {round}: no QR on a restored login: {:?}",
            redacted(&seen)
        );
        assert_eq!(
            again.evaluate_for_test(KEY_PROBE, vec![]).await.unwrap(),
            want,
            "round {round}"
        );
        // The restored key has its shadow again: the next export works.
        again
            .persist()
            .await
            .expect("a restored login exports again");
        again.close().await.unwrap();
    }
    let devices = get("/_sim/devices").await;
    let linked = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["state"] == "linked" && d["phone"] == phone)
        .count();
    assert_eq!(linked, 1, "no new device link");
}

/// The export holds the key as a tagged record and leaves our shadow database out.
fn check_export(export: &std::path::Path) {
    let text = std::fs::read_to_string(export).expect("the login was exported");
    assert!(text.contains("\"$t\":\"cryptokey\""), "no tagged CryptoKey");
    assert!(text.contains("\"wawc_db_enc\""));
    assert!(!text.contains("wa-outbox-shadow"));
}

/// Messages that reach the account while no page of it is connected come with WhatsApp's offline
/// queue at the next login: the page holds them but does not announce them as new (as the real
/// page does, docs/sim-surface.md "Offline messages"), so no Incoming event comes for them and
/// `inbound_since` is how the runner finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_arrived_while_down_are_not_announced_but_backfilled_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let driver = driver();
    let (me, them) = ("15550001301", "15550001302");
    let (session, mut rx, _) = login(
        &driver,
        spec(dir.path(), "s-backfill", None),
        me,
        "Backfill Phone",
    )
    .await;
    let now = chrono::Utc::now().timestamp();

    // One while the page watches (sent a while ago): announced live.
    let early = post(
        "/_sim/incoming",
        serde_json::json!({"to": me, "from": them, "body": "before since", "t": now - 100}),
    )
    .await;
    assert_eq!(early["delivered_to"], 1, "{early}");
    let (inc, _) = wait_for(&mut rx, "the live Incoming", |e| match e {
        DriverEvent::Incoming(m) if m.body.as_deref() == Some("before since") => Some(m.clone()),
        _ => None,
    })
    .await;
    assert_eq!(inc.timestamp, now - 100);
    let live_shape = inc;

    // Down: closed, and the simulator has seen the page go.
    session.close().await.unwrap();
    drop(rx);
    sim_until("/_sim/devices", "the page to disconnect", |v| {
        v["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["phone"] == me)
            .all(|d| d["connected"] == false)
    })
    .await;
    let mut held = Vec::new();
    for (body, t) in [("while down 1", now - 50), ("while down 2", now - 40)] {
        let v = post(
            "/_sim/incoming",
            serde_json::json!({"to": me, "from": them, "body": body, "t": t}),
        )
        .await;
        assert_eq!(v["delivered_to"], 0, "no page to deliver to: {v}");
        held.push(v["serialized"].as_str().unwrap().to_string());
    }

    // Up again from the same profile: no QR.
    let (session, mut rx) = driver
        .launch(spec(dir.path(), "s-backfill", None))
        .await
        .expect("restart");
    let (_, mut seen) = wait_for(&mut rx, "Connected after restart", |e| match e {
        DriverEvent::Connected { .. } => Some(()),
        _ => None,
    })
    .await;
    assert!(
        !seen.iter().any(|e| matches!(e, DriverEvent::Qr { .. })),
        "no QR on resume: {:?}",
        redacted(&seen)
    );

    let got = session.inbound_since(now - 60, 10).await.expect("backfill");
    let ids: Vec<&str> = got.iter().map(|m| m.wa_message_id.as_str()).collect();
    assert_eq!(
        ids, held,
        "both held messages, oldest first, by the sim's ids: {got:?}"
    );
    assert_eq!(got[0].body.as_deref(), Some("while down 1"));
    assert_eq!(got[1].body.as_deref(), Some("while down 2"));
    assert_eq!((got[0].timestamp, got[1].timestamp), (now - 50, now - 40));
    // The same shape the live event has: phone numbers, the LIDs beside.
    for m in &got {
        assert_eq!(m.from, live_shape.from, "{m:?}");
        assert_eq!(m.chat_id, live_shape.chat_id, "{m:?}");
        assert_eq!(m.kind, "chat");
        assert_eq!(m.extra["fromLid"], live_shape.extra["fromLid"], "{m:?}");
        assert_eq!(m.extra["chatLid"], live_shape.extra["chatLid"], "{m:?}");
        assert!(m.extra.get("authorLid").is_some(), "{m:?}");
    }
    assert_eq!(live_shape.from, format!("{them}@c.us"));
    assert!(live_shape.extra["fromLid"]
        .as_str()
        .is_some_and(|l| l.ends_with("@lid")));
    // At most `limit`, oldest first; and the page still holds the earlier one.
    let one = session.inbound_since(now - 60, 1).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].wa_message_id, held[0]);
    let all = session.inbound_since(0, 100).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|m| m.body.as_deref().unwrap_or(""))
            .collect::<Vec<_>>(),
        vec!["before since", "while down 1", "while down 2"]
    );
    assert_eq!(all[0].wa_message_id, live_shape.wa_message_id);

    // The breakage the backfill exists for: no Incoming came for the held messages. A live one
    // sent now is announced; everything before it was seen by then.
    post(
        "/_sim/incoming",
        serde_json::json!({"to": me, "from": them, "body": "live again"}),
    )
    .await;
    let (_, before) = wait_for(&mut rx, "the next live Incoming", |e| match e {
        DriverEvent::Incoming(m) if m.body.as_deref() == Some("live again") => Some(()),
        _ => None,
    })
    .await;
    seen.extend(before);
    assert!(
        !seen.iter().any(|e| matches!(e, DriverEvent::Incoming(_))),
        "messages held while down were announced live: {:?}",
        redacted(&seen)
    );
    session.close().await.unwrap();
}
