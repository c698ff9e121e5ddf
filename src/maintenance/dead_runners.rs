//! Deletes `wa_runner` rows whose heartbeat stopped long ago (a runner killed without a
//! chance to delete its own row), so `wa_runner_overview` and autoscaling see live runners only.
//!
//! A runner that was merely paused and comes back re-inserts its row on its next heartbeat.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{drain, execute_bounded, secs, Batching, TaskReport};

/// A runner is dead when its heartbeat is older than this many lease TTLs: long enough that a
/// GC pause or a slow database does not delete a live runner.
pub const DEAD_AFTER_TTLS: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub dead_after: Duration,
    pub batching: Batching,
}

impl Config {
    pub fn new(lease_ttl: Duration) -> Self {
        Self {
            dead_after: lease_ttl * DEAD_AFTER_TTLS,
            batching: Batching::default(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.dead_after < Duration::from_secs(1) {
            return Err("dead_runners: dead_after must be at least 1s".into());
        }
        self.batching.validate("dead_runners")
    }
}

pub async fn run_once(pool: &PgPool, cfg: &Config, stop: &CancellationToken) -> TaskReport {
    drain(&cfg.batching, stop, || {
        execute_bounded(
            pool,
            cfg.batching.timeout,
            sqlx::query(
                "delete from wa_runner where id in (
                   select id from wa_runner
                   where heartbeat_at < now() - make_interval(secs => $1)
                   limit $2
                   for update skip locked)",
            )
            .bind(secs(cfg.dead_after))
            .bind(cfg.batching.size),
        )
    })
    .await
}
