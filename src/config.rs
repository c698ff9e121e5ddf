//! Configuration, read once from the environment at start-up (DESIGN.md §2).
//!
//! Every variable is listed in [`VARS`] with its default and meaning; `--help` and the README
//! print that table, so the three never disagree. A bad value stops start-up with a message
//! naming the variable: a typo should fail at deploy time, not at 3 a.m.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// (name, default, meaning). An empty default means "unset".
pub const VARS: &[(&str, &str, &str)] = &[
    ("DATABASE_URL", "", "PostgreSQL URL; unset: an embedded cluster under WA_DATA_DIR/pg (local/demo only)"),
    ("WA_WEB_URL", "https://web.whatsapp.com/", "the WhatsApp Web page (or a `wa-outbox sim` URL)"),
    ("WA_CHROMIUM", "/usr/bin/chromium", "Chromium binary"),
    ("WA_BROWSER_MODE", "per-session", "`per-session` (a Chromium and profile per session) or `shared` (one Chromium, an isolated context per session)"),
    ("WA_DATA_DIR", ".wa-data", "browser profiles, embedded PostgreSQL, generated local key"),
    ("WA_RUNNER_CAPACITY", "10", "sessions one runner drives at once"),
    ("WA_LEASE_TTL", "30s", "session lease; renewed every quarter of it until released; a runner that cannot renew for half of it closes its browsers; taken over after it"),
    ("WA_AUTH_KEY", "", "login encryption keys `id:base64key[,id:base64key…]`, first encrypts; required unless embedded"),
    ("WA_MEDIA_ALLOWED_HOSTS", "", "comma-separated hosts media_url may use; empty: any public host. Private/loopback only if listed"),
    ("WA_MEDIA_MAX_BYTES", "16777216", "media size cap, enforced while streaming"),
    ("WA_MEDIA_TIMEOUT", "30s", "whole media fetch timeout"),
    ("WA_INBOUND_MEDIA_MAX_BYTES", "16777216", "incoming media larger than this is recorded in wa_media without its bytes (media_too_large); 0 stores no bytes at all"),
    ("WA_INBOUND_MEDIA_TIMEOUT", "60s", "downloading one incoming media file through the page, whole"),
    ("WA_MEDIA_RETENTION", "7d", "prune incoming media (wa_media) older than this; 0 keeps it (it still goes with its event)"),
    ("WA_SEND_MIN_INTERVAL", "1s", "minimum spacing between two sends of one session (plus up to 25% jitter)"),
    ("WA_SEND_TIMEOUT", "10s", "how long the page may take to accept one send"),
    ("WA_START_TIMEOUT", "60s", "browser start to WhatsApp Web loaded"),
    ("WA_CDP_TIMEOUT", "10s", "any single DevTools call"),
    ("WA_RECONNECT_TIMEOUT", "2m", "a page whose socket stays down this long is restarted"),
    ("WA_QR_MAX_ROTATIONS", "6", "QR codes shown before the session fails with qr_timeout"),
    ("WA_IDLE_AFTER", "30m", "hibernate a connected session with no traffic for this long"),
    ("WA_FORGET_AFTER", "30d", "log out a session idle this long and delete its stored login"),
    ("WA_RETENTION", "7d", "prune finished messages and events older than this"),
    ("WA_MAINTENANCE_CRON", "0 * * * * *", "maintenance schedule (cron with seconds)"),
    ("WA_HTTP_LISTEN", "", "address for /healthz, /readyz, /metrics; unset: off"),
    ("WA_LOG_FORMAT", "pretty", "`json` or `pretty`"),
    ("RUST_LOG", "info", "tracing filter"),
];

#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Option<String>,
    pub web_url: String,
    pub chromium: PathBuf,
    /// One Chromium for all sessions of this runner, a browser context each (WA_BROWSER_MODE).
    pub shared_browser: bool,
    pub data_dir: PathBuf,
    pub runner_capacity: u32,
    pub lease_ttl: Duration,
    pub auth_key: Option<String>,
    pub media_allowed_hosts: Vec<String>,
    pub media_max_bytes: u64,
    pub media_timeout: Duration,
    pub inbound_media_max_bytes: u64,
    pub inbound_media_timeout: Duration,
    pub media_retention: Duration,
    pub send_min_interval: Duration,
    pub send_timeout: Duration,
    pub start_timeout: Duration,
    /// A disconnected page that has not reconnected by then is restarted.
    pub reconnect_timeout: Duration,
    pub cdp_timeout: Duration,
    pub qr_max_rotations: u32,
    pub idle_after: Duration,
    pub forget_after: Duration,
    pub retention: Duration,
    pub maintenance_cron: String,
    pub http_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
}

