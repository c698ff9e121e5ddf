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
            tracing::error!(session = %id, event = ?w, cap = BACKLOG_CAP,
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
