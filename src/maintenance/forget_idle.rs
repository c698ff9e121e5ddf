//! Logs out sessions idle longer than WA_FORGET_AFTER (the "destroy after X days" of many
//! gateways), so a login nobody uses does not stay linked to someone's phone forever.
//!
//! Only sessions without a browser (`hibernated`, `stopped`) are considered. With a stored
//! login, the task only sets `desired_state = 'logged_out'`: unlinking needs a browser, so the
//! runner that claims the session restores the login, logs the device out through the page (the
//! phone then no longer lists it) and deletes the archive. Without a stored login there is
//! nothing to unlink, and the session is marked `logged_out` here, with its `session_status`
//! event.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{drain, execute_bounded, secs, Batching, TaskReport};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Zero disables forgetting.
    pub forget_after: Duration,
    pub batching: Batching,
}

impl Config {
    pub fn new(forget_after: Duration) -> Self {
        Self {
            forget_after,
            batching: Batching::default(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.forget_after.is_zero() && self.forget_after < Duration::from_secs(1) {
            return Err("WA_FORGET_AFTER: use 0 to disable, or at least 1s".into());
        }
        self.batching.validate("forget_idle")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Sessions with a stored login now asked to log out (a runner finishes the job).
    pub logout_requested: TaskReport,
    /// Sessions without a stored login marked logged out directly.
    pub marked_logged_out: TaskReport,
}

pub async fn run_once(pool: &PgPool, cfg: &Config, stop: &CancellationToken) -> Report {
    if cfg.forget_after.is_zero() {
        return Report::default();
    }
    let idle = secs(cfg.forget_after);
    let logout_requested = drain(&cfg.batching, stop, || {
        execute_bounded(
            pool,
            cfg.batching.timeout,
            sqlx::query(
                "update wa_session s set desired_state = 'logged_out'
                 where s.id in (
                   select c.id from wa_session c
                   where c.status in ('hibernated', 'stopped') and c.desired_state <> 'logged_out'
                     and c.last_active_at < now() - make_interval(secs => $1)
                     and exists (select 1 from wa_session_auth a where a.session_id = c.id)
                   order by c.last_active_at
                   limit $2
                   for update skip locked)",
            )
            .bind(idle)
            .bind(cfg.batching.size),
        )
    })
    .await;
    // A session some runner still holds a live lease on is left to that runner.
    let marked_logged_out = drain(&cfg.batching, stop, || {
        execute_bounded(
            pool,
            cfg.batching.timeout,
            sqlx::query(
                "with s as (
                   update wa_session s set desired_state = 'logged_out', status = 'logged_out',
                     runner_id = null, lease_until = null, qr_code = null, qr_image = null,
                     qr_expires_at = null, pairing_code = null
                   where s.id in (
                     select c.id from wa_session c
                     where c.status in ('hibernated', 'stopped')
                       and c.last_active_at < now() - make_interval(secs => $1)
                       and not exists (select 1 from wa_session_auth a where a.session_id = c.id)
                       and (c.runner_id is null or coalesce(c.lease_until, '-infinity') < now())
                     order by c.last_active_at
                     limit $2
                     for update skip locked)
                   returning s.id, s.status, s.error_code, s.phone_number)
                 insert into wa_event (session_id, kind, payload)
                 select id, 'session_status',
                   jsonb_build_object('status', status, 'error_code', error_code,
                                      'phone_number', phone_number, 'reason', 'forgotten')
                 from s",
            )
            .bind(idle)
            .bind(cfg.batching.size),
        )
    })
    .await;
    Report {
        logout_requested,
        marked_logged_out,
    }
}
