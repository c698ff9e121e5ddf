//! Deletes finished messages and events older than WA_RETENTION, in bounded batches.
//!
//! Events go first: deleting a message nulls `wa_event.message_id` of its events, so fewer
//! remaining events make the message batches cheaper. Messages are found by `finished_at`
//! (indexed) and, for rows a runner finished without setting it, by a final status and
//! `updated_at` (indexed by the sessions migration). A batch's ids are read first
//! (`id = any(array(...))`) and deleted by primary key: with `id in (subquery)` the planner
//! joined the batch to the table, and on a table of 100 k rows chose a sequential scan of it for
//! every batch (issue 16's benchmark, EXPLAIN of one batch).

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{drain, execute_bounded, secs, Batching, TaskReport};

/// Statuses after which a message row changes only through late acks.
pub const FINISHED_STATUSES: &str =
    "('sent', 'delivered', 'read', 'played', 'failed', 'cancelled')";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Zero keeps everything.
    pub retention: Duration,
    pub batching: Batching,
}

impl Config {
    pub fn new(retention: Duration) -> Self {
        Self {
            retention,
            batching: Batching::default(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.retention.is_zero() && self.retention < Duration::from_secs(1) {
            return Err("WA_RETENTION: use 0 to keep everything, or at least 1s".into());
        }
        self.batching.validate("prune")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub events: TaskReport,
    pub messages: TaskReport,
}

pub async fn run_once(pool: &PgPool, cfg: &Config, stop: &CancellationToken) -> Report {
    if cfg.retention.is_zero() {
        return Report::default();
    }
    let age = secs(cfg.retention);
    let events = drain(&cfg.batching, stop, || {
        execute_bounded(
            pool,
            cfg.batching.timeout,
            sqlx::query(
                "delete from wa_event where id = any(array(
                   select id from wa_event
                   where created_at < now() - make_interval(secs => $1)
                   order by created_at
                   limit $2))",
            )
            .bind(age)
            .bind(cfg.batching.size),
        )
    })
    .await;

    let mut messages = drain(&cfg.batching, stop, || {
        execute_bounded(
            pool,
            cfg.batching.timeout,
            sqlx::query(
                "delete from wa_message where id = any(array(
                   select id from wa_message
                   where finished_at < now() - make_interval(secs => $1)
                   order by finished_at
                   limit $2))",
            )
            .bind(age)
            .bind(cfg.batching.size),
        )
    })
    .await;
    // Rows finished without `finished_at`, within what is left of the run's batch budget.
    if messages.ok() && messages.batches < cfg.batching.max_batches && !stop.is_cancelled() {
        let rest = Batching {
            max_batches: cfg.batching.max_batches - messages.batches,
            ..cfg.batching.clone()
        };
        let sql = format!(
            "delete from wa_message where id = any(array(
               select id from wa_message
               where finished_at is null and status in {FINISHED_STATUSES}
                 and updated_at < now() - make_interval(secs => $1)
               order by updated_at
               limit $2))"
        );
        let unfinished = drain(&rest, stop, || {
            execute_bounded(
                pool,
                cfg.batching.timeout,
                sqlx::query(&sql).bind(age).bind(cfg.batching.size),
            )
        })
        .await;
        messages.rows += unfinished.rows;
        messages.batches += unfinished.batches;
        messages.error = unfinished.error;
    }
    Report { events, messages }
}

/// Folds the per-backend rows of wa_message_count (migrations/20261203000022_message_counts.sql)
/// into backend 0, so wa_outbox_stats sums about one row per session and status. Rows a
/// transaction is writing are skipped (folded next time): nothing waits on this. Counts of
/// deleted sessions and counts at zero go.
pub async fn compact_counts(pool: &PgPool, batching: &Batching) -> TaskReport {
    let mut report = TaskReport::default();
    for sql in [
        "with d as (
           delete from wa_message_count where ctid in (
             select ctid from wa_message_count where backend <> 0 for update skip locked)
           returning session_id, status, n)
         insert into wa_message_count (session_id, status, backend, n)
         select session_id, status, 0, sum(n)::bigint from d group by 1, 2
         on conflict (session_id, status, backend) do update set n = wa_message_count.n + excluded.n",
        "delete from wa_message_count c where c.backend = 0
           and (c.n = 0 or not exists (select 1 from wa_session s where s.id = c.session_id))",
    ] {
        match execute_bounded(pool, batching.timeout, sqlx::query(sql)).await {
            Ok(n) => {
                report.rows += n;
                report.batches += 1;
            }
            Err(e) => {
                report.error = Some(e);
                break;
            }
        }
    }
    report
}
