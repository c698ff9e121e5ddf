//! A private PostgreSQL cluster for local use when DATABASE_URL is unset (the demo, a laptop,
//! and the test suite). Production sets DATABASE_URL and never touches this.
//!
//! The cluster lives in a folder of its own; a second start finds it running (postmaster.pid and
//! a live server) and reuses it. As root, the server binaries run as the `postgres` user, because
//! initdb refuses to run as root; that user often cannot even enter the folder the caller named
//! (a clone under `/root`, a `mktemp -d`: both 0700), so as root the cluster's files live in a
//! private folder of the `postgres` user's own, derived from the named folder, and the named
//! folder keeps only a pointer to it (`CLUSTER`). The caller's directories are never chmod'ed or
//! chown'ed. As any other user the named folder is the cluster itself, as before.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

const INSTALL_HINT: &str =
    "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or under \
/usr/lib/postgresql/*/bin. Install Debian's `postgresql` package (apt-get install postgresql) \
or set DATABASE_URL to an existing server.";

/// The file in a root-run data directory that names where its cluster really lives.
const POINTER: &str = "CLUSTER";

#[derive(Debug)]
pub struct EmbeddedPg {
    /// The folder the caller named (WA_DATA_DIR/pg, target/test-pg, `dev-pg --dir`).
    pub data_dir: PathBuf,
    /// Where the cluster's files are: `data_dir` itself, or (as root) the postgres user's folder.
    pub cluster_dir: PathBuf,
    pub port: u16,
    bin_dir: PathBuf,
    /// Whether this process started the server (and so should stop it).
    started_here: bool,
}

/// Tuning for a throwaway cluster. `fast` trades durability for speed: tests only.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgOptions {
    pub fast: bool,
}

/// Finds the directory holding initdb/pg_ctl: PATH first, then the newest /usr/lib/postgresql/N/bin.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                // Debian links only some tools into PATH; prefer the real folder next to the target.
                let real = std::fs::canonicalize(dir.join("initdb"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf));
                return Ok(real.unwrap_or(dir));
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).context(INSTALL_HINT)
}

struct PgUser {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

fn postgres_user() -> Option<PgUser> {
    // SAFETY: getpwnam with a valid C string; the result is copied out before any other call.
    unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        if pw.is_null() {
            return None;
        }
        let home = if (*pw).pw_dir.is_null() {
            PathBuf::new()
        } else {
            use std::os::unix::ffi::OsStrExt;
            let bytes = std::ffi::CStr::from_ptr((*pw).pw_dir).to_bytes();
            PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
        };
        Some(PgUser {
            uid: (*pw).pw_uid,
            gid: (*pw).pw_gid,
            home,
        })
    }
}

const NO_POSTGRES_USER: &str =
    "running as root, and initdb refuses root: create a `postgres` user \
(Debian's postgresql package does), run as another user, or set DATABASE_URL";

/// As root: the postgres user's private folder for the cluster named by `data_dir`. The name is
/// the folder's last component (for a person reading `ls`) and a hash of its absolute path (so two
/// checkouts never share a cluster and the same folder always finds its own again).
fn private_cluster_dir(user: &PgUser, data_dir: &Path) -> PathBuf {
    use sha2::Digest;
    use std::os::unix::ffi::OsStrExt;
    let base = if user.home.is_dir() {
        user.home.join("wa-outbox")
    } else {
        PathBuf::from("/var/tmp/wa-outbox-pg")
    };
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_bytes());
    let label: String = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(32)
        .collect();
    base.join(format!("{label}-{}", &hex::encode(digest)[..16]))
}

