//! `wa-outbox status`.
use crate::config::Config;

pub async fn status_command(_config: &Config, _json: bool) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
