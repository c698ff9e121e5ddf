//! A session's proxy (`wa_session.proxy_url`, issue 14): parsed once into what Chromium takes (a
//! server without credentials: `--proxy-server` in per-session mode, the browser context's
//! `proxyServer` in shared mode) and the credentials the driver answers the proxy's challenge
//! with over CDP (`Fetch.authRequired` → `Fetch.continueWithAuth`); Chromium takes no
//! credentials in either place. The URL is only ever shown redacted ([`redact`]).

use crate::error_code::ErrorCode;

/// Chromium sends loopback traffic around a proxy unless told otherwise; the subtractive rule
/// makes every host, loopback included, go through it.
pub const BYPASS_NONE: &str = "<-loopback>";

/// A parsed `proxy_url`. Its `Debug` shows the redacted URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `scheme://host:port`, no credentials.
    pub server: String,
    pub username: Option<String>,
    pub password: Option<String>,
    redacted: String,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl Proxy {
    /// Parses `proxy_url`; the error is a sentence for `wa_session.error` with the code
    /// `proxy_invalid`, and shows the URL only redacted.
    pub fn parse(raw: &str) -> Result<Self, (ErrorCode, String)> {
        let shown = redact(raw);
        let bad = |why: &str| (ErrorCode::ProxyInvalid, format!("proxy_url {shown}: {why}"));
        let url = url::Url::parse(raw.trim()).map_err(|e| bad(&format!("not a URL ({e})")))?;
        let scheme = url.scheme().to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "socks5") {
            return Err(bad("the scheme must be http, https or socks5"));
        }
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => return Err(bad("it has no host")),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a proxy URL has no path, query or fragment"));
        }
        let port = match url.port_or_known_default() {
            Some(p) => p,
            None if scheme == "socks5" => 1080,
            None => return Err(bad("it has no port")),
        };
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let username = (!url.username().is_empty()).then(|| decode(url.username()));
        let password = url.password().map(decode);
        if scheme == "socks5" && (username.is_some() || password.is_some()) {
            return Err(bad(
                "Chromium cannot authenticate to a SOCKS5 proxy: use one without credentials, or an http proxy",
            ));
        }
        Ok(Self {
            server: format!("{scheme}://{host}:{port}"),
            username,
            password,
            redacted: shown,
        })
    }

    pub fn has_credentials(&self) -> bool {
        self.username.is_some() || self.password.is_some()
    }
}

/// `url` with its password replaced by `***` (the user name kept): the only form a proxy URL
/// may take in a log line, an error or a row. A string that is not recognisably a URL is not
/// shown at all.
pub fn redact(url: &str) -> String {
    let url = url.trim();
    let Some(i) = url.find("://") else {
        return "(not a URL)".to_string();
    };
    let (scheme, rest) = (&url[..i + 3], &url[i + 3..]);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rfind('@') {
        None => format!("{scheme}{authority}{tail}"),
        Some(at) => {
            let (userinfo, host) = (&authority[..at], &authority[at..]);
            let user = match userinfo.find(':') {
                Some(c) => format!("{}:***", &userinfo[..c]),
                None => userinfo.to_string(),
            };
            format!("{scheme}{user}{host}{tail}")
        }
    }
}

/// What stands for the password in a stored `proxy_url` once a runner sealed it away.
pub const SEALED_PASSWORD: &str = "***";

/// `url`'s password as written (still percent-encoded), with the URL it leaves behind: the
/// redacted form, `user:***@host`. None when the URL has no password, or only the mark.
pub fn split_password(url: &str) -> Option<(String, String)> {
    let url = url.trim();
    let i = url.find("://")?;
    let rest = &url[i + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let password = &userinfo[userinfo.find(':')? + 1..];
    (password != SEALED_PASSWORD).then(|| (redact(url), password.to_string()))
}

/// The inverse of [`split_password`]: the redacted URL with `password` (as written) in place of
/// the mark. None when `redacted` carries no mark.
pub fn with_password(redacted: &str, password: &str) -> Option<String> {
    let redacted = redacted.trim();
    let i = redacted.find("://")?;
    let rest = &redacted[i + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let at = authority.rfind('@')?;
    let mark = format!(":{SEALED_PASSWORD}");
    if !authority[..at].ends_with(&mark) {
        return None;
    }
    let cut = i + 3 + at - SEALED_PASSWORD.len();
    Some(format!(
        "{}{password}{}",
        &redacted[..cut],
        &redacted[i + 3 + at..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_comes_out_of_the_url_and_goes_back_in_as_written() {
        for url in [
            "http://bob:s3cret@proxy.example:3128",
            "http://bob:p@ss@h:1",
            "https://bob:s%40c%3Aret@h:443/",
        ] {
            let (redacted, pw) = split_password(url).unwrap();
            assert_eq!(redacted, redact(url));
            assert!(redacted.contains("bob:***@"));
            assert!(!redacted.contains(&pw));
            assert_eq!(with_password(&redacted, &pw).as_deref(), Some(url));
        }
        assert_eq!(split_password("http://bob:***@h:1"), None, "already sealed");
        assert_eq!(split_password("http://bob@h:1"), None);
        assert_eq!(split_password("socks5://h:1080"), None);
        assert_eq!(with_password("http://bob@h:1", "x"), None);
        assert_eq!(with_password("http://h:1", "x"), None);
    }

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("http://bob:s3cret@proxy.example:3128"),
            "http://bob:***@proxy.example:3128"
        );
        assert_eq!(
            redact("http://bob:p@ss@h:1/x"),
            "http://bob:***@h:1/x",
            "an @ in the password"
        );
        assert_eq!(redact("socks5://h:1080"), "socks5://h:1080");
        assert_eq!(redact("bob:s3cret@h"), "(not a URL)");
    }

    #[test]
    fn parse_splits_server_and_credentials() {
        let p = Proxy::parse("http://bob:s%40cret@127.0.0.1:3128").unwrap();
        assert_eq!(p.server, "http://127.0.0.1:3128");
        assert_eq!(p.username.as_deref(), Some("bob"));
        assert_eq!(p.password.as_deref(), Some("s@cret"));
        assert!(!format!("{p:?} {p}").contains("cret"));
        assert_eq!(
            Proxy::parse("socks5://h").unwrap().server,
            "socks5://h:1080"
        );
        assert_eq!(Proxy::parse("HTTPS://h/").unwrap().server, "https://h:443");
    }

    #[test]
    fn parse_refuses_what_chromium_cannot_use() {
        for bad in [
            "ftp://h:21",
            "http://",
            "not a url",
            "http://h:1/path",
            "http://h:1?q=1",
            "socks5://bob:pw@h:1080",
            "socks4://h:1080",
        ] {
            let (code, msg) = Proxy::parse(bad).unwrap_err();
            assert_eq!(code, ErrorCode::ProxyInvalid, "{bad}");
            assert!(!msg.contains("pw@"), "{msg}");
        }
    }
}
