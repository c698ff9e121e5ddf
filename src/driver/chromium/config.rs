//! The Chromium driver's settings, and the browser command line they make (DESIGN.md §3).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::driver::proxy::{Proxy, BYPASS_NONE};

/// A current desktop Chrome: WhatsApp Web serves an "update your browser" page to old or unknown
/// agents, and headless Chromium's own agent says `HeadlessChrome`.
pub const DEFAULT_USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) \
    AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36";

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

    /// The Chromium command line (without the binary), DESIGN.md §3. A session's own proxy is a
    /// flag here (per-session mode); its credentials are answered over CDP, never on the line.
    pub fn args(&self, profile_dir: &Path, proxy: Option<&Proxy>) -> Vec<String> {
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
        if let Some(p) = proxy {
            args.push(format!("--proxy-server={}", p.server));
            args.push(format!("--proxy-bypass-list={BYPASS_NONE}"));
        }
        args.extend(self.extra_args.iter().cloned());
        args.push("about:blank".into());
        args
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_design() {
        let c = ChromiumConfig::from_config(&crate::config::Config::defaults());
        let args = c.args(Path::new("/tmp/p"), None);
        assert!(!args.iter().any(|a| a.starts_with("--proxy")));
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
    fn a_proxy_is_a_flag_without_its_credentials() {
        let c = ChromiumConfig::from_config(&crate::config::Config::defaults());
        let p = Proxy::parse("http://bob:s3cret@10.0.0.1:3128").unwrap();
        let args = c.args(Path::new("/tmp/p"), Some(&p));
        assert!(args
            .iter()
            .any(|a| a == "--proxy-server=http://10.0.0.1:3128"));
        assert!(args.iter().any(|a| a == "--proxy-bypass-list=<-loopback>"));
        assert!(!args.join(" ").contains("s3cret"));
        assert_eq!(args.last().map(String::as_str), Some("about:blank"));
    }
}
