//! `wa-outbox demo`: the end-to-end walk-through on the embedded defaults.

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {}

pub async fn main(_config: crate::config::Config, _args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("the demo is not built yet")
}
