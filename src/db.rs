//! Pool, migrations and the schema check.
use crate::config::Config;

pub async fn migrate_command(_config: &Config) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