/// Creates `dir` (and its parent) as a private folder of the postgres user: 0700, owned by it.
fn make_private_dir(user: &PgUser, dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for d in [dir.parent(), Some(dir)].into_iter().flatten() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        std::os::unix::fs::chown(d, Some(user.uid), Some(user.gid))
            .with_context(|| format!("cannot hand {} to the postgres user", d.display()))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl EmbeddedPg {
    fn command(&self, tool: &str) -> anyhow::Result<Command> {
        let mut cmd = Command::new(self.bin_dir.join(tool));
        if is_root() {
            let user = postgres_user().context(NO_POSTGRES_USER)?;
            cmd.uid(user.uid).gid(user.gid);
        }
        // The tools chdir back to the caller's directory, which the postgres user may not enter.
        cmd.current_dir(&self.cluster_dir)
            .env_remove("PGDATA")
            .env("LC_ALL", "C.UTF-8");
        Ok(cmd)
    }

    /// Starts the cluster in `data_dir` (creating it on first use), or reuses it if it is running.
    pub async fn start(data_dir: &Path, opts: PgOptions) -> anyhow::Result<Self> {
        let data_dir = std::path::absolute(data_dir)?;
        let bin_dir = find_bin_dir()?;
        let mut pg = EmbeddedPg {
            cluster_dir: data_dir.clone(),
            data_dir: data_dir.clone(),
            port: 0,
            bin_dir,
            started_here: false,
        };
        tokio::task::spawn_blocking(move || {
            pg.start_blocking(opts)?;
            Ok(pg)
        })
        .await?
    }

    fn start_blocking(&mut self, opts: PgOptions) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create {}", self.data_dir.display()))?;
        let _lock = DirLock::acquire(&self.data_dir.with_extension("lock"))?;
        self.locate_cluster()?;

        if !self.cluster_dir.join("PG_VERSION").exists() {
            let out = self
                .command("initdb")?
                .args(["-D"])
                .arg(&self.cluster_dir)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ])
                .args(if opts.fast {
                    &["--no-sync"][..]
                } else {
                    &[][..]
                })
                .output()
                .context("running initdb")?;
            if !out.status.success() {
                bail!(
                    "the embedded PostgreSQL could not be created in {} (initdb: {}); fix that or set DATABASE_URL to a server you run",
                    self.cluster_dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }

        if let Some(port) = self.running_port() {
            self.port = port;
            return Ok(());
        }
        let _ = std::fs::remove_file(self.cluster_dir.join("postmaster.pid"));
        self.port = free_port()?;
        // TCP on loopback only: no Unix socket, whose path would be limited to 107 bytes and
        // would have to survive pg_ctl's shell with whatever the folder's name holds.
        let mut server_opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=400",
            self.port,
        );
        if opts.fast {
            server_opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let out = self
            .command("pg_ctl")?
            .arg("-D")
            .arg(&self.cluster_dir)
            .args(["-l"])
            .arg(self.cluster_dir.join("server.log"))
            .args(["-o", &server_opts, "-w", "-t", "60", "start"])
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let log = self.cluster_dir.join("server.log");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            bail!(
                "the embedded PostgreSQL in {} did not start (pg_ctl: {}); see {} below, fix that or set DATABASE_URL to a server you run\n{}",
                self.cluster_dir.display(),
                String::from_utf8_lossy(&out.stderr).trim(),
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.started_here = true;
        Ok(())
    }

    /// Decides where the cluster's files are. Not root: `data_dir` itself (0700, as initdb
    /// wants). Root: a cluster already in `data_dir` stays there; otherwise the postgres user's
    /// private folder that `data_dir/CLUSTER` names, made on first use. A private folder without
    /// a pointer belongs to a data directory that was deleted: it is stopped and made anew, just
    /// as deleting the folder of a non-root cluster starts from scratch.
    fn locate_cluster(&mut self) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if !is_root() || self.data_dir.join("PG_VERSION").exists() {
            self.cluster_dir = self.data_dir.clone();
            if is_root() {
                // A cluster made in place by an earlier version, as the postgres user.
                let user = postgres_user().context(NO_POSTGRES_USER)?;
                std::os::unix::fs::chown(&self.data_dir, Some(user.uid), Some(user.gid))?;
            }
            std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))?;
            return Ok(());
        }
        let user = postgres_user().context(NO_POSTGRES_USER)?;
        let pointer = self.data_dir.join(POINTER);
        let own = private_cluster_dir(&user, &self.data_dir);
        // Only the folder derived from this data directory: a copied data directory (cp -a of a
        // target/) carries its original's pointer, and must not drive that other cluster.
        let named = std::fs::read_to_string(&pointer)
            .ok()
            .map(|s| PathBuf::from(s.trim_end_matches('\n')))
            .filter(|p| *p == own && p.join("PG_VERSION").exists());
        match named {
            Some(dir) => self.cluster_dir = dir,
            None => {
                self.cluster_dir = own;
                if self.cluster_dir.exists() {
                    if self.running_port().is_some() {
                        self.stop_now()?;
                    }
                    std::fs::remove_dir_all(&self.cluster_dir).with_context(|| {
                        format!("cannot remove the stale {}", self.cluster_dir.display())
                    })?;
                }
                make_private_dir(&user, &self.cluster_dir)?;
                use std::os::unix::ffi::OsStrExt;
                let mut text = self.cluster_dir.as_os_str().as_bytes().to_vec();
                text.push(b'\n');
                std::fs::write(&pointer, text)
                    .with_context(|| format!("cannot write {}", pointer.display()))?;
            }
        }
        Ok(())
    }

    /// Stops the server at once (no checkpoint): for a cluster about to be removed. Best effort.
    fn stop_now(&self) -> anyhow::Result<()> {
        let _ = self
            .command("pg_ctl")?
            .arg("-D")
            .arg(&self.cluster_dir)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        Ok(())
    }

    /// The port of a live server already using this cluster, if any.
    fn running_port(&self) -> Option<u16> {
        let pid_file = std::fs::read_to_string(self.cluster_dir.join("postmaster.pid")).ok()?;
        let mut lines = pid_file.lines();
        let pid: i32 = lines.next()?.trim().parse().ok()?;
        let port: u16 = lines.nth(2)?.trim().parse().ok()?;
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) == 0 };
        (alive
            && std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_secs(2),
            )
            .is_ok())
        .then_some(port)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, database)
    }

    pub fn psql_hint(&self) -> String {
        format!("psql -h 127.0.0.1 -p {} -U postgres postgres", self.port)
    }

    /// Stops the server if this process started it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if !self.started_here {
            return Ok(());
        }
        self.started_here = false;
        let out = self
            .command("pg_ctl")?
            .arg("-D")
            .arg(&self.cluster_dir)
            .args(["-m", "fast", "-w", "stop"])
            .output()?;
        if !out.status.success() {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Restarts the server on the same port with a fast shutdown: open connections are cut
    /// (`terminating connection due to administrator command`), new ones refused until it is
    /// back, as in a failover. For fault tests and operators.
    pub async fn restart(&self) -> anyhow::Result<()> {
        let mut cmd = self.command("pg_ctl")?;
        // The same log as `start` (postmaster.opts keeps the port and settings): the new server
        // must not hold this call's output pipes open.
        cmd.arg("-D")
            .arg(&self.cluster_dir)
            .arg("-l")
            .arg(self.cluster_dir.join("server.log"))
            .args(["-m", "fast", "-w", "-t", "60", "restart"]);
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        if !out.status.success() {
            bail!(
                "pg_ctl restart failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Stops the cluster in `data_dir` if it runs and removes it: its files (also where a root
    /// run keeps them) and `data_dir` itself. For throwaway clusters (tests, `dev-pg destroy`).
    pub async fn destroy(data_dir: &Path) -> anyhow::Result<()> {
        let data_dir = std::path::absolute(data_dir)?;
        if !data_dir.exists() {
            return Ok(());
        }
        let mut pg = EmbeddedPg {
            cluster_dir: data_dir.clone(),
            data_dir: data_dir.clone(),
            port: 0,
            bin_dir: find_bin_dir()?,
            started_here: false,
        };
        tokio::task::spawn_blocking(move || {
            let _lock = DirLock::acquire(&pg.data_dir.with_extension("lock"))?;
            // Never the pointer as written: a copied data directory names another's cluster.
            if is_root() && !pg.data_dir.join("PG_VERSION").exists() {
                if let Some(user) = postgres_user() {
                    pg.cluster_dir = private_cluster_dir(&user, &pg.data_dir);
                }
            }
            if pg.cluster_dir.join("postmaster.pid").exists() {
                pg.stop_now()?;
            }
            for dir in [&pg.cluster_dir, &pg.data_dir] {
                if dir.exists() {
                    std::fs::remove_dir_all(dir)
                        .with_context(|| format!("cannot remove {}", dir.display()))?;
                }
            }
            let _ = std::fs::remove_file(pg.data_dir.with_extension("lock"));
            Ok(())
        })
        .await?
    }

    /// Stops the server whoever started it.
    pub fn force_stop(&mut self) -> anyhow::Result<()> {
        self.started_here = true;
        self.stop()
    }

    /// Leaves the server running after this process exits (the test suite shares one).
    pub fn detach(&mut self) {
        self.started_here = false;
    }
}

impl Drop for EmbeddedPg {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("wa-outbox: stopping embedded PostgreSQL: {e:#}");
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An exclusive flock on a file next to the cluster, so two processes (parallel test binaries)
/// never initdb or start the same folder at once.
struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    fn acquire(path: &Path) -> anyhow::Result<Self> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: a valid open fd; LOCK_EX blocks until the other holder is done.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("cannot lock {}", path.display());
        }
        Ok(DirLock { _file: f })
    }
}
