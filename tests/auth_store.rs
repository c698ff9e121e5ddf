//! The login archive on real PostgreSQL and a real Chromium profile.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::extract::State;
use axum::response::Html;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::mpsc;
use wa_outbox::auth_store::{
    archive_profile, restore_profile, AuthError, AuthStore, KeyRing, SaveOutcome,
};
use wa_outbox::child::DieWithParent as _;
use wa_outbox::config::Config;
use wa_outbox::error_code::ErrorCode;
use wa_outbox::testing::{dir_contains, test_db, wait_for};

const CHROMIUM: &str = "/usr/bin/chromium";
const PG_DUMP: &str = "/usr/lib/postgresql/15/bin/pg_dump";

fn ring(spec: &str) -> KeyRing {
    KeyRing::parse(spec).unwrap()
}

async fn new_session(pool: &sqlx::PgPool, id: &str) {
    sqlx::query("insert into wa_session (id) values ($1)")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
}

/// A profile folder laid out as Chromium 156 writes it, with `marker` inside both stores.
fn fake_profile(dir: &Path, marker: &str) {
    let ls = dir.join("Default/Local Storage/leveldb");
    let idb = dir.join("Default/IndexedDB/http_127.0.0.1_8080.indexeddb.leveldb");
    for d in [&ls, &idb] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("CURRENT"), "MANIFEST-000001\n").unwrap();
        std::fs::write(d.join("MANIFEST-000001"), b"\x00manifest").unwrap();
        std::fs::write(d.join("LOCK"), b"").unwrap();
        std::fs::write(d.join("LOG"), b"diagnostics").unwrap();
    }
    std::fs::write(
        ls.join("000003.log"),
        format!("_http://x\x00\x01wa_marker={marker}"),
    )
    .unwrap();
    std::fs::write(idb.join("000003.log"), format!("keys/k1={marker}")).unwrap();
    // Not part of a login: must not travel.
    std::fs::write(dir.join("Default/Cookies"), "cookie-jar").unwrap();
    std::fs::create_dir_all(dir.join("Default/Cache")).unwrap();
    std::fs::write(dir.join("Default/Cache/data_0"), "cache").unwrap();
}

/// Waits until both login stores of `profile` hold `marker` on disk. IndexedDB is written when
/// its transaction completes; Local Storage only after Chromium's commit delay (about 5 s),
/// and a browser shut down under load may not flush it first.
async fn wait_durable(profile: &Path, marker: &str) {
    let profile = profile.to_path_buf();
    wait_for("the login written to disk", Duration::from_secs(30), || {
        let done = dir_contains(&profile.join("Default/Local Storage"), marker.as_bytes())
            && dir_contains(&profile.join("Default/IndexedDB"), marker.as_bytes());
        async move { done.then_some(()) }
    })
    .await;
}

fn gunzip_contains(archive: &[u8], needle: &str) -> bool {
    use std::io::Read;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(archive)
        .read_to_end(&mut raw)
        .unwrap();
    raw.windows(needle.len()).any(|w| w == needle.as_bytes())
}

// ---------- a real Chromium profile ----------

const WRITE_PAGE: &str = r#"<!doctype html><script>
const marker = new URLSearchParams(location.search).get('marker');
const report = (o) => fetch('/report', {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(o)});
localStorage.setItem('wa_marker', marker);
const r = indexedDB.open('wawc', 1);
r.onupgradeneeded = () => r.result.createObjectStore('keys');
r.onerror = () => report({error: String(r.error)});
r.onsuccess = () => {
  const tx = r.result.transaction('keys', 'readwrite');
  tx.objectStore('keys').put(marker, 'k1');
  tx.oncomplete = () => report({written: true});
  tx.onerror = () => report({error: String(tx.error)});
};
</script>"#;

const READ_PAGE: &str = r#"<!doctype html><script>
const report = (o) => fetch('/report', {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(o)});
const ls = localStorage.getItem('wa_marker');
let fresh = false;
const r = indexedDB.open('wawc', 1);
r.onupgradeneeded = () => { fresh = true; r.result.createObjectStore('keys'); };
r.onerror = () => report({ls, error: String(r.error)});
r.onsuccess = () => {
  if (fresh) { report({ls, idb: null}); return; }
  const g = r.result.transaction('keys').objectStore('keys').get('k1');
  g.onsuccess = () => report({ls, idb: g.result ?? null});
  g.onerror = () => report({ls, error: String(g.error)});
};
</script>"#;

