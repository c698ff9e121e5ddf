//! The browser process: launching Chromium (its own process group, dying with the runner),
//! reading its DevTools address from stderr, shutting it down or killing it; the shared browser
//! of shared-browser mode and the isolated contexts its sessions live in.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::target::{
    CloseTargetParams, CreateTargetParams, GetTargetsParams, TargetId,
};
use chromiumoxide::error::CdpError;
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::{Browser, Page};
use futures::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::config::ChromiumConfig;
use super::events::EventSink;
use crate::driver::proxy::Proxy;
use crate::driver::DriverError;
use crate::error_code::ErrorCode;

/// The shared browser, launched on first use and again after it died.
#[derive(Default)]
pub(super) struct SharedSlot {
    browser: tokio::sync::Mutex<Option<Arc<BrowserProcess>>>,
}

impl Drop for SharedSlot {
    fn drop(&mut self) {
        // The driver is gone: so is its browser (its sessions hold it only while they run).
        if let Some(b) = self.browser.get_mut().take() {
            if !b.has_exited() {
                kill_group(b.pid);
            }
        }
    }
}

impl SharedSlot {
    /// The shared browser, started if there is none or the last one died.
    pub(super) async fn get(
        &self,
        config: &ChromiumConfig,
        dir: &Path,
    ) -> Result<Arc<BrowserProcess>, DriverError> {
        let mut slot = self.browser.lock().await;
        if let Some(b) = slot.take() {
            if !b.is_dead() {
                *slot = Some(b.clone());
                return Ok(b);
            }
            // Its DevTools connection is gone but the process may live on: no leftovers.
            kill_group(b.pid);
        }
        // Its own crash is reported to each session through `dead`; this sink reaches no one.
        let (tx, _) = mpsc::channel(1);
        let started = std::time::Instant::now();
        let b = BrowserProcess::launch(config, dir, None, Arc::new(EventSink::new(tx))).await?;
        if let Ok(Ok(targets)) = tokio::time::timeout(
            config.cdp_timeout,
            b.browser.execute(GetTargetsParams::default()),
        )
        .await
        {
            *b.initial_tabs.lock().unwrap_or_else(|p| p.into_inner()) = targets
                .result
                .target_infos
                .iter()
                .filter(|t| t.r#type == "page")
                .map(|t| t.target_id.clone())
                .collect();
        }
        let b = Arc::new(b);
        tracing::info!(
            pid = b.pid,
            ms = started.elapsed().as_millis() as u64,
            "shared browser launched"
        );
        *slot = Some(b.clone());
        Ok(b)
    }
}

/// One Chromium process (its own process group) and its DevTools connection.
pub(super) struct BrowserProcess {
    pub(super) browser: Browser,
    pub(super) pid: u32,
    exited: watch::Receiver<bool>,
    /// Set once the process exited or its DevTools connection closed.
    pub(super) dead: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The blank tab(s) Chromium opened at start, closed once a session has its own page (each
    /// costs a renderer).
    initial_tabs: Mutex<Vec<TargetId>>,
}

/// What a session's page lives in.
pub(super) enum Owner {
    /// Its own browser, with the session's profile folder.
    Own(Box<BrowserProcess>),
    /// An isolated context of the shared browser.
    Shared {
        browser: Arc<BrowserProcess>,
        context: BrowserContextId,
    },
}

impl Owner {
    pub(super) fn process(&self) -> &BrowserProcess {
        match self {
            Owner::Own(b) => b,
            Owner::Shared { browser, .. } => browser,
        }
    }

    pub(super) async fn new_page(&self, timeout: Duration) -> Result<Page, DriverError> {
        match self {
            Owner::Own(b) => b.new_page(timeout).await,
            Owner::Shared { browser, context } => {
                let params = CreateTargetParams::builder()
                    .url("about:blank")
                    .browser_context_id(context.clone())
                    .build()
                    .map_err(|e| DriverError::transient(ErrorCode::BrowserStartFailed, e))?;
                match tokio::time::timeout(timeout, browser.browser.new_page(params)).await {
                    Ok(Ok(p)) => {
                        let initial = std::mem::take(
                            &mut *browser
                                .initial_tabs
                                .lock()
                                .unwrap_or_else(|p| p.into_inner()),
                        );
                        for t in initial {
                            let _ = tokio::time::timeout(
                                timeout,
                                browser.browser.execute(CloseTargetParams::new(t)),
                            )
                            .await;
                        }
                        Ok(p)
                    }
                    Ok(Err(e)) => Err(DriverError::transient(
                        ErrorCode::BrowserStartFailed,
                        format!("cannot open a tab in the context: {e}"),
                    )),
                    Err(_) => {
                        // Hung: see ChromiumDriver::launch.
                        kill_group(browser.pid);
                        Err(DriverError::transient(
                            ErrorCode::BrowserStartFailed,
                            "the shared browser did not open a tab in time; killed it",
                        ))
                    }
                }
            }
        }
    }

