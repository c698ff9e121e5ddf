//! The simulator's control API, against the real binary (and, for the login flow, a real
//! headless Chromium showing the sim's page).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wa_outbox::child::DieWithParent as _;

/// A child process killed when dropped; with `group`, its whole process group (Chromium's
/// helpers too), so no browser outlives its test.
struct Proc {
    child: Child,
    group: bool,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.group {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                // SAFETY: plain kill(2) on the process group this test created.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Sim {
    _proc: Proc,
    base: String,
    http: reqwest::Client,
}

fn start_sim(extra: &[&str]) -> Sim {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wa-outbox"))
        .args(["sim", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .die_with_parent()
        .spawn()
        .expect("spawn wa-outbox sim");
    let stdout = child.stdout.take().expect("stdout");
    let proc = Proc {
        child,
        group: false,
    };
    // read_line blocks; the sim prints this line right after binding, or exits (EOF).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the sim prints its address within 30 s");
    let base = line
        .trim()
        .strip_prefix("sim listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Sim {
        _proc: proc,
        base,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client"),
    }
}

impl Sim {
    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        let req = match method {
            "GET" => self.http.get(url),
            "POST" => self.http.post(url),
            "PUT" => self.http.put(url),
            other => panic!("method {other}"),
        };
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(b.to_string()),
            None => req,
        };
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: body is not JSON: {text:?}"));
        (status, v)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(&body.to_string())).await
    }

    async fn devices(&self) -> Vec<Value> {
        let (s, v) = self.call("GET", "/_sim/devices", None).await;
        assert_eq!(s, 200);
        v["devices"].as_array().cloned().unwrap_or_default()
    }

