//! Answering a session's proxy over CDP. Chromium takes no credentials in `--proxy-server` or a
//! context's `proxyServer`, so the page's requests are paused (`Fetch.enable` with
//! `handleAuthRequests`) and the proxy's 407 challenge is answered with the session's
//! credentials (`Fetch.continueWithAuth`), once per request; a second challenge for the same
//! request (the proxy refused them) is cancelled and the navigation fails with
//! `net::ERR_INVALID_AUTH_CREDENTIALS`. chromiumoxide's own network manager does exactly this
//! once given the credentials (`Page::authenticate`), and it answers every `Fetch.authRequired`
//! itself, so a second listener of ours would race it. Chromium keeps the accepted credentials
//! for the proxy, so the page's WebSocket (which `Fetch` does not see) reuses them.

use std::time::Duration;

use chromiumoxide::auth::Credentials;
use chromiumoxide::cdp::browser_protocol::network::EventResponseReceived;
use chromiumoxide::listeners::EventStream;
use chromiumoxide::Page;
use futures::StreamExt as _;

use super::scripts::{cdp_call, listen_failed};
use crate::driver::proxy::Proxy;
use crate::driver::DriverError;

/// The page's responses, watched while it first loads: an http proxy that refuses the
/// credentials answers the document itself with 407, which the navigation reports only as
/// `net::ERR_HTTP_RESPONSE_CODE_FAILURE`.
pub(super) struct ProxyWatch {
    responses: EventStream<EventResponseReceived>,
}

impl ProxyWatch {
    /// Whether a 407 arrived (the events already sent, each waited for briefly).
    pub(super) async fn saw_407(&mut self) -> bool {
        while let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_millis(300), self.responses.next()).await
        {
            if ev.response.status == 407 {
                return true;
            }
        }
        false
    }
}

/// Hands `page` the proxy's credentials (none: Chromium refuses a challenge by itself) and
/// starts watching its responses.
pub(super) async fn answer(
    page: &Page,
    proxy: &Proxy,
    cdp: Duration,
) -> Result<ProxyWatch, DriverError> {
    let responses = cdp_call(cdp, page.event_listener::<EventResponseReceived>())
        .await?
        .map_err(listen_failed)?;
    if proxy.has_credentials() {
        let credentials = Credentials {
            username: proxy.username.clone().unwrap_or_default(),
            password: proxy.password.clone().unwrap_or_default(),
        };
        cdp_call(cdp, page.authenticate(credentials))
            .await?
            .map_err(listen_failed)?;
    }
    Ok(ProxyWatch { responses })
}

/// A navigation error that says the proxy did not serve: it refused the connection or the
/// credentials (`net::ERR_PROXY_*`, `ERR_TUNNEL_*`, `ERR_SOCKS_*`, and the cancelled challenge's
/// `ERR_INVALID_AUTH_CREDENTIALS`, which WhatsApp Web itself never causes: it asks for no HTTP
/// authentication).
pub(super) fn is_proxy_error(text: &str) -> bool {
    [
        "ERR_PROXY",
        "ERR_TUNNEL",
        "ERR_SOCKS",
        "ERR_MANDATORY_PROXY",
        "ERR_INVALID_AUTH_CREDENTIALS",
    ]
    .iter()
    .any(|k| text.contains(k))
}

#[cfg(test)]
mod tests {
    #[test]
    fn proxy_errors_are_told_from_others() {
        for e in [
            "net::ERR_PROXY_CONNECTION_FAILED",
            "net::ERR_TUNNEL_CONNECTION_FAILED",
            "net::ERR_INVALID_AUTH_CREDENTIALS",
            "net::ERR_SOCKS_CONNECTION_FAILED",
        ] {
            assert!(super::is_proxy_error(e), "{e}");
        }
        assert!(!super::is_proxy_error("net::ERR_CONNECTION_REFUSED"));
    }
}
