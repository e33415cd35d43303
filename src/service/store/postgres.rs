//! The shared backend: a PostgreSQL database that any number of `ferry serve` nodes use at
//! once. Its URL is a secret (it may carry a password): it is read from the environment or a
//! file, and only [`redacted`] (scheme, host, port, database) ever appears in a message.
//!
//! sqlx's migrator holds an advisory lock while it migrates, so nodes starting together
//! migrate one at a time; a node refuses a store migrated beyond what it knows. Commits that
//! may make a sync due notify a channel every node listens on ([`WakeUps`]).

use super::{newer_schema, wake_channel, Db};
use crate::model::remote::Secret;
use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// Connections per node: the dispatcher's claims and finishes, the heartbeat, the HTTP
/// face's reads and enqueues.
const CONNECTIONS: u32 = 12;

/// How long a statement waits for a connection; while the database is unreachable, that is
/// how long a webhook waits for its 503.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// The URL without what may be secret: no user, password or parameters.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path()
        ),
        Err(_) => "(a store URL that is not a URL)".to_owned(),
    }
}

fn options(url: &Secret) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(url.expose()).map_err(|e| {
        anyhow::anyhow!(
            "the store URL {} is not a PostgreSQL URL ({}); write it like postgres://USER@HOST:5432/DATABASE",
            redacted(url.expose()),
            crate::model::remote::redact_text(&e.to_string())
        )
    })
}

/// Connects, and migrates the schema (one node at a time).
pub(super) async fn open(url: &Secret) -> Result<Db> {
    let place = redacted(url.expose());
    let pool = PgPoolOptions::new()
        .max_connections(CONNECTIONS)
        .acquire_timeout(CONNECT_WAIT)
        .connect_with(options(url)?)
        .await
        .with_context(|| format!("connecting to the store {place}"))?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .map_err(|e| newer_schema(e, &place))?;
    Ok(Db::Postgres(pool))
}

/// Connects with every transaction read-only: PostgreSQL refuses any write.
pub(super) async fn open_read_only(url: &Secret) -> Result<Db> {
    let place = redacted(url.expose());
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(CONNECT_WAIT)
        .connect_with(options(url)?.options([("default_transaction_read_only", "on")]))
        .await
        .with_context(|| format!("connecting to the store {place} read-only"))?;
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('mirrors') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .with_context(|| format!("reading the store {place}"))?;
    if !migrated {
        anyhow::bail!(
            "the store {place} has no ferry tables yet: start a ferry serve node with it first"
        );
    }
    Ok(Db::Postgres(pool))
}

/// Notifications from every node's commits that may have made a sync due (an event, a
/// follow-up, a retry, a node leaving).
pub struct WakeUps {
    listener: PgListener,
}

impl WakeUps {
    pub(super) async fn listen(pool: &PgPool) -> Result<WakeUps> {
        let mut listener = PgListener::connect_with(pool)
            .await
            .context("connecting to the store to listen for wake-ups")?;
        listener
            .listen(wake_channel!())
            .await
            .context("listening for wake-ups")?;
        Ok(WakeUps { listener })
    }

    /// Waits for the next wake-up. A lost connection is a wake-up too (notifications sent
    /// while it was down are lost, so look at the queue); the next call reconnects, and fails
    /// while the database is unreachable.
    pub async fn next(&mut self) -> Result<()> {
        self.listener
            .try_recv()
            .await
            .map(|_| ())
            .context("waiting for wake-ups from the other nodes")
    }
}
