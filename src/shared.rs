//! What a runner's loops share: its configuration, the registry of the sessions it owns, the
//! wake-ups between the loops, and where logins are kept. The reconciler (leases and claims), the
//! session actors and the dispatcher all depend on this module, not on each other.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::driver::{Driver, Session};

/// What the loops need from the configuration, validated once.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub capacity: u32,
    pub lease_ttl: Duration,
    pub send_min_interval: Duration,
    pub send_timeout: Duration,
    pub start_timeout: Duration,
    pub reconnect_timeout: Duration,
    pub idle_after: Duration,
    pub qr_max_rotations: u32,
    pub data_dir: PathBuf,
    /// Fallback poll when no NOTIFY arrives (lost notification, listener reconnecting).
    pub poll_interval: Duration,
    /// How long a drain waits for in-flight sends.
    pub drain_timeout: Duration,
    /// Browser restarts in a row before the session fails with browser_crashed.
    pub max_restarts: i32,
    /// Completions written per statement.
    pub completion_batch: usize,
    /// First retry delay after a transient send failure (doubles each attempt).
    pub retry_base: Duration,
    /// Incoming media over this many bytes is recorded without them (WA_INBOUND_MEDIA_MAX_BYTES).
    pub inbound_media_max_bytes: u64,
    /// Downloading one incoming file through the page (WA_INBOUND_MEDIA_TIMEOUT).
    pub inbound_media_timeout: Duration,
}

/// Exponential back-off with ±25 % jitter: `base * 2^(n-1)`, capped.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    use rand::Rng as _;
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let d = exp.min(max);
    d.mul_f64(rand::rng().random_range(0.75..1.25))
}

/// A message's status for a (non-negative) ack from the page: the one mapping, used by every
/// write of an ack.
pub fn status_for_ack(ack: i32) -> &'static str {
    match ack {
        i32::MIN..=1 => "sent",
        2 => "delivered",
        3 => "read",
        _ => "played",
    }
}

/// Base and cap of the retry back-off for transient send failures.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(300);

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_MAX_RESTARTS: i32 = 5;
pub const DEFAULT_COMPLETION_BATCH: usize = 512;

impl RunnerConfig {
    pub fn from_config(c: &Config) -> Self {
        Self {
            capacity: c.runner_capacity,
            lease_ttl: c.lease_ttl,
            send_min_interval: c.send_min_interval,
            send_timeout: c.send_timeout,
            start_timeout: c.start_timeout,
            reconnect_timeout: c.reconnect_timeout,
            idle_after: c.idle_after,
            qr_max_rotations: c.qr_max_rotations,
            data_dir: c.data_dir.clone(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            drain_timeout: c.send_timeout + Duration::from_secs(5),
            max_restarts: DEFAULT_MAX_RESTARTS,
            completion_batch: DEFAULT_COMPLETION_BATCH,
            retry_base: RETRY_BASE,
            inbound_media_max_bytes: c.inbound_media_max_bytes,
            inbound_media_timeout: c.inbound_media_timeout,
        }
    }
}

/// Where a session's login is kept between browsers (the encrypted archive store in
/// production; nothing in the loops' unit tests).
#[async_trait]
pub trait LoginStore: Send + Sync + 'static {
    /// Restores the stored login into `profile_dir`; Ok(false) if there is none.
    async fn restore(
        &self,
        session_id: &str,
        profile_dir: &std::path::Path,
    ) -> Result<bool, RestoreError>;
    /// Stores the login, fenced on `runner_id` still holding the session's lease.
    async fn save(
        &self,
        session_id: &str,
        runner_id: Uuid,
        profile_dir: &std::path::Path,
    ) -> Result<(), String>;
    async fn delete(&self, session_id: &str) -> Result<(), String>;
    async fn has_login(&self, session_id: &str) -> Result<bool, String>;
    /// The keys logins are sealed under, which other secrets of a session (its proxy password)
    /// are sealed under too. None: this store keeps nothing sealed.
    fn keys(&self) -> Option<&crate::keyring::KeyRing> {
        None
    }
}

/// Why a stored login could not be put back. A transient cause (database, disk) is retried;
/// anything else fails the session with auth_restore_failed rather than silently showing a QR.
#[derive(Debug)]
pub struct RestoreError {
    pub transient: bool,
    pub message: String,
}