    /// Its own browser shut down, or the context disposed (its pages close with it).
    pub(super) async fn release(self, timeout: Duration) {
        match self {
            Owner::Own(b) => b.shutdown(timeout).await,
            Owner::Shared { browser, context } => {
                if !browser.is_dead() {
                    let _ = tokio::time::timeout(
                        timeout,
                        browser.browser.dispose_browser_context(context),
                    )
                    .await;
                }
            }
        }
    }
}

impl BrowserProcess {
    pub(super) async fn launch(
        config: &ChromiumConfig,
        profile_dir: &Path,
        proxy: Option<&Proxy>,
        sink: Arc<EventSink>,
    ) -> Result<Self, DriverError> {
        let start_failed = |m: String| DriverError::transient(ErrorCode::BrowserStartFailed, m);
        std::fs::create_dir_all(profile_dir).map_err(|e| {
            start_failed(format!(
                "cannot create profile dir {}: {e}",
                profile_dir.display()
            ))
        })?;
        // The profile is ours while we hold the session's lease; a lock left by a killed browser
        // (or by another host, after a restore) would make Chromium refuse it.
        for f in ["SingletonLock", "SingletonSocket", "SingletonCookie"] {
            let _ = std::fs::remove_file(profile_dir.join(f));
        }

        let mut cmd = tokio::process::Command::new(&config.chromium);
        cmd.args(config.args(profile_dir, proxy))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            // Its own group, so that close() can take every helper process down with it.
            .process_group(0)
            .kill_on_drop(true);
        // A runner killed outright (SIGKILL, OOM) cannot close its browsers: the kernel kills
        // each one with it, instead of leaving an orphan that holds memory and a live WhatsApp
        // page the session's next owner would compete with. (The signal follows the thread that
        // started the browser: a runtime worker, which lives as long as the runner.)
        crate::child::DieWithParent::die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| start_failed(format!("cannot run {}: {e}", config.chromium.display())))?;
        let pid = child.id().unwrap_or(0);
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();

