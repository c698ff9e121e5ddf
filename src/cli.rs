//! Command line: `migrate`, `run`, `status`, `sim`, `demo`. Thin by design: each subcommand
//! hands over to its module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "wa-outbox", version, about = "WhatsApp for Django through plain PostgreSQL rows",
          after_long_help = crate::config::help_table(), after_help = crate::config::help_table())]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply the schema migrations (idempotent).
    Migrate,
    /// Run a runner: claim sessions and messages and drive WhatsApp Web.
    Run,
    /// Show runners, sessions and the queue.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run the local WhatsApp Web simulator.
    Sim(crate::sim::SimArgs),
    /// The end-to-end demo on the embedded defaults.
    Demo(crate::demo::DemoArgs),
    /// Start or stop a throwaway PostgreSQL cluster (used by the test script).
    #[command(hide = true)]
    DevPg {
        #[arg(value_parser = ["start", "stop", "destroy"])]
        action: String,
        #[arg(long)]
        dir: std::path::PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match crate::config::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wa-outbox: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    crate::runner::init_tracing(&config);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wa-outbox: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Migrate => crate::db::migrate_command(&config).await,
            Command::Run => crate::runner::run_command(config).await,
            Command::Status { json } => crate::status::status_command(&config, json).await,
            Command::Sim(args) => crate::sim::main(args).await,
            Command::Demo(args) => crate::demo::main(config, args).await,
            Command::DevPg { action, dir } => dev_pg(&action, &dir).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wa-outbox: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the admin URL of a fast throwaway cluster in `dir` (started or reused), stops it, or
/// destroys it (stopped, its files and `dir` removed, wherever they live).
async fn dev_pg(action: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    use crate::embedded_pg::{EmbeddedPg, PgOptions};
    if action == "destroy" {
        return EmbeddedPg::destroy(dir).await;
    }
    let mut pg = EmbeddedPg::start(dir, PgOptions { fast: true }).await?;
    if action == "stop" {
        pg.force_stop()
    } else {
        pg.detach();
        println!("{}", pg.url("postgres"));
        Ok(())
    }
}
