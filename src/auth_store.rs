//! Encrypted login archives (AES-256-GCM) kept in wa_session_auth (DESIGN.md §5).
//!
//! A WhatsApp Web login is nothing but the page's storage: Chromium keeps it under
//! `Default/Local Storage` and `Default/IndexedDB` of the profile (checked on Chromium 156:
//! `Default/Local Storage/leveldb/…` and `Default/IndexedDB/<origin>.indexeddb.leveldb/…`,
//! plus `<origin>.indexeddb.blob` for blobs). We archive exactly those two folders, gzip them,
//! seal them under the first key of the ring with the session id as associated data (so one
//! session's archive cannot be replayed as another's), and upsert one row per session. Any
//! runner can then restore the login into a fresh profile before the page loads, so a session
//! is tied to no machine.
//!
//! When a runner calls it: `restore` into an emptied profile folder before the browser starts
//! (an error there is `failed` / `auth_restore_failed`, never a fresh QR); `save` (or
//! `save_owned`, fenced on the lease) after the browser was closed for stop / hibernate /
//! drain, and for a live browser no sooner than [`LIVE_SAVE_SETTLE`] after it connected;
//! `delete` once the device is unlinked. Unchanged logins are not rewritten, so saving often
//! is cheap.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::Context;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::config::Config;
use crate::db::bounded;
use crate::error_code::ErrorCode;
pub use crate::keyring::KeyRing;

/// The profile folders (relative to the profile dir) that hold a WhatsApp Web login: Chromium's
/// own stores (one browser per session), or the export of a browser context's storage (shared
/// browser mode, [`CONTEXT_EXPORT_DIR`]).
pub const LOGIN_DIRS: &[&str] = &[
    "Default/Local Storage",
    "Default/IndexedDB",
    CONTEXT_EXPORT_DIR,
];

/// Where the shared-browser driver writes a session's exported context storage.
pub const CONTEXT_EXPORT_DIR: &str = "wa-outbox-context";

/// LevelDB files that are recreated on open and carry no data: left out so an unchanged login
/// archives to the same bytes (and the write is skipped).
const SKIPPED_FILES: &[&str] = &["LOCK", "LOG", "LOG.old"];

/// A restore stops past this many unpacked bytes: a corrupt or hostile archive must not fill
/// the disk. WhatsApp Web's IndexedDB of a busy account is tens of MB.
pub const MAX_UNPACKED_BYTES: u64 = 1 << 30;
/// …and past this many entries.
pub const MAX_ENTRIES: usize = 100_000;
/// A live Chromium may compact LevelDB while we read it (a file vanishes under us): try again.
const ARCHIVE_ATTEMPTS: usize = 5;

/// How long after the page's last Local Storage write a save of a *running* browser's profile
/// is complete. Chromium writes IndexedDB to disk when a transaction completes, but commits
/// Local Storage lazily, about 5 s later (measured on Chromium 156); a browser that is shut
/// down flushes both. So: save right after closing the browser, and save a live one only this
/// long after it connected (or changed its login).
pub const LIVE_SAVE_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The file an embedded (local/demo) runner generates when WA_AUTH_KEY is unset.
pub const LOCAL_KEY_FILE: &str = "auth.key";

/// One sealed archive, as stored in wa_session_auth.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: [u8; 12],
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Why a stored login could not be used (or stored). Restore failures of the archive itself
/// are permanent: the session goes to `failed` / `auth_restore_failed` rather than showing a
/// new QR that would silently link a second device.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the stored login is sealed with key `{key_id}`, which is not in WA_AUTH_KEY (add it after the current key to read old logins)")]
    UnknownKey { key_id: String },
    #[error(
        "the stored login does not decrypt: wrong key for its key id, or the row was tampered with"
    )]
    Decrypt,
    #[error("the stored login is not a valid archive: {0}")]
    BadArchive(String),
    #[error("profile folder: {0}")]
    Io(#[from] std::io::Error),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl AuthError {
    /// The code a runner writes to `wa_session.error_code` when restoring fails.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::AuthRestoreFailed
    }

    /// True when trying again later may work (database or local disk trouble); false when the
    /// stored archive itself is unusable and only a new link (or the right key) helps.
    pub fn is_transient(&self) -> bool {
        matches!(self, AuthError::Db(_) | AuthError::Io(_))
    }
}

