//! The Chromium driver: one headless Chromium per session, driven over the DevTools protocol with
//! chromiumoxide (DESIGN.md §3).
//!
//! The page is driven only through the module surface real WhatsApp Web exposes, the same one
//! whatsapp-web.js 1.34 uses (`window.require('WAWeb…')`); there is no DOM scraping and no
//! back channel into the simulator. The injected functions live in `chromium/*.js`; each is sent
//! as the `functionDeclaration` of `Runtime.callFunctionOn` and every piece of user data travels
//! as one of its JSON arguments, never as source text.
//!
//! The page pushes to us through a CDP binding (`Runtime.addBinding` → `Runtime.bindingCalled`):
//! a QR rotation reaches the event channel as soon as the page's `change:ref` fires.
//!
//! "A browser" ([`BrowserProcess`]) and "a session's page" ([`ChromiumSession`]) are separate
//! types. By default each session has its own browser and profile folder, where Chromium keeps
//! the login. In shared-browser mode (`WA_BROWSER_MODE=shared`, DESIGN.md §7) one browser holds
//! every session of the runner, each in its own isolated browser context: contexts keep storage in
//! memory only, so the login is exported from the live page into the session's profile folder
//! (`export_storage.js`, before a close and before each save) and imported into a fresh context on
//! a placeholder document of the app's origin before the app loads (`import_storage.js`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::fetch::{
    DisableParams as FetchDisableParams, EnableParams as FetchEnableParams, EventRequestPaused,
    FulfillRequestParams, HeaderEntry, RequestPattern, RequestStage,
};
use chromiumoxide::cdp::browser_protocol::inspector::{
    EnableParams as InspectorEnableParams, EventTargetCrashed as EventInspectorTargetCrashed,
};
use chromiumoxide::cdp::browser_protocol::page::{
    AddScriptToEvaluateOnNewDocumentParams, EventLoadEventFired, NavigateParams,
};
use chromiumoxide::cdp::browser_protocol::target::{
    CloseTargetParams, CreateTargetParams, EventTargetCrashed, EventTargetDestroyed,
    GetTargetsParams,
};
use chromiumoxide::cdp::browser_protocol::target::{CreateBrowserContextParams, TargetId};
use chromiumoxide::cdp::js_protocol::runtime::{
    AddBindingParams, CallArgument, CallFunctionOnParams, EventBindingCalled,
};
use chromiumoxide::error::CdpError;
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::{Browser, Page};
use futures::StreamExt as _;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{
    Driver, DriverError, DriverEvent, IncomingMessage, MessageKind, OutgoingMessage, Sent, Session,
    SessionSpec, StartedSession,
};
use crate::error_code::ErrorCode;

/// The injected functions. Each file holds exactly one function expression.
const JS_WAIT_LOADED: &str = include_str!("chromium/wait_loaded.js");
const JS_INSTALL: &str = include_str!("chromium/install.js");
const JS_SEND: &str = include_str!("chromium/send.js");
const JS_NUMBER_EXISTS: &str = include_str!("chromium/number_exists.js");
const JS_FIND_MESSAGE: &str = include_str!("chromium/find_message.js");
const JS_INBOUND_SINCE: &str = include_str!("chromium/inbound_since.js");
const JS_LOGOUT: &str = include_str!("chromium/logout.js");
const JS_LIVENESS: &str = include_str!("chromium/liveness.js");
const JS_EXPORT_STORAGE: &str = include_str!("chromium/export_storage.js");
const JS_IMPORT_STORAGE: &str = include_str!("chromium/import_storage.js");
/// Shared-browser mode: run before the app's own scripts in every document of a context's page.
const JS_KEY_SHADOW: &str = include_str!("chromium/key_shadow.js");
/// Helpers for today's page (message keys, LID siblings, sends in flight), handed to the functions
/// below as their first argument (see `with_lib`).
const JS_LIB: &str = include_str!("chromium/lib.js");

/// `source` (a function whose first parameter is lib.js's result) as a function of the remaining
/// arguments, for `Runtime.callFunctionOn`.
fn with_lib(source: &str) -> String {
    format!(
        "function () {{ const lib = ({JS_LIB})(); \
         return ({source}).apply(null, [lib].concat(Array.prototype.slice.call(arguments))); }}"
    )
}

static FN_INSTALL: LazyLock<String> = LazyLock::new(|| with_lib(JS_INSTALL));
static FN_SEND: LazyLock<String> = LazyLock::new(|| with_lib(JS_SEND));
static FN_NUMBER_EXISTS: LazyLock<String> = LazyLock::new(|| with_lib(JS_NUMBER_EXISTS));
static FN_FIND_MESSAGE: LazyLock<String> = LazyLock::new(|| with_lib(JS_FIND_MESSAGE));
static FN_INBOUND_SINCE: LazyLock<String> = LazyLock::new(|| with_lib(JS_INBOUND_SINCE));

/// How long install waits for modules the page has not registered yet (today's page registers
/// them progressively, often 10–30 s after its loader: wa-js PR 3476) before it reports them as
/// missing.
const MODULE_PROBE_MAX: Duration = Duration::from_secs(30);

/// The export of a shared-browser session's storage, inside its profile folder.
const EXPORT_FILE: &str = "storage.json";

/// Name of the page → runner binding. Neutral on purpose: the page can see it.
const BINDING: &str = "__wa_outbox_push";

/// A current desktop Chrome: WhatsApp Web serves an "update your browser" page to old or unknown
/// agents, and headless Chromium's own agent says `HeadlessChrome`.
pub const DEFAULT_USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) \
    AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36";

/// Events buffered between the page and the runner; a slow runner back-pressures the page's
/// pushes rather than losing acks.
const EVENT_BUFFER: usize = 1024;

/// WhatsApp's limit on a text body or caption (characters).
const MAX_BODY_CHARS: usize = 65_536;

/// Everything the Chromium driver needs, taken from [`crate::config::Config`].
#[derive(Debug, Clone)]
pub struct ChromiumConfig {
    pub chromium: PathBuf,
    /// WhatsApp Web, or a `wa-outbox sim` URL.
    pub web_url: String,
    /// Any single DevTools call.
    pub cdp_timeout: Duration,
    /// Process start to WhatsApp Web's code loaded.
    pub start_timeout: Duration,
    /// One send, media upload included, until the page has it accepted by the server.
    pub send_timeout: Duration,
    pub user_agent: String,
    /// Appended to the fixed flags (e.g. `--disable-features=LocalNetworkAccessChecks`).
    pub extra_args: Vec<String>,
    /// Shared-browser mode: the one browser's user-data-dir. `None`: a browser per session.
    pub shared_dir: Option<PathBuf>,
}