        // Chromium prints its DevTools address on stderr once it listens.
        let ws_url = {
            let mut tail: Vec<String> = Vec::new();
            let read = async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        return Some(url.trim().to_string());
                    }
                    tail.push(line);
                    if tail.len() > 20 {
                        tail.remove(0);
                    }
                }
                None
            };
            match tokio::time::timeout(config.start_timeout, read).await {
                Ok(Some(url)) => url,
                Ok(None) => {
                    let _ = child.wait().await;
                    return Err(start_failed(format!(
                        "Chromium exited before listening: {}",
                        tail.join(" | ")
                    )));
                }
                Err(_) => {
                    kill_group(pid);
                    let _ = child.wait().await;
                    return Err(start_failed(format!(
                        "Chromium did not start within {:?}",
                        config.start_timeout
                    )));
                }
            }
        };

        // Keep reading stderr: a full pipe would block Chromium.
        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::trace!(target: "chromium", "{line}");
            }
        });

        // The process watcher owns the child: it reaps it (no zombie) and reports a death that
        // close() did not ask for.
        let (exited_tx, exited_rx) = watch::channel(false);
        let (dead_tx, dead_rx) = watch::channel(false);
        let dead_tx = Arc::new(dead_tx);
        let watcher = {
            let sink = sink.clone();
            let dead_tx = dead_tx.clone();
            tokio::spawn(async move {
                let status = child.wait().await;
                // Helpers (zygote, renderers) of a killed browser may linger; take them too.
                kill_group(pid);
                let _ = exited_tx.send(true);
                dead_tx.send_replace(true);
                let what = match status {
                    Ok(s) => format!("browser process exited ({s})"),
                    Err(e) => format!("browser process lost: {e}"),
                };
                sink.crashed(what).await;
            })
        };

        let handler_config = HandlerConfig {
            // Our own timeouts are the ones that should fire; chromiumoxide's is a backstop.
            request_timeout: config
                .start_timeout
                .max(config.send_timeout)
                .max(config.cdp_timeout)
                + Duration::from_secs(5),
            ..HandlerConfig::default()
        };
        let connected = tokio::time::timeout(
            config.cdp_timeout,
            Browser::connect_with_config(ws_url, handler_config),
        )
        .await;
        let (browser, mut handler) = match connected {
            Ok(Ok(pair)) => pair,
            other => {
                let msg = match other {
                    Ok(Err(e)) => format!("DevTools connection failed: {e}"),
                    _ => "DevTools connection timed out".to_string(),
                };
                sink.closing.store(true, Ordering::SeqCst);
                kill_group(pid);
                drain.abort();
                let _ = watcher.await;
                return Err(start_failed(msg));
            }
        };

        let handler_task = {
            let sink = sink.clone();
            tokio::spawn(async move {
                while let Some(item) = handler.next().await {
                    match item {
                        Ok(()) => {}
                        // The connection is gone (process killed, crashed, or closed).
                        Err(CdpError::Ws(e)) => {
                            tracing::debug!(error = %e, "DevTools connection ended");
                            break;
                        }
                        Err(e) => tracing::debug!(error = %e, "DevTools handler error"),
                    }
                }
                dead_tx.send_replace(true);
                sink.crashed("DevTools connection closed".into()).await;
            })
        };

        Ok(Self {
            browser,
            pid,
            exited: exited_rx,
            dead: dead_rx,
            tasks: vec![handler_task, drain, watcher],
            initial_tabs: Mutex::new(Vec::new()),
        })
    }

    async fn new_page(&self, timeout: Duration) -> Result<Page, DriverError> {
        match tokio::time::timeout(
            timeout,
            self.browser
                .new_page(CreateTargetParams::new("about:blank")),
        )
        .await
        {
            Ok(Ok(p)) => {
                self.close_other_tabs(&p, timeout).await;
                Ok(p)
            }
            Ok(Err(e)) => Err(DriverError::transient(
                ErrorCode::BrowserStartFailed,
                format!("cannot open a tab: {e}"),
            )),
            Err(_) => Err(DriverError::transient(
                ErrorCode::BrowserStartFailed,
                "opening a tab timed out",
            )),
        }
    }

    /// Chromium opens a blank tab at start; it would cost a renderer process per session.
    async fn close_other_tabs(&self, keep: &Page, timeout: Duration) {
        let Ok(Ok(targets)) =
            tokio::time::timeout(timeout, self.browser.execute(GetTargetsParams::default())).await
        else {
            return;
        };
        for t in &targets.result.target_infos {
            if t.r#type == "page" && t.target_id != *keep.target_id() {
                let _ = tokio::time::timeout(
                    timeout,
                    self.browser
                        .execute(CloseTargetParams::new(t.target_id.clone())),
                )
                .await;
            }
        }
    }

    pub(super) fn has_exited(&self) -> bool {
        *self.exited.borrow()
    }

    fn is_dead(&self) -> bool {
        *self.dead.borrow() || self.has_exited()
    }

    /// Asks Chromium to quit (so it flushes the profile: the login lives there), then kills the
    /// whole process group if it has not gone within `timeout`. Returns once the process is reaped.
    async fn shutdown(mut self, timeout: Duration) {
        if !self.has_exited() {
            let _ = tokio::time::timeout(timeout, self.browser.close()).await;
            let mut exited = self.exited.clone();
            if tokio::time::timeout(timeout, exited.wait_for(|e| *e))
                .await
                .is_err()
            {
                kill_group(self.pid);
                let _ = tokio::time::timeout(timeout, exited.wait_for(|e| *e)).await;
            }
        } else {
            // Crashed: the watcher may not have seen the exit yet; let it reap the leader.
            let mut exited = self.exited.clone();
            let _ = tokio::time::timeout(timeout, exited.wait_for(|e| *e)).await;
        }
        // Helpers (zygote, renderers, crash handler) outlive a killed leader for a moment; the
        // session is only closed once none of them is left.
        kill_group(self.pid);
        let deadline = tokio::time::Instant::now() + timeout;
        while group_has_live_members(self.pid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in &self.tasks {
            t.abort();
        }
        // The watcher has reaped the child; nothing is left for Browser's Drop to kill.
        self.tasks.clear();
    }
}

/// Any process of this group still running (zombies awaiting their reaper do not count)?
fn group_has_live_members(pgid: u32) -> bool {
    !group_live_members(pgid).is_empty()
}

/// Pids of the non-zombie processes in this process group.
fn group_live_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pgid = pgid.to_string();
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // `pid (comm) state ppid pgrp …`; comm may contain spaces or parentheses.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1);
            state != Some("Z") && pgrp == Some(pgid.as_str())
        })
        .collect()
}

/// Proportional set size of every process of this group, in bytes (Linux `smaps_rollup`).
/// `None` when /proc is unreadable.
pub(super) fn group_pss_bytes(pgid: u32) -> Option<u64> {
    let mut total = 0u64;
    for pid in group_live_members(pgid) {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let kb: u64 = rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        total += kb * 1024;
    }
    Some(total)
}

pub(super) fn kill_group(pid: u32) {
    if pid == 0 {
        return;
    }
    // SAFETY: plain syscall; a negative pid addresses the process group we created at spawn.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}