    /// Polls the sim until `f` finds what it wants, or fails after `secs`.
    async fn wait_for<T>(&self, what: &str, secs: u64, f: impl Fn(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(t) = f(&self.devices().await) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; devices: {:?}",
                self.devices().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn assert_json_error(status: u16, v: &Value, want: u16) {
    assert_eq!(status, want, "status for {v}");
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "JSON error body, got {v}"
    );
}

#[tokio::test]
async fn malformed_and_unknown_requests_get_json_4xx() {
    let sim = start_sim(&[]);
    let (s, v) = sim.call("POST", "/_sim/scan", Some("not json")).await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim.call("POST", "/_sim/scan", None).await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim.post("/_sim/scan", json!({})).await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim
        .post(
            "/_sim/scan",
            json!({"qr": "x", "phone": "15550001111", "bogus": 1}),
        )
        .await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim
        .post("/_sim/scan", json!({"qr": "x", "phone": "not a phone"}))
        .await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim
        .post(
            "/_sim/scan",
            json!({"qr": "2@nope,a,b,c,WEB", "phone": "15550001111"}),
        )
        .await;
    assert_json_error(s, &v, 404);
    let (s, v) = sim
        .post(
            "/_sim/pair",
            json!({"code": "ABCD1234", "phone": "15550001111"}),
        )
        .await;
    assert_json_error(s, &v, 404);
    let (s, v) = sim
        .post("/_sim/logout", json!({"phone": "15550001111"}))
        .await;
    assert_json_error(s, &v, 404);
    let (s, v) = sim.call("GET", "/_sim/messages", None).await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim.call("GET", "/_sim/messages?phone=abc", None).await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim.post("/_sim/ack", json!({"id": "x", "ack": 9})).await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim.post("/_sim/ack", json!({"id": "nope", "ack": 2})).await;
    assert_json_error(s, &v, 404);
    let (s, v) = sim
        .post("/_sim/ack", json!({"id": "x", "ack": "read"}))
        .await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim
        .post("/_sim/unregistered", json!({"numbers": ["abc"]}))
        .await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim.post("/_sim/faults", json!({"crash_page": 5})).await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim
        .post("/_sim/faults", json!({"auto_ack": "sometimes"}))
        .await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim
        .post(
            "/_sim/incoming",
            json!({"to": "1", "from": "15550002222", "body": "x"}),
        )
        .await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim.call("GET", "/_sim/nothing-here", None).await;
    assert_json_error(s, &v, 404);
    let (s, v) = sim.call("GET", "/_sim/scan", None).await;
    assert_json_error(s, &v, 405);
    let (s, v) = sim.call("PUT", "/_sim/devices", Some("{}")).await;
    assert_json_error(s, &v, 405);
    // Still alive and answering after all that.
    assert!(sim.devices().await.is_empty());
}

#[tokio::test]
async fn settings_round_trip() {
    let sim = start_sim(&[]);
    let (s, v) = sim
        .post(
            "/_sim/unregistered",
            json!({"numbers": ["+1 (555) 000-9999", "15550008888@c.us"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["unregistered"], json!(["15550008888", "15550009999"]));
    let (_, v) = sim
        .post(
            "/_sim/unregistered",
            json!({"numbers": ["15550008888"], "remove": true}),
        )
        .await;
    assert_eq!(v["unregistered"], json!(["15550009999"]));

    let (s, v) = sim
        .post(
            "/_sim/faults",
            json!({"send_delay_ms": 250, "fail_sends": 2, "auto_ack": "device"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["faults"]["send_delay_ms"], 250);
    assert_eq!(v["faults"]["fail_sends"], 2);
    assert_eq!(v["faults"]["auto_ack"], "device");

    // Incoming for a phone with no device is kept for when one links.
    let (s, v) = sim
        .post(
            "/_sim/incoming",
            json!({"to": "15550001111", "from": "15550002222", "body": "queued"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["delivered_to"], 0);
    let (_, v) = sim
        .call("GET", "/_sim/messages?phone=15550001111", None)
        .await;
    assert_eq!(v["received"][0]["body"], "queued");
    assert_eq!(v["messages"], json!([]));
}

#[tokio::test]
async fn page_serves_with_cors_and_absolute_address() {
    let sim = start_sim(&[]);
    let res = sim
        .http
        .get(format!("{}/", sim.base))
        .header("origin", "https://web.whatsapp.com")
        .send()
        .await
        .expect("GET /");
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers().contains_key("access-control-allow-origin"));
    let html = res.text().await.expect("html");
    assert!(html.contains(&format!("\"base\":\"{}\"", sim.base)));
    assert!(html.contains("window.require"));
    assert!(!html.contains("<script src"), "all script inline");
}

fn chromium(url: &str, profile: &std::path::Path) -> Proc {
    use std::os::unix::process::CommandExt;
    let bin = std::env::var("WA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let child = Command::new(bin)
        .process_group(0)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .die_with_parent()
        .spawn()
        .expect("spawn chromium");
    Proc { child, group: true }
}

#[tokio::test]
async fn login_lives_in_the_profile_until_the_phone_logs_out() {
    let sim = start_sim(&["--qr-first-ms", "1500", "--qr-interval-ms", "700"]);
    let profile = tempfile::tempdir().expect("tempdir");
    let url = format!("{}/", sim.base);

    let browser = chromium(&url, profile.path());
    let (dev, qr) = sim
        .wait_for("a pending device with a QR", 30, |ds| {
            ds.iter()
                .find(|d| d["state"] == "pending" && d["qr"].is_string())
                .map(|d| (d["id"].clone(), d["qr"].as_str().unwrap_or("").to_string()))
        })
        .await;
    assert_eq!(qr.split(',').count(), 5, "five QR fields");

    // The ref rotates on its own.
    let rotated = sim
        .wait_for("a rotated QR", 10, |ds| {
            ds.iter()
                .find(|d| d["id"] == dev && d["qr"].as_str() != Some(qr.as_str()))
                .map(|d| d["qr"].as_str().unwrap_or("").to_string())
        })
        .await;
    // The old QR no longer links anything.
    let (s, _) = sim
        .post("/_sim/scan", json!({"qr": qr, "phone": "15550001111"}))
        .await;
    assert_eq!(s, 404);

    let (s, v) = sim
        .post(
            "/_sim/scan",
            json!({"qr": rotated, "phone": "15550001111", "name": "Ann"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    sim.wait_for("the device linked and connected", 30, |ds| {
        ds.iter()
            .find(|d| d["state"] == "linked" && d["connected"] == true)
            .map(|_| ())
    })
    .await;

    // Reload with the same profile: back without a QR. Part of the login is in localStorage
    // (`WANoiseInfo`, as on WhatsApp Web), which Chromium commits about 5 s after the write; a
    // browser killed before that comes back to a fresh QR, so wait for it to be on disk.
    let local_storage = profile.path().join("Default/Local Storage");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !wa_outbox::testing::dir_contains(&local_storage, b"WANoiseInfo") {
        assert!(
            Instant::now() < deadline,
            "localStorage never reached the profile"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(browser);
    sim.wait_for("the old page gone", 30, |ds| {
        ds.iter().all(|d| d["connected"] == false).then_some(())
    })
    .await;
    let browser = chromium(&url, profile.path());
    sim.wait_for("the same device back, connected", 30, |ds| {
        ds.iter()
            .find(|d| d["id"] == v["device"] && d["connected"] == true)
            .map(|_| ())
    })
    .await;
    assert!(
        !sim.devices().await.iter().any(|d| d["state"] == "pending"),
        "a stored login shows no QR"
    );

    // Phone logout: the page forgets the login and shows a fresh QR.
    let (s, _) = sim
        .post("/_sim/logout", json!({"phone": "15550001111"}))
        .await;
    assert_eq!(s, 200);
    let fresh = sim
        .wait_for("a fresh QR on the same page", 30, |ds| {
            ds.iter()
                .find(|d| d["state"] == "pending" && d["connected"] == true)
                .map(|d| d["qr"].as_str().unwrap_or("").to_string())
        })
        .await;
    assert_ne!(fresh, rotated);
    assert!(
        !sim.devices().await.iter().any(|d| d["state"] == "linked"),
        "nothing linked any more"
    );
    drop(browser);
}

#[tokio::test]
async fn many_phones_and_devices_at_once() {
    let sim = start_sim(&[]);
    let profiles: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let url = format!("{}/", sim.base);
    let _browsers: Vec<Proc> = profiles.iter().map(|p| chromium(&url, p.path())).collect();
    let qrs = sim
        .wait_for("three pending devices", 30, |ds| {
            let q: Vec<String> = ds
                .iter()
                .filter(|d| d["state"] == "pending" && d["connected"] == true)
                .filter_map(|d| d["qr"].as_str().map(str::to_string))
                .collect();
            (q.len() == 3).then_some(q)
        })
        .await;
    // Ann links two devices, Bob one.
    for (qr, phone) in qrs
        .iter()
        .zip(["15550001111", "15550001111", "15550002222"])
    {
        let (s, v) = sim
            .post("/_sim/scan", json!({"qr": qr, "phone": phone}))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    sim.wait_for("three linked, connected devices", 30, |ds| {
        (ds.iter()
            .filter(|d| d["state"] == "linked" && d["connected"] == true)
            .count()
            == 3)
            .then_some(())
    })
    .await;

    let (_, v) = sim
        .post(
            "/_sim/incoming",
            json!({"to": "15550001111", "from": "15550003333", "body": "hi Ann"}),
        )
        .await;
    assert_eq!(v["delivered_to"], 2, "both of Ann's devices get it");

    // Bob's page crashes: his device drops off, Ann's stay.
    let (_, v) = sim
        .post(
            "/_sim/faults",
            json!({"crash_page": "blank", "phone": "15550002222"}),
        )
        .await;
    assert_eq!(v["crashed"], 1);
    sim.wait_for("Bob's page gone", 30, |ds| {
        ds.iter()
            .any(|d| d["phone"] == "15550002222" && d["connected"] == false)
            .then_some(())
    })
    .await;

    // Ann unlinks her devices; Bob's link is untouched.
    let (s, v) = sim
        .post("/_sim/logout", json!({"phone": "15550001111"}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["devices"].as_array().map(Vec::len), Some(2));
    let ds = sim.devices().await;
    assert!(!ds.iter().any(|d| d["phone"] == "15550001111"));
    assert!(ds
        .iter()
        .any(|d| d["phone"] == "15550002222" && d["state"] == "linked"));
}

#[tokio::test]
async fn oversized_bodies_get_a_json_error() {
    let sim = start_sim(&[]);
    // (Not /_sim/incoming: it takes files of up to 64 MiB as base64, see src/sim/media_in.rs.)
    let big = format!(
        "{{\"qr\":\"{}\",\"phone\":\"15550002222\"}}",
        "x".repeat(3 << 20)
    );
    let (s, v) = sim.call("POST", "/_sim/scan", Some(&big)).await;
    assert_json_error(s, &v, 413);
}

#[test]
fn wa_version_is_validated() {
    let out = Command::new(env!("CARGO_BIN_EXE_wa-outbox"))
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--wa-version",
            "2.3000.latest",
        ])
        .output()
        .expect("run wa-outbox sim");
    assert!(!out.status.success(), "a bad build number is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--wa-version") && err.contains("not a WhatsApp Web build number"),
        "{err}"
    );
}

#[tokio::test]
async fn page_reports_the_chosen_build() {
    for (args, want) in [
        (vec![], wa_outbox::sim::NEWEST_WA_VERSION),
        (
            vec!["--wa-version", wa_outbox::sim::EARLY_2026_WA_VERSION],
            wa_outbox::sim::EARLY_2026_WA_VERSION,
        ),
    ] {
        let sim = start_sim(&args);
        let html = sim
            .http
            .get(format!("{}/", sim.base))
            .send()
            .await
            .expect("GET /")
            .text()
            .await
            .expect("body");
        assert!(html.contains(&format!("\"version\":\"{want}\"")), "{want}");
    }
}

#[tokio::test]
async fn version_control_calls_validate_their_input() {
    let sim = start_sim(&[]);
    // Terminal states: a sentence naming the allowed ones for anything else.
    let (s, v) = sim
        .post(
            "/_sim/state",
            json!({"phone": "15550001111", "state": "CONNECTED"}),
        )
        .await;
    assert_json_error(s, &v, 400);
    assert!(v["error"].as_str().unwrap().contains("TOS_BLOCK"), "{v}");
    let (s, v) = sim
        .post("/_sim/state", json!({"phone": "x", "state": "CONFLICT"}))
        .await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim
        .post(
            "/_sim/state",
            json!({"phone": "15550001111", "state": "CONFLICT"}),
        )
        .await;
    assert_json_error(s, &v, 404);
    // Reload: a phone with a page.
    let (s, v) = sim.post("/_sim/reload", json!({"phone": "abc"})).await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim.post("/_sim/reload", json!({})).await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim
        .post("/_sim/reload", json!({"phone": "15550001111"}))
        .await;
    assert_json_error(s, &v, 404);
    // Late modules: names and a delay.
    let (s, v) = sim
        .post(
            "/_sim/faults",
            json!({"late_modules": ["WAWebQueryExistsJob"]}),
        )
        .await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim
        .post(
            "/_sim/faults",
            json!({"late_modules": ["bad name\""], "late_ms": 10}),
        )
        .await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim
        .post(
            "/_sim/faults",
            json!({"late_modules": ["WAWebQueryExistsJob"], "late_ms": 3000, "phone": "15550001111"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = sim.call("GET", "/_sim/faults", None).await;
    assert_eq!(v["faults"]["late_modules"], json!(["WAWebQueryExistsJob"]));
    assert_eq!(v["faults"]["late_ms"], 3000);
    assert_eq!(v["faults"]["late_phone"], "15550001111");
    let (_, v) = sim.post("/_sim/faults", json!({"late_modules": []})).await;
    assert_eq!(v["faults"]["late_modules"], json!([]));
    assert_eq!(v["faults"]["late_phone"], Value::Null);
    // Ciphertext placeholders: a bounded delay, kept with the message.
    let (s, v) = sim
        .post(
            "/_sim/incoming",
            json!({"to": "15550001111", "from": "15550002222", "body": "x", "ciphertext_ms": 700000}),
        )
        .await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim
        .post(
            "/_sim/incoming",
            json!({"to": "15550001111", "from": "15550002222", "body": "x", "ciphertext_ms": 500}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // Today's page addresses it by the sender's LID.
    assert!(
        v["serialized"].as_str().unwrap().starts_with("false_")
            && v["serialized"].as_str().unwrap().contains("@lid_"),
        "{v}"
    );
    let (_, v) = sim
        .call("GET", "/_sim/messages?phone=15550001111", None)
        .await;
    assert_eq!(v["received"][0]["ciphertext_ms"], 500);
    assert_eq!(v["received"][0]["from"], "15550002222");
    // The time the sender sent it: given (an offline-queue message keeps it), never in the future.
    let (s, v) = sim
        .post(
            "/_sim/incoming",
            json!({"to": "15550001111", "from": "15550002222", "body": "x", "t": 4_000_000_000i64}),
        )
        .await;
    assert_json_error(s, &v, 400);
    let (s, v) = sim
        .post(
            "/_sim/incoming",
            json!({"to": "15550001111", "from": "15550002222", "body": "held", "t": 1_700_000_000}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["t"], 1_700_000_000);
    assert_eq!(v["delivered_to"], 0);
    let (_, v) = sim
        .call("GET", "/_sim/messages?phone=15550001111", None)
        .await;
    assert_eq!(v["received"][1]["body"], "held");
    assert_eq!(v["received"][1]["time"], "2023-11-14T22:13:20Z");
}

/// `POST /_sim/call`, `GET /_sim/calls` and `POST /_sim/group_update` refuse bad input with a
/// JSON error; a call to an account with no page rings unoffered, then is missed.
#[tokio::test]
async fn calls_and_group_updates_validate_their_input_and_calls_ring_out() {
    let sim = start_sim(&[]);
    for (body, want) in [
        (json!({"to": "15550001", "from": "15550001"}), 400),
        (
            json!({"to": "15550001", "from": "15550002", "ring_ms": 0}),
            400,
        ),
        (
            json!({"to": "15550001", "from": "15550002", "ring_ms": 600_001}),
            400,
        ),
        (json!({"to": "nobody", "from": "15550002"}), 400),
        (
            json!({"to": "15550001", "from": "15550002", "loud": true}),
            400,
        ),
    ] {
        let (s, v) = sim.post("/_sim/call", body.clone()).await;
        assert_json_error(s, &v, want);
    }
    let (s, v) = sim.call("GET", "/_sim/calls", None).await;
    assert_json_error(s, &v, 400);
    for (body, want) in [
        (
            json!({"group": "1203630000@g.us", "actor": "15550002", "action": "subject", "subject": "x"}),
            404,
        ),
        (
            json!({"group": "1203630000@g.us", "actor": "bad", "action": "add"}),
            400,
        ),
        (
            json!({"group": "1203630000@g.us", "actor": "15550002", "action": "add", "x": 1}),
            400,
        ),
    ] {
        let (s, v) = sim.post("/_sim/group_update", body).await;
        assert_json_error(s, &v, want);
    }

    let (s, v) = sim
        .post(
            "/_sim/call",
            json!({"to": "15550001", "from": "+1 555 0002", "video": true, "ring_ms": 50}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["delivered_to"], 0);
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let deadline = Instant::now() + Duration::from_secs(10);
    let call = loop {
        let (s, v) = sim.call("GET", "/_sim/calls?phone=15550001", None).await;
        assert_eq!(s, 200);
        let c = v["calls"][0].clone();
        assert_eq!(c["id"], id.as_str());
        if c["state"] != "ringing" {
            break c;
        }
        assert!(Instant::now() < deadline, "the call never rang out: {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (
            &call["state"],
            &call["rejects"],
            &call["offers"],
            &call["from"],
            &call["video"]
        ),
        (
            &json!("missed"),
            &json!(0),
            &json!(0),
            &json!("15550002"),
            &json!(true)
        )
    );
    assert!(call["ended_at"].as_i64().is_some());
}

#[tokio::test]
async fn incoming_media_is_checked_and_served_only_encrypted() {
    let sim = start_sim(&[]);
    let media = |kind: &str, data: &str| {
        json!({"to": "15550001111", "from": "15550002222",
               "media": {"kind": kind, "data": data, "mime": "image/png"}})
    };
    for bad in [
        media("gif", "aGk="),
        media("image", "not base64!"),
        media("image", ""),
        json!({"to": "15550001111", "from": "15550002222", "ciphertext_ms": 10,
               "media": {"kind": "image", "data": "aGk=", "mime": "image/png"}}),
        json!({"to": "15550001111", "from": "15550002222",
               "media": {"kind": "image", "data": "aGk=", "mime": "image/png", "url": "http://x"}}),
    ] {
        let (s, v) = sim.post("/_sim/incoming", bad.clone()).await;
        assert_json_error(s, &v, 400);
    }
    let (s, v) = sim.post("/_sim/incoming", media("image", "aGk=")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["media"]["size"], 2);
    // What the phone's server holds is the encrypted file: the plaintext's hash is not its hash.
    let (_, msgs) = sim
        .call("GET", "/_sim/messages?phone=15550001111", None)
        .await;
    let m = &msgs["received"][0]["media"];
    let path = m["direct_path"]
        .as_str()
        .unwrap_or_else(|| panic!("the received message's media: {msgs}"));
    let file = sim
        .http
        .get(format!("{}{path}", sim.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    use base64::Engine as _;
    use sha2::Digest as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(file.len(), 16 + 10, "one AES block and the 10-byte MAC");
    assert_eq!(m["enc_filehash"], b64.encode(sha2::Sha256::digest(&file)));
    assert_eq!(m["filehash"], b64.encode(sha2::Sha256::digest(b"hi")));
}