impl ChromiumConfig {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            chromium: c.chromium.clone(),
            web_url: c.web_url.clone(),
            cdp_timeout: c.cdp_timeout,
            start_timeout: c.start_timeout,
            send_timeout: c.send_timeout,
            user_agent: DEFAULT_USER_AGENT.to_string(),
            extra_args: Vec::new(),
            shared_dir: c.shared_browser.then(|| c.data_dir.join("browser")),
        }
    }

    /// The Chromium command line (without the binary), DESIGN.md §3.
    pub fn args(&self, profile_dir: &Path) -> Vec<String> {
        let mut args: Vec<String> = [
            "--headless",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-quic",
            "--mute-audio",
            "--disable-extensions",
            "--disable-blink-features=AutomationControlled",
            // A hidden tab must keep its timers and socket running at full speed.
            "--disable-background-timer-throttling",
            "--disable-backgrounding-occluded-windows",
            "--disable-renderer-backgrounding",
            "--disable-breakpad",
            "--disable-crash-reporter",
            "--disable-default-apps",
            "--disable-hang-monitor",
            "--disable-features=Translate,MediaRouter,OptimizationHints",
            "--metrics-recording-only",
            "--password-store=basic",
            "--use-mock-keychain",
            "--hide-scrollbars",
            "--window-size=1280,900",
            // Loopback only, a free port; no --remote-allow-origins, so web pages cannot reach it.
            "--remote-debugging-port=0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if running_as_root() {
            // Chromium refuses to start as root with its sandbox on; containers usually run as root.
            args.push("--no-sandbox".into());
        }
        args.push(format!("--user-agent={}", self.user_agent));
        args.push(format!("--user-data-dir={}", profile_dir.display()));
        args.extend(self.extra_args.iter().cloned());
        args.push("about:blank".into());
        args
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Starts one Chromium per session, or one for all (shared-browser mode).
#[derive(Clone)]
pub struct ChromiumDriver {
    config: Arc<ChromiumConfig>,
    shared: Arc<SharedSlot>,
}

/// The shared browser, launched on first use and again after it died.
#[derive(Default)]
struct SharedSlot {
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

impl std::fmt::Debug for ChromiumDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChromiumDriver")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ChromiumDriver {
    pub fn new(config: ChromiumConfig) -> Self {
        Self {
            config: Arc::new(config),
            shared: Arc::default(),
        }
    }

    /// The shared browser, started if there is none or the last one died.
    async fn shared_browser(&self, dir: &Path) -> Result<Arc<BrowserProcess>, DriverError> {
        let mut slot = self.shared.browser.lock().await;
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
        let b = BrowserProcess::launch(&self.config, dir, Arc::new(EventSink::new(tx))).await?;
        if let Ok(Ok(targets)) = tokio::time::timeout(
            self.config.cdp_timeout,
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

    pub fn from_config(c: &crate::config::Config) -> Self {
        Self::new(ChromiumConfig::from_config(c))
    }

    pub fn config(&self) -> &ChromiumConfig {
        &self.config
    }

    /// Like [`Driver::start`], returning the concrete session (tests use its browser pid).
    pub async fn launch(
        &self,
        spec: SessionSpec,
    ) -> Result<(Arc<ChromiumSession>, mpsc::Receiver<DriverEvent>), DriverError> {
        check_login_format(self.config.shared_dir.is_some(), &spec.profile_dir)?;
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let sink = Arc::new(EventSink::new(tx));
        let started = std::time::Instant::now();
        let owner = match &self.config.shared_dir {
            None => Owner::Own(Box::new(
                BrowserProcess::launch(&self.config, &spec.profile_dir, sink.clone()).await?,
            )),
            Some(dir) => {
                let browser = self.shared_browser(dir).await?;
                let context = tokio::time::timeout(
                    self.config.cdp_timeout,
                    browser
                        .browser
                        .create_browser_context(CreateBrowserContextParams::default()),
                )
                .await
                .map_err(|_| {
                    // A shared browser that cannot even make a context is hung: kill it, so
                    // the next start launches a fresh one instead of waiting on it forever.
                    kill_group(browser.pid);
                    DriverError::transient(
                        ErrorCode::BrowserStartFailed,
                        "the shared browser did not create a context in time; killed it",
                    )
                })?
                .map_err(|e| {
                    DriverError::transient(
                        ErrorCode::BrowserStartFailed,
                        format!("cannot create a browser context: {e}"),
                    )
                })?;
                Owner::Shared { browser, context }
            }
        };
        tracing::debug!(
            session = %spec.session_id,
            ms = started.elapsed().as_millis() as u64,
            "browser ready"
        );
        match ChromiumSession::open(self.config.clone(), spec, owner, sink.clone()).await {
            Ok(session) => Ok((session, rx)),
            Err((e, owner)) => {
                // A failed start is reported by the error, not by a Crashed event.
                sink.closing.store(true, Ordering::SeqCst);
                owner.release(self.config.cdp_timeout).await;
                Err(e)
            }
        }
    }
}

/// A login stored in one browser mode is unreadable in the other (Chromium's own stores vs an
/// export of a context's storage): fail with auth_restore_failed instead of showing a new QR.
fn check_login_format(shared: bool, profile_dir: &Path) -> Result<(), DriverError> {
    let export = profile_dir
        .join(crate::auth_store::CONTEXT_EXPORT_DIR)
        .join(EXPORT_FILE)
        .exists();
    let chromium = ["Default/IndexedDB", "Default/Local Storage"]
        .iter()
        .any(|d| profile_dir.join(d).exists());
    let (saved_by, here) = match (shared, export, chromium) {
        (true, false, true) => ("per-session", "shared"),
        (false, true, false) => ("shared", "per-session"),
        _ => return Ok(()),
    };
    Err(DriverError::permanent(
        ErrorCode::AuthRestoreFailed,
        format!(
            "the stored login was saved with WA_BROWSER_MODE={saved_by} and this runner uses \
             {here}; every runner of a database must use the same mode"
        ),
    ))
}

#[async_trait]
impl Driver for ChromiumDriver {
    async fn start(&self, spec: SessionSpec) -> Result<StartedSession, DriverError> {
        let (session, events) = self.launch(spec).await?;
        Ok(StartedSession { session, events })
    }
}

// ---------------------------------------------------------------------------------------------
// Events

#[derive(Default)]
struct EventState {
    last_qr: Option<String>,
    connected: bool,
    logged_out: bool,
}

/// The sending half of a session's event channel, plus the de-duplication that makes the stream
/// easy to consume: the same QR twice, or two `LoggedOut` for one logout, reach the runner once;
/// `Crashed` is sent at most once and never after `close()`.
struct EventSink {
    tx: mpsc::Sender<DriverEvent>,
    closing: AtomicBool,
    crashed: AtomicBool,
    state: Mutex<EventState>,
}

impl EventSink {
    fn new(tx: mpsc::Sender<DriverEvent>) -> Self {
        Self {
            tx,
            closing: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            state: Mutex::new(EventState::default()),
        }
    }

    fn is_dead(&self) -> bool {
        self.closing.load(Ordering::SeqCst) || self.crashed.load(Ordering::SeqCst)
    }

    async fn emit(&self, ev: DriverEvent) {
        if self.is_dead() {
            return;
        }
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match &ev {
                DriverEvent::Qr { payload } => {
                    if st.last_qr.as_deref() == Some(payload.as_str()) {
                        return;
                    }
                    st.last_qr = Some(payload.clone());
                }
                DriverEvent::Connected { .. } => {
                    st.connected = true;
                    st.logged_out = false;
                    st.last_qr = None;
                }
                DriverEvent::Disconnected { .. } => st.connected = false,
                DriverEvent::LoggedOut { .. } => {
                    if st.logged_out {
                        return;
                    }
                    st.logged_out = true;
                    st.connected = false;
                }
                _ => {}
            }
        }
        // A dropped receiver means the runner is done with this session.
        let _ = self.tx.send(ev).await;
    }

    async fn crashed(&self, reason: String) {
        if self.closing.load(Ordering::SeqCst) || self.crashed.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::warn!(%reason, "browser session crashed");
        let _ = self.tx.send(DriverEvent::Crashed { reason }).await;
    }
}

/// What the injected `install.js` pushes through the binding.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PagePush {
    Qr {
        qr: String,
    },
    PairingCode {
        code: String,
    },
    Connected {
        phone: Option<String>,
        #[serde(rename = "pushName")]
        push_name: Option<String>,
    },
    Disconnected {
        reason: Option<String>,
    },
    LoggedOut {
        reason: Option<String>,
    },
    Ack {
        id: String,
        ack: i32,
    },
    Incoming(PageIncoming),
    /// A state the page never leaves by itself.
    Terminal {
        state: String,
    },
    Error {
        #[serde(rename = "where")]
        at: Option<String>,
        message: Option<String>,
    },
}

/// An incoming message as the page describes it (lib.js `incomingOf`): pushed live, and returned
/// by inbound_since.js.
#[derive(Debug, Deserialize)]
struct PageIncoming {
    id: String,
    from: Option<String>,
    #[serde(rename = "chatId")]
    chat_id: Option<String>,
    kind: Option<String>,
    body: Option<String>,
    t: Option<f64>,
    #[serde(default)]
    extra: serde_json::Value,
}

impl From<PageIncoming> for IncomingMessage {
    fn from(m: PageIncoming) -> Self {
        let chat_id = m.chat_id.unwrap_or_default();
        IncomingMessage {
            wa_message_id: m.id,
            from: m.from.unwrap_or_else(|| chat_id.clone()),
            chat_id,
            kind: m.kind.unwrap_or_else(|| "chat".into()),
            body: m.body,
            timestamp: m.t.unwrap_or(0.0) as i64,
            extra: m.extra,
        }
    }
}

/// The error code a terminal page state ends the session with.
pub fn terminal_state_code(state: &str) -> ErrorCode {
    match state {
        "CONFLICT" => ErrorCode::SessionConflict,
        "TOS_BLOCK" | "SMB_TOS_BLOCK" => ErrorCode::AccountBanned,
        "PROXYBLOCK" => ErrorCode::ProxyBlocked,
        _ => ErrorCode::WebVersionUnsupported,
    }
}

impl PagePush {
    fn into_event(self) -> Option<DriverEvent> {
        Some(match self {
            PagePush::Qr { qr } => DriverEvent::Qr { payload: qr },
            PagePush::PairingCode { code } => DriverEvent::PairingCode { code },
            PagePush::Connected { phone, push_name } => DriverEvent::Connected {
                phone: phone
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| c.is_ascii_digit())
                    .collect(),
                push_name: push_name.filter(|n| !n.is_empty()),
            },
            PagePush::Disconnected { reason } => DriverEvent::Disconnected {
                reason: reason.unwrap_or_else(|| "unknown".into()),
            },
            PagePush::LoggedOut { reason } => DriverEvent::LoggedOut {
                reason: reason.unwrap_or_else(|| "logout".into()),
            },
            PagePush::Ack { id, ack } => DriverEvent::Ack {
                wa_message_id: id,
                ack,
            },
            PagePush::Incoming(m) => DriverEvent::Incoming(m.into()),
            PagePush::Terminal { state } => DriverEvent::Failed {
                code: terminal_state_code(&state),
                reason: format!(
                    "WhatsApp Web is in state {state}, which it does not leave by itself"
                ),
            },
            PagePush::Error { at, message } => {
                tracing::warn!(
                    at = at.as_deref().unwrap_or("?"),
                    message = message.as_deref().unwrap_or(""),
                    "page reported an error"
                );
                return None;
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The browser

/// One Chromium process (its own process group) and its DevTools connection.
struct BrowserProcess {
    browser: Browser,
    pid: u32,
    exited: watch::Receiver<bool>,
    /// Set once the process exited or its DevTools connection closed.
    dead: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The blank tab(s) Chromium opened at start, closed once a session has its own page (each
    /// costs a renderer).
    initial_tabs: Mutex<Vec<TargetId>>,
}

/// What a session's page lives in.
enum Owner {
    /// Its own browser, with the session's profile folder.
    Own(Box<BrowserProcess>),
    /// An isolated context of the shared browser.
    Shared {
        browser: Arc<BrowserProcess>,
        context: BrowserContextId,
    },
}

impl Owner {
    fn process(&self) -> &BrowserProcess {
        match self {
            Owner::Own(b) => b,
            Owner::Shared { browser, .. } => browser,
        }
    }

    async fn new_page(&self, timeout: Duration) -> Result<Page, DriverError> {
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
    async fn release(self, timeout: Duration) {
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
    async fn launch(
        config: &ChromiumConfig,
        profile_dir: &Path,
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
        cmd.args(config.args(profile_dir))
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

    fn has_exited(&self) -> bool {
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

fn kill_group(pid: u32) {
    if pid == 0 {
        return;
    }
    // SAFETY: plain syscall; a negative pid addresses the process group we created at spawn.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

// ---------------------------------------------------------------------------------------------
// The page

/// One session's WhatsApp Web page.
pub struct ChromiumSession {
    session_id: String,
    config: Arc<ChromiumConfig>,
    page: Page,
    pid: u32,
    sink: Arc<EventSink>,
    /// In a browser context of the shared browser (its login lives in memory).
    shared: bool,
    profile_dir: PathBuf,
    owner: tokio::sync::Mutex<Option<Owner>>,
    event_task: Mutex<Option<JoinHandle<()>>>,
    send_lock: tokio::sync::Mutex<()>,
}

enum CallError {
    Timeout,
    /// The page's code threw.
    Js(String),
    /// The DevTools call itself failed (target gone, connection closed…).
    Cdp(String),
}

impl ChromiumSession {
    async fn open(
        config: Arc<ChromiumConfig>,
        spec: SessionSpec,
        owner: Owner,
        sink: Arc<EventSink>,
    ) -> Result<Arc<Self>, (DriverError, Owner)> {
        macro_rules! tryb {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Err((e, owner)),
                }
            };
        }
        let cdp = config.cdp_timeout;
        let shared = matches!(owner, Owner::Shared { .. });
        let page = owner.new_page(cdp).await;
        let page = tryb!(page);
        let target_id = page.target_id().clone();

        let listen_failed =
            |e: CdpError| DriverError::transient(ErrorCode::BrowserStartFailed, e.to_string());
        let bindings = tryb!(cdp_call(cdp, page.event_listener::<EventBindingCalled>())
            .await
            .and_then(|r| r.map_err(listen_failed)));
        let page_crashed = tryb!(cdp_call(
            cdp,
            page.event_listener::<EventInspectorTargetCrashed>()
        )
        .await
        .and_then(|r| r.map_err(listen_failed)));
        let loads = tryb!(cdp_call(cdp, page.event_listener::<EventLoadEventFired>())
            .await
            .and_then(|r| r.map_err(listen_failed)));
        let target_crashed = cdp_call(
            cdp,
            owner
                .process()
                .browser
                .event_listener::<EventTargetCrashed>(),
        )
        .await
        .and_then(|r| r.map_err(listen_failed));
        let target_crashed = tryb!(target_crashed);
        let target_destroyed = cdp_call(
            cdp,
            owner
                .process()
                .browser
                .event_listener::<EventTargetDestroyed>(),
        )
        .await
        .and_then(|r| r.map_err(listen_failed));
        let target_destroyed = tryb!(target_destroyed);

        tryb!(cdp_call(cdp, page.execute(AddBindingParams::new(BINDING)))
            .await
            .and_then(|r| r.map(|_| ()).map_err(listen_failed)));
        tryb!(
            cdp_call(cdp, page.execute(InspectorEnableParams::default()))
                .await
                .and_then(|r| r.map(|_| ()).map_err(listen_failed))
        );

        let pid = owner.process().pid;
        let mut dead = owner.process().dead.clone();
        let session = Arc::new(Self {
            session_id: spec.session_id.clone(),
            config: config.clone(),
            page: page.clone(),
            pid,
            sink: sink.clone(),
            shared,
            profile_dir: spec.profile_dir.clone(),
            owner: tokio::sync::Mutex::new(None),
            event_task: Mutex::new(None),
            send_lock: tokio::sync::Mutex::new(()),
        });

        let pair_phone = spec.pair_phone.clone();
        let event_task = {
            let page = page.clone();
            let sink = sink.clone();
            let config = config.clone();
            tokio::spawn(async move {
                let mut bindings = bindings.fuse();
                let mut page_crashed = page_crashed.fuse();
                let mut loads = loads.fuse();
                let mut target_crashed = target_crashed.fuse();
                let mut target_destroyed = target_destroyed.fuse();
                let mut watch_dead = true;
                loop {
                    tokio::select! {
                        // The browser went (the shared one is everyone's).
                        r = dead.changed(), if watch_dead => {
                            let gone = *dead.borrow();
                            if r.is_err() || gone {
                                watch_dead = false;
                            }
                            if gone {
                                sink.crashed("browser process exited".into()).await;
                            }
                        }
                        Some(ev) = bindings.next() => {
                            if ev.name != BINDING {
                                continue;
                            }
                            match serde_json::from_str::<PagePush>(&ev.payload) {
                                Ok(push) => {
                                    if let Some(ev) = push.into_event() {
                                        sink.emit(ev).await;
                                    }
                                }
                                // Neither the payload nor serde's message (which may quote
                                // it) is logged: it may carry a QR.
                                Err(e) => tracing::warn!(
                                    category = ?e.classify(),
                                    "unreadable page push"
                                ),
                            }
                        }
                        Some(_) = loads.next() => {
                            // A reload (WhatsApp reloads itself, e.g. after logout) drops our
                            // hooks; put them back on the new document.
                            let page = page.clone();
                            let config = config.clone();
                            let pair_phone = pair_phone.clone();
                            let sink = sink.clone();
                            tokio::spawn(async move {
                                match install(&page, &config, pair_phone.as_deref()).await {
                                    Ok(()) => {}
                                    // The new document lacks what the driver needs: say so
                                    // instead of running a session that cannot work.
                                    Err(DriverError::Permanent { code, message }) => {
                                        sink.emit(DriverEvent::Failed { code, reason: message }).await;
                                    }
                                    Err(e) => {
                                        tracing::warn!(error = %e, "re-installing page hooks failed");
                                    }
                                }
                            });
                        }
                        Some(_) = page_crashed.next() => {
                            sink.crashed("page crashed (Inspector.targetCrashed)".into()).await;
                        }
                        Some(ev) = target_crashed.next() => {
                            if ev.target_id == target_id {
                                sink.crashed(format!("page crashed ({})", ev.status)).await;
                            }
                        }
                        Some(ev) = target_destroyed.next() => {
                            if ev.target_id == target_id {
                                sink.crashed("page closed".into()).await;
                            }
                        }
                        else => break,
                    }
                }
            })
        };
        *session.event_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(event_task);

        // A shared-browser context starts empty: put the stored login back before the app runs.
        // The key shadow goes first, so that the restore and every later document of this page
        // (reloads included) record the key material of the non-extractable CryptoKeys the login
        // holds, which the export needs (key_shadow.js).
        if shared {
            let shadow =
                AddScriptToEvaluateOnNewDocumentParams::new(format!("({JS_KEY_SHADOW})();"));
            tryb!(cdp_call(cdp, page.execute(shadow))
                .await
                .and_then(|r| r.map(|_| ()).map_err(listen_failed)));
            tryb!(restore_storage(&page, &config, &spec.profile_dir).await);
        }

        // Navigate and wait for WhatsApp Web's code.
        let load_failed = |m: String| DriverError::transient(ErrorCode::PageLoadFailed, m);
        let nav = NavigateParams::builder()
            .url(config.web_url.clone())
            .build()
            .map_err(load_failed);
        let nav = tryb!(nav);
        match tokio::time::timeout(config.start_timeout, page.goto(nav)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err((load_failed(format!("navigation failed: {e}")), owner)),
            Err(_) => {
                return Err((
                    load_failed(format!(
                        "navigation did not finish within {:?}",
                        config.start_timeout
                    )),
                    owner,
                ))
            }
        }
        tryb!(install(&page, &config, spec.pair_phone.as_deref()).await);
        *session.owner.lock().await = Some(owner);
        tracing::info!(
            session = %spec.session_id,
            pid,
            "browser session started (page loaded, hooks installed)"
        );
        Ok(session)
    }

    /// The Chromium main process id (tests kill it to simulate a crash).
    pub fn browser_pid(&self) -> u32 {
        self.pid
    }

    /// Proportional set size of every process of this session's browser, in bytes (Linux
    /// `smaps_rollup`), for the memory figures of DESIGN.md §7. `None` when /proc is unreadable.
    pub fn browser_pss_bytes(&self) -> Option<u64> {
        let mut total = 0u64;
        for pid in group_live_members(self.pid) {
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

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Tests only: runs `function_declaration` in the session's page with `args` as its JSON
    /// arguments and returns its JSON result (the error text, first line, when it throws).
    #[doc(hidden)]
    pub async fn evaluate_for_test(
        &self,
        function_declaration: &str,
        args: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        self.call(function_declaration, args, self.config.cdp_timeout)
            .await
            .map_err(|e| match e {
                CallError::Timeout => "timed out".to_string(),
                CallError::Js(m) | CallError::Cdp(m) => m,
            })
    }

    fn dead_error(&self) -> Option<DriverError> {
        if self.sink.closing.load(Ordering::SeqCst) {
            Some(DriverError::transient(
                ErrorCode::BrowserCrashed,
                "session is closed",
            ))
        } else if self.sink.crashed.load(Ordering::SeqCst) {
            Some(DriverError::transient(
                ErrorCode::BrowserCrashed,
                "browser crashed",
            ))
        } else {
            None
        }
    }

    async fn call(
        &self,
        source: &str,
        args: Vec<serde_json::Value>,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallError> {
        call_function(&self.page, source, args, timeout).await
    }

    /// After a call failed: is the page still answering, and is WhatsApp Web still in it? A hung
    /// renderer or a page whose app has vanished is reported as a crash, so the runner restarts
    /// the session instead of retrying into a dead page.
    async fn check_alive(&self) {
        let grace = self.config.cdp_timeout / 2;
        match self
            .call(
                JS_LIVENESS,
                vec![serde_json::json!(grace.as_millis() as u64)],
                self.config.cdp_timeout,
            )
            .await
        {
            Ok(serde_json::Value::Bool(true)) => {}
            Ok(_) => {
                self.sink
                    .crashed("WhatsApp Web is gone from the page".into())
                    .await
            }
            Err(CallError::Cdp(_)) => {
                // The page is navigating; its load event re-installs the hooks.
            }
            Err(_) => {
                self.sink
                    .crashed("page unresponsive (a DevTools call timed out)".into())
                    .await
            }
        }
    }

    /// Shared-browser mode: writes the live page's storage (the login) into the profile folder,
    /// replacing the previous export only once the new one is complete.
    async fn export_storage(&self) -> Result<(), DriverError> {
        let failed = |m: String| DriverError::transient(ErrorCode::BrowserCrashed, m);
        let v = match self
            .call(JS_EXPORT_STORAGE, vec![], self.config.cdp_timeout)
            .await
        {
            Ok(v) => v,
            Err(CallError::Timeout) => return Err(failed("exporting the login timed out".into())),
            Err(CallError::Js(m) | CallError::Cdp(m)) => {
                return Err(failed(format!("exporting the login: {m}")))
            }
        };
        let dir = self.profile_dir.join(crate::auth_store::CONTEXT_EXPORT_DIR);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!("{EXPORT_FILE}.tmp"));
            std::fs::write(&tmp, serde_json::to_vec(&v)?)?;
            std::fs::rename(&tmp, dir.join(EXPORT_FILE))
        };
        write().map_err(|e| failed(format!("writing the login export: {e}")))
    }

    async fn map_call_error(&self, e: CallError, on_timeout: ErrorCode, what: &str) -> DriverError {
        if let Some(dead) = self.dead_error() {
            return dead;
        }
        match e {
            CallError::Timeout => {
                self.check_alive().await;
                DriverError::transient(on_timeout, format!("{what} timed out"))
            }
            CallError::Js(m) => {
                self.check_alive().await;
                if let Some(dead) = self.dead_error() {
                    return dead;
                }
                DriverError::transient(ErrorCode::SendFailed, format!("{what}: {m}"))
            }
            CallError::Cdp(m) => {
                DriverError::transient(ErrorCode::BrowserCrashed, format!("{what}: {m}"))
            }
        }
    }
}

async fn cdp_call<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, DriverError> {
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        DriverError::transient(ErrorCode::BrowserStartFailed, "DevTools call timed out")
    })
}

async fn call_function(
    page: &Page,
    source: &str,
    args: Vec<serde_json::Value>,
    timeout: Duration,
) -> Result<serde_json::Value, CallError> {
    let mut builder = CallFunctionOnParams::builder()
        .function_declaration(source)
        .await_promise(true)
        .return_by_value(true);
    for a in args {
        builder = builder.argument(CallArgument::builder().value(a).build());
    }
    let params = builder.build().map_err(CallError::Cdp)?;
    match tokio::time::timeout(timeout, page.evaluate_function(params)).await {
        Err(_) => Err(CallError::Timeout),
        Ok(Err(CdpError::JavascriptException(ex))) => {
            let text = ex
                .exception
                .as_ref()
                .and_then(|o| o.description.clone())
                .unwrap_or_else(|| ex.text.clone());
            // First line only: a stack trace adds nothing for the error column.
            Err(CallError::Js(
                text.lines().next().unwrap_or_default().to_string(),
            ))
        }
        Ok(Err(CdpError::Timeout)) => Err(CallError::Timeout),
        Ok(Err(e)) => Err(CallError::Cdp(e.to_string())),
        Ok(Ok(r)) => Ok(r.value().cloned().unwrap_or(serde_json::Value::Null)),
    }
}

/// Shared-browser mode, before the app loads: if the session's profile folder holds an export of
/// its storage, a placeholder document of the app's origin is served into the fresh context
/// (Fetch interception; the app's own code never runs there) and the export is written into its
/// IndexedDB and localStorage. A corrupt export fails the start with auth_restore_failed rather
/// than showing a new QR.
async fn restore_storage(
    page: &Page,
    config: &ChromiumConfig,
    profile_dir: &Path,
) -> Result<(), DriverError> {
    let file = profile_dir
        .join(crate::auth_store::CONTEXT_EXPORT_DIR)
        .join(EXPORT_FILE);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(DriverError::permanent(
                ErrorCode::AuthRestoreFailed,
                format!("cannot read the stored login: {e}"),
            ))
        }
    };
    let data: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        DriverError::permanent(
            ErrorCode::AuthRestoreFailed,
            format!(
                "the stored login is not a storage export ({:?})",
                e.classify()
            ),
        )
    })?;
    let failed = |m: String| DriverError::transient(ErrorCode::PageLoadFailed, m);
    let cdp = config.cdp_timeout;
    let origin = reqwest::Url::parse(&config.web_url)
        .map_err(|e| failed(format!("WA_WEB_URL: {e}")))?
        .origin()
        .ascii_serialization();
    let placeholder = format!("{origin}/__wa_outbox_restore");
    let mut paused = cdp_call(cdp, page.event_listener::<EventRequestPaused>())
        .await?
        .map_err(|e| failed(e.to_string()))?;
    let pattern = RequestPattern::builder()
        .url_pattern(placeholder.clone())
        .request_stage(RequestStage::Request)
        .build();
    cdp_call(
        cdp,
        page.execute(FetchEnableParams::builder().pattern(pattern).build()),
    )
    .await?
    .map_err(|e| failed(format!("Fetch.enable: {e}")))?;
    let serve = {
        let page = page.clone();
        tokio::spawn(async move {
            let Some(ev) = paused.next().await else {
                return;
            };
            let body = base64::engine::general_purpose::STANDARD
                .encode("<!doctype html><title>wa-outbox: restoring a login</title>");
            let fulfil = FulfillRequestParams::builder()
                .request_id(ev.request_id.clone())
                .response_code(200)
                .response_header(HeaderEntry::new("Content-Type", "text/html; charset=utf-8"))
                .body(body)
                .build();
            if let Ok(f) = fulfil {
                let _ = tokio::time::timeout(cdp, page.execute(f)).await;
            }
        })
    };
    let nav = NavigateParams::builder()
        .url(placeholder)
        .build()
        .map_err(failed)?;
    let went = tokio::time::timeout(config.start_timeout, page.goto(nav)).await;
    serve.abort();
    let _ = tokio::time::timeout(cdp, page.execute(FetchDisableParams::default())).await;
    match went {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(failed(format!("placeholder page: {e}"))),
        Err(_) => return Err(failed("placeholder page timed out".into())),
    }
    match call_function(page, JS_IMPORT_STORAGE, vec![data], config.start_timeout).await {
        Ok(_) => Ok(()),
        Err(CallError::Js(m)) => Err(DriverError::permanent(
            ErrorCode::AuthRestoreFailed,
            format!("the stored login could not be imported: {m}"),
        )),
        Err(CallError::Timeout) => Err(failed("importing the stored login timed out".into())),
        Err(CallError::Cdp(m)) => Err(failed(format!("importing the stored login: {m}"))),
    }
}

/// Waits for WhatsApp Web's code, then installs the hooks (idempotent per document).
async fn install(
    page: &Page,
    config: &ChromiumConfig,
    pair_phone: Option<&str>,
) -> Result<(), DriverError> {
    let ms = config.start_timeout.as_millis() as u64;
    match call_function(
        page,
        JS_WAIT_LOADED,
        vec![serde_json::json!(ms)],
        config.start_timeout + Duration::from_secs(1),
    )
    .await
    {
        Ok(version) => tracing::debug!(%version, "WhatsApp Web loaded"),
        Err(CallError::Timeout) => {
            return Err(DriverError::transient(
                ErrorCode::PageLoadFailed,
                format!(
                    "WhatsApp Web did not load within {:?}",
                    config.start_timeout
                ),
            ))
        }
        Err(CallError::Js(m) | CallError::Cdp(m)) => {
            return Err(DriverError::transient(ErrorCode::PageLoadFailed, m))
        }
    }
    let pair = pair_phone.map(|p| p.chars().filter(|c| c.is_ascii_digit()).collect::<String>());
    let probe = MODULE_PROBE_MAX.min(config.start_timeout);
    let r = call_function(
        page,
        &FN_INSTALL,
        vec![
            serde_json::json!(BINDING),
            serde_json::json!(pair),
            serde_json::json!(probe.as_millis() as u64),
        ],
        probe + config.cdp_timeout,
    )
    .await
    .map_err(|e| {
        let m = match e {
            CallError::Timeout => "installing page hooks timed out".to_string(),
            CallError::Js(m) | CallError::Cdp(m) => format!("installing page hooks failed: {m}"),
        };
        DriverError::transient(ErrorCode::PageLoadFailed, m)
    })?;
    if let Some(missing) = r.get("missing").and_then(|m| m.as_array()) {
        let names: Vec<&str> = missing.iter().filter_map(|m| m.as_str()).collect();
        return Err(DriverError::permanent(
            ErrorCode::WebVersionUnsupported,
            format!(
                "this WhatsApp Web build lacks what the driver uses: {}",
                names.join(", ")
            ),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct SendResult {
    error: Option<String>,
    id: Option<String>,
    chat: Option<String>,
    ack: Option<i32>,
    result: Option<String>,
    #[serde(default)]
    existed: bool,
}

#[async_trait]
impl Session for ChromiumSession {
    async fn resolve_chat(&self, chat_id: &str) -> Result<Option<String>, DriverError> {
        if chat_id.ends_with("@g.us") {
            return Ok(Some(chat_id.to_string()));
        }
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        match self
            .call(
                &FN_NUMBER_EXISTS,
                vec![serde_json::json!(chat_id)],
                self.config.send_timeout,
            )
            .await
        {
            Ok(v) => Ok(v.as_str().map(str::to_string)),
            Err(e) => Err(self
                .map_call_error(e, ErrorCode::SendTimeout, "checking the number")
                .await),
        }
    }

    async fn send(&self, msg: &OutgoingMessage) -> Result<Sent, DriverError> {
        if let Some(body) = &msg.body {
            if body.chars().count() > MAX_BODY_CHARS {
                return Err(DriverError::permanent(
                    ErrorCode::BodyTooLong,
                    format!("body longer than {MAX_BODY_CHARS} characters"),
                ));
            }
        }
        let media = match (msg.kind, &msg.media) {
            (MessageKind::Text, _) => {
                if msg.body.as_deref().unwrap_or("").is_empty() {
                    return Err(DriverError::permanent(
                        ErrorCode::EmptyMessage,
                        "a text message needs a body",
                    ));
                }
                serde_json::Value::Null
            }
            (_, None) => {
                return Err(DriverError::permanent(
                    ErrorCode::MediaMissing,
                    format!("a {} message needs media", msg.kind.as_str()),
                ))
            }
            (_, Some(m)) => serde_json::json!({
                "data": base64::engine::general_purpose::STANDARD.encode(&m.data),
                "mimetype": m.mime,
                "filename": m.filename,
            }),
        };
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        // One send at a time per page: the page's send path is not built for interleaving.
        let _one = self.send_lock.lock().await;
        let args = vec![
            serde_json::json!(msg.chat_id),
            serde_json::json!(msg.id),
            serde_json::json!(msg.kind.as_str()),
            serde_json::json!(msg.body),
            media,
            msg.options.clone(),
        ];
        let v = match self.call(&FN_SEND, args, self.config.send_timeout).await {
            Ok(v) => v,
            Err(e) => {
                return Err(self
                    .map_call_error(e, ErrorCode::SendTimeout, "sending")
                    .await)
            }
        };
        let r: SendResult = serde_json::from_value(v).map_err(|e| {
            DriverError::transient(
                ErrorCode::SendFailed,
                format!("unexpected send result: {e}"),
            )
        })?;
        if let Some(err) = r.error {
            return Err(DriverError::permanent(
                ErrorCode::InvalidRecipient,
                format!("the page has no chat for {}: {err}", msg.chat_id),
            ));
        }
        if let Some(id) = &r.id {
            if *id != msg.wa_message_id {
                // Today's page files one-to-one messages under the contact's LID, or under the
                // chat's sibling wid: the row keeps the key the page uses.
                tracing::debug!(
                    expected = %msg.wa_message_id,
                    page = %id,
                    "the page keys the message differently"
                );
            }
        }
        let refused = match r.result.as_deref() {
            Some(res) if res != "OK" => Some(format!("the page refused the send: {res}")),
            _ if r.ack.unwrap_or(0) < 0 => {
                Some("the page marked the message as failed (ack -1)".to_string())
            }
            _ => None,
        };
        if let Some(why) = refused {
            // A refusal is normal (server said no), unless the app itself is gone.
            self.check_alive().await;
            return Err(self
                .dead_error()
                .unwrap_or_else(|| DriverError::refused(ErrorCode::SendFailed, why)));
        }
        if r.existed {
            tracing::info!(id = %msg.wa_message_id, "message already in the page; not sent again");
        }
        // A key we cannot read back is still sent; the row keeps the one it has.
        let wa_message_id =
            r.id.filter(|id| crate::dispatcher::bare_id(id) == msg.id)
                .unwrap_or_else(|| msg.wa_message_id.clone());
        Ok(Sent {
            wa_message_id,
            chat_id: r.chat.unwrap_or_else(|| msg.chat_id.clone()),
        })
    }

    async fn find_message(
        &self,
        chat_id: &str,
        wa_message_id: &str,
    ) -> Result<Option<i32>, DriverError> {
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        match self
            .call(
                &FN_FIND_MESSAGE,
                vec![serde_json::json!(chat_id), serde_json::json!(wa_message_id)],
                self.config.cdp_timeout,
            )
            .await
        {
            Ok(v) => Ok(v.as_i64().map(|a| a as i32)),
            Err(e) => Err(self
                .map_call_error(e, ErrorCode::SendTimeout, "looking up the message")
                .await),
        }
    }

    async fn inbound_since(
        &self,
        since: i64,
        limit: usize,
    ) -> Result<Vec<IncomingMessage>, DriverError> {
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        // The page waits for its offline delivery to end within half the call's own bound, so
        // that it answers (or says it could not) before the call times out.
        let wait_ms = (self.config.cdp_timeout / 2).as_millis() as u64;
        let v = match self
            .call(
                &FN_INBOUND_SINCE,
                vec![
                    serde_json::json!(since),
                    serde_json::json!(limit),
                    serde_json::json!(wait_ms),
                ],
                self.config.cdp_timeout,
            )
            .await
        {
            Ok(v) => v,
            Err(e) => {
                return Err(self
                    .map_call_error(
                        e,
                        ErrorCode::BrowserCrashed,
                        "reading the incoming messages",
                    )
                    .await)
            }
        };
        let page: Vec<PageIncoming> = serde_json::from_value(v).map_err(|e| {
            DriverError::transient(
                ErrorCode::SendFailed,
                format!("reading the incoming messages: unexpected answer: {e}"),
            )
        })?;
        let mut out: Vec<IncomingMessage> = page.into_iter().map(Into::into).collect();
        out.truncate(limit);
        Ok(out)
    }

    async fn logout(&self) -> Result<(), DriverError> {
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        match self.call(JS_LOGOUT, vec![], self.config.cdp_timeout).await {
            // Today's page logs out by navigating to ?post_logout=1, which tears down the
            // context the call ran in: the logout went through.
            Ok(_) | Err(CallError::Cdp(_)) => {
                self.sink
                    .emit(DriverEvent::LoggedOut {
                        reason: "logout requested".into(),
                    })
                    .await;
                Ok(())
            }
            Err(e) => Err(self
                .map_call_error(e, ErrorCode::SendTimeout, "logging out")
                .await),
        }
    }

    fn process_id(&self) -> Option<u32> {
        Some(self.pid)
    }

    async fn persist(&self) -> Result<(), DriverError> {
        if !self.shared {
            return Ok(());
        }
        if let Some(dead) = self.dead_error() {
            return Err(dead);
        }
        self.export_storage().await
    }

    async fn close(&self) -> Result<(), DriverError> {
        // A context's storage dies with it: export the login while the page still runs.
        if self.shared && self.dead_error().is_none() {
            if let Err(e) = self.export_storage().await {
                tracing::warn!(session = %self.session_id, error = %e, "could not export the login before closing");
            }
        }
        self.sink.closing.store(true, Ordering::SeqCst);
        let owner = self.owner.lock().await.take();
        if let Some(owner) = owner {
            owner.release(self.config.cdp_timeout).await;
            tracing::info!(session = %self.session_id, "browser session closed");
        }
        if let Some(t) = self
            .event_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.abort();
        }
        Ok(())
    }
}

impl Drop for ChromiumSession {
    fn drop(&mut self) {
        // Not closed: make sure no browser (or context) outlives its session (kill_on_drop
        // reaps the leader).
        if let Ok(mut b) = self.owner.try_lock() {
            match b.take() {
                Some(Owner::Own(b)) if !b.has_exited() => kill_group(b.pid),
                Some(owner @ Owner::Shared { .. }) => {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        let timeout = self.config.cdp_timeout;
                        rt.spawn(owner.release(timeout));
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_design() {
        let c = ChromiumConfig::from_config(&crate::config::Config::defaults());
        let args = c.args(Path::new("/tmp/p"));
        for f in [
            "--headless",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--mute-audio",
            "--disable-extensions",
            "--disable-blink-features=AutomationControlled",
            "--user-data-dir=/tmp/p",
        ] {
            assert!(args.iter().any(|a| a == f), "{f} missing");
        }
        assert!(args
            .iter()
            .any(|a| a.starts_with("--user-agent=Mozilla/5.0")));
        assert_eq!(args.iter().any(|a| a == "--no-sandbox"), running_as_root());
    }

    #[test]
    fn a_login_stored_in_the_other_browser_mode_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        // Nothing stored yet: either mode may start.
        assert!(check_login_format(true, p).is_ok() && check_login_format(false, p).is_ok());
        std::fs::create_dir_all(p.join("Default/IndexedDB")).unwrap();
        assert!(check_login_format(false, p).is_ok());
        let err = check_login_format(true, p).unwrap_err();
        assert_eq!(err.code(), ErrorCode::AuthRestoreFailed);
        assert!(!err.is_transient(), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join(crate::auth_store::CONTEXT_EXPORT_DIR)).unwrap();
        std::fs::write(
            p.join(crate::auth_store::CONTEXT_EXPORT_DIR)
                .join(EXPORT_FILE),
            "{}",
        )
        .unwrap();
        assert!(check_login_format(true, p).is_ok());
        assert_eq!(
            check_login_format(false, p).unwrap_err().code(),
            ErrorCode::AuthRestoreFailed
        );
    }

    #[test]
    fn page_pushes_map_to_events() {
        let ev = |s: &str| serde_json::from_str::<PagePush>(s).unwrap().into_event();
        assert_eq!(
            ev(r#"{"type":"connected","phone":"15551234567","pushName":"Bob"}"#),
            Some(DriverEvent::Connected {
                phone: "15551234567".into(),
                push_name: Some("Bob".into())
            })
        );
        assert_eq!(
            ev(r#"{"type":"ack","id":"true_1@c.us_X","ack":3}"#),
            Some(DriverEvent::Ack {
                wa_message_id: "true_1@c.us_X".into(),
                ack: 3
            })
        );
        assert_eq!(ev(r#"{"type":"error","where":"qr","message":"x"}"#), None);
        assert!(serde_json::from_str::<PagePush>(r#"{"type":"bogus"}"#).is_err());
    }

    #[test]
    fn injected_functions_are_single_function_expressions() {
        for src in [
            JS_LIB,
            JS_WAIT_LOADED,
            JS_INSTALL,
            JS_SEND,
            JS_NUMBER_EXISTS,
            JS_FIND_MESSAGE,
            JS_INBOUND_SINCE,
            JS_LOGOUT,
            JS_LIVENESS,
            JS_EXPORT_STORAGE,
            JS_IMPORT_STORAGE,
        ] {
            let code: String = src
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let code = code.trim();
            assert!(
                code.starts_with("function") || code.starts_with("async function"),
                "{}",
                &code[..40.min(code.len())]
            );
            assert!(code.ends_with('}'));
        }
    }

    #[tokio::test]
    async fn sink_deduplicates_and_stops_after_crash() {
        let (tx, mut rx) = mpsc::channel(16);
        let sink = EventSink::new(tx);
        let qr = || DriverEvent::Qr {
            payload: "a,b,c,d,e".into(),
        };
        sink.emit(qr()).await;
        sink.emit(qr()).await;
        sink.emit(DriverEvent::LoggedOut { reason: "x".into() })
            .await;
        sink.emit(DriverEvent::LoggedOut { reason: "y".into() })
            .await;
        sink.crashed("one".into()).await;
        sink.crashed("two".into()).await;
        sink.emit(qr()).await;
        drop(sink);
        let mut got = vec![];
        while let Some(e) = rx.recv().await {
            got.push(e);
        }
        assert_eq!(
            got,
            vec![
                qr(),
                DriverEvent::LoggedOut { reason: "x".into() },
                DriverEvent::Crashed {
                    reason: "one".into()
                }
            ]
        );
    }
}