/// No stored logins: every new browser starts from its local profile folder only.
pub struct NoLoginStore;

#[async_trait]
impl LoginStore for NoLoginStore {
    async fn restore(&self, _: &str, _: &std::path::Path) -> Result<bool, RestoreError> {
        Ok(false)
    }
    async fn save(&self, _: &str, _: Uuid, _: &std::path::Path) -> Result<(), String> {
        Ok(())
    }
    async fn delete(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    async fn has_login(&self, _: &str) -> Result<bool, String> {
        Ok(false)
    }
}

/// The production store: encrypted archives in wa_session_auth.
#[async_trait]
impl LoginStore for crate::auth_store::AuthStore {
    fn keys(&self) -> Option<&crate::keyring::KeyRing> {
        Some(crate::auth_store::AuthStore::keys(self))
    }
    async fn restore(
        &self,
        session_id: &str,
        profile_dir: &std::path::Path,
    ) -> Result<bool, RestoreError> {
        crate::auth_store::AuthStore::restore(self, session_id, profile_dir)
            .await
            .map_err(|e| RestoreError {
                transient: e.is_transient(),
                message: e.to_string(),
            })
    }
    async fn save(
        &self,
        session_id: &str,
        runner_id: Uuid,
        profile_dir: &std::path::Path,
    ) -> Result<(), String> {
        match self.save_owned(session_id, runner_id, profile_dir).await {
            // Refused, not saved: said, so a lease that lapsed under a live browser shows.
            Ok(crate::auth_store::SaveOutcome::NotOwner) => {
                Err("this runner no longer holds the session's lease; not saved".into())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
    async fn delete(&self, session_id: &str) -> Result<(), String> {
        crate::auth_store::AuthStore::delete(self, session_id)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    async fn has_login(&self, session_id: &str) -> Result<bool, String> {
        crate::auth_store::AuthStore::has_login(self, session_id)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What the reconciler tells a session's actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCmd {
    /// desired_state = stopped: close the browser, keep the login.
    Stop,
    /// desired_state = logged_out: unlink the device, delete the login.
    Logout,
    /// Idle: save the login, close the browser, release the lease.
    Hibernate,
    /// Runner draining: save the login, close the browser, release the lease for another runner.
    Release,
}

/// One owned session, as the dispatcher and reconciler see it.
pub struct SessionEntry {
    pub cmd_tx: mpsc::Sender<SessionCmd>,
    /// Cancelled when the lease is no longer ours (taken over, or the fence): the browser
    /// closes at once, wherever the actor is, and nothing more is written.
    pub lost: CancellationToken,
    /// Set while the page is connected.
    pub handle: Option<Arc<dyn Session>>,
    /// `sending` rows left by an earlier owner have been settled.
    pub recovered: bool,
    pub recovering: bool,
    /// Recovery passes in a row that left a row unsettled (each backs off longer).
    pub recovery_failures: u32,
    pub in_flight: bool,
    pub next_send_at: Instant,
    pub task: Option<JoinHandle<()>>,
}

pub struct Shared {
    pub id: Uuid,
    pub pool: PgPool,
    pub driver: Arc<dyn Driver>,
    pub logins: Arc<dyn LoginStore>,
    pub media: Option<Arc<crate::media::MediaFetcher>>,
    pub cfg: RunnerConfig,
    pub sessions: Mutex<HashMap<String, SessionEntry>>,
    pub dispatch_wake: Notify,
    pub reconcile_wake: Notify,
    /// Wakes the reconciler for a claim only (a session without a live owner got work, or was
    /// released): no heartbeat, no renewal.
    pub claim_wake: Notify,
    /// Wakes the command loop (a new command for an owned session).
    pub command_wake: Notify,
    /// Cancelled when the runner starts draining: stop claiming.
    pub draining: CancellationToken,
    /// Cancelled once the drain has released every lease: only then may renewal stop.
    pub leases_done: CancellationToken,
    /// When the last lease renewal that succeeded was *sent* (the leases it wrote end no earlier
    /// than this plus the TTL): the fence measures from here.
    pub leases_proved_at: Mutex<Instant>,
    pub metrics: Option<crate::http::Metrics>,
}

impl Shared {
    pub fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn profile_dir(&self, session_id: &str) -> PathBuf {
        self.cfg.data_dir.join("profiles").join(session_id)
    }
}
