//! Pool, migrations and the schema check.

use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::Config;
use crate::embedded_pg::{EmbeddedPg, PgOptions};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Every statement is bounded: a wedged query must not hang a loop forever.
const STATEMENT_TIMEOUT: &str = "30s";

pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    connect_as(url, max_connections, "wa-outbox").await
}

/// `application_name` tells the connections of one process apart in pg_stat_activity.
pub async fn connect_as(
    url: &str,
    max_connections: u32,
    application_name: &str,
) -> anyhow::Result<PgPool> {
    let opts: PgConnectOptions = url
        .parse()
        .with_context(|| "DATABASE_URL is not a valid PostgreSQL URL")?;
    let opts = opts
        .options([("statement_timeout", STATEMENT_TIMEOUT)])
        .application_name(application_name);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
        .context("cannot connect to PostgreSQL")
}

/// The client-side bound on one statement of the runner's loops: a query stuck on a connection
/// whose packets vanish (a partition, a failover) gives up after this, whatever the server does.
pub const STATEMENT_DEADLINE: Duration = Duration::from_secs(10);

/// Runs one statement within [`STATEMENT_DEADLINE`].
pub async fn bounded<T>(
    fut: impl std::future::Future<Output = sqlx::Result<T>>,
) -> sqlx::Result<T> {
    bounded_by(STATEMENT_DEADLINE, fut).await
}

/// Runs one statement within `deadline`; past it, an I/O error (the connection is dropped).
pub async fn bounded_by<T>(
    deadline: Duration,
    fut: impl std::future::Future<Output = sqlx::Result<T>>,
) -> sqlx::Result<T> {
    tokio::time::timeout(deadline, fut)
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from PostgreSQL within {deadline:?}"),
            )))
        })
}

/// Whether an error is the database being briefly away (restarting, failing over, refusing
/// connections for now) rather than something a retry cannot fix (a bad URL, a schema to
/// migrate, a wrong password).
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) => true,
            Some(sqlx::Error::Database(d)) => d.code().is_some_and(|c| {
                // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
                // 08xxx connection exceptions, 53300 too_many_connections.
                c.starts_with("57P") || c.starts_with("08") || c == "53300"
            }),
            _ => false,
        })
}

/// The database to use: DATABASE_URL, or the embedded cluster under WA_DATA_DIR/pg.
pub struct Database {
    pub url: String,
    pub embedded: Option<EmbeddedPg>,
}

pub async fn resolve(config: &Config) -> anyhow::Result<Database> {
    if let Some(url) = &config.database_url {
        return Ok(Database {
            url: url.clone(),
            embedded: None,
        });
    }
    let pg = EmbeddedPg::start(&config.data_dir.join("pg"), PgOptions::default()).await?;
    let url = pg.url("postgres");
    tracing::info!(data_dir = %pg.data_dir.display(), port = pg.port, "DATABASE_URL unset: using the embedded PostgreSQL");
    let files = if pg.cluster_dir == pg.data_dir {
        String::new()
    } else {
        // As root the postgres user keeps the files in a folder it can enter.
        format!(", files in {}", pg.cluster_dir.display())
    };
    eprintln!(
        "embedded PostgreSQL at {}{files}  (connect: {})",
        pg.data_dir.display(),
        pg.psql_hint()
    );
    Ok(Database {
        url,
        embedded: Some(pg),
    })
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")?;
    Ok(())
}

pub async fn migrate_command(config: &Config) -> anyhow::Result<()> {
    let db = resolve(config).await?;
    let pool = connect(&db.url, 2).await?;
    migrate(&pool).await?;
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    println!("schema is at version {latest}");
    Ok(())
}

/// Refuses a database that is not migrated, half migrated, or migrated by a newer binary.
pub async fn check_schema(pool: &PgPool) -> anyhow::Result<()> {
    let exists: bool = sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null")
        .fetch_one(pool)
        .await?;
    if !exists {
        bail!("the database is not migrated: run `wa-outbox migrate` first");
    }
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("select version, success from _sqlx_migrations order by version")
            .fetch_all(pool)
            .await?;
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    if let Some((v, _)) = applied.iter().find(|(v, _)| !known.contains(v)) {
        bail!("the database schema (migration {v}) is newer than this wa-outbox binary: upgrade the runner");
    }
    if let Some((v, _)) = applied.iter().find(|(_, ok)| !ok) {
        bail!("migration {v} failed part-way: fix it and run `wa-outbox migrate`");
    }
    if let Some(v) = known.iter().find(|v| !applied.iter().any(|(a, _)| a == *v)) {
        bail!("migration {v} is not applied: run `wa-outbox migrate`");
    }
    Ok(())
}
