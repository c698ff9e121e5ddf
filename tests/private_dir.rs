//! The embedded PostgreSQL from a clone in a private directory, as a newcomer who is root on a
//! fresh machine has it: `git clone` into `/root` (0700) or a `mktemp -d` (0700). As root the
//! server runs as the `postgres` user, who cannot enter such a directory; the cluster's files must
//! live where that user can reach them, and the caller's directories must stay exactly as private
//! as they were. Also from a path with a space and a non-ASCII character.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wa_outbox::child::DieWithParent as _;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wa-outbox"));
    c.env_remove("DATABASE_URL")
        .env_remove("WA_DATA_DIR")
        .env("RUST_LOG", "warn")
        .die_with_parent();
    c
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A fresh 0700 directory (as `mktemp -d` makes) holding a clone of this repository under `name`.
fn private_clone(name: &str) -> (tempfile::TempDir, PathBuf) {
    let top = tempfile::Builder::new()
        .prefix("wa-private-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let clone = top.path().join(name);
    let out = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg(&clone)
        .output()
        .expect("git clone");
    assert!(
        out.status.success(),
        "git clone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (top, clone)
}

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Removes a cluster (and, as root, its files in the postgres user's folder) even if a test fails.
struct Destroy(PathBuf);

impl Drop for Destroy {
    fn drop(&mut self) {
        let _ = bin()
            .args(["dev-pg", "destroy", "--dir"])
            .arg(&self.0)
            .output();
    }
}

async fn select_one(url: &str) {
    let pool = wa_outbox::db::connect(url, 1).await.expect("connect");
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
    pool.close().await;
}

/// `wa-outbox migrate` on the embedded default, then the test cluster's start and stop, all from
/// inside the clone, and the caller's directories keep their modes.
async fn both_clusters_work_from(name: &str) {
    let (top, clone) = private_clone(name);
    let before = (mode(top.path()), mode(&clone));
    let data = clone.join(".wa-data/pg");
    let _d1 = Destroy(data.clone());
    let test_pg = clone.join("target/test-pg");
    let _d2 = Destroy(test_pg.clone());

    // The embedded default: DATABASE_URL and WA_DATA_DIR unset, run from the clone.
    let out = bin().arg("migrate").current_dir(&clone).output().unwrap();
    let text = ok(out, "wa-outbox migrate");
    assert!(text.contains("schema is at version"), "{text}");
    // A second run finds the cluster it made (the pointer leads back to the same files).
    let out = bin().arg("migrate").current_dir(&clone).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    ok(out, "a second wa-outbox migrate");
    assert!(err.contains("embedded PostgreSQL at"), "{err}");

    // The test cluster, as the README's test command starts it.
    let out = bin()
        .args(["dev-pg", "start", "--dir", "target/test-pg"])
        .current_dir(&clone)
        .output()
        .unwrap();
    let url = ok(out, "dev-pg start").trim().to_string();
    assert!(url.starts_with("postgres://"), "{url}");
    select_one(&url).await;
    let out = bin()
        .args(["dev-pg", "stop", "--dir", "target/test-pg"])
        .current_dir(&clone)
        .output()
        .unwrap();
    ok(out, "dev-pg stop");
    assert!(
        wa_outbox::db::connect(&url, 1).await.is_err(),
        "the test cluster still answers after stop"
    );

    // A copy of a data directory (cp -a of a target/, say) carries the pointer of the original:
    // it gets a cluster of its own, and destroying it leaves the original's alone.
    let copy = clone.join("copied-pg");
    let _d3 = Destroy(copy.clone());
    let out = Command::new("cp")
        .arg("-a")
        .arg(&test_pg)
        .arg(&copy)
        .output()
        .unwrap();
    ok(out, "cp -a");
    let out = bin()
        .args(["dev-pg", "start", "--dir"])
        .arg(&copy)
        .output()
        .unwrap();
    let copy_url = ok(out, "dev-pg start on the copy").trim().to_string();
    select_one(&copy_url).await;
    let pointer = |d: &Path| std::fs::read_to_string(d.join("CLUSTER")).unwrap_or_default();
    if unsafe { libc::geteuid() } == 0 {
        assert_ne!(
            pointer(&copy),
            pointer(&test_pg),
            "the copy drives the original's cluster"
        );
    }
    let out = bin()
        .args(["dev-pg", "destroy", "--dir"])
        .arg(&copy)
        .output()
        .unwrap();
    ok(out, "dev-pg destroy on the copy");
    let out = bin()
        .args(["dev-pg", "start", "--dir", "target/test-pg"])
        .current_dir(&clone)
        .output()
        .unwrap();
    let again = ok(out, "dev-pg start after the copy was destroyed");
    select_one(again.trim()).await;

    assert_eq!(
        (mode(top.path()), mode(&clone)),
        before,
        "the caller's directories changed mode"
    );
    if unsafe { libc::geteuid() } == 0 {
        // The clone's folders stay the caller's; the postgres user's files are elsewhere.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&data).unwrap().uid(), 0);
        let cluster = std::fs::read_to_string(data.join("CLUSTER")).unwrap();
        let cluster = Path::new(cluster.trim_end());
        assert!(cluster.join("PG_VERSION").exists(), "{}", cluster.display());
        assert!(!cluster.starts_with(top.path()));
    }
}

#[tokio::test]
async fn embedded_postgres_from_a_private_clone() {
    both_clusters_work_from("wa-outbox").await;
}

#[tokio::test]
async fn embedded_postgres_from_a_path_with_a_space_and_an_accent() {
    both_clusters_work_from("my clone é").await;
}

/// `wa-outbox demo` from a 0700 clone gets through its first steps: PostgreSQL, the simulator, a
/// runner whose Chromium profile lives in the private directory, and the session's QR.
#[tokio::test]
async fn the_demo_reaches_the_qr_from_a_private_clone() {
    let (_top, clone) = private_clone("wa-outbox");
    let _d = Destroy(clone.join(".wa-data/pg"));
    let mut child = bin()
        .arg("demo")
        .current_dir(&clone)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the simulator it starts goes with it at the end.
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let reached = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let qr = line.contains("the runner wrote the QR");
                seen.push(line);
                if qr {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    // SAFETY: signals to the demo's own process group.
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        reached,
        "the demo did not reach the QR:\n{}\n{err}",
        seen.join("\n")
    );
    // The session's browser profile lives in the private directory, as the default says.
    assert!(
        clone.join(".wa-data/profiles/demo_session").is_dir(),
        "no profile under {}",
        clone.display()
    );
}
