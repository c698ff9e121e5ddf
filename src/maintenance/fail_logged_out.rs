//! Fails queued messages of logged-out sessions with `session_logged_out`.
//!
//! An insert for a session that is already logged out fails at once (a trigger), and the
//! runner fails the queue when it logs a session out; this task catches what slips between the
//! two, e.g. a message inserted while the logout was being written, so nothing waits forever
//! for a login that will not come back by itself.

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
