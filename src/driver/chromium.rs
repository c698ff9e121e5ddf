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
//!
//! The parts: `config` (settings and the command line), `process` (the browser process and the
//! shared browser), `session` (a session's page), `events` (page → runner events), `scripts` (the
//! injected functions and calling them), `storage` (shared-browser mode's login export/import).

mod config;
mod events;
mod media_in;
mod process;
mod proxy_auth;
mod scripts;
mod session;
mod storage;

pub use config::{ChromiumConfig, DEFAULT_USER_AGENT};
pub use events::terminal_state_code;
pub use session::ChromiumSession;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use chromiumoxide::cdp::browser_protocol::target::CreateBrowserContextParams;
use tokio::sync::mpsc;

use super::proxy::BYPASS_NONE;
use super::{Driver, DriverError, DriverEvent, SessionSpec, StartedSession};
use crate::error_code::ErrorCode;
use events::EventSink;
use process::{kill_group, BrowserProcess, Owner, SharedSlot};
use storage::check_login_format;

/// Events buffered between the page and the runner; a slow runner back-pressures the page's
/// pushes rather than losing acks.
const EVENT_BUFFER: usize = 1024;

/// Starts one Chromium per session, or one for all (shared-browser mode).
#[derive(Clone)]
pub struct ChromiumDriver {
    config: Arc<ChromiumConfig>,
    shared: Arc<SharedSlot>,
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
                BrowserProcess::launch(
                    &self.config,
                    &spec.profile_dir,
                    spec.proxy.as_ref(),
                    sink.clone(),
                )
                .await?,
            )),
            Some(dir) => {
                let browser = self.shared.get(&self.config, dir).await?;
                // The session's proxy is its context's (credentials answered over CDP).
                let params = CreateBrowserContextParams {
                    proxy_server: spec.proxy.as_ref().map(|p| p.server.clone()),
                    proxy_bypass_list: spec.proxy.as_ref().map(|_| BYPASS_NONE.to_string()),
                    ..CreateBrowserContextParams::default()
                };
                let context = tokio::time::timeout(
                    self.config.cdp_timeout,
                    browser.browser.create_browser_context(params),
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

#[async_trait]
impl Driver for ChromiumDriver {
    async fn start(&self, spec: SessionSpec) -> Result<StartedSession, DriverError> {
        let (session, events) = self.launch(spec).await?;
        Ok(StartedSession { session, events })
    }
}
