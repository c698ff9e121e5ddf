//! Deletes incoming media (`wa_media`) older than WA_MEDIA_RETENTION, in bounded batches.
//!
//! Media is the heavy part of the inbound history, so it has its own, usually shorter, retention;
//! a row also goes with its event (pruned after WA_RETENTION, `on delete cascade`). The event's
//! `payload.media_id` then names a row that is gone: the event stays, the bytes do not.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{drain, execute_bounded, secs, Batching, TaskReport};

/// Rows per delete: each may hold up to WA_INBOUND_MEDIA_MAX_BYTES, so fewer than the other
/// tasks' batches, to keep one statement well inside its timeout.
pub const DEFAULT_BATCH_SIZE: i64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Zero keeps media as long as its event.
    pub retention: Duration,
    pub batching: Batching,
}

impl Config {
    pub fn new(retention: Duration) -> Self {
        Self {
            retention,
            batching: Batching {
                size: DEFAULT_BATCH_SIZE,
                ..Batching::default()
            },
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.retention.is_zero() && self.retention < Duration::from_secs(1) {
            return Err("WA_MEDIA_RETENTION: use 0 to keep media, or at least 1s".into());
        }
        self.batching.validate("prune_media")
    }
}

pub async fn run_once(pool: &PgPool, cfg: &Config, stop: &CancellationToken) -> TaskReport {
    if cfg.retention.is_zero() {
        return TaskReport::default();
    }
    let age = secs(cfg.retention);
    drain(&cfg.batching, stop, || {
        execute_bounded(
            pool,
            cfg.batching.timeout,
            sqlx::query(
                "delete from wa_media where id in (
                   select id from wa_media
                   where created_at < now() - make_interval(secs => $1)
                   order by created_at
                   limit $2)",
            )
            .bind(age)
            .bind(cfg.batching.size),
        )
    })
    .await
}
