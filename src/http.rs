//! Health, readiness and Prometheus metrics on WA_HTTP_LISTEN.

use std::time::Duration;

/// Placeholder until the metrics endpoint lands.
#[derive(Clone, Default)]
pub struct Metrics;

impl Metrics {
    pub fn observe_claim_latency(&self, _d: Duration) {}
    pub fn observe_send_latency(&self, _d: Duration) {}
    pub fn inc_browser_restarts(&self) {}
    pub fn set_live_browsers(&self, _n: i64) {}
}
