//! Fetching `media_url` with an SSRF guard, a size cap and a timeout (DESIGN.md §5).
//!
//! A row's `media_url` is attacker-controlled as far as the runner is concerned: it must not be a
//! way to read the cloud metadata endpoint or an internal service. So:
//! - only `http`/`https`;
//! - a non-empty allow-list (`WA_MEDIA_ALLOWED_HOSTS`) restricts hosts;
//! - every address the host resolves to must be public, unless the host itself is allow-listed;
//! - the connection goes to the address that was checked: the check lives in the client's DNS
//!   resolver, so there is no second lookup an attacker's DNS could answer differently;
//! - every redirect hop goes through the same checks;
//! - the body is counted while it streams and dropped past the cap.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use ipnet::{Ipv4Net, Ipv6Net};
use url::{Host, Url};

use crate::driver::Media;
use crate::error_code::ErrorCode;

/// Redirect hops followed before giving up; each one is checked like the first URL.
const MAX_REDIRECTS: usize = 5;
/// Upper bound on one DNS lookup, inside the overall timeout.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MediaError {
    pub code: ErrorCode,
    pub message: String,
}

impl MediaError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// Whether retrying later may help (a network failure may; a refusal or an oversize never will).
    pub fn is_transient(&self) -> bool {
        self.code == ErrorCode::MediaFetchFailed
    }
}

/// Fetches media for outgoing messages. Cheap to clone; one per runner.
#[derive(Clone)]
pub struct MediaFetcher {
    policy: Arc<HostPolicy>,
    client: reqwest::Client,
    max_bytes: u64,
    timeout: Duration,
}

impl std::fmt::Debug for MediaFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaFetcher")
            .field("allowed_hosts", &self.policy.allowed)
            .field("max_bytes", &self.max_bytes)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug)]
struct HostPolicy {
    /// Lower-case host names or IP literals (IPv6 without brackets), no trailing dot.
    allowed: Vec<String>,
}

impl HostPolicy {
    fn normalise(host: &str) -> String {
        host.trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase()
    }

    fn is_listed(&self, host: &str) -> bool {
        let h = Self::normalise(host);
        self.allowed.contains(&h)
    }

    /// Scheme, allow-list and (for IP literals) address checks of one URL, before any traffic.
    fn check_url(&self, url: &Url) -> Result<(), MediaError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(MediaError::new(
                ErrorCode::MediaInvalidUrl,
                format!("scheme `{}` is not http or https", url.scheme()),
            ));
        }
        let host = url
            .host()
            .ok_or_else(|| MediaError::new(ErrorCode::MediaInvalidUrl, "URL has no host"))?;
        let host_str = url.host_str().unwrap_or_default();
        let listed = self.is_listed(host_str);
        if !self.allowed.is_empty() && !listed {
            return Err(MediaError::new(
                ErrorCode::MediaHostForbidden,
                format!("host `{host_str}` is not in WA_MEDIA_ALLOWED_HOSTS"),
            ));
        }
        let literal = match host {
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            Host::Domain(_) => None,
        };
        if let Some(ip) = literal {
            if !listed && !is_public(ip) {
                return Err(forbidden_addr(host_str, ip));
            }
        }
        Ok(())
    }
}

fn forbidden_addr(host: &str, ip: IpAddr) -> MediaError {
    MediaError::new(
        ErrorCode::MediaHostForbidden,
        format!("host `{host}` is (or resolves to) the non-public address {ip}"),
    )
}