impl KeyRing {
    /// The ring a runner uses: WA_AUTH_KEY when set. Unset, a production runner refuses to
    /// start (a login must never be stored under a key nobody chose); the embedded local/demo
    /// setup generates `WA_DATA_DIR/auth.key` once (mode 0600) and reuses it.
    pub fn from_config(config: &Config, embedded: bool) -> anyhow::Result<KeyRing> {
        if let Some(spec) = &config.auth_key {
            return KeyRing::parse(spec).map_err(|e| anyhow::anyhow!("WA_AUTH_KEY: {e}"));
        }
        if !embedded {
            anyhow::bail!(
                "WA_AUTH_KEY is unset: stored logins are encrypted and a runner on a shared \
                 database needs a key. Generate one with\n  \
                 export WA_AUTH_KEY=\"k1:$(openssl rand -base64 32)\"\n\
                 (format `id:base64key[,id:base64key…]`: the first key encrypts, all decrypt, \
                 so you can rotate by putting a new key in front). Give every runner the same value."
            );
        }
        let path = config.data_dir.join(LOCAL_KEY_FILE);
        let (ring, created) = load_or_create_key_file(&path)?;
        if created {
            eprintln!(
                "WA_AUTH_KEY unset: generated a local login key at {} (mode 0600). \
                 Keep it with the embedded database; set WA_AUTH_KEY for any shared deployment.",
                path.display()
            );
        } else {
            eprintln!(
                "WA_AUTH_KEY unset: using the local login key at {}",
                path.display()
            );
        }
        Ok(ring)
    }

    /// Encrypts under the first key with a random 96-bit nonce, bound to `session_id`.
    pub fn seal(&self, session_id: &str, plaintext: &[u8]) -> Sealed {
        let (key_id, key) = &self.keys[0];
        let nonce: [u8; 12] = rand::random();
        let cipher = Aes256Gcm::new(key.into());
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: session_id.as_bytes(),
                },
            )
            // Only fails for plaintexts beyond 64 GiB, far past the archive limits.
            .expect("AES-GCM encryption of a bounded archive");
        Sealed {
            key_id: key_id.clone(),
            nonce,
            ciphertext,
        }
    }

    /// A small secret sealed into one line of text, `key_id:base64(nonce ‖ ciphertext)`,
    /// bound to `aad` (it opens only with the same `aad`).
    pub fn seal_line(&self, aad: &str, secret: &[u8]) -> String {
        use base64::Engine;
        let sealed = self.seal(aad, secret);
        let mut blob = sealed.nonce.to_vec();
        blob.extend_from_slice(&sealed.ciphertext);
        format!(
            "{}:{}",
            sealed.key_id,
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    /// Opens what [`seal_line`](Self::seal_line) made with the same `aad`.
    pub fn open_line(&self, aad: &str, line: &str) -> Result<Vec<u8>, AuthError> {
        use base64::Engine;
        let (key_id, b64) = line.split_once(':').ok_or(AuthError::Decrypt)?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| AuthError::Decrypt)?;
        if blob.len() < 12 {
            return Err(AuthError::Decrypt);
        }
        self.open(aad, key_id, &blob[..12], &blob[12..])
    }

    /// Decrypts with whichever key of the ring carries `key_id`.
    pub fn open(
        &self,
        session_id: &str,
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, AuthError> {
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id)
            .ok_or_else(|| AuthError::UnknownKey {
                key_id: key_id.to_string(),
            })?;
        if nonce.len() != 12 {
            return Err(AuthError::Decrypt);
        }
        Aes256Gcm::new(key.into())
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: session_id.as_bytes(),
                },
            )
            .map_err(|_| AuthError::Decrypt)
    }
}