/// Parses `500ms`, `10s`, `5m`, `2h`, `30d` (a bare `0` is zero).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit; write e.g. 500ms, 10s, 5m, 2h or 30d"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 500ms, 10s, 5m, 2h or 30d"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}`; use ms, s, m, h or d"
            ))
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too large"))
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads from any lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let raw = |var: &'static str| -> String {
            get(var)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default_of(var).to_string())
        };
        let opt =
            |var: &'static str| -> Option<String> { Some(raw(var)).filter(|v| !v.is_empty()) };
        let dur = |var: &'static str| -> Result<Duration, ConfigError> {
            parse_duration(&raw(var)).map_err(|message| ConfigError { var, message })
        };
        fn num<T: std::str::FromStr>(var: &'static str, v: String) -> Result<T, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError {
                var,
                message: format!("`{v}` is not a whole number"),
            })
        }

        let lease_ttl = dur("WA_LEASE_TTL")?;
        if lease_ttl < Duration::from_secs(1) {
            return Err(ConfigError {
                var: "WA_LEASE_TTL",
                message: "must be at least 1s".into(),
            });
        }
        let maintenance_cron = raw("WA_MAINTENANCE_CRON");
        maintenance_cron
            .parse::<cron::Schedule>()
            .map_err(|e| ConfigError {
                var: "WA_MAINTENANCE_CRON",
                message: format!("`{maintenance_cron}`: {e}"),
            })?;
        let http_listen = match opt("WA_HTTP_LISTEN") {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| ConfigError {
                var: "WA_HTTP_LISTEN",
                message: format!("`{v}` is not an address like 0.0.0.0:8080"),
            })?),
        };
        let log_format = match raw("WA_LOG_FORMAT").as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(ConfigError {
                    var: "WA_LOG_FORMAT",
                    message: format!("`{other}`: use json or pretty"),
                })
            }
        };
        let web_url = raw("WA_WEB_URL");
        url::Url::parse(&web_url).map_err(|e| ConfigError {
            var: "WA_WEB_URL",
            message: format!("`{web_url}`: {e}"),
        })?;
        let auth_key = opt("WA_AUTH_KEY");
        if let Some(k) = &auth_key {
            crate::keyring::KeyRing::parse(k).map_err(|message| ConfigError {
                var: "WA_AUTH_KEY",
                message,
            })?;
        }
        let media_allowed_hosts = raw("WA_MEDIA_ALLOWED_HOSTS")
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let qr_max_rotations: u32 = num("WA_QR_MAX_ROTATIONS", raw("WA_QR_MAX_ROTATIONS"))?;
        if qr_max_rotations == 0 {
            return Err(ConfigError {
                var: "WA_QR_MAX_ROTATIONS",
                message: "must be at least 1".into(),
            });
        }

        let shared_browser = match raw("WA_BROWSER_MODE").as_str() {
            "per-session" => false,
            "shared" => true,
            other => {
                return Err(ConfigError {
                    var: "WA_BROWSER_MODE",
                    message: format!("`{other}`: use per-session or shared"),
                })
            }
        };

        Ok(Config {
            database_url: opt("DATABASE_URL"),
            web_url,
            chromium: PathBuf::from(raw("WA_CHROMIUM")),
            shared_browser,
            data_dir: PathBuf::from(raw("WA_DATA_DIR")),
            runner_capacity: num("WA_RUNNER_CAPACITY", raw("WA_RUNNER_CAPACITY"))?,
            lease_ttl,
            auth_key,
            media_allowed_hosts,
            media_max_bytes: num("WA_MEDIA_MAX_BYTES", raw("WA_MEDIA_MAX_BYTES"))?,
            media_timeout: dur("WA_MEDIA_TIMEOUT")?,
            inbound_media_max_bytes: num(
                "WA_INBOUND_MEDIA_MAX_BYTES",
                raw("WA_INBOUND_MEDIA_MAX_BYTES"),
            )?,
            inbound_media_timeout: nonzero(
                dur("WA_INBOUND_MEDIA_TIMEOUT")?,
                "WA_INBOUND_MEDIA_TIMEOUT",
            )?,
            media_retention: dur("WA_MEDIA_RETENTION")?,
            send_min_interval: dur("WA_SEND_MIN_INTERVAL")?,
            send_timeout: dur("WA_SEND_TIMEOUT")?,
            start_timeout: dur("WA_START_TIMEOUT")?,
            reconnect_timeout: dur("WA_RECONNECT_TIMEOUT")?,
            cdp_timeout: dur("WA_CDP_TIMEOUT")?,
            qr_max_rotations,
            idle_after: dur("WA_IDLE_AFTER")?,
            forget_after: dur("WA_FORGET_AFTER")?,
            retention: dur("WA_RETENTION")?,
            maintenance_cron,
            http_listen,
            log_format,
        })
    }

    /// The defaults alone (as if no variable were set).
    pub fn defaults() -> Self {
        Self::from_lookup(|_| None).expect("defaults are valid")
    }
}

/// A duration that must not be zero (a timeout).
fn nonzero(d: Duration, var: &'static str) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(ConfigError {
            var,
            message: "must be more than 0".into(),
        });
    }
    Ok(d)
}

fn default_of(var: &str) -> &'static str {
    VARS.iter()
        .find(|(n, _, _)| *n == var)
        .map(|(_, d, _)| *d)
        .unwrap_or("")
}

/// The table printed under `--help`.
pub fn help_table() -> String {
    let mut out = String::from("Environment (read once at start-up):\n");
    for (name, default, doc) in VARS {
        let d = if default.is_empty() {
            "unset".to_string()
        } else {
            format!("default {default}")
        };
        out.push_str(&format!("  {name:<24} {doc} ({d})\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn durations() {
        for (s, ms) in [
            ("500ms", 500),
            ("10s", 10_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("30d", 2_592_000_000),
            ("0", 0),
        ] {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_millis(ms), "{s}");
        }
        for bad in [
            "",
            "10",
            "ten s",
            "5 minutes",
            "1.5s",
            "-1s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn defaults_parse() {
        let c = Config::defaults();
        assert_eq!(c.lease_ttl, Duration::from_secs(30));
        assert_eq!(c.runner_capacity, 10);
        assert!(c.database_url.is_none());
        assert_eq!(c.log_format, LogFormat::Pretty);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, val) in [
            ("WA_LEASE_TTL", "soon"),
            ("WA_RUNNER_CAPACITY", "many"),
            ("WA_MAINTENANCE_CRON", "every minute"),
            ("WA_LOG_FORMAT", "xml"),
            ("WA_HTTP_LISTEN", "port 80"),
            ("WA_IDLE_AFTER", "10"),
            ("WA_AUTH_KEY", "not-a-key"),
        ] {
            let env: HashMap<&str, &str> = [(var, val)].into();
            let err = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }
}
