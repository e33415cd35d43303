//! The embedded backend: one SQLite file (WAL, `synchronous = FULL`, so a committed event
//! survives a power loss) owned by one `ferry serve` (the app holds a lock on the data
//! directory), read by anyone through a read-only handle.

use super::{newer_schema, Db};
use crate::service::status::now_ms;
use anyhow::{Context, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::time::Duration;

/// Read-only connections for the status reads (the page, metrics, the API, the dispatcher's
/// look at what is due).
pub(super) const READ_CONNECTIONS: u32 = 4;

/// How long a write waits for the write connection (the same as for SQLite's write lock),
/// so that a stuck writer turns into errors (503 for a webhook) rather than hung requests.
const WRITE_WAIT: Duration = Duration::from_secs(5);

/// Opens (creating it and its parent directories if needed) the database at `path`, migrates
/// it, and requeues every sync that was running when the previous process died: its events
/// are still unhandled, so running it again loses nothing. One process owns the file, so every
/// other node recorded in it is gone.
pub(super) async fn open(path: &Path) -> Result<Db> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .with_context(|| format!("creating the directory {}", parent.display()))?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a committed event survives a power loss, not just a process crash.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    // The write connection stays open for the life of the store: an enqueue never waits for a
    // connection to be opened.
    let write = SqlitePoolOptions::new()
        .min_connections(1)
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(WRITE_WAIT)
        .connect_with(options.clone())
        .await
        .with_context(|| format!("opening the database {}", path.display()))?;
    sqlx::migrate!("./migrations/sqlite")
        .run(&write)
        .await
        .map_err(|e| newer_schema(e, &path.display().to_string()))?;
    let read = SqlitePoolOptions::new()
        .max_connections(READ_CONNECTIONS)
        .connect_with(options.create_if_missing(false).read_only(true))
        .await
        .with_context(|| format!("opening the database {} for reading", path.display()))?;

    let recovered = sqlx::query(
        "UPDATE pending SET queued = TRUE, running = FALSE, not_before = $1, \
           claimed_through = NULL, node = NULL, lease_until = NULL \
         WHERE running",
    )
    .bind(now_ms())
    .execute(&write)
    .await
    .context("requeueing syncs interrupted by the previous process")?
    .rows_affected();
    sqlx::query("DELETE FROM nodes")
        .execute(&write)
        .await
        .context("forgetting the nodes of previous processes")?;
    if recovered > 0 {
        tracing::info!(
            recovered,
            "requeued syncs that were running when ferry stopped"
        );
    }
    Ok(Db::Sqlite { read, write })
}

/// Opens an existing database for reading only: SQLite refuses any write on these
/// connections, and a missing file is an error, not a new database.
pub(super) async fn open_read_only(path: &Path) -> Result<Db> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .with_context(|| format!("opening the database {} read-only", path.display()))?;
    // Both roles on the one read-only connection.
    Ok(Db::Sqlite {
        read: pool.clone(),
        write: pool,
    })
}
