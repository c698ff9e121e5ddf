//! A test binary interrupted mid-run (SIGINT, as Ctrl-C or a CI timeout delivers it) leaves
//! nothing running: not its shared simulator (held in a static, never dropped), not a runner
//! process it started, not a Chromium it launched itself, not that runner's Chromium.
//!
//! The one test here plays both parts. Run normally, it starts this same binary again on itself
//! with `WA_INTERRUPT_CHILD=1` and a fresh `WA_OUTBOX_TEST_RUN` mark; the child starts those
//! processes (all inherit the mark), says READY and waits forever, as a test does mid-run. The
//! parent checks that the marked processes exist, interrupts the child, and then asserts that
//! every marked process ends.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wa_outbox::child::DieWithParent as _;
use wa_outbox::driver::chromium::{ChromiumConfig, ChromiumDriver};
use wa_outbox::driver::{DriverEvent, SessionSpec};
use wa_outbox::testing::{test_db, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_wa-outbox");
const CHILD_ENV: &str = "WA_INTERRUPT_CHILD";
const MARK_ENV: &str = "WA_OUTBOX_TEST_RUN";
const AUTH_KEY: &str = "test:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const STEP: Duration = Duration::from_secs(90);

/// Processes whose environment holds `MARK_ENV=mark`, as (pid, command line).
fn marked(mark: &str) -> Vec<(i32, String)> {
    let needle = format!("{MARK_ENV}={mark}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            continue;
        }
        // A zombie has ended; it only waits for its parent to collect it.
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'))
        {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        found.push((pid, cmdline));
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_test_binary_leaves_nothing_running() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return hold_processes_until_interrupted().await;
    }
    let mark = uuid::Uuid::new_v4().to_string();
    // The test cluster is started (if it must be) here, unmarked: it outlives this test.
    let admin = wa_outbox::testing::admin_url().await;
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "an_interrupted_test_binary_leaves_nothing_running",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .env(MARK_ENV, &mark)
        .env("WA_TEST_DATABASE_URL", &admin)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .die_with_parent();
    // A shell that runs its steps in the background starts them with SIGINT ignored, and the
    // disposition is inherited: give the child the default one, as a terminal's foreground job
    // has.
    // SAFETY: signal() is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        child.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = child.spawn().expect("start the test binary again");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.trim() == "READY" {
                let _ = tx.send(());
            }
        }
    });
    tokio::task::spawn_blocking(move || rx.recv_timeout(STEP * 2))
        .await
        .unwrap()
        .expect("the child test binary started its processes (READY)");

    let before = marked(&mark);
    let has = |what: &str, f: &dyn Fn(&str) -> bool| {
        assert!(
            before.iter().any(|(_, c)| f(c)),
            "no {what} among the marked processes: {before:#?}"
        )
    };
    has("simulator", &|c| c.contains(" sim --listen"));
    has("runner", &|c| c.ends_with(" run ") || c.contains(" run --"));
    has("Chromium", &|c| c.contains("chromium"));
    let chromiums = before
        .iter()
        .filter(|(_, c)| c.contains("chromium"))
        .count();
    assert!(
        chromiums >= 2,
        "the test's own browser and the runner's: {before:#?}"
    );

    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "the test binary ended by the interrupt: {status:?}"
    );

    // Every process it started ends with it (the kernel delivers the death signals at once;
    // Chromium's helpers follow their browser within moments).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = marked(&mark);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after the interrupt: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The child's part: a shared simulator, a `wa-outbox run` with one session (so its own
/// Chromium), and a Chromium session of this process's own; then READY, and wait.
async fn hold_processes_until_interrupted() {
    let sim = tokio::task::spawn_blocking(|| wa_outbox::testing::sim_process(BIN, &[]))
        .await
        .unwrap();
    let db = test_db().await;
    let data = tempfile::tempdir().unwrap();
    let _runner = tokio::process::Command::new(BIN)
        .arg("run")
        .env("DATABASE_URL", &db.url)
        .env("WA_WEB_URL", format!("{sim}/"))
        .env("WA_DATA_DIR", data.path())
        .env("WA_AUTH_KEY", AUTH_KEY)
        .env("RUST_LOG", "warn")
        // Not the test's own output: a runner that outlived the test would hold it open.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .die_with_parent()
        .spawn()
        .expect("start a runner");
    sqlx::query("insert into wa_session (id) values ('interrupted')")
        .execute(&db.pool)
        .await
        .unwrap();
    wait_for("the runner's browser to show a QR", STEP, || async {
        let qr: Option<String> =
            sqlx::query_scalar("select qr_code from wa_session where id = 'interrupted'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        qr.map(|_| ())
    })
    .await;

    let mut config = ChromiumConfig::from_config(&wa_outbox::config::Config::defaults());
    config.web_url = sim.clone();
    config.start_timeout = STEP;
    let driver = ChromiumDriver::new(config);
    let (_session, mut events) = driver
        .launch(SessionSpec {
            session_id: "own".into(),
            profile_dir: data.path().join("own"),
            pair_phone: None,
            proxy: None,
        })
        .await
        .expect("this test's own browser starts");
    tokio::time::timeout(STEP, async {
        while let Some(e) = events.recv().await {
            if matches!(e, DriverEvent::Qr { .. }) {
                return;
            }
        }
        panic!("the page's events ended before a QR");
    })
    .await
    .expect("a QR from this test's own browser");

    println!("READY");
    std::future::pending::<()>().await;
}
