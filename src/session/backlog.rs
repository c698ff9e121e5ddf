//! A session's page events not yet in the database: bounded, written in order, retried with
//! back-off while PostgreSQL is unreachable; dropped (counted and logged) only when full.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::writes::{write_page_event, PageWrite};
use crate::shared::{backoff, Shared};

/// Page events kept per session while they cannot be written.
pub const BACKLOG_CAP: usize = 10_000;

/// The page's writes not yet in the database, in order.
pub(super) struct Backlog {
    pub(super) queue: VecDeque<PageWrite>,
    pub(super) failures: u32,
    pub(super) retry_at: Option<Instant>,
    /// Incoming messages newer than the last recorded are to be asked from the page.
    pub(super) backfill_due: bool,
}

pub(super) enum Flushed {
    /// Everything written.
    Done,
    /// A write failed; the rest waits for `retry_at`.
    Waiting,
    /// The session is no longer ours.
    Lost,
}

impl Backlog {
    pub(super) fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            failures: 0,
            retry_at: None,
            backfill_due: false,
        }
    }

    pub(super) fn push(&mut self, shared: &Shared, id: &str, w: PageWrite) {
        if self.queue.len() >= BACKLOG_CAP {
            if let Some(m) = &shared.metrics {
                m.inc_page_events_dropped();
            }
            tracing::error!(session = %id, event = w.kind(), cap = BACKLOG_CAP,
                "page event dropped: the session's write backlog is full (PostgreSQL unreachable)");
            return;
        }
        self.queue.push_back(w);
    }

    /// Writes what it can, in order. A failure leaves the rest for `retry_at`.
    pub(super) async fn flush(&mut self, shared: &Shared, id: &str) -> Flushed {
        if self.retry_at.is_some_and(|t| t > Instant::now()) {
            return Flushed::Waiting;
        }
        self.retry_at = None;
        while let Some(w) = self.queue.front() {
            match write_page_event(shared, id, w).await {
                Ok(true) => {
                    self.queue.pop_front();
                    self.failures = 0;
                }
                Ok(false) => return Flushed::Lost,
                Err(e) => {
                    self.fail(shared, id, &e);
                    return Flushed::Waiting;
                }
            }
        }
        Flushed::Done
    }

    pub(super) fn fail(&mut self, shared: &Shared, id: &str, e: &dyn std::fmt::Display) {
        self.failures += 1;
        if let Some(m) = &shared.metrics {
            m.inc_page_write_retries();
        }
        let wait = backoff(
            self.failures,
            Duration::from_millis(100),
            Duration::from_secs(5),
        );
        tracing::warn!(session = %id, error = %e, pending = self.queue.len(), ?wait,
            "writing page events failed; the browser stays up and they are retried");
        self.retry_at = Some(Instant::now() + wait);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::driver::memory::{MemoryDriver, MemoryWorld};
    use crate::driver::IncomingMessage;

    /// A runner's shared state whose database is never reached (the pool connects lazily and
    /// nothing here writes): only what the backlog does with a full buffer is under test.
    fn shared(metrics: crate::http::Metrics) -> Shared {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        Shared {
            id: uuid::Uuid::new_v4(),
            pool,
            driver: Arc::new(MemoryDriver::new(MemoryWorld::new())),
            logins: Arc::new(crate::shared::NoLoginStore),
            media: None,
            cfg: crate::shared::RunnerConfig::from_config(&crate::config::Config::defaults()),
            sessions: Mutex::new(Default::default()),
            dispatch_wake: Default::default(),
            reconcile_wake: Default::default(),
            claim_wake: Default::default(),
            command_wake: Default::default(),
            draining: Default::default(),
            leases_done: Default::default(),
            leases_proved_at: Mutex::new(Instant::now()),
            metrics: Some(metrics),
        }
    }

    fn incoming(n: usize) -> PageWrite {
        PageWrite::Incoming(IncomingMessage {
            wa_message_id: format!("false_1555@c.us_{n}"),
            from: "1555@c.us".into(),
            chat_id: "1555@c.us".into(),
            kind: "text".into(),
            body: Some(format!("m{n}")),
            timestamp: 0,
            extra: serde_json::Value::Null,
        })
    }

    #[tokio::test]
    async fn a_full_backlog_drops_new_events_and_counts_each() {
        let metrics = crate::http::Metrics::new();
        let shared = shared(metrics.clone());
        let mut b = Backlog::new();
        for n in 0..BACKLOG_CAP + 3 {
            b.push(&shared, "s", incoming(n));
        }
        assert_eq!(b.queue.len(), BACKLOG_CAP);
        // The oldest are kept (written first, in order); the three newest were dropped.
        assert!(matches!(&b.queue[0], PageWrite::Incoming(m) if m.body.as_deref() == Some("m0")));
        let text = metrics.encode();
        assert!(text.contains("wa_page_events_dropped_total 3"), "{text}");
    }
}