fn load_or_create_key_file(path: &Path) -> anyhow::Result<(KeyRing, bool)> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
    }
    let spec = KeyRing::generate_spec("local");
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(spec.as_bytes())
                .and_then(|_| f.write_all(b"\n"))
                .and_then(|_| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            let ring = KeyRing::parse(&spec).map_err(anyhow::Error::msg)?;
            Ok((ring, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(path)
                .with_context(|| format!("reading {}", path.display()))?;
            if !meta.file_type().is_file() {
                anyhow::bail!("{} is not a regular file", path.display());
            }
            if meta.permissions().mode() & 0o077 != 0 {
                anyhow::bail!(
                    "{} is readable by other users; run `chmod 600 {}`",
                    path.display(),
                    path.display()
                );
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let ring = KeyRing::parse(text.trim())
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok((ring, false))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Tars and gzips the login folders of a profile. Deterministic (sorted, zeroed times and
/// owners) so that an unchanged login yields the same bytes. A profile without them archives
/// to an empty (but valid) archive.
pub fn archive_profile(profile_dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut last_err = None;
    for _ in 0..ARCHIVE_ATTEMPTS {
        match archive_once(profile_dir) {
            Ok(bytes) => return Ok(bytes),
            // A running Chromium compacted LevelDB between our listing and our read: the set
            // of files we saw is no longer consistent, so start over.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.expect("at least one attempt"))
}

fn archive_once(profile_dir: &Path) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for dir in LOGIN_DIRS {
        let root = profile_dir.join(dir);
        match std::fs::symlink_metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        append_tree(&mut tar, profile_dir, &root)?;
    }
    tar.into_inner()?.finish()
}

fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    profile_dir: &Path,
    dir: &Path,
) -> std::io::Result<()> {
    let rel = dir
        .strip_prefix(profile_dir)
        .expect("walk stays inside the profile");
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o700);
    header.set_size(0);
    header.set_mtime(0);
    tar.append_data(&mut header, rel, std::io::empty())?;

    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        // Symlinks are never followed: the archive holds only what Chromium wrote itself.
        let ft = entry.file_type()?;
        if ft.is_dir() {
            append_tree(tar, profile_dir, &path)?;
        } else if ft.is_file() {
            let name = entry.file_name();
            if SKIPPED_FILES.iter().any(|s| name == *s) {
                continue;
            }
            let data = std::fs::read(&path)?;
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o600);
            header.set_size(data.len() as u64);
            header.set_mtime(0);
            let rel = path
                .strip_prefix(profile_dir)
                .expect("walk stays inside the profile");
            tar.append_data(&mut header, rel, data.as_slice())?;
        }
    }
    Ok(())
}

/// True when a login folder of the profile holds at least one file.
pub fn has_login_files(profile_dir: &Path) -> std::io::Result<bool> {
    fn any_file(dir: &Path) -> std::io::Result<bool> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let ft = entry.file_type()?;
            if (ft.is_file() && !SKIPPED_FILES.iter().any(|s| entry.file_name() == *s))
                || (ft.is_dir() && any_file(&entry.path())?)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
    for dir in LOGIN_DIRS {
        if any_file(&profile_dir.join(dir))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Unpacks an archive made by [`archive_profile`] into `profile_dir`, replacing whatever login
/// folders were there. Everything is checked before anything is written: only plain files and
/// folders under [`LOGIN_DIRS`], relative paths without `..`, within the size limits.
pub fn restore_profile(archive: &[u8], profile_dir: &Path) -> Result<(), AuthError> {
    let files = read_archive(archive)?;

    std::fs::create_dir_all(profile_dir)?;
    for dir in LOGIN_DIRS {
        // `Default` planted as a symlink would make the removal below delete (and the writes
        // land) outside the profile.
        if let Some(parent) = Path::new(dir).parent() {
            create_dir_no_symlinks(profile_dir, parent)?;
        }
        let target = profile_dir.join(dir);
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&target)?,
            Ok(_) => std::fs::remove_file(&target)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    for (rel, data) in files {
        let path = profile_dir.join(&rel);
        match data {
            None => create_dir_no_symlinks(profile_dir, &rel)?,
            Some(bytes) => {
                if let Some(parent) = rel.parent() {
                    create_dir_no_symlinks(profile_dir, parent)?;
                }
                write_private(&path, &bytes)?;
            }
        }
    }
    Ok(())
}

/// (relative path, Some(contents) for a file / None for a folder), validated.
type ArchiveEntries = Vec<(PathBuf, Option<Vec<u8>>)>;

fn read_archive(archive: &[u8]) -> Result<ArchiveEntries, AuthError> {
    let bad = |m: String| AuthError::BadArchive(m);
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut out = Vec::new();
    let mut total: u64 = 0;
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        if out.len() >= MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        let raw_path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let rel = checked_relative(&raw_path).map_err(bad)?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => out.push((rel, None)),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(|e| bad(e.to_string()))?;
                total = total.saturating_add(size);
                if total > MAX_UNPACKED_BYTES {
                    return Err(bad(format!(
                        "unpacks to more than {MAX_UNPACKED_BYTES} bytes"
                    )));
                }
                let mut data = Vec::with_capacity(size.min(1 << 20) as usize);
                (&mut entry)
                    .take(size)
                    .read_to_end(&mut data)
                    .map_err(|e| bad(e.to_string()))?;
                out.push((rel, Some(data)));
            }
            other => {
                return Err(bad(format!(
                    "`{}` is a {other:?} entry; only plain files and folders are restored",
                    raw_path.display()
                )))
            }
        }
    }
    Ok(out)
}

/// A path inside one of the login folders, with no root, `..` or other surprises.
fn checked_relative(p: &Path) -> Result<PathBuf, String> {
    let mut clean = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!("`{}` escapes the profile folder", p.display()))
            }
        }
    }
    if !LOGIN_DIRS.iter().any(|d| clean.starts_with(d)) {
        return Err(format!(
            "`{}` is outside the login folders ({})",
            p.display(),
            LOGIN_DIRS.join(", ")
        ));
    }
    Ok(clean)
}

