//! Fails queued messages of logged-out sessions with `session_logged_out`, and deletes stored
//! logins of logged-out sessions.
//!
//! An insert for a session that is already logged out fails at once (a trigger), and the
//! runner fails the queue when it logs a session out; this task catches what slips between the
//! two, e.g. a message inserted while the logout was being written, so nothing waits forever
//! for a login that will not come back by itself.
//!
//! A runner deletes a session's stored login before it writes `logged_out`; should that delete
//! fail (the database unreachable for a moment), the encrypted archive of a login that no longer
//! links anything would stay. [`delete_logins`] removes it on the next run.

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{drain, execute_bounded, Batching, TaskReport};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub batching: Batching,
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        self.batching.validate("fail_logged_out")
    }
}

pub async fn run_once(pool: &PgPool, cfg: &Config, stop: &CancellationToken) -> TaskReport {
    drain(&cfg.batching, stop, || {
        execute_bounded(
            pool,
            cfg.batching.timeout,
            sqlx::query(
                "update wa_message m set status = 'failed', error_code = 'session_logged_out',
                   error = 'session ' || m.session_id || ' is logged out', finished_at = now()
                 where m.id in (
                   select q.id from wa_message q
                   join wa_session s on s.id = q.session_id
                   where q.status = 'queued' and s.status = 'logged_out'
                   order by q.id
                   limit $1
                   for update of q skip locked)",
            )
            .bind(cfg.batching.size),
        )
    })
    .await
}

/// Deletes the stored logins of logged-out sessions that no runner holds.
pub async fn delete_logins(pool: &PgPool, cfg: &Config, stop: &CancellationToken) -> TaskReport {
    drain(&cfg.batching, stop, || {
        execute_bounded(
            pool,
            cfg.batching.timeout,
            sqlx::query(
                "delete from wa_session_auth a
                 where a.session_id in (
                   select s.id from wa_session s
                   join wa_session_auth x on x.session_id = s.id
                   where s.status = 'logged_out'
                     and (s.runner_id is null or coalesce(s.lease_until, '-infinity') < now())
                   order by s.id
                   limit $1
                   for update of x skip locked)",
            )
            .bind(cfg.batching.size),
        )
    })
    .await
}