struct Site {
    base: String,
    reports: mpsc::Receiver<serde_json::Value>,
}

async fn site() -> Site {
    let (tx, rx) = mpsc::channel(8);
    let app = Router::new()
        .route("/write", get(|| async { Html(WRITE_PAGE) }))
        .route("/read", get(|| async { Html(READ_PAGE) }))
        .route(
            "/report",
            post(
                |State(tx): State<mpsc::Sender<serde_json::Value>>,
                 Json(v): Json<serde_json::Value>| async move {
                    let _ = tx.send(v).await;
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Site {
        base: format!("http://{addr}"),
        reports: rx,
    }
}

/// Opens `path` in a headless Chromium on `profile` and waits for the page's report.
async fn open(
    site: &mut Site,
    profile: &Path,
    path: &str,
) -> (tokio::process::Child, serde_json::Value) {
    let child = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("{}{}", site.base, path))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .die_with_parent()
        .spawn()
        .expect("start chromium");
    let report = tokio::time::timeout(Duration::from_secs(30), site.reports.recv())
        .await
        .expect("page reported within 30s")
        .expect("report channel open");
    (child, report)
}

/// Shuts the browser down with SIGTERM (so it flushes its storage, as a closing runner does).
async fn close(mut child: tokio::process::Child) {
    let pid = child.id().expect("chromium running") as i32;
    // SAFETY: plain kill(2) on the child we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .is_err()
    {
        child.kill().await.unwrap();
        panic!("chromium did not exit within 20s of SIGTERM");
    }
}

async fn visit(site: &mut Site, profile: &Path, path: &str) -> serde_json::Value {
    let (child, report) = open(site, profile, path).await;
    close(child).await;
    report
}

#[tokio::test]
async fn chromium_login_survives_archive_and_restore_into_a_fresh_profile() {
    let db = test_db().await;
    new_session(&db.pool, "s1").await;
    let store = AuthStore::new(db.pool.clone(), ring(&KeyRing::generate_spec("k1")));
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let marker = format!("wa-login-marker-{}", uuid::Uuid::new_v4().simple());
    let mut site = site().await;

    let (browser, written) = open(&mut site, &a, &format!("/write?marker={marker}")).await;
    assert_eq!(written, serde_json::json!({"written": true}));
    wait_durable(&a, &marker).await;
    close(browser).await;
    // What Chromium 156 actually wrote is what we archive.
    assert!(a.join("Default/Local Storage/leveldb").is_dir());
    assert!(std::fs::read_dir(a.join("Default/IndexedDB"))
        .unwrap()
        .any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".indexeddb.leveldb")));

    let out = store.save("s1", &a).await.unwrap();
    assert!(
        matches!(out, SaveOutcome::Written { size_bytes } if size_bytes > 0),
        "{out:?}"
    );

    // A fresh profile that never saw the page: nothing there.
    let blank = tmp.path().join("blank");
    let fresh = visit(&mut site, &blank, "/read").await;
    assert_eq!(fresh, serde_json::json!({"ls": null, "idb": null}));

    assert!(store.restore("s1", &b).await.unwrap());
    // Only the login travelled, not the rest of the profile (cache, cookies, history…).
    let mut restored_dirs: Vec<String> = std::fs::read_dir(b.join("Default"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    restored_dirs.sort();
    assert_eq!(restored_dirs, ["IndexedDB", "Local Storage"]);
    let restored = visit(&mut site, &b, "/read").await;
    assert_eq!(restored, serde_json::json!({"ls": marker, "idb": marker}));
}

/// The runner also saves right after connecting, while the browser runs: what it archives
/// then must already hold the login.
#[tokio::test]
async fn login_saved_from_a_running_browser_restores() {
    let db = test_db().await;
    new_session(&db.pool, "s1").await;
    let store = AuthStore::new(db.pool.clone(), ring(&KeyRing::generate_spec("k1")));
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let marker = format!("live-marker-{}", uuid::Uuid::new_v4().simple());
    let mut site = site().await;

    let (browser, written) = open(&mut site, &a, &format!("/write?marker={marker}")).await;
    assert_eq!(written, serde_json::json!({"written": true}));
    // A live save is complete once both stores reached the disk (LIVE_SAVE_SETTLE for the
    // runner, which cannot look).
    wait_durable(&a, &marker).await;
    let saved = store.save("s1", &a).await;
    close(browser).await;
    assert!(matches!(saved.unwrap(), SaveOutcome::Written { .. }));

    assert!(store.restore("s1", &b).await.unwrap());
    let restored = visit(&mut site, &b, "/read").await;
    assert_eq!(restored, serde_json::json!({"ls": marker, "idb": marker}));
}

// ---------- store behaviour ----------

#[tokio::test]
async fn unchanged_login_is_not_rewritten_and_changes_are() {
    let db = test_db().await;
    new_session(&db.pool, "s1").await;
    let store = AuthStore::new(db.pool.clone(), ring(&KeyRing::generate_spec("k1")));
    let tmp = tempfile::tempdir().unwrap();
    fake_profile(tmp.path(), "m1");

    assert!(!store.has_login("s1").await.unwrap());
    assert!(matches!(
        store.save("s1", tmp.path()).await.unwrap(),
        SaveOutcome::Written { .. }
    ));
    assert!(store.has_login("s1").await.unwrap());
    let (sha1, size, key_id): (String, i32, String) = sqlx::query_as(
        "select sha256, size_bytes, key_id from wa_session_auth where session_id = 's1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let (ct, db_sha): (Vec<u8>, String) = sqlx::query_as(
        "select ciphertext, encode(sha256(ciphertext), 'hex') from wa_session_auth where session_id = 's1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        sha1, db_sha,
        "sha256 column is the hash of the stored ciphertext"
    );
    assert_eq!(size as usize, ct.len());
    assert_eq!(key_id, "k1");

    // LevelDB's LOCK/LOG change on every open; they are not part of the archive.
    std::fs::write(
        tmp.path().join("Default/Local Storage/leveldb/LOG"),
        "other",
    )
    .unwrap();
    assert_eq!(
        store.save("s1", tmp.path()).await.unwrap(),
        SaveOutcome::Unchanged
    );

    std::fs::write(
        tmp.path()
            .join("Default/IndexedDB/http_127.0.0.1_8080.indexeddb.leveldb/000004.log"),
        "new keys",
    )
    .unwrap();
    assert!(matches!(
        store.save("s1", tmp.path()).await.unwrap(),
        SaveOutcome::Written { .. }
    ));
    let sha2: String =
        sqlx::query_scalar("select sha256 from wa_session_auth where session_id = 's1'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_ne!(sha1, sha2);

    // Someone else replaced the row (another runner): an identical local login is written again.
    sqlx::query(
        "update wa_session_auth set sha256 = 'x', ciphertext = '\\x00' where session_id = 's1'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(matches!(
        store.save("s1", tmp.path()).await.unwrap(),
        SaveOutcome::Written { .. }
    ));

    // A profile without login storage never replaces a stored login.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("Default/IndexedDB")).unwrap();
    std::fs::write(empty.join("Default/Cookies"), "c").unwrap();
    assert_eq!(
        store.save("s1", &empty).await.unwrap(),
        SaveOutcome::NoLogin
    );
    assert!(store.has_login("s1").await.unwrap());

    assert!(store.delete("s1").await.unwrap());
    assert!(!store.has_login("s1").await.unwrap());
    assert_eq!(
        store.save("s1", &empty).await.unwrap(),
        SaveOutcome::NoLogin
    );
    assert!(!store.has_login("s1").await.unwrap());
    assert!(!store.delete("s1").await.unwrap());
    assert!(!store.restore("s1", &tmp.path().join("x")).await.unwrap());
}

#[tokio::test]
async fn save_owned_writes_only_under_a_live_lease() {
    let db = test_db().await;
    new_session(&db.pool, "s1").await;
    let store = AuthStore::new(db.pool.clone(), ring(&KeyRing::generate_spec("k1")));
    let tmp = tempfile::tempdir().unwrap();
    fake_profile(tmp.path(), "m");
    let me = uuid::Uuid::new_v4();
    assert_eq!(
        store.save_owned("s1", me, tmp.path()).await.unwrap(),
        SaveOutcome::NotOwner
    );
    assert!(!store.has_login("s1").await.unwrap());
    sqlx::query("update wa_session set runner_id = $1, lease_until = now() + interval '30 seconds' where id = 's1'")
        .bind(me)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(matches!(
        store.save_owned("s1", me, tmp.path()).await.unwrap(),
        SaveOutcome::Written { .. }
    ));
    sqlx::query("update wa_session set lease_until = now() - interval '1 second' where id = 's1'")
        .execute(&db.pool)
        .await
        .unwrap();
    std::fs::write(
        tmp.path().join("Default/Local Storage/leveldb/000005.log"),
        "x",
    )
    .unwrap();
    assert_eq!(
        store.save_owned("s1", me, tmp.path()).await.unwrap(),
        SaveOutcome::NotOwner
    );
}

async fn assert_restore_fails(store: &AuthStore, dir: &Path) -> AuthError {
    let err = store.restore("s1", dir).await.unwrap_err();
    assert_eq!(err.error_code(), ErrorCode::AuthRestoreFailed);
    assert!(!err.is_transient(), "{err}");
    // Never a silent fresh profile: nothing was written.
    assert!(!dir.join("Default/Local Storage").exists());
    assert!(!dir.join("Default/IndexedDB").exists());
    err
}

#[tokio::test]
async fn tampered_archive_fails_with_auth_restore_failed() {
    let db = test_db().await;
    new_session(&db.pool, "s1").await;
    let store = AuthStore::new(db.pool.clone(), ring(&KeyRing::generate_spec("k1")));
    let tmp = tempfile::tempdir().unwrap();
    fake_profile(&tmp.path().join("src"), "m");
    store.save("s1", &tmp.path().join("src")).await.unwrap();

    // One flipped bit, with the sha256 column fixed up to match: only AES-GCM can notice.
    sqlx::query(
        "update wa_session_auth set ciphertext = set_byte(ciphertext, 20, get_byte(ciphertext, 20) # 1)
         where session_id = 's1'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("update wa_session_auth set sha256 = encode(sha256(ciphertext), 'hex') where session_id = 's1'")
        .execute(&db.pool)
        .await
        .unwrap();
    let err = assert_restore_fails(&store, &tmp.path().join("d1")).await;
    assert!(matches!(err, AuthError::Decrypt), "{err:?}");

    // A nonce swapped in from elsewhere.
    store.save("s1", &tmp.path().join("src")).await.unwrap();
    sqlx::query(
        "update wa_session_auth set nonce = '\\x000000000000000000000000' where session_id = 's1'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(matches!(
        assert_restore_fails(&store, &tmp.path().join("d2")).await,
        AuthError::Decrypt
    ));

    // Another session's archive copied over this one: bound to its session id, it does not open.
    new_session(&db.pool, "s2").await;
    store.delete("s1").await.unwrap();
    store.save("s2", &tmp.path().join("src")).await.unwrap();
    sqlx::query(
        "insert into wa_session_auth (session_id, key_id, nonce, ciphertext, size_bytes, sha256)
         select 's1', key_id, nonce, ciphertext, size_bytes, sha256 from wa_session_auth where session_id = 's2'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(matches!(
        assert_restore_fails(&store, &tmp.path().join("d3")).await,
        AuthError::Decrypt
    ));
}

#[tokio::test]
async fn wrong_or_unknown_key_fails_with_auth_restore_failed() {
    let db = test_db().await;
    new_session(&db.pool, "s1").await;
    let tmp = tempfile::tempdir().unwrap();
    fake_profile(&tmp.path().join("src"), "m");
    let writer = AuthStore::new(db.pool.clone(), ring(&KeyRing::generate_spec("k1")));
    writer.save("s1", &tmp.path().join("src")).await.unwrap();

    let same_id_other_key = AuthStore::new(db.pool.clone(), ring(&KeyRing::generate_spec("k1")));
    let err = assert_restore_fails(&same_id_other_key, &tmp.path().join("d1")).await;
    assert!(matches!(err, AuthError::Decrypt), "{err:?}");

    let other_id = AuthStore::new(db.pool.clone(), ring(&KeyRing::generate_spec("k2")));
    let err = assert_restore_fails(&other_id, &tmp.path().join("d2")).await;
    assert!(
        matches!(err, AuthError::UnknownKey { ref key_id } if key_id == "k1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("k1") && err.to_string().contains("WA_AUTH_KEY"));
}

#[tokio::test]
async fn key_rotation_reads_old_logins_and_writes_new_ones() {
    let db = test_db().await;
    new_session(&db.pool, "s1").await;
    let tmp = tempfile::tempdir().unwrap();
    fake_profile(&tmp.path().join("src"), "rotation-marker");
    let old = KeyRing::generate_spec("old");
    let new = KeyRing::generate_spec("new");
    AuthStore::new(db.pool.clone(), ring(&old))
        .save("s1", &tmp.path().join("src"))
        .await
        .unwrap();

    let rotated = AuthStore::new(db.pool.clone(), ring(&format!("{new},{old}")));
    let dir = tmp.path().join("restored");
    assert!(rotated.restore("s1", &dir).await.unwrap());
    assert_eq!(
        std::fs::read_to_string(dir.join("Default/Local Storage/leveldb/000003.log")).unwrap(),
        "_http://x\u{0}\u{1}wa_marker=rotation-marker"
    );
    // The login itself is unchanged, yet the next save re-seals it under the new key.
    assert!(matches!(
        rotated.save("s1", &dir).await.unwrap(),
        SaveOutcome::Written { .. }
    ));
    let key_id: String =
        sqlx::query_scalar("select key_id from wa_session_auth where session_id = 's1'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(key_id, "new");
    assert_eq!(
        rotated.save("s1", &dir).await.unwrap(),
        SaveOutcome::Unchanged
    );
    // Once every row is re-sealed, the old key can go.
    let new_only = AuthStore::new(db.pool.clone(), ring(&new));
    assert!(new_only
        .restore("s1", &tmp.path().join("again"))
        .await
        .unwrap());
}

#[tokio::test]
async fn no_plaintext_login_in_the_row_or_in_pg_dump() {
    let db = test_db().await;
    new_session(&db.pool, "s1").await;
    let keys = ring(&KeyRing::generate_spec("k1"));
    let store = AuthStore::new(db.pool.clone(), keys.clone());
    let tmp = tempfile::tempdir().unwrap();
    let marker = format!("plaintext-marker-{}", uuid::Uuid::new_v4().simple());
    fake_profile(tmp.path(), &marker);
    store.save("s1", tmp.path()).await.unwrap();

    let (key_id, nonce, ct, row_text): (String, Vec<u8>, Vec<u8>, String) = sqlx::query_as(
        "select key_id, nonce, ciphertext, row_to_json(a)::text from wa_session_auth a where session_id = 's1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // Positive control: the sealed archive does carry the marker once opened…
    let archive = keys.open("s1", &key_id, &nonce, &ct).unwrap();
    assert!(gunzip_contains(&archive, &marker));
    // …but neither the raw bytes nor any column shows it.
    assert!(!ct.windows(marker.len()).any(|w| w == marker.as_bytes()));
    let found: bool = sqlx::query_scalar(
        "select position(convert_to($1, 'UTF8') in ciphertext) > 0 from wa_session_auth where session_id = 's1'",
    )
    .bind(&marker)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!found);
    assert!(!row_text.contains(&marker));

    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(PG_DUMP)
            .arg("--dbname")
            .arg(&db.url)
            .arg("--data-only")
            .output(),
    )
    .await
    .expect("pg_dump within 60s")
    .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(
        dump.contains("wa_session_auth"),
        "the dump has the table's data"
    );
    assert!(dump.contains("s1\tk1\t"), "the dump has the row");
    assert!(!dump.contains(&marker));
}

// ---------- hostile archives ----------

fn raw_entry(
    tar: &mut tar::Builder<impl std::io::Write>,
    path: &str,
    kind: tar::EntryType,
    data: &[u8],
    link: Option<&str>,
) {
    let mut h = tar::Header::new_old();
    let name = &mut h.as_old_mut().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append(&h, data).unwrap();
}

fn hostile(entries: &[(&str, tar::EntryType, Option<&str>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut t = tar::Builder::new(gz);
    for (p, k, l) in entries {
        let data: &[u8] = if *k == tar::EntryType::Regular {
            b"pwned"
        } else {
            b""
        };
        raw_entry(&mut t, p, *k, data, *l);
    }
    t.into_inner().unwrap().finish().unwrap()
}

#[test]
fn restore_refuses_traversal_absolute_paths_links_and_foreign_files() {
    use tar::EntryType::{Link, Regular, Symlink};
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("p");
    let outside = tmp.path().join("outside");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            hostile(&[("Default/IndexedDB/../../../outside", Regular, None)]),
        ),
        (
            "absolute",
            hostile(&[(outside.to_str().unwrap(), Regular, None)]),
        ),
        (
            "symlink",
            hostile(&[("Default/IndexedDB/x", Symlink, Some("/etc/passwd"))]),
        ),
        (
            "hardlink",
            hostile(&[("Default/IndexedDB/x", Link, Some("/etc/passwd"))]),
        ),
        (
            "foreign",
            hostile(&[("Default/Preferences", Regular, None)]),
        ),
        // The good entry first: nothing may be written before the bad one is seen.
        (
            "mixed",
            hostile(&[
                ("Default/IndexedDB/ok", Regular, None),
                ("Default/IndexedDB/../../../outside", Regular, None),
            ]),
        ),
        ("garbage", b"not a gzip stream".to_vec()),
    ];
    for (name, archive) in cases {
        let err = restore_profile(&archive, &profile).unwrap_err();
        assert!(matches!(err, AuthError::BadArchive(_)), "{name}: {err:?}");
        assert!(!outside.exists(), "{name}");
        assert!(!profile.join("Default/IndexedDB").exists(), "{name}");
    }
}

#[test]
fn restore_does_not_follow_a_symlink_planted_in_the_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fake_profile(&src, "m");
    let archive = archive_profile(&src).unwrap();

    let victim = tmp.path().join("victim");
    std::fs::create_dir_all(victim.join("IndexedDB")).unwrap();
    std::fs::write(victim.join("IndexedDB/keep"), "precious").unwrap();
    let profile = tmp.path().join("p");
    std::fs::create_dir_all(&profile).unwrap();
    std::os::unix::fs::symlink(&victim, profile.join("Default")).unwrap();

    assert!(restore_profile(&archive, &profile).is_err());
    assert_eq!(
        std::fs::read_to_string(victim.join("IndexedDB/keep")).unwrap(),
        "precious"
    );
    assert!(!victim.join("Local Storage").exists());
}

#[test]
fn archive_holds_exactly_the_login_folders_and_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    fake_profile(tmp.path(), "m");
    // A symlink in a login folder is not followed into the archive.
    std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("Default/IndexedDB/link")).unwrap();
    let a1 = archive_profile(tmp.path()).unwrap();
    let a2 = archive_profile(tmp.path()).unwrap();
    assert_eq!(a1, a2);

    let mut names: Vec<PathBuf> = tar::Archive::new(flate2::read::GzDecoder::new(&a1[..]))
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().into_owned())
        .collect();
    names.sort();
    let want: Vec<PathBuf> = [
        "Default/IndexedDB",
        "Default/IndexedDB/http_127.0.0.1_8080.indexeddb.leveldb",
        "Default/IndexedDB/http_127.0.0.1_8080.indexeddb.leveldb/000003.log",
        "Default/IndexedDB/http_127.0.0.1_8080.indexeddb.leveldb/CURRENT",
        "Default/IndexedDB/http_127.0.0.1_8080.indexeddb.leveldb/MANIFEST-000001",
        "Default/Local Storage",
        "Default/Local Storage/leveldb",
        "Default/Local Storage/leveldb/000003.log",
        "Default/Local Storage/leveldb/CURRENT",
        "Default/Local Storage/leveldb/MANIFEST-000001",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(names, want);

    // An empty profile archives to a valid empty archive that restores to nothing.
    let empty = archive_profile(&tmp.path().join("none")).unwrap();
    restore_profile(&empty, &tmp.path().join("r")).unwrap();
}

// ---------- the key from configuration ----------

fn config(data_dir: &Path, auth_key: Option<&str>) -> Config {
    let dir = data_dir.to_str().unwrap().to_string();
    let key = auth_key.map(str::to_string);
    Config::from_lookup(move |k| match k {
        "WA_DATA_DIR" => Some(dir.clone()),
        "WA_AUTH_KEY" => key.clone(),
        _ => None,
    })
    .unwrap()
}

#[test]
fn key_from_config() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();

    let spec = KeyRing::generate_spec("prod");
    let r = KeyRing::from_config(&config(tmp.path(), Some(&spec)), false).unwrap();
    assert_eq!(r.key_ids(), ["prod"]);

    let err = KeyRing::from_config(&config(tmp.path(), None), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("WA_AUTH_KEY") && err.contains("openssl rand -base64 32"),
        "{err}"
    );
    assert!(
        !tmp.path().join("auth.key").exists(),
        "no key file outside the embedded setup"
    );

    let data = tmp.path().join("data");
    let r1 = KeyRing::from_config(&config(&data, None), true).unwrap();
    let file = data.join("auth.key");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let r2 = KeyRing::from_config(&config(&data, None), true).unwrap();
    let s = r1.seal("s", b"x");
    assert_eq!(
        r2.open("s", &s.key_id, &s.nonce, &s.ciphertext).unwrap(),
        b"x",
        "the file is reused"
    );

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = KeyRing::from_config(&config(&data, None), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("chmod 600"), "{err}");
}