/// The DNS resolver of the fetcher's client: resolves, then refuses non-public answers for hosts
/// not allow-listed. reqwest connects only to what this returns, so the checked address is the
/// connected address.
struct GuardedResolver {
    policy: Arc<HostPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host.as_str(), 0)))
                    .await
                    .map_err(|_| format!("DNS lookup of `{host}` timed out"))??
                    .collect();
            if !policy.is_listed(&host) {
                // One bad answer taints the name: an attacker's DNS may mix public and private.
                if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                    return Err(Box::new(forbidden_addr(&host, bad.ip()))
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Is this an address on the public internet? Everything else (loopback, private, link-local
/// including 169.254.169.254, CGNAT, multicast, reserved, and IPv6 forms that embed or
/// translate to IPv4) is refused unless its host is allow-listed.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const BLOCKED: &[&str] = &[
        "0.0.0.0/8",       // "this network", includes unspecified
        "10.0.0.0/8",      // private
        "100.64.0.0/10",   // CGNAT
        "127.0.0.0/8",     // loopback
        "169.254.0.0/16",  // link-local, cloud metadata
        "172.16.0.0/12",   // private
        "192.0.0.0/24",    // IETF protocol assignments
        "192.0.2.0/24",    // documentation
        "192.88.99.0/24",  // 6to4 relay anycast
        "192.168.0.0/16",  // private
        "198.18.0.0/15",   // benchmarking
        "198.51.100.0/24", // documentation
        "203.0.113.0/24",  // documentation
        "224.0.0.0/4",     // multicast
        "240.0.0.0/4",     // reserved, includes broadcast
    ];
    !BLOCKED.iter().any(|n| {
        n.parse::<Ipv4Net>()
            .expect("static CIDR parses")
            .contains(&ip)
    })
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    const BLOCKED: &[&str] = &[
        "::/96",         // unspecified, loopback, IPv4-compatible
        "::ffff:0:0/96", // IPv4-mapped
        "64:ff9b::/96",  // NAT64: translates to any IPv4 address
        "64:ff9b:1::/48",
        "100::/64",      // discard
        "2001::/32",     // Teredo
        "2001:db8::/32", // documentation
        "2002::/16",     // 6to4: embeds an IPv4 address
        "fc00::/7",      // unique local
        "fe80::/10",     // link-local
        "fec0::/10",     // site-local (deprecated)
        "ff00::/8",      // multicast
    ];
    !BLOCKED.iter().any(|n| {
        n.parse::<Ipv6Net>()
            .expect("static CIDR parses")
            .contains(&ip)
    })
}

impl MediaFetcher {
    /// `allowed_hosts`: host names or IP literals; empty means any public host.
    pub fn new(allowed_hosts: &[String], max_bytes: u64, timeout: Duration) -> Self {
        let policy = Arc::new(HostPolicy {
            allowed: allowed_hosts
                .iter()
                .map(|h| HostPolicy::normalise(h))
                .filter(|h| !h.is_empty())
                .collect(),
        });
        let redirect_policy = {
            let policy = policy.clone();
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(MediaError::new(
                        ErrorCode::MediaFetchFailed,
                        format!("more than {MAX_REDIRECTS} redirects"),
                    ));
                }
                match policy.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(e),
                }
            })
        };
        let client = reqwest::Client::builder()
            // A proxy would resolve and connect on our behalf, past the resolver's checks.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .redirect(redirect_policy)
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("wa-outbox/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a reqwest client without custom TLS roots always builds");
        Self {
            policy,
            client,
            max_bytes,
            timeout,
        }
    }

    pub fn from_config(config: &crate::config::Config) -> Self {
        Self::new(
            &config.media_allowed_hosts,
            config.media_max_bytes,
            config.media_timeout,
        )
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Downloads `url`. `mime_hint` (the row's `media_mime`) wins over the server's Content-Type.
    pub async fn fetch(&self, url: &str, mime_hint: Option<&str>) -> Result<Media, MediaError> {
        let parsed = Url::parse(url).map_err(|e| {
            MediaError::new(
                ErrorCode::MediaInvalidUrl,
                format!("not an absolute URL: {e}"),
            )
        })?;
        self.policy.check_url(&parsed)?;
        match tokio::time::timeout(self.timeout, self.fetch_checked(parsed, mime_hint)).await {
            Ok(r) => r,
            Err(_) => Err(MediaError::new(
                ErrorCode::MediaFetchFailed,
                format!("timed out after {:?}", self.timeout),
            )),
        }
    }

    async fn fetch_checked(&self, url: Url, mime_hint: Option<&str>) -> Result<Media, MediaError> {
        let filename = filename_of(&url);
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| self.map_reqwest(e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(MediaError::new(
                ErrorCode::MediaFetchFailed,
                format!("server answered {status}"),
            ));
        }
        if let Some(len) = resp.content_length() {
            if len > self.max_bytes {
                return Err(self.too_large(len));
            }
        }
        let server_mime = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty());

        let mut body = bytes::BytesMut::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.map_reqwest(e))?;
            let total = body.len() as u64 + chunk.len() as u64;
            if total > self.max_bytes {
                return Err(self.too_large(total));
            }
            body.extend_from_slice(&chunk);
        }
        let mime = mime_hint
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .or(server_mime)
            .unwrap_or_else(|| "application/octet-stream".to_string());
        Ok(Media {
            data: body.freeze(),
            mime,
            filename,
        })
    }

    fn too_large(&self, seen: u64) -> MediaError {
        MediaError::new(
            ErrorCode::MediaTooLarge,
            format!(
                "media is larger than WA_MEDIA_MAX_BYTES ({} > {})",
                seen, self.max_bytes
            ),
        )
    }

    fn map_reqwest(&self, e: reqwest::Error) -> MediaError {
        // Our own refusals (resolver, redirect policy) travel inside reqwest's error chain.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if let Some(m) = s.downcast_ref::<MediaError>() {
                return m.clone();
            }
            source = s.source();
        }
        let what = if e.is_timeout() {
            format!("timed out after {:?}", self.timeout)
        } else {
            // Without the URL: it may carry tokens in its query string.
            let e = e.without_url();
            let mut msg = e.to_string();
            let mut s = std::error::Error::source(&e);
            while let Some(inner) = s {
                msg.push_str(": ");
                msg.push_str(&inner.to_string());
                s = inner.source();
            }
            msg
        };
        MediaError::new(ErrorCode::MediaFetchFailed, what)
    }
}

