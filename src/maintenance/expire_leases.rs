//! Clears the session leases of runners that are gone.
//!
//! A runner killed with SIGKILL leaves `runner_id`/`lease_until` on its sessions. Reconcilers
//! already claim a session once its lease has passed; clearing the owner as well keeps
//! `wa_session_overview` honest (no session shown as owned by a runner that no longer exists)
//! and makes the session look unowned to every query, not only to the claim path. A session is
//! only touched when its lease ran out over a grace *and* its runner row is gone or stale, so a
//! live runner that is merely late to renew never loses a session to this task.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{drain, execute_bounded, secs, Batching, TaskReport};

/// Leases must be this many TTLs past their end before they are cleared.
pub const GRACE_TTLS: u32 = 1;
/// A runner whose heartbeat is older than this many TTLs counts as gone.
pub const RUNNER_STALE_TTLS: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub grace: Duration,
    pub runner_stale_after: Duration,
    pub batching: Batching,
}

impl Config {
    pub fn new(lease_ttl: Duration) -> Self {
        Self {
            grace: lease_ttl * GRACE_TTLS,
            runner_stale_after: lease_ttl * RUNNER_STALE_TTLS,
            batching: Batching::default(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.runner_stale_after < Duration::from_secs(1) {
            return Err("expire_leases: runner_stale_after must be at least 1s".into());
        }
        self.batching.validate("expire_leases")
    }
}

pub async fn run_once(pool: &PgPool, cfg: &Config, stop: &CancellationToken) -> TaskReport {
    drain(&cfg.batching, stop, || {
        execute_bounded(
            pool,
            cfg.batching.timeout,
            sqlx::query(
                "update wa_session s set runner_id = null, lease_until = null
                 where s.id in (
                   select c.id from wa_session c
                   where c.runner_id is not null
                     and coalesce(c.lease_until, '-infinity') < now() - make_interval(secs => $1)
                     and not exists (
                       select 1 from wa_runner r
                       where r.id = c.runner_id and r.heartbeat_at > now() - make_interval(secs => $2))
                   order by c.id
                   limit $3
                   for update skip locked)",
            )
            .bind(secs(cfg.grace))
            .bind(secs(cfg.runner_stale_after))
            .bind(cfg.batching.size),
        )
    })
    .await
}