/// Creates `base/rel` folder by folder, refusing to walk through a symlink that someone
/// planted in the profile.
fn create_dir_no_symlinks(base: &Path, rel: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let mut cur = base.to_path_buf();
    for part in rel.components() {
        cur.push(part);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a folder", cur.display()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new().mode(0o700).create(&cur)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// What [`AuthStore::save`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    /// A new archive was sealed and stored.
    Written { size_bytes: usize },
    /// The login is the same as the stored one (same key): nothing written.
    Unchanged,
    /// `save_owned` only: this runner no longer holds the session's lease; nothing written.
    NotOwner,
    /// The profile holds no login storage at all (the browser never got that far): nothing
    /// written, and any stored login is left as it was.
    NoLogin,
}

/// What this runner last wrote for a session: skip identical rewrites.
#[derive(Clone)]
struct LastWrite {
    archive_sha: [u8; 32],
    row_sha256: String,
    key_id: String,
}

/// The login archive of every session, in wa_session_auth.
#[derive(Clone)]
pub struct AuthStore {
    pool: PgPool,
    keys: KeyRing,
    last: Arc<Mutex<HashMap<String, LastWrite>>>,
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthStore")
            .field("keys", &self.keys)
            .finish()
    }
}

impl AuthStore {
    pub fn new(pool: PgPool, keys: KeyRing) -> Self {
        Self {
            pool,
            keys,
            last: Arc::default(),
        }
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Archives the profile's login and stores it sealed, unless it is what is stored already.
    pub async fn save(
        &self,
        session_id: &str,
        profile_dir: &Path,
    ) -> Result<SaveOutcome, AuthError> {
        self.save_inner(session_id, profile_dir, None).await
    }

    /// Like [`save`](Self::save), but writes only while `runner_id` holds a live lease on the
    /// session: a runner that lost its session (paused, partitioned) must not overwrite the
    /// login the new owner keeps.
    pub async fn save_owned(
        &self,
        session_id: &str,
        runner_id: uuid::Uuid,
        profile_dir: &Path,
    ) -> Result<SaveOutcome, AuthError> {
        self.save_inner(session_id, profile_dir, Some(runner_id))
            .await
    }

    async fn save_inner(
        &self,
        session_id: &str,
        profile_dir: &Path,
        owner: Option<uuid::Uuid>,
    ) -> Result<SaveOutcome, AuthError> {
        let dir = profile_dir.to_path_buf();
        let archive = tokio::task::spawn_blocking(move || {
            if has_login_files(&dir)? {
                archive_profile(&dir).map(Some)
            } else {
                Ok(None)
            }
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        // Storing an empty login would make the session look linked (and a restore "succeed"
        // into a page that shows a QR): keep whatever is stored instead.
        let Some(archive) = archive else {
            return Ok(SaveOutcome::NoLogin);
        };
        let archive_sha: [u8; 32] = Sha256::digest(&archive).into();

        let cached = self
            .last
            .lock()
            .expect("not poisoned")
            .get(session_id)
            .cloned();
        if let Some(prev) = cached {
            if prev.archive_sha == archive_sha && prev.key_id == self.keys.current_key_id() {
                // Unchanged on our side; make sure nobody else replaced the row meanwhile.
                let stored: Option<String> = bounded(
                    sqlx::query_scalar("select sha256 from wa_session_auth where session_id = $1")
                        .bind(session_id)
                        .fetch_optional(&self.pool),
                )
                .await?;
                if stored.as_deref() == Some(prev.row_sha256.as_str()) {
                    return Ok(SaveOutcome::Unchanged);
                }
            }
        }

        let sealed = self.keys.seal(session_id, &archive);
        let row_sha256 = sha256_hex(&sealed.ciphertext);
        let size = sealed.ciphertext.len();
        let size_i32 = i32::try_from(size)
            .map_err(|_| AuthError::BadArchive(format!("archive of {size} bytes is too large")))?;
        let written = bounded(sqlx::query(
            "insert into wa_session_auth (session_id, key_id, nonce, ciphertext, size_bytes, sha256)
             select $1, $2, $3, $4, $5, $6
             where $7::uuid is null or exists (
               select 1 from wa_session s
               where s.id = $1 and s.runner_id = $7 and s.lease_until > now())
             on conflict (session_id) do update set
               key_id = excluded.key_id, nonce = excluded.nonce, ciphertext = excluded.ciphertext,
               size_bytes = excluded.size_bytes, sha256 = excluded.sha256",
        )
        .bind(session_id)
        .bind(&sealed.key_id)
        .bind(&sealed.nonce[..])
        .bind(&sealed.ciphertext)
        .bind(size_i32)
        .bind(&row_sha256)
        .bind(owner)
        .execute(&self.pool))
        .await?
        .rows_affected();
        if written == 0 {
            return Ok(SaveOutcome::NotOwner);
        }
        self.last.lock().expect("not poisoned").insert(
            session_id.to_string(),
            LastWrite {
                archive_sha,
                row_sha256,
                key_id: sealed.key_id,
            },
        );
        tracing::debug!(session_id, size_bytes = size, "stored login saved");
        Ok(SaveOutcome::Written { size_bytes: size })
    }

    /// Restores the stored login into `profile_dir` (call before the browser starts).
    /// `Ok(false)`: there is no stored login (a new link is expected). An error means the
    /// stored login exists but cannot be used: never fall back to a fresh profile silently.
    pub async fn restore(&self, session_id: &str, profile_dir: &Path) -> Result<bool, AuthError> {
        let row: Option<(String, Vec<u8>, Vec<u8>, String)> = bounded(
            sqlx::query_as(
                "select key_id, nonce, ciphertext, sha256 from wa_session_auth where session_id = $1",
            )
            .bind(session_id)
            .fetch_optional(&self.pool),
        )
        .await?;
        let Some((key_id, nonce, ciphertext, row_sha256)) = row else {
            return Ok(false);
        };
        if sha256_hex(&ciphertext) != row_sha256 {
            return Err(AuthError::Decrypt);
        }
        let archive = self.keys.open(session_id, &key_id, &nonce, &ciphertext)?;
        let archive_sha: [u8; 32] = Sha256::digest(&archive).into();
        let dir = profile_dir.to_path_buf();
        tokio::task::spawn_blocking(move || restore_profile(&archive, &dir))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        self.last.lock().expect("not poisoned").insert(
            session_id.to_string(),
            LastWrite {
                archive_sha,
                row_sha256,
                key_id,
            },
        );
        Ok(true)
    }

    /// Deletes the stored login (after a logout). True when there was one.
    pub async fn delete(&self, session_id: &str) -> Result<bool, sqlx::Error> {
        self.last.lock().expect("not poisoned").remove(session_id);
        let n = bounded(
            sqlx::query("delete from wa_session_auth where session_id = $1")
                .bind(session_id)
                .execute(&self.pool),
        )
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    pub async fn has_login(&self, session_id: &str) -> Result<bool, sqlx::Error> {
        bounded(
            sqlx::query_scalar(
                "select exists (select 1 from wa_session_auth where session_id = $1)",
            )
            .bind(session_id)
            .fetch_one(&self.pool),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(spec).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let r = ring(&KeyRing::generate_spec("a"));
        let s = r.seal("s1", b"hello");
        assert_eq!(s.key_id, "a");
        assert_ne!(s.ciphertext, b"hello");
        assert_eq!(
            r.open("s1", "a", &s.nonce, &s.ciphertext).unwrap(),
            b"hello"
        );
        // Bound to the session id: another session's row cannot be swapped in.
        assert!(matches!(
            r.open("s2", "a", &s.nonce, &s.ciphertext),
            Err(AuthError::Decrypt)
        ));
        assert!(matches!(
            r.open("s1", "b", &s.nonce, &s.ciphertext),
            Err(AuthError::UnknownKey { .. })
        ));
        assert!(matches!(
            r.open("s1", "a", &s.nonce[..5], &s.ciphertext),
            Err(AuthError::Decrypt)
        ));
        // Two seals of the same bytes differ (fresh nonce).
        assert_ne!(r.seal("s1", b"hello").ciphertext, s.ciphertext);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let spec = KeyRing::generate_spec("k1");
        let b64 = spec.split_once(':').unwrap().1;
        let shown = format!("{:?}", ring(&spec));
        assert!(shown.contains("k1"));
        assert!(!shown.contains(b64));
    }

    #[test]
    fn traversal_is_refused() {
        for p in [
            "../x",
            "/etc/passwd",
            "Default/Local Storage/../../x",
            "Default/Cookies",
            "Default",
        ] {
            assert!(checked_relative(Path::new(p)).is_err(), "{p}");
        }
        assert!(checked_relative(Path::new("Default/IndexedDB/a/b")).is_ok());
    }
}