/// The last path segment, percent-decoded, if it looks like a file name.
fn filename_of(url: &Url) -> Option<String> {
    let last = url.path_segments()?.next_back()?;
    if last.is_empty() {
        return None;
    }
    let decoded = percent_decode(last);
    let clean: String = decoded
        .chars()
        .filter(|c| !c.is_control() && *c != '/' && *c != '\\')
        .collect();
    Some(clean).filter(|s| !s.is_empty())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16)),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::State;
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Redirect, Response};
    use axum::routing::get;
    use axum::Router;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Server {
        port: u16,
        hits: Arc<AtomicUsize>,
    }

    async fn server() -> Server {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route(
                "/cat%20pic.png",
                get(|| async { ([(header::CONTENT_TYPE, "image/png")], vec![7u8; 1000]) }),
            )
            .route("/big", get(|| async { vec![1u8; 5000] }))
            .route(
                // No Content-Length: the cap must hold while streaming.
                "/big-stream",
                get(|| async {
                    let chunks = (0..50).map(|_| Ok::<_, std::io::Error>(vec![2u8; 200]));
                    Body::from_stream(futures::stream::iter(chunks))
                }),
            )
            .route(
                "/missing",
                get(|| async { (StatusCode::NOT_FOUND, "no").into_response() }),
            )
            .route(
                "/slow",
                get(|| async {
                    // Never answers within the test's timeout; the fetcher must give up.
                    std::future::pending::<()>().await;
                    "late"
                }),
            )
            .route(
                "/to-metadata",
                get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
            )
            .route(
                "/to-self",
                get(|| async { Redirect::temporary("/cat%20pic.png") }),
            )
            .route("/loop", get(|| async { Redirect::temporary("/loop") }))
            .layer(axum::middleware::from_fn_with_state(
                hits.clone(),
                |State(hits): State<Arc<AtomicUsize>>,
                 req: axum::extract::Request,
                 next: axum::middleware::Next| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let r: Response = next.run(req).await;
                    r
                },
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { port, hits }
    }

    fn fetcher(allowed: &[&str], max: u64) -> MediaFetcher {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        MediaFetcher::new(&allowed, max, Duration::from_secs(2))
    }

    #[tokio::test]
    async fn fetches_from_an_allow_listed_loopback_host() {
        let s = server().await;
        let f = fetcher(&["127.0.0.1"], 4096);
        let m = f
            .fetch(&format!("http://127.0.0.1:{}/cat%20pic.png", s.port), None)
            .await
            .unwrap();
        assert_eq!(m.data.len(), 1000);
        assert_eq!(m.mime, "image/png");
        assert_eq!(m.filename.as_deref(), Some("cat pic.png"));
        // The caller's mime wins.
        let m = f
            .fetch(
                &format!("http://127.0.0.1:{}/cat%20pic.png", s.port),
                Some("image/webp"),
            )
            .await
            .unwrap();
        assert_eq!(m.mime, "image/webp");
        // A same-host redirect is followed.
        let m = f
            .fetch(&format!("http://127.0.0.1:{}/to-self", s.port), None)
            .await
            .unwrap();
        assert_eq!(m.data.len(), 1000);
    }

    #[tokio::test]
    async fn size_cap_up_front_and_while_streaming() {
        let s = server().await;
        let f = fetcher(&["127.0.0.1"], 4096);
        for path in ["big", "big-stream"] {
            let e = f
                .fetch(&format!("http://127.0.0.1:{}/{path}", s.port), None)
                .await
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::MediaTooLarge, "{path}: {e}");
        }
    }

    #[tokio::test]
    async fn non_2xx_timeout_and_redirect_loops_fail() {
        let s = server().await;
        let f = fetcher(&["127.0.0.1"], 4096);
        let e = f
            .fetch(&format!("http://127.0.0.1:{}/missing", s.port), None)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::MediaFetchFailed);
        assert!(e.message.contains("404"), "{e}");

        let quick = MediaFetcher::new(&["127.0.0.1".into()], 4096, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let e = quick
            .fetch(&format!("http://127.0.0.1:{}/slow", s.port), None)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::MediaFetchFailed);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "timeout honoured"
        );

        let e = f
            .fetch(&format!("http://127.0.0.1:{}/loop", s.port), None)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::MediaFetchFailed);
        assert!(e.message.contains("redirects"), "{e}");
    }

    #[tokio::test]
    async fn refusals_send_no_traffic() {
        let s = server().await;
        // Empty allow-list: any public host, nothing private.
        let open = fetcher(&[], 4096);
        for url in [
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "http://10.0.0.1/x.png".to_string(),
            "http://[::1]/x".to_string(),
            "http://[::ffff:127.0.0.1]/x".to_string(),
            "http://[fd00::1]/x".to_string(),
            "http://100.64.1.1/x".to_string(),
            "http://0.0.0.0/x".to_string(),
            // Resolves to loopback: refused by the resolver before any connection.
            format!("http://localhost:{}/cat%20pic.png", s.port),
            format!("http://127.0.0.1:{}/cat%20pic.png", s.port),
        ] {
            let e = open.fetch(&url, None).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::MediaHostForbidden, "{url}: {e}");
        }
        // Allow-list present: other hosts refused, even public-looking ones, even localhost
        // when only 127.0.0.1 is listed.
        let listed = fetcher(&["127.0.0.1"], 4096);
        for url in [
            format!("http://localhost:{}/cat%20pic.png", s.port),
            "https://example.com/a.png".to_string(),
            "http://169.254.169.254/".to_string(),
        ] {
            let e = listed.fetch(&url, None).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::MediaHostForbidden, "{url}: {e}");
        }
        for url in [
            "ftp://127.0.0.1/x",
            "file:///etc/passwd",
            "not a url",
            "data:,x",
        ] {
            let e = listed.fetch(url, None).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::MediaInvalidUrl, "{url}: {e}");
        }
        assert_eq!(
            s.hits.load(Ordering::SeqCst),
            0,
            "no request reached the server"
        );

        // A redirect from an allowed host to the metadata address is refused at the hop.
        let e = listed
            .fetch(&format!("http://127.0.0.1:{}/to-metadata", s.port), None)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::MediaHostForbidden, "{e}");
        assert_eq!(s.hits.load(Ordering::SeqCst), 1);

        // Allow-listing the name lets it resolve to loopback.
        let by_name = fetcher(&["localhost"], 4096);
        let m = by_name
            .fetch(&format!("http://localhost:{}/cat%20pic.png", s.port), None)
            .await
            .unwrap();
        assert_eq!(m.data.len(), 1000);
    }

    #[test]
    fn address_classes() {
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450::1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd12::1",
            "ff02::1",
            "::ffff:8.8.8.8",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
