//! A private PostgreSQL cluster for local use when DATABASE_URL is unset (the demo, a laptop,
//! and the test suite). Production sets DATABASE_URL and never touches this.
//!
//! The cluster lives in a folder of its own; a second start finds it running (postmaster.pid and
//! a live server) and reuses it. As root, the server binaries run as the `postgres` user, because
//! initdb refuses to run as root.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

const INSTALL_HINT: &str =
    "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or under \
/usr/lib/postgresql/*/bin. Install Debian's `postgresql` package (apt-get install postgresql) \
or set DATABASE_URL to an existing server.";

#[derive(Debug)]
pub struct EmbeddedPg {
    pub data_dir: PathBuf,
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

fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: getpwnam with a valid C string; the result is read before any other call.
    unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        if pw.is_null() {
            None
        } else {
            Some(((*pw).pw_uid, (*pw).pw_gid))
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl EmbeddedPg {
    fn command(&self, tool: &str) -> anyhow::Result<Command> {
        let mut cmd = Command::new(self.bin_dir.join(tool));
        if is_root() {
            let (uid, gid) = postgres_user().context(
                "running as root, and initdb refuses root: create a `postgres` user (Debian's postgresql package does) or run as another user",
            )?;
            cmd.uid(uid).gid(gid);
        }
        cmd.env_remove("PGDATA").env("LC_ALL", "C.UTF-8");
        Ok(cmd)
    }

    /// Starts the cluster in `data_dir` (creating it on first use), or reuses it if it is running.
    pub async fn start(data_dir: &Path, opts: PgOptions) -> anyhow::Result<Self> {
        let data_dir = std::path::absolute(data_dir)?;
        let bin_dir = find_bin_dir()?;
        let mut pg = EmbeddedPg {
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
        if is_root() {
            if let Some((uid, gid)) = postgres_user() {
                std::os::unix::fs::chown(&self.data_dir, Some(uid), Some(gid))?;
            }
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))?;

        if !self.data_dir.join("PG_VERSION").exists() {
            let out = self
                .command("initdb")?
                .args(["-D"])
                .arg(&self.data_dir)
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
                    "initdb failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }

        if let Some(port) = self.running_port() {
            self.port = port;
            return Ok(());
        }
        let _ = std::fs::remove_file(self.data_dir.join("postmaster.pid"));
        self.port = free_port()?;
        let mut server_opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c max_connections=400",
            self.port,
            self.data_dir.display()
        );
        if opts.fast {
            server_opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let out = self
            .command("pg_ctl")?
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-l"])
            .arg(self.data_dir.join("server.log"))
            .args(["-o", &server_opts, "-w", "-t", "60", "start"])
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            bail!(
                "pg_ctl start failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.started_here = true;
        Ok(())
    }

    /// The port of a live server already using this folder, if any.
    fn running_port(&self) -> Option<u16> {
        let pid_file = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
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
            .arg(&self.data_dir)
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
