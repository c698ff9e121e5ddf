//! Leader election through a lease row in `wa_leader`.
//!
//! One upsert both acquires and renews: it takes the row when it is free or expired, keeps it
//! when it is already ours, and touches nothing otherwise. Because it is a row with a time
//! limit rather than `pg_advisory_lock`, it needs no session-long connection and works behind
//! PgBouncer in transaction mode; a leader that dies simply stops renewing and is replaced once
//! its lease runs out.

use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

/// The `wa_leader.name` of the maintenance duty.
pub const MAINTENANCE: &str = "maintenance";

/// A runner's claim on one named duty.
pub struct Lease {
    pool: PgPool,
    name: &'static str,
    runner_id: uuid::Uuid,
    ttl: Duration,
    /// Local deadline until which we may act as leader: measured from before the upsert was
    /// sent, so it never outlasts the database's view of the lease.
    held_until: Option<Instant>,
}

impl Lease {
    pub fn new(pool: PgPool, name: &'static str, runner_id: uuid::Uuid, ttl: Duration) -> Self {
        Self {
            pool,
            name,
            runner_id,
            ttl,
            held_until: None,
        }
    }

    /// Acquires or renews. Returns whether we hold the lease now. A database error keeps the
    /// previous local deadline: we stay leader only until it passes.
    pub async fn try_acquire(&mut self) -> bool {
        let sent_at = Instant::now();
        let res = tokio::time::timeout(
            self.ttl,
            acquire(&self.pool, self.name, self.runner_id, self.ttl),
        )
        .await;
        match res {
            Ok(Ok(true)) => {
                if self.held_until.is_none() {
                    tracing::info!(duty = self.name, runner = %self.runner_id, "became leader");
                }
                self.held_until = Some(sent_at + self.ttl);
            }
            Ok(Ok(false)) => {
                if self.held_until.take().is_some() {
                    tracing::warn!(duty = self.name, runner = %self.runner_id, "leadership taken over by another runner");
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(duty = self.name, error = %e, "leader lease renewal failed");
            }
            Err(_) => {
                tracing::warn!(duty = self.name, "leader lease renewal timed out");
            }
        }
        self.is_held()
    }

    pub fn is_held(&self) -> bool {
        self.held_until.is_some_and(|t| Instant::now() < t)
    }

    /// Gives the duty up at once (graceful shutdown) so another runner need not wait a TTL.
    pub async fn resign(&mut self) {
        if self.held_until.take().is_none() {
            return;
        }
        let res = tokio::time::timeout(
            self.ttl,
            sqlx::query("delete from wa_leader where name = $1 and runner_id = $2")
                .bind(self.name)
                .bind(self.runner_id)
                .execute(&self.pool),
        )
        .await;
        match res {
            Ok(Ok(_)) => tracing::info!(duty = self.name, "resigned leadership"),
            _ => tracing::warn!(duty = self.name, "could not resign; the lease will expire"),
        }
    }
}

/// The single statement of the election. True when `runner_id` holds `name` afterwards.
pub async fn acquire(
    pool: &PgPool,
    name: &str,
    runner_id: uuid::Uuid,
    ttl: Duration,
) -> Result<bool, sqlx::Error> {
    let row: Option<uuid::Uuid> = sqlx::query_scalar(
        "insert into wa_leader (name, runner_id, lease_until)
         values ($1, $2, now() + make_interval(secs => $3))
         on conflict (name) do update
           set runner_id = excluded.runner_id, lease_until = excluded.lease_until
           where wa_leader.lease_until < now() or wa_leader.runner_id = excluded.runner_id
         returning runner_id",
    )
    .bind(name)
    .bind(runner_id)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(row == Some(runner_id))
}
