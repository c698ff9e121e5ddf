//! `wa-outbox sim`: a local WhatsApp Web for tests, demos and users' CI.
//!
//! A server (this module) and one self-contained HTML app (`app.html`) that presents the module
//! surface of the real page (`window.require(name)`, `window.Debug.VERSION`), so the product's
//! driver and unmodified whatsapp-web.js run against it exactly as against web.whatsapp.com.
//! The page talks to the server over a WebSocket; tests and demos steer the "phones" through the
//! JSON control API under `/_sim/`. See docs/simulator.md and docs/sim-surface.md.

mod media_in;
mod server;
mod version;
mod world;

use std::io::Write;
use std::time::Duration;

pub use server::{router, SimState};
pub use version::{WaVersion, EARLY_2026_WA_VERSION, LID_FROM_BUILD, NEWEST_WA_VERSION};
pub use world::{AutoAck, SimConfig};

#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Address the page uses to reach this server (defaults to the bound address). Set it when
    /// the sim sits behind a proxy or listens on 0.0.0.0.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Milliseconds until the first QR ref is replaced (WhatsApp Web: 60 s).
    #[arg(long, default_value_t = 60_000)]
    pub qr_first_ms: u64,
    /// Milliseconds between later QR refs (WhatsApp Web: 20 s).
    #[arg(long, default_value_t = 20_000)]
    pub qr_interval_ms: u64,
    /// QR refs a page shows before it goes idle (`UNPAIRED_IDLE`, "click to reload the QR
    /// code") until the page asks for more (WhatsApp Web: 6); 0 never idles.
    #[arg(long, default_value_t = 6)]
    pub qr_refs: u32,
    /// Milliseconds between CONNECTED and `hasSynced` (the history sync of the real page).
    #[arg(long, default_value_t = 1_000)]
    pub sync_delay_ms: u64,
    /// How far acks progress on their own: none, server, device or read.
    #[arg(long, default_value = "read")]
    pub auto_ack: String,
    /// Milliseconds between automatic ack steps (server → device → read).
    #[arg(long, default_value_t = 300)]
    pub ack_step_ms: u64,
    /// The WhatsApp Web build to model (`Debug.VERSION`), e.g. 2.3000.1031490220 for the
    /// early-2026 page; each behaviour switches at the build where the real page changed
    /// (docs/sim-surface.md, "By version"). Default: the newest modelled.
    #[arg(long, default_value = NEWEST_WA_VERSION)]
    pub wa_version: String,
    /// On builds that reload themselves after pairing, milliseconds from a fresh pairing to that
    /// reload (OpenWA PR #1181: "roughly five minutes"); 0 never reloads.
    #[arg(long, default_value_t = 300_000)]
    pub reload_after_pair_ms: u64,
}

impl SimArgs {
    fn config(&self) -> anyhow::Result<SimConfig> {
        let auto_ack: AutoAck = self
            .auto_ack
            .parse()
            .map_err(|e| anyhow::anyhow!("--auto-ack: {e}"))?;
        if self.qr_first_ms == 0 || self.qr_interval_ms == 0 {
            anyhow::bail!("--qr-first-ms and --qr-interval-ms must be greater than 0");
        }
        WaVersion::parse(&self.wa_version).map_err(|e| anyhow::anyhow!("--wa-version: {e}"))?;
        Ok(SimConfig {
            wa_version: self.wa_version.trim().to_string(),
            reload_after_pair: Duration::from_millis(self.reload_after_pair_ms),
            qr_first: Duration::from_millis(self.qr_first_ms),
            qr_interval: Duration::from_millis(self.qr_interval_ms),
            qr_refs: self.qr_refs,
            sync_delay: Duration::from_millis(self.sync_delay_ms),
            ack_step: Duration::from_millis(self.ack_step_ms),
            auto_ack,
        })
    }
}

impl Default for SimConfig {
    /// The CLI defaults: the newest modelled page, WhatsApp's QR timings, read acks 300 ms apart.
    fn default() -> Self {
        SimConfig {
            wa_version: NEWEST_WA_VERSION.to_string(),
            reload_after_pair: Duration::from_millis(300_000),
            qr_first: Duration::from_millis(60_000),
            qr_interval: Duration::from_millis(20_000),
            qr_refs: 6,
            sync_delay: Duration::from_millis(1_000),
            ack_step: Duration::from_millis(300),
            auto_ack: AutoAck::Read,
        }
    }
}

/// Runs a simulator inside this process (for the demo and tests) until the returned task is
/// aborted. Returns its base URL, e.g. `http://127.0.0.1:41237`.
pub async fn spawn(
    listen: &str,
    config: SimConfig,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    WaVersion::parse(&config.wa_version).map_err(|e| anyhow::anyhow!("wa_version: {e}"))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr()?;
    let state = SimState::new(config, None, Some(local));
    let ticker = state.spawn_ticker();
    let app = router(state);
    let task = tokio::spawn(async move {
        // Aborting this task drops the guard, which stops the QR ticker with it.
        let _ticker = AbortOnDrop(ticker);
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    Ok((format!("http://{local}"), task))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn main(args: SimArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let local = listener.local_addr()?;
    let public_url = match &args.public_url {
        Some(u) => {
            let parsed = url::Url::parse(u).map_err(|e| anyhow::anyhow!("--public-url: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                anyhow::bail!("--public-url must be http(s)");
            }
            Some(u.trim_end_matches('/').to_string())
        }
        // The Host of each request names us as the page's caller sees us.
        None => None,
    };
    let state = SimState::new(config, public_url, Some(local));
    let _ticker = state.spawn_ticker();
    let app = router(state);

    // Tests and scripts read the port from this first line, so it must reach them at once.
    let mut out = std::io::stdout().lock();
    writeln!(out, "sim listening on http://{local}")?;
    out.flush()?;
    drop(out);

    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

/// Ctrl-C or SIGTERM (what CI runners and Kubernetes send) ends the sim cleanly.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn spawns_in_process() {
        let (base, task) = super::spawn("127.0.0.1:0", super::SimConfig::default())
            .await
            .expect("spawn");
        let text = reqwest::get(format!("{base}/_sim/devices"))
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(body, serde_json::json!({"devices": []}));
        task.abort();
    }
}
