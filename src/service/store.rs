//! The durable state of `ferry serve`: the queue of syncs, the events that caused them, the
//! history of runs, the per-mirror and per-destination status, and the nodes serving it. One
//! API over two backends: an embedded SQLite file (one node; `sqlite.rs`) or a PostgreSQL
//! database that several nodes share (`postgres.rs`). Every operation below is one text of SQL
//! run on either (the [`on_db!`] macro compiles each body once per backend); only how a write
//! transaction starts, which rows it locks and how other nodes are woken differ ([`Dialect`]).
//!
//! The store is the service's memory across restarts, so every write that the outside world
//! relies on is committed before the call returns: a webhook is answered 202 only after
//! [`Store::enqueue`] has committed its event. The queue is one `pending` row per mirror (see
//! the migrations for the schema):
//!
//! - `queued`: a run is needed; `running`: a run is in progress; both may be set (events
//!   arrived during the run: exactly one follow-up run, however many arrived).
//! - `not_before`: the earliest time the run may start (a retry waits for it);
//!   `attempt`: retries so far.
//! - `node`, `lease_until`: who runs it, and until when the claim holds unless that node's
//!   heartbeat ([`Store::heartbeat`]) renews it. A lapsed claim is taken over by the next
//!   claim (on any node), which covers the same events and says so in `interrupted`.
//! - `interrupted`: why the last run ended without recording a result ([`Store::release`],
//!   a takeover).
//!
//! Every write that reads what it then changes (enqueue, claim, finish, registering mirrors)
//! is one transaction that holds what it reads: SQLite's write lock taken up front (`BEGIN
//! IMMEDIATE`), or in PostgreSQL the rows themselves (`FOR UPDATE`; a claim skips rows another
//! node holds, `SKIP LOCKED`). An enqueue locks its mirror's queue row before it inserts the
//! event, so an event older than a claim's watermark never commits after the claim.
//!
//! Affinity: a mirror prefers one live node (rendezvous hashing of its name over the nodes
//! whose heartbeat is fresh), so its cache stays warm there; other nodes take it only when it
//! has been due for [`AFFINITY_GRACE_MS`] (its node is busy or gone).

mod postgres;
mod sqlite;

pub use postgres::WakeUps;

use crate::engine::report::{DestinationReport, ErrorReport, MirrorReport};
use crate::model::mirror::Trigger;
use crate::model::refs::{Oid, RefMap};
use crate::model::remote::Secret;
use crate::service::status::{
    now_ms, DestinationStatus, FleetStatus, MirrorState, MirrorStatus, NodeStatus, RunDetail,
    RunSummary,
};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A mirror as [`Store::register_mirrors`] records it: name, redacted source, redacted
/// destinations, and the fingerprint of its configuration.
pub type Registration = (String, String, Vec<String>, String);

/// Where the store lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// An SQLite file, created if missing; one `ferry serve` at a time.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (it may carry a password: never shown; see [`Location::describe`]).
    Postgres(Secret),
}

impl Location {
    /// The location for messages: the file, or the URL without its credentials.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(url) => postgres::redacted(url.expose()),
        }
    }
}

/// Who is using the store: the node's id and how long its claims hold without a heartbeat.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub lease: Duration,
}

/// How long a due mirror waits for its preferred node before any node may take it.
pub const AFFINITY_GRACE_MS: i64 = 2_000;

/// Nodes whose heartbeat is older than this are forgotten when history is pruned.
const FORGET_NODES_MS: i64 = 24 * 3600 * 1000;

/// A handle on the store; cheap to clone (connection pools and the node's identity).
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    node: Arc<str>,
    lease_ms: i64,
    started_at: i64,
}

/// The backend and its pools.
#[derive(Debug, Clone)]
enum Db {
    /// Reads and writes use separate pools, so that no amount of read traffic (the page, the
    /// API, metrics scrapes) can keep an enqueue waiting for a connection: `read` holds
    /// read-only connections (WAL readers never block the writer nor wait for it), `write` the
    /// single connection every write goes through (SQLite admits one writer at a time anyway;
    /// queueing for the one connection is fair and wakes at once).
    Sqlite { read: SqlitePool, write: SqlitePool },
    /// One pool: readers never block writers in PostgreSQL.
    Postgres(PgPool),
}

/// The PostgreSQL channel a commit that may have made a sync due notifies.
macro_rules! wake_channel {
    () => {
        "ferry_wake"
    };
}
use wake_channel;

/// What differs between the backends in the statements the store runs.
struct Dialect {
    /// Starts a write transaction.
    begin: &'static str,
    /// Locks the rows a transaction reads and then changes (nothing in SQLite, where the
    /// write transaction holds the whole database).
    lock: &'static str,
    /// Locks them too, skipping rows another node's transaction holds (a claim).
    lock_free: &'static str,
    /// Wakes every node's dispatcher once the transaction commits.
    wake: Option<&'static str>,
}

const SQLITE: Dialect = Dialect {
    begin: "BEGIN IMMEDIATE",
    lock: "",
    lock_free: "",
    wake: None,
};

const POSTGRES: Dialect = Dialect {
    begin: "BEGIN",
    lock: " FOR UPDATE",
    lock_free: " FOR UPDATE SKIP LOCKED",
    wake: Some(concat!("SELECT pg_notify('", wake_channel!(), "', '')")),
};

/// Runs `$body` with `$read` and `$write` bound to the backend's pools and `$sql` to its
/// [`Dialect`]. The body is compiled once per backend, so one text of SQL (`$1` parameters,
/// `TRUE`/`FALSE`, no backend-only functions) serves both.
macro_rules! on_db {
    ($db:expr, |$read:ident, $write:ident, $sql:ident| $body:expr) => {
        match $db {
            Db::Sqlite {
                read: $read,
                write: $write,
            } => {
                let $sql = &SQLITE;
                $body
            }
            Db::Postgres(pool) => {
                let ($read, $write) = (pool, pool);
                let $sql = &POSTGRES;
                $body
            }
        }
    };
}

/// Creates the mirror's row if the store has not heard of it (an ad hoc mirror: enqueued
/// without being registered), so that events and runs can reference it.
macro_rules! ensure_mirror {
    ($tx:ident, $mirror:expr) => {
        sqlx::query("INSERT INTO mirrors (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .bind($mirror)
            .execute(&mut *$tx)
            .await
            .with_context(|| format!("recording the mirror {}", $mirror))?
    };
}

/// The id of `$mirror`'s newest event (0: none), read with `$executor`.
macro_rules! newest_event {
    ($executor:expr, $mirror:expr) => {
        sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(id), 0) FROM events WHERE mirror = $1")
            .bind($mirror)
            .fetch_one($executor)
            .await
            .with_context(|| format!("reading the events of {}", $mirror))?
    };
}

/// The focus and claimed ids of a run covering `$mirror`'s unhandled events up to id
/// `$through` (see [`claim_focus`]), read in `$tx`.
macro_rules! focus_of_events {
    ($tx:ident, $mirror:expr, $through:expr) => {{
        let failing: i64 = sqlx::query_scalar("SELECT failure_streak FROM mirrors WHERE name = $1")
            .bind($mirror)
            .fetch_one(&mut *$tx)
            .await
            .with_context(|| format!("reading the failure streak of {}", $mirror))?;
        let named: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT refs FROM events WHERE mirror = $1 AND run_id IS NULL AND id <= $2 \
             ORDER BY id",
        )
        .bind($mirror)
        .bind($through)
        .fetch_all(&mut *$tx)
        .await
        .with_context(|| format!("reading the refs of the events of {}", $mirror))?;
        claim_focus(failing, named)
    }};
}

/// `$mirror`'s queue entry, read in `$tx` and locked until it ends (PostgreSQL; SQLite's
/// write lock covers it).
macro_rules! locked_pending {
    ($tx:ident, $sql:ident, $mirror:expr) => {
        sqlx::query_as::<_, Pending>(&format!(
            "SELECT queued, running, claimed_through, node FROM pending WHERE mirror = $1{}",
            $sql.lock
        ))
        .bind($mirror)
        .fetch_optional(&mut *$tx)
        .await
        .with_context(|| format!("reading the queue entry of {}", $mirror))?
    };
}

/// Wakes the other nodes when `$tx` commits (PostgreSQL), so that a node with a free worker
/// claims what this transaction made due.
macro_rules! wake_nodes {
    ($tx:ident, $sql:ident) => {
        if let Some(wake) = $sql.wake {
            sqlx::query(wake)
                .execute(&mut *$tx)
                .await
                .context("waking the other nodes")?;
        }
    };
}

/// A sync a dispatcher has taken: the mirror is now `running` until [`Store::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub mirror: String,
    /// The distinct triggers of the events this run handles, oldest first; `[Retry]` for a
    /// retry that no new event joined.
    pub triggers: Vec<Trigger>,
    /// Retries before this run (0 for a first try).
    pub attempt: u32,
    /// The `now` the claim was made at.
    pub started_at: i64,
    /// The refs this run may be narrowed to (sorted, distinct): the union of the refs its
    /// events named. Empty (the whole selection) when one of them named none or was not a
    /// push, when it covers no event (a retry), or when the mirror's last run failed (a later
    /// event's refs must not hide what that run did not sync).
    pub focus: Vec<String>,
    /// What the events say the focus's refs point at now on the source: a ref only when
    /// every event naming it gave the same new id (events that disagree, arriving out of
    /// order say, leave it out, so the run fetches it).
    pub claimed: RefMap,
    /// The node whose lapsed claim this one took over (`None`: a claim of a queued mirror).
    pub taken_from: Option<String>,
    /// The newest event this claim covers (its watermark): what the run reports in
    /// [`Finish::covered_through`] unless it took later events in.
    pub through: i64,
}

/// What a finished run reports to the store.
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    pub mirror: &'a str,
    pub started_at: i64,
    pub finished_at: i64,
    pub trigger: Trigger,
    pub report: &'a MirrorReport,
    /// `Some(at)`: the failure was transient; run again at `at` (unless an event comes first).
    pub retry_at: Option<i64>,
    /// The newest event the run knows it covered: its claim's watermark, or the last one
    /// [`Store::take_later_pushes`] answered with. Events past it are not marked handled and
    /// get a follow-up run even when the claim's watermark moved past them: a take whose
    /// answer was lost (its commit reached the store, the reply did not) must not count as
    /// synced. `None` for a run that was not claimed.
    pub covered_through: Option<i64>,
}

/// Later events taken into a running claim (see [`Store::take_later_pushes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Where the events leave the focus's refs.
    pub claimed: RefMap,
    /// The claim's new watermark: the newest event taken.
    pub through: i64,
}

/// What [`Store::finish`] recorded, for the service's notification decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishOutcome {
    pub run_id: i64,
    /// Consecutive failed runs including this one (0 after a success).
    pub failure_streak: u32,
    /// Whether a failure notification is outstanding for this mirror (as last set by
    /// [`Store::mark_notified`]). `finish` leaves it alone: after a success with
    /// `was_notified`, the service sends a recovery notice and clears it.
    pub was_notified: bool,
}

/// One `pending` row as `finish` reads it.
#[derive(sqlx::FromRow)]
struct Pending {
    queued: bool,
    running: bool,
    claimed_through: Option<i64>,
    node: Option<String>,
}

/// A claimable `pending` row as `claim` first reads it: due since `due_at` (its `not_before`,
/// or when its lapsed lease ended).
#[derive(sqlx::FromRow)]
struct DueRow {
    mirror: String,
    due_at: i64,
}

/// A `pending` row as `claim` holds it.
#[derive(sqlx::FromRow)]
struct HeldRow {
    attempt: i64,
    running: bool,
    node: Option<String>,
}

/// The `mirrors` columns `finish` reads before updating the state and streak.
#[derive(sqlx::FromRow)]
struct MirrorRow {
    config_state: String,
    failure_streak: i64,
    notified: bool,
}

/// The base row of a mirror's status; the pending columns are NULL when nothing is pending.
#[derive(sqlx::FromRow)]
struct StatusRow {
    name: String,
    fleet: Option<String>,
    source: String,
    state: String,
    failure_streak: i64,
    last_node: Option<String>,
    queued: Option<bool>,
    running: Option<bool>,
    not_before: Option<i64>,
    attempt: Option<i64>,
    interrupted: Option<String>,
    node: Option<String>,
}

/// A `destinations` row, its last error as JSON.
#[derive(sqlx::FromRow)]
struct DestinationRow {
    url: String,
    last_success_at: Option<i64>,
    last_attempt_at: Option<i64>,
    last_error: Option<String>,
}

/// A `runs` row without its report.
#[derive(sqlx::FromRow)]
struct RunSummaryRow {
    id: i64,
    mirror: String,
    trigger_name: String,
    started_at: i64,
    finished_at: i64,
    ok: bool,
    node: Option<String>,
}

/// A `runs` row with its report as JSON.
#[derive(sqlx::FromRow)]
struct RunRow {
    #[sqlx(flatten)]
    summary: RunSummaryRow,
    report: String,
    oldest_event_at: Option<i64>,
}

/// A `fleets` row, its problems as JSON.
#[derive(sqlx::FromRow)]
struct FleetRow {
    name: String,
    attempted_at: i64,
    succeeded_at: Option<i64>,
    members: i64,
    error: Option<String>,
    problems: String,
    node: Option<String>,
}

/// A `nodes` row.
#[derive(sqlx::FromRow)]
struct NodeRow {
    id: String,
    started_at: i64,
    heartbeat_at: i64,
    version: String,
}

impl RunSummaryRow {
    /// The run's summary, its trigger parsed.
    fn into_summary(self) -> Result<RunSummary> {
        Ok(RunSummary {
            id: self.id,
            mirror: self.mirror,
            trigger: parse_trigger(&self.trigger_name)?,
            started_at: self.started_at,
            finished_at: self.finished_at,
            ok: self.ok,
            node: self.node,
        })
    }
}

const STATUS_SELECT: &str =
    "SELECT m.name, m.fleet, m.source, m.state, m.failure_streak, m.last_node, \
     p.queued, p.running, p.not_before, p.attempt, p.interrupted, p.node \
     FROM mirrors m LEFT JOIN pending p ON p.mirror = m.name";

const RUN_COLUMNS: &str = "id, mirror, trigger_name, started_at, finished_at, ok, node";

/// Which rows a claim may take at `$1`: queued and due, or running on a lapsed lease.
const CLAIMABLE: &str = "((p.queued AND NOT p.running AND p.not_before <= $1) \
     OR (p.running AND p.lease_until < $1))";

impl Store {
    /// Opens the store as `node` (creating an SQLite file and its directories if needed) and
    /// migrates it. SQLite: requeues every sync that was running when the previous process
    /// died (one process owns the file). PostgreSQL: lapsed claims are taken over by the next
    /// claim instead, whichever node makes it.
    pub async fn open(location: &Location, node: Node) -> Result<Store> {
        let db = match location {
            Location::Sqlite(path) => sqlite::open(path).await?,
            Location::Postgres(url) => postgres::open(url).await?,
        };
        Ok(Store::with_db(db, node))
    }

    /// Opens an existing store for reading only, as `ferry status` and `ferry runs` do when
    /// the service does not answer: no migration, no requeueing of running syncs (the service
    /// may be alive and running them), and the backend refuses any write.
    pub async fn open_read_only(location: &Location) -> Result<Store> {
        let db = match location {
            Location::Sqlite(path) => sqlite::open_read_only(path).await?,
            Location::Postgres(url) => postgres::open_read_only(url).await?,
        };
        let node = Node {
            id: "reader".to_owned(),
            lease: Duration::ZERO,
        };
        Ok(Store::with_db(db, node))
    }

    fn with_db(db: Db, node: Node) -> Store {
        Store {
            db,
            node: node.id.into(),
            lease_ms: i64::try_from(node.lease.as_millis()).unwrap_or(i64::MAX),
            started_at: now_ms(),
        }
    }

    /// The same store used as another node (tests of several nodes on one store).
    #[cfg(test)]
    pub fn as_node(&self, id: &str) -> Store {
        Store {
            node: id.into(),
            ..self.clone()
        }
    }

    /// This handle's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Wake-ups from the other nodes (PostgreSQL's LISTEN): every commit that may have made
    /// a sync due. `None` for SQLite, where the one process wakes itself.
    pub async fn wake_ups(&self) -> Result<Option<WakeUps>> {
        match &self.db {
            Db::Sqlite { .. } => Ok(None),
            Db::Postgres(pool) => WakeUps::listen(pool).await.map(Some),
        }
    }

    /// Records an accepted trigger and makes sure a run will handle it. Returns once the event
    /// is committed. Coalesces: a mirror already queued stays one queued run (made due now,
    /// with its retry count reset, because a fresh event deserves an immediate try); a mirror
    /// that is running gets exactly one follow-up run.
    /// `refs`: the full names of the refs a push event said it changed (empty: none named);
    /// `ids` and `olds`: what it said some of them point at now and pointed at before.
    pub async fn enqueue(
        &self,
        mirror: &str,
        trigger: Trigger,
        detail: &str,
        refs: &[String],
        (ids, olds): (&RefMap, &RefMap),
    ) -> Result<i64> {
        let now = now_ms();
        let refs = if refs.is_empty() {
            None
        } else {
            let named = if ids.is_empty() {
                NamedRefs::Names(refs.to_vec())
            } else {
                NamedRefs::WithIds {
                    refs: refs.to_vec(),
                    ids: ids.clone(),
                    olds: olds.clone(),
                }
            };
            Some(serde_json::to_string(&named).context("encoding an event's refs")?)
        };
        on_db!(&self.db, |_read, write, sql| {
            let mut tx = write
                .begin_with(sql.begin)
                .await
                .context("starting the enqueue transaction")?;
            ensure_mirror!(tx, mirror);
            // The queue row first: it stays locked until the commit, so no claim covers this
            // event's id before the event is visible (see the module documentation).
            sqlx::query(
                "INSERT INTO pending (mirror, queued, running, not_before, attempt) \
                 VALUES ($1, TRUE, FALSE, $2, 0) \
                 ON CONFLICT (mirror) DO UPDATE SET queued = TRUE, \
                   not_before = CASE WHEN pending.not_before < excluded.not_before \
                     THEN pending.not_before ELSE excluded.not_before END, \
                   attempt = 0",
            )
            .bind(mirror)
            .bind(now)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("queueing a sync of {mirror}"))?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO events (mirror, trigger_name, detail, received_at, refs) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(mirror)
            .bind(trigger.as_str())
            .bind(detail)
            .bind(now)
            .bind(&refs)
            .fetch_one(&mut *tx)
            .await
            .with_context(|| format!("recording a {} event for {mirror}", trigger.as_str()))?;
            wake_nodes!(tx, sql);
            tx.commit()
                .await
                .with_context(|| format!("committing the event for {mirror}"))?;
            Ok(id)
        })
    }

    /// Takes up to `limit` claimable mirrors (queued and due, or running on a lapsed lease;
    /// longest due first; those this node is preferred for, and others' once they have waited
    /// [`AFFINITY_GRACE_MS`]) and marks them running on this node with a fresh lease, in one
    /// write transaction, so that two callers never take the same mirror. Mirrors dropped
    /// from the configuration are never claimed.
    pub async fn claim(&self, now: i64, limit: usize) -> Result<Vec<Claim>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        on_db!(&self.db, |read, write, sql| {
            // Most wake-ups (a webhook for a mirror that is already queued or running) find
            // nothing claimable: answer those with a read, without taking the write lock (or
            // any row lock) that every webhook's enqueue needs too.
            let due: Vec<DueRow> = sqlx::query_as(&format!(
                "SELECT p.mirror, CASE WHEN p.running THEN p.lease_until ELSE p.not_before END \
                   AS due_at \
                 FROM pending p JOIN mirrors m ON m.name = p.mirror \
                 WHERE {CLAIMABLE} AND m.config_state <> 'removed' \
                 ORDER BY due_at, p.mirror LIMIT $2"
            ))
            .bind(now)
            .bind(i64::try_from(limit.saturating_mul(4).saturating_add(16)).unwrap_or(i64::MAX))
            .fetch_all(read)
            .await
            .context("listing due syncs")?;
            if due.is_empty() {
                return Ok(Vec::new());
            }
            let mut live: Vec<String> =
                sqlx::query_scalar("SELECT id FROM nodes WHERE heartbeat_at >= $1")
                    .bind(now - self.lease_ms)
                    .fetch_all(read)
                    .await
                    .context("listing the live nodes")?;
            if !live.iter().any(|n| **n == *self.node) {
                live.push(self.node.to_string());
            }
            let wanted: Vec<String> = due
                .into_iter()
                .filter(|row| {
                    now - row.due_at >= AFFINITY_GRACE_MS
                        || preferred_node(&row.mirror, &live).is_none_or(|n| n == &*self.node)
                })
                .map(|row| row.mirror)
                .take(limit)
                .collect();
            if wanted.is_empty() {
                return Ok(Vec::new());
            }

            let mut tx = write
                .begin_with(sql.begin)
                .await
                .context("starting the claim transaction")?;
            let mut claims = Vec::with_capacity(wanted.len());
            for mirror in wanted {
                // Still claimable, and not held by another node's transaction.
                let held: Option<HeldRow> = sqlx::query_as(&format!(
                    "SELECT p.attempt, p.running, p.node FROM pending p \
                     WHERE p.mirror = $2 AND {CLAIMABLE}{}",
                    sql.lock_free
                ))
                .bind(now)
                .bind(&mirror)
                .fetch_optional(&mut *tx)
                .await
                .with_context(|| format!("claiming {mirror}"))?;
                let Some(held) = held else { continue };
                // The events this run covers: every one committed so far (the row lock, or
                // SQLite's write lock, keeps an enqueue of this mirror from committing one
                // older in between).
                let through = newest_event!(&mut *tx, &mirror);
                let taken_from = held
                    .running
                    .then(|| held.node.unwrap_or_else(|| "an unknown node".to_owned()));
                let interrupted = taken_from.as_ref().map(|from| {
                    format!("taken over from node {from}: its claim lapsed (the node stopped, or lost the store) while the sync ran")
                });
                sqlx::query(
                    "UPDATE pending SET queued = FALSE, running = TRUE, claimed_through = $2, \
                       node = $3, lease_until = $4, interrupted = COALESCE($5, interrupted) \
                     WHERE mirror = $1",
                )
                .bind(&mirror)
                .bind(through)
                .bind(&*self.node)
                .bind(now.saturating_add(self.lease_ms))
                .bind(&interrupted)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("claiming {mirror}"))?;
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT trigger_name FROM events WHERE mirror = $1 AND run_id IS NULL \
                     GROUP BY trigger_name ORDER BY MIN(id)",
                )
                .bind(&mirror)
                .fetch_all(&mut *tx)
                .await
                .with_context(|| format!("reading the triggers of {mirror}"))?;
                let mut triggers = names
                    .iter()
                    .map(|n| parse_trigger(n))
                    .collect::<Result<Vec<_>>>()?;
                if triggers.is_empty() {
                    triggers.push(Trigger::Retry);
                }
                let (focus, claimed) = focus_of_events!(tx, &mirror, through);
                claims.push(Claim {
                    mirror,
                    triggers,
                    attempt: to_u32(held.attempt),
                    started_at: now,
                    focus,
                    claimed,
                    taken_from,
                    through,
                });
            }
            tx.commit().await.context("committing the claim")?;
            Ok(claims)
        })
    }

    /// Takes the events that came in for `mirror` since this node claimed it into the running
    /// claim, when they only move its `focus` on from the ids it `claimed`: every event not
    /// yet handled, the claim's and the new ones, read in order as a claim reads them (see
    /// [`claim_focus`]), names exactly `focus` and leaves every ref of it at an id by an
    /// unbroken chain, and some of those ids differ from `claimed`. Returns those ids and the
    /// claim's new watermark; the run that fetches and pushes them then covers the new events
    /// (it reports that watermark in [`Finish::covered_through`]), and no follow-up run is
    /// queued for them. `None` (nothing written) otherwise: no new event, a poll or another
    /// ref among them, a chain broken, or the claim no longer this node's; the new events
    /// then wait for the follow-up run as before.
    pub async fn take_later_pushes(
        &self,
        mirror: &str,
        focus: &[String],
        claimed: &RefMap,
    ) -> Result<Option<Taken>> {
        on_db!(&self.db, |read, write, sql| {
            // A read first: most runs see no new event, and are not held up by a write.
            let newest = newest_event!(read, mirror);
            let through: Option<i64> = sqlx::query_scalar(
                "SELECT claimed_through FROM pending WHERE mirror = $1 AND running AND node = $2",
            )
            .bind(mirror)
            .bind(&*self.node)
            .fetch_optional(read)
            .await
            .with_context(|| format!("reading the claim of {mirror}"))?
            .flatten();
            if through.is_none_or(|through| newest <= through) {
                return Ok(None);
            }

            let mut tx = write
                .begin_with(sql.begin)
                .await
                .context("starting the transaction taking later events")?;
            // The queue row locked first, as an enqueue does: no event commits in between.
            let pending: Option<Pending> = locked_pending!(tx, sql, mirror);
            let ours = pending.is_some_and(|p| {
                p.running && p.claimed_through.is_some() && p.node.as_deref() == Some(&*self.node)
            });
            if !ours {
                return Ok(None);
            }
            let newest = newest_event!(&mut *tx, mirror);
            let (all_focus, all_claimed) = focus_of_events!(tx, mirror, newest);
            let moved_on =
                all_focus == focus && all_claimed.len() == focus.len() && all_claimed != *claimed;
            if !moved_on {
                return Ok(None);
            }
            // Every event so far is this run's now: no follow-up for them.
            sqlx::query(
                "UPDATE pending SET claimed_through = $2, queued = FALSE WHERE mirror = $1",
            )
            .bind(mirror)
            .bind(newest)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("taking the later events of {mirror} into its run"))?;
            tx.commit()
                .await
                .with_context(|| format!("committing the later events of {mirror}"))?;
            Ok(Some(Taken {
                claimed: all_claimed,
                through: newest,
            }))
        })
    }

    /// Records a finished run in one transaction: the run and its report, the events it
    /// handled (those its claim covered), the queue (a follow-up run if events arrived
    /// meanwhile, else a retry if asked for, else nothing), the destinations' status and the
    /// mirror's state and failure streak. Fails, recording nothing, when another node has
    /// taken the mirror over (this node's claim lapsed): that node's run covers the events.
    pub async fn finish(&self, f: Finish<'_>) -> Result<FinishOutcome> {
        let mirror = f.mirror;
        let report_json = serde_json::to_string(f.report)
            .with_context(|| format!("serializing the report of {mirror}"))?;
        on_db!(&self.db, |_read, write, sql| {
            let mut tx = write
                .begin_with(sql.begin)
                .await
                .context("starting the finish transaction")?;
            ensure_mirror!(tx, mirror);
            let pending: Option<Pending> = locked_pending!(tx, sql, mirror);
            if let Some(Pending {
                running: true,
                node: Some(other),
                ..
            }) = &pending
            {
                if **other != *self.node {
                    bail!("node {other} took {mirror} over while this node ran it (this node's claim lapsed); its run covers the events, this one is not recorded");
                }
            }

            let run_id: i64 = sqlx::query_scalar(
                "INSERT INTO runs (mirror, trigger_name, started_at, finished_at, ok, report, node) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(mirror)
            .bind(f.trigger.as_str())
            .bind(f.started_at)
            .bind(f.finished_at)
            .bind(f.report.ok)
            .bind(&report_json)
            .bind(&*self.node)
            .fetch_one(&mut *tx)
            .await
            .with_context(|| format!("recording the run of {mirror}"))?;

            // The events this run handled. The claim's watermark is exact, up to what the run
            // knows it covered; without one (a run that was not claimed) fall back to the
            // events received before the run started.
            let claim_through = pending
                .as_ref()
                .filter(|p| p.running)
                .and_then(|p| p.claimed_through);
            let handled_through = match (claim_through, f.covered_through) {
                (Some(claim), Some(covered)) => Some(claim.min(covered)),
                (claim, _) => claim,
            };
            // Events the claim took in without the run knowing it: the follow-up syncs them.
            let uncovered = handled_through < claim_through;
            let handled = match handled_through {
                Some(through) => sqlx::query(
                    "UPDATE events SET run_id = $2 \
                     WHERE mirror = $1 AND run_id IS NULL AND id <= $3",
                )
                .bind(mirror)
                .bind(run_id)
                .bind(through),
                None => sqlx::query(
                    "UPDATE events SET run_id = $2 \
                     WHERE mirror = $1 AND run_id IS NULL AND received_at <= $3",
                )
                .bind(mirror)
                .bind(run_id)
                .bind(f.started_at),
            };
            handled
                .execute(&mut *tx)
                .await
                .with_context(|| format!("marking the events of {mirror} handled"))?;

            let follow_up = uncovered || pending.as_ref().is_some_and(|p| p.queued);
            let queue = if follow_up {
                // Events arrived during the run, or the run did not cover all its claim took
                // in: one immediate follow-up, a fresh first try.
                sqlx::query(
                    "UPDATE pending SET queued = TRUE, running = FALSE, not_before = $2, \
                     attempt = 0, claimed_through = NULL, interrupted = NULL, node = NULL, \
                     lease_until = NULL \
                     WHERE mirror = $1",
                )
                .bind(mirror)
                .bind(f.finished_at)
            } else if let Some(at) = f.retry_at {
                sqlx::query(
                    "INSERT INTO pending (mirror, queued, running, not_before, attempt) \
                     VALUES ($1, TRUE, FALSE, $2, 1) \
                     ON CONFLICT (mirror) DO UPDATE SET queued = TRUE, running = FALSE, \
                       not_before = excluded.not_before, attempt = pending.attempt + 1, \
                       claimed_through = NULL, interrupted = NULL, node = NULL, \
                       lease_until = NULL",
                )
                .bind(mirror)
                .bind(at)
            } else {
                sqlx::query("DELETE FROM pending WHERE mirror = $1").bind(mirror)
            };
            queue
                .execute(&mut *tx)
                .await
                .with_context(|| format!("updating the queue entry of {mirror}"))?;

            let MirrorRow {
                config_state,
                failure_streak: streak_before,
                notified: was_notified,
            } = sqlx::query_as(
                "SELECT config_state, failure_streak, notified FROM mirrors WHERE name = $1",
            )
            .bind(mirror)
            .fetch_one(&mut *tx)
            .await
            .with_context(|| format!("reading the state of {mirror}"))?;

            for (position, d) in f.report.destinations.iter().enumerate() {
                let error = destination_error(d)
                    .map(|e| serde_json::to_string(&e))
                    .transpose()
                    .with_context(|| {
                        format!("serializing the error of a destination of {mirror}")
                    })?;
                // A configured mirror's destinations were registered beforehand; one that is
                // no longer configured (the configuration changed during the run) is not
                // brought back. An ad hoc mirror's destinations are created on first sight.
                let updated = sqlx::query(
                    "UPDATE destinations SET last_attempt_at = $3, \
                       last_success_at = CASE WHEN $4 THEN $3 ELSE last_success_at END, \
                       last_error = $5 \
                     WHERE mirror = $1 AND url = $2",
                )
                .bind(mirror)
                .bind(&d.url)
                .bind(f.finished_at)
                .bind(d.ok)
                .bind(&error)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("updating a destination of {mirror}"))?
                .rows_affected();
                if updated == 0 && config_state == "adhoc" {
                    sqlx::query(
                        "INSERT INTO destinations \
                           (mirror, url, position, last_success_at, last_attempt_at, last_error) \
                         VALUES ($1, $2, $3, CASE WHEN $4 THEN $5 END, $5, $6)",
                    )
                    .bind(mirror)
                    .bind(&d.url)
                    .bind(position as i64)
                    .bind(d.ok)
                    .bind(f.finished_at)
                    .bind(&error)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("recording a destination of {mirror}"))?;
                }
            }

            let failure_streak = if f.report.ok { 0 } else { streak_before + 1 };
            sqlx::query(
                "UPDATE mirrors SET state = $2, failure_streak = $3, \
                 source_digest = COALESCE($4, source_digest), last_node = $5 WHERE name = $1",
            )
            .bind(mirror)
            .bind(state_after(f.report).as_str())
            .bind(failure_streak)
            .bind(f.report.source.digest.as_deref())
            .bind(&*self.node)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("updating the state of {mirror}"))?;
            if follow_up || f.retry_at.is_some() {
                wake_nodes!(tx, sql);
            }
            tx.commit()
                .await
                .with_context(|| format!("committing the run of {mirror}"))?;
            Ok(FinishOutcome {
                run_id,
                failure_streak: to_u32(failure_streak),
                was_notified,
            })
        })
    }

    /// Puts a mirror this node claimed whose run ended without recording a result (its task
    /// panicked, or [`Store::finish`] kept failing) back in the queue, due at `retry_at` with
    /// one more attempt counted, and keeps `error` for the status until a run records its
    /// result. The events the run covered stay unhandled, so the next run covers them. Returns
    /// false, and changes nothing, when the mirror is not running on this node (its result was
    /// recorded after all, or another node took it over).
    pub async fn release(&self, mirror: &str, retry_at: i64, error: &str) -> Result<bool> {
        on_db!(&self.db, |_read, write, sql| {
            let mut tx = write
                .begin_with(sql.begin)
                .await
                .context("starting the release transaction")?;
            let released = sqlx::query(
                "UPDATE pending SET queued = TRUE, running = FALSE, not_before = $2, \
                   attempt = attempt + 1, claimed_through = NULL, interrupted = $3, \
                   node = NULL, lease_until = NULL \
                 WHERE mirror = $1 AND running AND node = $4",
            )
            .bind(mirror)
            .bind(retry_at)
            .bind(error)
            .bind(&*self.node)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("putting {mirror} back in the queue"))?
            .rows_affected();
            wake_nodes!(tx, sql);
            tx.commit()
                .await
                .with_context(|| format!("putting {mirror} back in the queue"))?;
            Ok(released == 1)
        })
    }

    /// This node is alive at `now`: records its heartbeat and extends the lease of every sync
    /// it runs to `now` + its lease. Returns how many claims it holds.
    pub async fn heartbeat(&self, now: i64) -> Result<u64> {
        on_db!(&self.db, |_read, write, sql| {
            let mut tx = write
                .begin_with(sql.begin)
                .await
                .context("starting the heartbeat")?;
            sqlx::query(
                "INSERT INTO nodes (id, started_at, heartbeat_at, version) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, \
                   heartbeat_at = excluded.heartbeat_at, version = excluded.version",
            )
            .bind(&*self.node)
            .bind(self.started_at)
            .bind(now)
            .bind(env!("CARGO_PKG_VERSION"))
            .execute(&mut *tx)
            .await
            .context("recording this node's heartbeat")?;
            let held =
                sqlx::query("UPDATE pending SET lease_until = $2 WHERE running AND node = $1")
                    .bind(&*self.node)
                    .bind(now.saturating_add(self.lease_ms))
                    .execute(&mut *tx)
                    .await
                    .context("renewing this node's claims")?
                    .rows_affected();
            tx.commit().await.context("committing the heartbeat")?;
            Ok(held)
        })
    }

    /// This node stops: its syncs still marked running (cancelled after the shutdown grace)
    /// go back in the queue at once rather than when their lease lapses, and the node leaves
    /// the list of live nodes, so its mirrors move to the others without waiting.
    pub async fn leave(&self) -> Result<()> {
        on_db!(&self.db, |_read, write, sql| {
            let mut tx = write
                .begin_with(sql.begin)
                .await
                .context("starting to leave")?;
            sqlx::query(
                "UPDATE pending SET queued = TRUE, running = FALSE, not_before = $2, \
                   claimed_through = NULL, node = NULL, lease_until = NULL, \
                   interrupted = 'the node running it stopped before the sync finished' \
                 WHERE running AND node = $1",
            )
            .bind(&*self.node)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .context("requeueing this node's unfinished syncs")?;
            sqlx::query("DELETE FROM nodes WHERE id = $1")
                .bind(&*self.node)
                .execute(&mut *tx)
                .await
                .context("removing this node from the live nodes")?;
            wake_nodes!(tx, sql);
            tx.commit().await.context("committing the node's leave")?;
            Ok(())
        })
    }

    /// Fires a timer shared by all nodes: true for the one caller that finds `name` due at
    /// `now` (or never fired), which moves it to `now + every`; false for everyone else until
    /// then. One atomic statement, so with any number of nodes a timer fires once per interval.
    pub async fn take_timer(&self, name: &str, now: i64, every: Duration) -> Result<bool> {
        let next = now.saturating_add(i64::try_from(every.as_millis()).unwrap_or(i64::MAX));
        on_db!(&self.db, |_read, write, _sql| {
            let fired: Option<String> = sqlx::query_scalar(
                "INSERT INTO timers (name, next_at) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET next_at = excluded.next_at \
                 WHERE timers.next_at <= $3 RETURNING name",
            )
            .bind(name)
            .bind(next)
            .bind(now)
            .fetch_optional(write)
            .await
            .with_context(|| format!("firing the timer {name}"))?;
            Ok(fired.is_some())
        })
    }

    /// Makes the shared timer `name` due now, whatever its interval (a webhook named a
    /// repository no discovery has found yet: discover now). Durable: the node that next
    /// looks at the timer fires it.
    pub async fn make_due(&self, name: &str, now: i64) -> Result<()> {
        on_db!(&self.db, |_read, write, _sql| {
            sqlx::query(
                "INSERT INTO timers (name, next_at) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET next_at = excluded.next_at",
            )
            .bind(name)
            .bind(now)
            .execute(write)
            .await
            .with_context(|| format!("making the timer {name} due"))?;
            Ok(())
        })
    }

    /// Records the outcome of a fleet's discovery (by whichever node ran it).
    pub async fn record_discovery(&self, d: &FleetStatus) -> Result<()> {
        let problems = serde_json::to_string(&d.problems).context("encoding the problems")?;
        on_db!(&self.db, |_read, write, _sql| {
            sqlx::query(
                "INSERT INTO fleets (name, attempted_at, succeeded_at, members, error, problems, node) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (name) DO UPDATE SET attempted_at = excluded.attempted_at, \
                   succeeded_at = COALESCE(excluded.succeeded_at, fleets.succeeded_at), \
                   members = excluded.members, error = excluded.error, \
                   problems = excluded.problems, node = excluded.node",
            )
            .bind(&d.name)
            .bind(d.attempted_at)
            .bind(d.succeeded_at)
            .bind(i64::try_from(d.members).unwrap_or(i64::MAX))
            .bind(&d.error)
            .bind(&problems)
            .bind(&d.node)
            .execute(write)
            .await
            .with_context(|| format!("recording the discovery of the fleet {}", d.name))?;
            Ok(())
        })
    }

    /// The last discovery of every fleet that has run one, by name.
    pub async fn fleets(&self) -> Result<Vec<FleetStatus>> {
        let rows: Vec<FleetRow> = on_db!(&self.db, |read, _write, _sql| {
            sqlx::query_as(
                "SELECT name, attempted_at, succeeded_at, members, error, problems, node \
                 FROM fleets ORDER BY name",
            )
            .fetch_all(read)
            .await
        })
        .context("listing the fleets")?;
        rows.into_iter()
            .map(|r| {
                Ok(FleetStatus {
                    problems: serde_json::from_str(&r.problems)
                        .with_context(|| format!("reading the problems of the fleet {}", r.name))?,
                    name: r.name,
                    attempted_at: r.attempted_at,
                    succeeded_at: r.succeeded_at,
                    members: usize::try_from(r.members).unwrap_or(0),
                    error: r.error,
                    node: r.node,
                })
            })
            .collect()
    }

    /// Remembers whether a failure notification is outstanding for the mirror's current
    /// streak: true after sending one (so it is sent once per streak), false after the
    /// recovery notice.
    pub async fn mark_notified(&self, mirror: &str, notified: bool) -> Result<()> {
        let updated = on_db!(&self.db, |_read, write, _sql| {
            sqlx::query("UPDATE mirrors SET notified = $2 WHERE name = $1")
                .bind(mirror)
                .bind(notified)
                .execute(write)
                .await
                .map(|done| done.rows_affected())
        })
        .with_context(|| format!("recording the notification state of {mirror}"))?;
        if updated == 0 {
            bail!("the store knows no mirror named {mirror}");
        }
        Ok(())
    }

    /// Makes the store's list of mirrors the configuration's, so that status shows every
    /// configured mirror and destination before its first run: upserts each (name, redacted
    /// source, redacted destinations, config fingerprint) in order, drops the status of
    /// destinations no longer configured, and retires mirrors no longer configured (their
    /// history stays; they are neither listed nor claimed). Fleet members are not touched
    /// ([`Store::register_fleet`]). Returns the names whose fingerprint is new or changed: the
    /// service syncs those with [`Trigger::Config`].
    pub async fn register_mirrors(&self, mirrors: &[Registration]) -> Result<Vec<String>> {
        self.register(None, mirrors).await
    }

    /// The same for the members of one fleet, as its latest discovery found them: retires
    /// only that fleet's members it no longer has.
    pub async fn register_fleet(
        &self,
        fleet: &str,
        members: &[Registration],
    ) -> Result<Vec<String>> {
        self.register(Some(fleet), members).await
    }

    /// Retires the members of every fleet not in `fleets` (a fleet taken out of the
    /// configuration).
    pub async fn retire_fleets_except(&self, fleets: &[&str]) -> Result<()> {
        let known: Vec<String> = on_db!(&self.db, |read, _write, _sql| {
            sqlx::query_scalar(
                "SELECT DISTINCT fleet FROM mirrors \
                 WHERE fleet IS NOT NULL AND config_state <> 'removed'",
            )
            .fetch_all(read)
            .await
        })
        .context("listing the fleets in the store")?;
        for gone in known.iter().filter(|f| !fleets.contains(&f.as_str())) {
            self.register(Some(gone), &[]).await?;
        }
        Ok(())
    }

    /// Registers `mirrors` as the whole of a group: the configured mirrors (`None`) or one
    /// fleet's members.
    async fn register(&self, fleet: Option<&str>, mirrors: &[Registration]) -> Result<Vec<String>> {
        on_db!(&self.db, |_read, write, sql| {
            let mut tx = write
                .begin_with(sql.begin)
                .await
                .context("starting the registration transaction")?;
            let mut changed = Vec::new();
            let mut names = HashSet::new();
            for (position, (name, source, destinations, fingerprint)) in mirrors.iter().enumerate()
            {
                names.insert(name.as_str());
                // Locked: of several nodes starting with a new configuration, one sees it new.
                let stored: Option<Option<String>> = sqlx::query_scalar(&format!(
                    "SELECT fingerprint FROM mirrors WHERE name = $1{}",
                    sql.lock
                ))
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .with_context(|| format!("reading the fingerprint of {name}"))?;
                if stored.flatten().as_deref() != Some(fingerprint.as_str()) {
                    changed.push(name.clone());
                }
                sqlx::query(
                    "INSERT INTO mirrors (name, source, fingerprint, config_state, position, fleet) \
                     VALUES ($1, $2, $3, 'configured', $4, $5) \
                     ON CONFLICT (name) DO UPDATE SET source = excluded.source, \
                       fingerprint = excluded.fingerprint, config_state = 'configured', \
                       position = excluded.position, fleet = excluded.fleet",
                )
                .bind(name)
                .bind(source)
                .bind(fingerprint)
                .bind(position as i64)
                .bind(fleet)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("registering the mirror {name}"))?;

                for (position, url) in destinations.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO destinations (mirror, url, position) VALUES ($1, $2, $3) \
                         ON CONFLICT (mirror, url) DO UPDATE SET position = excluded.position",
                    )
                    .bind(name)
                    .bind(url)
                    .bind(position as i64)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("registering a destination of {name}"))?;
                }
                let stored_urls: Vec<String> =
                    sqlx::query_scalar("SELECT url FROM destinations WHERE mirror = $1")
                        .bind(name)
                        .fetch_all(&mut *tx)
                        .await
                        .with_context(|| format!("listing the destinations of {name}"))?;
                for url in stored_urls.iter().filter(|u| !destinations.contains(u)) {
                    sqlx::query("DELETE FROM destinations WHERE mirror = $1 AND url = $2")
                        .bind(name)
                        .bind(url)
                        .execute(&mut *tx)
                        .await
                        .with_context(|| format!("dropping a destination of {name}"))?;
                }
            }

            let live: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM mirrors WHERE config_state <> 'removed' \
                 AND COALESCE(fleet, '') = $1",
            )
            .bind(fleet.unwrap_or(""))
            .fetch_all(&mut *tx)
            .await
            .context("listing the known mirrors")?;
            for name in live.iter().filter(|n| !names.contains(n.as_str())) {
                sqlx::query("UPDATE mirrors SET config_state = 'removed' WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("retiring the mirror {name}"))?;
                sqlx::query("DELETE FROM destinations WHERE mirror = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("dropping the destinations of {name}"))?;
            }
            tx.commit()
                .await
                .context("committing the mirror registration")?;
            Ok(changed)
        })
    }

    /// Every configured mirror, in configuration order, read from one snapshot.
    pub async fn mirrors(&self) -> Result<Vec<MirrorStatus>> {
        self.statuses(None).await
    }

    /// One mirror's status; `None` for a mirror the store does not know or that was removed
    /// from the configuration.
    pub async fn mirror(&self, name: &str) -> Result<Option<MirrorStatus>> {
        Ok(self.statuses(Some(name)).await?.pop())
    }

    /// The status of every configured mirror, or of the one named, from one read snapshot.
    async fn statuses(&self, only: Option<&str>) -> Result<Vec<MirrorStatus>> {
        on_db!(&self.db, |read, _write, _sql| {
            let mut tx = read.begin().await.context("starting a status read")?;
            let rows: Vec<StatusRow> = match only {
                None => sqlx::query_as(&format!(
                    "{STATUS_SELECT} WHERE m.config_state = 'configured' \
                     ORDER BY COALESCE(m.fleet, ''), m.position, m.name"
                ))
                .fetch_all(&mut *tx)
                .await
                .context("listing the mirrors")?,
                Some(name) => sqlx::query_as(&format!(
                    "{STATUS_SELECT} WHERE m.name = $1 AND m.config_state <> 'removed'"
                ))
                .bind(name)
                .fetch_all(&mut *tx)
                .await
                .with_context(|| format!("reading the mirror {name}"))?,
            };
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let name = row.name.clone();
                let last: Option<RunSummaryRow> = sqlx::query_as(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE mirror = $1 ORDER BY id DESC LIMIT 1"
                ))
                .bind(&name)
                .fetch_optional(&mut *tx)
                .await
                .with_context(|| format!("reading the last run of {name}"))?;
                let last_run = last.map(RunSummaryRow::into_summary).transpose()?;
                // Behind since the oldest event no successful run has satisfied: the unhandled
                // ones, and, while the mirror is failing, those handled by the failed runs
                // since the last success.
                let unhandled: Option<i64> = sqlx::query_scalar(
                    "SELECT MIN(received_at) FROM events WHERE mirror = $1 AND run_id IS NULL",
                )
                .bind(&name)
                .fetch_one(&mut *tx)
                .await
                .with_context(|| format!("reading the unhandled events of {name}"))?;
                let failed: Option<i64> = match &last_run {
                    Some(run) if !run.ok => sqlx::query_scalar(
                        "SELECT MIN(received_at) FROM events WHERE mirror = $1 AND run_id > \
                           COALESCE((SELECT MAX(id) FROM runs WHERE mirror = $1 AND ok), 0)",
                    )
                    .bind(&name)
                    .fetch_one(&mut *tx)
                    .await
                    .with_context(|| format!("reading the events of the failed runs of {name}"))?,
                    _ => None,
                };
                let destinations: Vec<DestinationRow> = sqlx::query_as(
                    "SELECT url, last_success_at, last_attempt_at, last_error FROM destinations \
                     WHERE mirror = $1 ORDER BY position, url",
                )
                .bind(&name)
                .fetch_all(&mut *tx)
                .await
                .with_context(|| format!("reading the destinations of {name}"))?;
                out.push(status_of(row, last_run, unhandled, failed, destinations)?);
            }
            tx.commit().await.context("ending a status read")?;
            Ok(out)
        })
    }

    /// The nodes that heartbeat into this store, newest heartbeat first.
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        let rows: Vec<NodeRow> = on_db!(&self.db, |read, _write, _sql| {
            sqlx::query_as(
                "SELECT id, started_at, heartbeat_at, version FROM nodes \
                 ORDER BY heartbeat_at DESC, id",
            )
            .fetch_all(read)
            .await
        })
        .context("listing the nodes")?;
        Ok(rows
            .into_iter()
            .map(|r| NodeStatus {
                id: r.id,
                started_at: r.started_at,
                heartbeat_at: r.heartbeat_at,
                version: r.version,
            })
            .collect())
    }

    /// The mirror's last `limit` runs with their reports, newest first.
    pub async fn runs(&self, mirror: &str, limit: usize) -> Result<Vec<RunDetail>> {
        let rows: Vec<RunRow> = on_db!(&self.db, |read, _write, _sql| {
            sqlx::query_as(&format!(
                "SELECT {RUN_COLUMNS}, report, \
                   (SELECT MIN(e.received_at) FROM events e WHERE e.run_id = runs.id) \
                     AS oldest_event_at \
                 FROM runs WHERE mirror = $1 ORDER BY id DESC LIMIT $2"
            ))
            .bind(mirror)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(read)
            .await
        })
        .with_context(|| format!("listing the runs of {mirror}"))?;
        rows.into_iter()
            .map(
                |RunRow {
                     summary,
                     report,
                     oldest_event_at,
                 }| {
                    let report = serde_json::from_str(&report)
                        .with_context(|| format!("reading the report of run {}", summary.id))?;
                    Ok(RunDetail {
                        summary: summary.into_summary()?,
                        oldest_event_at,
                        report,
                    })
                },
            )
            .collect()
    }

    /// How many mirrors are queued or running (a gauge for metrics and the page).
    pub async fn queue_depth(&self) -> Result<i64> {
        on_db!(&self.db, |read, _write, _sql| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM pending p JOIN mirrors m ON m.name = p.mirror \
                 WHERE p.running OR (p.queued AND m.config_state <> 'removed')",
            )
            .fetch_one(read)
            .await
        })
        .context("counting the queue")
    }

    /// How many events the mirror has received (for tests).
    #[cfg(test)]
    pub async fn event_count(&self, mirror: &str) -> Result<i64> {
        self.count("SELECT COUNT(*) FROM events WHERE mirror = $1", mirror)
            .await
    }

    /// How many runs of the mirror are recorded (for tests).
    #[cfg(test)]
    pub async fn run_count(&self, mirror: &str) -> Result<i64> {
        self.count("SELECT COUNT(*) FROM runs WHERE mirror = $1", mirror)
            .await
    }

    /// A count about one mirror (for tests).
    #[cfg(test)]
    async fn count(&self, query: &str, mirror: &str) -> Result<i64> {
        on_db!(&self.db, |read, _write, _sql| {
            sqlx::query_scalar(query).bind(mirror).fetch_one(read).await
        })
        .with_context(|| format!("counting ({query}) for {mirror}"))
    }

    /// Keeps the newest `keep` runs of every mirror and deletes older runs with the events they
    /// handled, so the store does not grow forever, and forgets nodes not heard from for a
    /// day. Returns how many runs were deleted. Events not yet handled are never deleted.
    pub async fn prune(&self, keep: i64) -> Result<u64> {
        const OLD_RUNS: &str = "SELECT id FROM (SELECT id, \
             ROW_NUMBER() OVER (PARTITION BY mirror ORDER BY id DESC) AS newer FROM runs) AS r \
             WHERE newer > $1";
        on_db!(&self.db, |_read, write, _sql| {
            let mut tx = write.begin().await.context("starting a prune")?;
            sqlx::query(&format!("DELETE FROM events WHERE run_id IN ({OLD_RUNS})"))
                .bind(keep)
                .execute(&mut *tx)
                .await
                .context("pruning old events")?;
            let deleted = sqlx::query(&format!("DELETE FROM runs WHERE id IN ({OLD_RUNS})"))
                .bind(keep)
                .execute(&mut *tx)
                .await
                .context("pruning old runs")?
                .rows_affected();
            sqlx::query("DELETE FROM nodes WHERE heartbeat_at < $1")
                .bind(now_ms() - FORGET_NODES_MS)
                .execute(&mut *tx)
                .await
                .context("forgetting nodes long gone")?;
            tx.commit().await.context("committing a prune")?;
            Ok(deleted)
        })
    }

    /// The digest of the source refs the mirror's last run synced from (`None`: no run read
    /// the source yet).
    pub async fn source_digest(&self, mirror: &str) -> Result<Option<String>> {
        let digest: Option<Option<String>> = on_db!(&self.db, |read, _write, _sql| {
            sqlx::query_scalar("SELECT source_digest FROM mirrors WHERE name = $1")
                .bind(mirror)
                .fetch_optional(read)
                .await
        })
        .with_context(|| format!("reading the last synced source of {mirror}"))?;
        Ok(digest.flatten())
    }

    /// When the next claimable sync becomes due (it may be in the past), so the dispatcher can
    /// sleep until then; `None` when nothing is waiting. A mirror queued behind its own running
    /// sync is not counted: it becomes due when that run finishes; another node's running
    /// sync counts from when its lease lapses (a takeover).
    pub async fn next_due(&self) -> Result<Option<i64>> {
        on_db!(&self.db, |read, _write, _sql| {
            sqlx::query_scalar(
                "SELECT MIN(CASE WHEN p.running THEN p.lease_until ELSE p.not_before END) \
                 FROM pending p JOIN mirrors m ON m.name = p.mirror \
                 WHERE ((p.queued AND NOT p.running) OR (p.running AND p.node <> $1)) \
                   AND m.config_state <> 'removed'",
            )
            .bind(&*self.node)
            .fetch_one(read)
            .await
        })
        .context("reading when the next sync is due")
    }
}

/// The live node a mirror prefers (rendezvous hashing: the highest hash of node and mirror
/// name), so that adding or losing a node moves only that node's share of the mirrors.
fn preferred_node<'a>(mirror: &str, live: &'a [String]) -> Option<&'a str> {
    live.iter()
        .max_by_key(|node| {
            let digest = Sha256::new()
                .chain_update(node.as_bytes())
                .chain_update([0])
                .chain_update(mirror.as_bytes())
                .finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            u64::from_be_bytes(first)
        })
        .map(String::as_str)
}

/// Assembles a mirror's status from its rows (read in one snapshot by the caller).
fn status_of(
    row: StatusRow,
    last_run: Option<RunSummary>,
    unhandled: Option<i64>,
    failed: Option<i64>,
    destinations: Vec<DestinationRow>,
) -> Result<MirrorStatus> {
    let StatusRow {
        name,
        fleet,
        source,
        state: stored_state,
        failure_streak,
        last_node,
        queued,
        running,
        not_before,
        attempt,
        interrupted,
        node,
    } = row;
    let queued = queued.unwrap_or(false);
    let running = running.unwrap_or(false);
    let state = if running {
        MirrorState::Syncing
    } else if queued {
        MirrorState::Queued
    } else {
        MirrorState::parse(&stored_state)
            .with_context(|| format!("unknown state {stored_state:?} of {name} in the store"))?
    };
    let retry_at = if queued && !running && attempt.unwrap_or(0) > 0 {
        not_before
    } else {
        None
    };
    let behind_since = match (unhandled, failed) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let destinations = destinations
        .into_iter()
        .map(|row| {
            let DestinationRow {
                url,
                last_success_at,
                last_attempt_at,
                last_error,
            } = row;
            let last_error = last_error
                .map(|e| serde_json::from_str::<ErrorReport>(&e))
                .transpose()
                .with_context(|| format!("reading the last error of {url}"))?;
            Ok(DestinationStatus {
                url,
                last_success_at,
                last_attempt_at,
                last_error,
                lag_seconds: 0.0,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MirrorStatus {
        name,
        fleet,
        state,
        source,
        failure_streak: to_u32(failure_streak),
        behind_since,
        retry_at,
        interrupted,
        node: if running { node } else { last_node },
        last_run,
        destinations,
    })
}

/// The error a destination's status shows: its own error, else its first failing ref's.
fn destination_error(d: &DestinationReport) -> Option<ErrorReport> {
    d.failures().into_iter().next().map(|f| f.error)
}

/// The mirror's state after a run: idle on success; diverged when every problem is a
/// divergence (which needs a person, not a retry); failing otherwise.
fn state_after(report: &MirrorReport) -> MirrorState {
    let failures = report.failures();
    if report.ok {
        MirrorState::Idle
    } else if !failures.is_empty() && report.source.ok && failures.iter().all(|f| f.is_divergence())
    {
        MirrorState::Diverged
    } else {
        MirrorState::Failing
    }
}

/// The refs an event named, as the events table keeps them (JSON): a list of names, or the
/// names with the new ids the event gave (an older node reads the latter as unreadable, and
/// so syncs the whole selection: slower, never wrong).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum NamedRefs {
    Names(Vec<String>),
    WithIds {
        refs: Vec<String>,
        ids: RefMap,
        /// Absent from events stored before old ids were kept.
        #[serde(default, skip_serializing_if = "RefMap::is_empty")]
        olds: RefMap,
    },
}

/// The focus of a claim and the ids claimed for it (see [`Claim::focus`], [`Claim::claimed`])
/// from the mirror's failure streak and the refs its covered events named, in the order they
/// came.
fn claim_focus(failure_streak: i64, named: Vec<Option<String>>) -> (Vec<String>, RefMap) {
    if failure_streak > 0 {
        return (Vec::new(), RefMap::new());
    }
    let mut focus = std::collections::BTreeSet::new();
    // Per ref: the id the events naming it agree it ends at, or `None` once one gave none,
    // or another that does not follow on (its old id is not the id so far): a burst of
    // pushes, each event moving the ref on from where the one before left it, ends at the
    // last one's new id; events that came out of order, or from pushes the service never
    // heard of, leave the ref to be fetched.
    let mut agreed: std::collections::BTreeMap<String, Option<Oid>> = Default::default();
    for refs in named {
        // An unreadable list counts as none named: the run takes the whole selection.
        let Some(named) = refs.and_then(|r| serde_json::from_str::<NamedRefs>(&r).ok()) else {
            return (Vec::new(), RefMap::new());
        };
        let (refs, ids, olds) = match named {
            NamedRefs::Names(refs) => (refs, RefMap::new(), RefMap::new()),
            NamedRefs::WithIds { refs, ids, olds } => (refs, ids, olds),
        };
        for name in refs {
            let id = ids.get(&name).cloned();
            let old = olds.get(&name);
            agreed
                .entry(name.clone())
                .and_modify(|seen| {
                    let follows_on = seen.is_some() && seen.as_ref() == old;
                    if *seen != id && !follows_on {
                        *seen = None;
                    } else {
                        seen.clone_from(&id);
                    }
                })
                .or_insert(id);
            focus.insert(name);
        }
    }
    let claimed = agreed
        .into_iter()
        .filter_map(|(name, id)| Some((name, id?)))
        .collect();
    (focus.into_iter().collect(), claimed)
}

fn parse_trigger(name: &str) -> Result<Trigger> {
    Trigger::parse(name).with_context(|| format!("unknown trigger {name:?} in the store"))
}

/// Counters are stored as i64; they are never negative and never near u32::MAX.
fn to_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// The message for a store migrated beyond what this ferry knows (a newer node migrated it).
fn newer_schema(e: sqlx::migrate::MigrateError, location: &str) -> anyhow::Error {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(version) => anyhow::anyhow!(
            "the store {location} has schema migration {version}, which this ferry ({}) does not know: a newer ferry migrated it. Run the newer ferry on this node too (an older node refuses to start rather than guess)",
            env!("CARGO_PKG_VERSION")
        ),
        other => anyhow::Error::new(other).context(format!("migrating the store {location}")),
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::Action;
    use crate::engine::report::{Outcome, RefReport, SourceReport};
    use crate::model::kind::ErrorKind;
    use crate::model::refs::Oid;
    use sqlx::sqlite::SqlitePool;

    const SRC: &str = "https://git.example.com/app.git";
    const D1: &str = "https://github.com/acme/app.git";
    const D2: &str = "https://gitlab.com/acme/app.git";

    /// How long claims hold in these tests.
    const LEASE: Duration = Duration::from_secs(30);

    async fn open_as(at: &Location, node: &str) -> Store {
        let node = Node {
            id: node.to_owned(),
            lease: LEASE,
        };
        Store::open(at, node).await.expect("open store")
    }

    /// The one PostgreSQL server of this test binary; each test gets its own database.
    fn postgres() -> &'static ferry_testkit::Postgres {
        static SERVER: std::sync::OnceLock<ferry_testkit::Postgres> = std::sync::OnceLock::new();
        SERVER.get_or_init(|| ferry_testkit::Postgres::start().expect("start PostgreSQL"))
    }

    /// A fresh database on the test PostgreSQL server.
    async fn postgres_database() -> Location {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = tokio::task::spawn_blocking(move || {
            postgres()
                .create_database(&format!("store_{n}"))
                .expect("create a database")
        })
        .await
        .expect("create a database");
        Location::Postgres(Secret::new(url))
    }

    /// Each test below runs once per backend: the same specification for both stores.
    macro_rules! on_both_backends {
        ($($test:ident),* $(,)?) => {
            mod sqlite_backend {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $test() {
                        let dir = tempfile::tempdir().expect("temp dir");
                        let at = super::Location::Sqlite(dir.path().join("state/ferry.db"));
                        super::$test(at).await;
                    }
                )*
            }
            mod postgres_backend {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $test() {
                        super::$test(super::postgres_database().await).await;
                    }
                )*
            }
        };
    }

    on_both_backends!(
        enqueue_claim_finish_round_trip,
        a_claims_focus_is_the_union_of_the_refs_its_push_events_named,
        a_claims_ids_are_those_every_event_naming_the_ref_agreed_on,
        a_burst_of_pushes_each_moving_on_from_the_last_claims_the_last_id,
        pushes_moving_a_running_claim_s_refs_on_are_taken_into_it_and_nothing_else_is,
        events_a_run_took_in_without_hearing_back_get_a_follow_up_run,
        no_focus_when_an_event_named_no_refs_or_the_last_run_failed,
        coalesces_events_while_queued_and_while_running,
        concurrent_claims_never_share_a_mirror,
        retries_wait_for_their_time_and_new_events_reset_them,
        a_new_event_during_a_failing_run_wins_over_the_retry,
        release_requeues_a_running_mirror_with_its_error_until_a_run_is_recorded,
        a_read_only_store_shows_a_running_sync_as_it_is_and_writes_nothing,
        states_streaks_and_destination_errors_follow_the_reports,
        register_mirrors_detects_new_and_changed_configuration,
        a_fleets_registration_retires_only_its_own_members,
        discoveries_are_recorded_per_fleet_and_a_timer_can_be_made_due,
        behind_since_covers_unhandled_and_failed_events,
        prune_keeps_the_newest_runs_of_each_mirror,
        a_lapsed_claim_is_taken_over_with_its_events_and_the_old_node_records_nothing,
        heartbeats_renew_claims_and_list_the_nodes,
        a_mirror_prefers_one_live_node_and_the_others_take_it_after_the_grace,
        a_node_that_leaves_requeues_its_syncs_at_once,
        a_shared_timer_fires_once_per_interval_whichever_node_asks,
        a_store_migrated_beyond_this_ferry_is_refused_with_a_clear_message,
    );

    fn oid(c: char) -> Option<Oid> {
        Oid::parse(&c.to_string().repeat(40))
    }

    fn ref_report(name: &str, outcome: Outcome, kind: Option<ErrorKind>) -> RefReport {
        RefReport {
            name: name.to_owned(),
            action: Action::Update,
            outcome: Some(outcome),
            old: oid('a'),
            new: oid('b'),
            kind,
            reason: kind.map(|k| format!("{k} happened")),
            hint: kind.map(|k| k.hint().to_owned()),
        }
    }

    fn dest_ok(url: &str) -> DestinationReport {
        DestinationReport {
            url: url.to_owned(),
            ok: false,
            verified: false,
            error: None,
            refs: vec![ref_report("refs/heads/main", Outcome::Updated, None)],
            lfs: None,
        }
        .finish()
    }

    fn dest_error(url: &str, kind: ErrorKind) -> DestinationReport {
        DestinationReport::failed(url, ErrorReport::new(kind, format!("{kind} failure")))
    }

    fn dest_refs(url: &str, refs: Vec<RefReport>) -> DestinationReport {
        DestinationReport {
            url: url.to_owned(),
            ok: false,
            verified: false,
            error: None,
            refs,
            lfs: None,
        }
        .finish()
    }

    fn report(name: &str, destinations: Vec<DestinationReport>) -> MirrorReport {
        MirrorReport {
            name: name.to_owned(),
            ok: destinations.iter().all(|d| d.ok),
            duration_ms: 5,
            source: SourceReport {
                url: SRC.to_owned(),
                ok: true,
                refs: 1,
                error: None,
                digest: None,
            },
            destinations,
        }
    }

    fn ok_report(name: &str) -> MirrorReport {
        report(name, vec![dest_ok(D1)])
    }

    fn failed_report(name: &str) -> MirrorReport {
        report(name, vec![dest_error(D1, ErrorKind::Network)])
    }

    /// Records the run of `claim`, which covered what its claim did.
    async fn finish(
        store: &Store,
        claim: &Claim,
        report: &MirrorReport,
        retry_at: Option<i64>,
    ) -> FinishOutcome {
        finish_covering(store, claim, report, retry_at, claim.through).await
    }

    /// Records the run of `claim`, which covered the events through `covered`.
    async fn finish_covering(
        store: &Store,
        claim: &Claim,
        report: &MirrorReport,
        retry_at: Option<i64>,
        covered: i64,
    ) -> FinishOutcome {
        store
            .finish(Finish {
                mirror: &claim.mirror,
                started_at: claim.started_at,
                finished_at: claim.started_at + 1,
                trigger: claim.triggers[0],
                report,
                retry_at,
                covered_through: Some(covered),
            })
            .await
            .expect("finish")
    }

    /// Enqueues a webhook for a push that moved `name` from one id to another (each id the
    /// letter repeated).
    async fn enqueue_move(store: &Store, mirror: &str, name: &str, (old, new): (char, char)) {
        let oid = |c: char| Oid::parse(&c.to_string().repeat(40)).unwrap();
        let ids = RefMap::from([(name.to_string(), oid(new))]);
        let olds = RefMap::from([(name.to_string(), oid(old))]);
        store
            .enqueue(mirror, Trigger::Webhook, "", &names(&[name]), (&ids, &olds))
            .await
            .unwrap();
    }

    /// Enqueues an event that says nothing of its refs' ids; its id.
    async fn enqueue_plain(
        store: &Store,
        mirror: &str,
        trigger: Trigger,
        detail: &str,
        refs: &[String],
    ) -> i64 {
        let none = RefMap::new();
        store
            .enqueue(mirror, trigger, detail, refs, (&none, &none))
            .await
            .unwrap()
    }

    /// Claims exactly one sync, of `mirror`.
    async fn claim_one(store: &Store, now: i64, mirror: &str) -> Claim {
        let mut claims = store.claim(now, 10).await.expect("claim");
        assert_eq!(claims.len(), 1, "{claims:?}");
        let claim = claims.remove(0);
        assert_eq!(claim.mirror, mirror);
        claim
    }

    async fn unhandled(store: &Store, mirror: &str) -> i64 {
        store
            .count(
                "SELECT COUNT(*) FROM events WHERE mirror = $1 AND run_id IS NULL",
                mirror,
            )
            .await
            .expect("count")
    }

    async fn received_at(store: &Store, event: i64) -> i64 {
        on_db!(&store.db, |read, _write, _sql| {
            sqlx::query_scalar("SELECT received_at FROM events WHERE id = $1")
                .bind(event)
                .fetch_one(read)
                .await
                .expect("event")
        })
    }

    fn config(
        name: &str,
        dests: &[&str],
        fingerprint: &str,
    ) -> (String, String, Vec<String>, String) {
        (
            name.to_owned(),
            SRC.to_owned(),
            dests.iter().map(|d| (*d).to_owned()).collect(),
            fingerprint.to_owned(),
        )
    }

    async fn enqueue_claim_finish_round_trip(at: Location) {
        let store = open_as(&at, "a").await;
        let event = enqueue_plain(&store, "app", Trigger::Webhook, "push to main", &[]).await;
        assert!(event > 0);
        assert_eq!(store.queue_depth().await.unwrap(), 1);
        assert!(store.next_due().await.unwrap().is_some());

        let now = now_ms();
        let claim = claim_one(&store, now, "app").await;
        assert_eq!(claim.triggers, vec![Trigger::Webhook]);
        assert_eq!(claim.attempt, 0);
        assert_eq!(claim.started_at, now);
        assert!(
            store.claim(now, 10).await.unwrap().is_empty(),
            "claimed twice"
        );
        assert_eq!(
            store.mirror("app").await.unwrap().unwrap().state,
            MirrorState::Syncing
        );

        let r = ok_report("app");
        let out = finish(&store, &claim, &r, None).await;
        assert_eq!(out.failure_streak, 0);
        assert!(!out.was_notified);
        assert_eq!(store.queue_depth().await.unwrap(), 0);
        assert_eq!(store.next_due().await.unwrap(), None);
        assert_eq!(store.event_count("app").await.unwrap(), 1);
        assert_eq!(store.run_count("app").await.unwrap(), 1);
        assert_eq!(unhandled(&store, "app").await, 0);
        assert!(store.claim(now_ms(), 10).await.unwrap().is_empty());

        let runs = store.runs("app", 10).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].summary.id, out.run_id);
        assert_eq!(runs[0].summary.trigger, Trigger::Webhook);
        assert!(runs[0].summary.ok);
        assert_eq!(runs[0].report["name"], "app");
        assert_eq!(runs[0].report["destinations"][0]["url"], D1);

        let status = store.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.state, MirrorState::Idle);
        assert_eq!(status.behind_since, None);
        assert_eq!(status.last_run, Some(runs[0].summary.clone()));
        assert_eq!(status.destinations.len(), 1);
        assert_eq!(status.destinations[0].last_success_at, Some(now + 1));
        assert_eq!(store.mirror("nope").await.unwrap(), None);
    }

    fn names(refs: &[&str]) -> Vec<String> {
        refs.iter().map(|r| (*r).to_owned()).collect()
    }

    async fn a_claims_focus_is_the_union_of_the_refs_its_push_events_named(at: Location) {
        let store = open_as(&at, "a").await;
        let main = names(&["refs/heads/main"]);
        enqueue_plain(&store, "app", Trigger::Webhook, "", &main).await;
        enqueue_plain(
            &store,
            "app",
            Trigger::Webhook,
            "",
            &names(&["refs/heads/dev", "refs/heads/main"]),
        )
        .await;
        enqueue_plain(
            &store,
            "app",
            Trigger::Codecommit,
            "",
            &names(&["refs/tags/v1"]),
        )
        .await;
        let claim = claim_one(&store, now_ms(), "app").await;
        assert_eq!(
            claim.focus,
            names(&["refs/heads/dev", "refs/heads/main", "refs/tags/v1"])
        );

        // An event during the run joins the follow-up only.
        enqueue_plain(
            &store,
            "app",
            Trigger::Webhook,
            "",
            &names(&["refs/heads/next"]),
        )
        .await;
        finish(&store, &claim, &ok_report("app"), None).await;
        let follow_up = claim_one(&store, now_ms(), "app").await;
        assert_eq!(follow_up.focus, names(&["refs/heads/next"]));
    }

    async fn a_claims_ids_are_those_every_event_naming_the_ref_agreed_on(at: Location) {
        let store = open_as(&at, "a").await;
        let oid = |c: char| Oid::parse(&c.to_string().repeat(40)).unwrap();
        let (main, dev, tag) = ("refs/heads/main", "refs/heads/dev", "refs/tags/v1");
        let with = |pairs: &[(&str, char)]| -> RefMap {
            pairs
                .iter()
                .map(|(r, c)| (r.to_string(), oid(*c)))
                .collect()
        };
        // main: two events agree; dev: two events disagree (out of order, say); the tag: one
        // event named it without an id.
        for dev_now in ['b', 'c'] {
            let ids = with(&[(main, 'a'), (dev, dev_now)]);
            store
                .enqueue(
                    "app",
                    Trigger::Webhook,
                    "",
                    &names(&[main, dev]),
                    (&ids, &RefMap::new()),
                )
                .await
                .unwrap();
        }
        enqueue_plain(&store, "app", Trigger::Webhook, "", &names(&[tag])).await;
        let claim = claim_one(&store, now_ms(), "app").await;
        assert_eq!(claim.focus, names(&[dev, main, tag]));
        assert_eq!(claim.claimed, with(&[(main, 'a')]));
    }

    async fn a_burst_of_pushes_each_moving_on_from_the_last_claims_the_last_id(at: Location) {
        let store = open_as(&at, "a").await;
        let oid = |c: char| Oid::parse(&c.to_string().repeat(40)).unwrap();
        let (main, dev, tag, topic) = (
            "refs/heads/main",
            "refs/heads/dev",
            "refs/tags/v1",
            "refs/heads/topic",
        );
        // (ref, old, new) per event, in the order they come.
        let events: &[(&str, Option<char>, char)] = &[
            // main: a chain, a -> b -> c -> d.
            (main, Some('a'), 'b'),
            (main, Some('b'), 'c'),
            (main, Some('c'), 'd'),
            // dev: a push the service never heard of between them (b, then c -> d).
            (dev, Some('a'), 'b'),
            (dev, Some('c'), 'd'),
            // the tag: out of order (b -> c came before a -> b).
            (tag, Some('b'), 'c'),
            (tag, Some('a'), 'b'),
            // topic: the second event gives no old id.
            (topic, Some('a'), 'b'),
            (topic, None, 'c'),
        ];
        for (name, old, new) in events {
            let ids = RefMap::from([(name.to_string(), oid(*new))]);
            let olds: RefMap = old
                .map(|o| (name.to_string(), oid(o)))
                .into_iter()
                .collect();
            store
                .enqueue("app", Trigger::Webhook, "", &names(&[name]), (&ids, &olds))
                .await
                .unwrap();
        }
        let claim = claim_one(&store, now_ms(), "app").await;
        assert_eq!(claim.focus, names(&[dev, main, topic, tag]));
        assert_eq!(
            claim.claimed,
            RefMap::from([(main.to_string(), oid('d'))]),
            "only the unbroken chain says where its ref ended"
        );
    }

    async fn pushes_moving_a_running_claim_s_refs_on_are_taken_into_it_and_nothing_else_is(
        at: Location,
    ) {
        let store = open_as(&at, "a").await;
        let oid = |c: char| Oid::parse(&c.to_string().repeat(40)).unwrap();
        let (main, dev) = ("refs/heads/main", "refs/heads/dev");
        let push = |name: &'static str, old: char, new: char| {
            enqueue_move(&store, "app", name, (old, new))
        };
        let take = |claim: &Claim| {
            let (store, claim) = (store.clone(), claim.clone());
            async move {
                store
                    .take_later_pushes("app", &claim.focus, &claim.claimed)
                    .await
                    .unwrap()
            }
        };

        // main a -> b is claimed; b -> c and c -> d come in while it runs.
        push(main, 'a', 'b').await;
        let claim = claim_one(&store, now_ms(), "app").await;
        assert_eq!(take(&claim).await, None, "nothing came in yet");
        push(main, 'b', 'c').await;
        push(main, 'c', 'd').await;
        assert_eq!(
            store
                .as_node("b")
                .take_later_pushes("app", &claim.focus, &claim.claimed)
                .await
                .unwrap(),
            None,
            "only the node holding the claim takes events into it"
        );
        let taken = take(&claim).await.expect("taken in");
        assert_eq!(taken.claimed, RefMap::from([(main.to_string(), oid('d'))]));
        assert!(taken.through > claim.through);
        finish_covering(&store, &claim, &ok_report("app"), None, taken.through).await;
        assert_eq!(
            unhandled(&store, "app").await,
            0,
            "the run handled them all"
        );
        assert!(
            store
                .claim(now_ms() + 1_000_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "no follow-up run for events the run took in"
        );

        // What a run does not take in waits for its follow-up: a broken chain, another ref, a
        // poll.
        let mut tip = 'd';
        for (case, next) in [
            ("a broken chain", 'e'),
            ("another ref", 'f'),
            ("a poll", '1'),
        ] {
            push(main, tip, next).await;
            tip = next;
            let claim = claim_one(&store, now_ms(), "app").await;
            match case {
                "a broken chain" => push(main, '9', '8').await,
                "another ref" => push(dev, 'a', 'b').await,
                _ => {
                    enqueue_plain(&store, "app", Trigger::Poll, "", &[]).await;
                }
            }
            assert_eq!(take(&claim).await, None, "{case}");
            finish(&store, &claim, &ok_report("app"), None).await;
            assert_eq!(unhandled(&store, "app").await, 1, "{case}");
            let follow_up = claim_one(&store, now_ms(), "app").await;
            finish(&store, &follow_up, &ok_report("app"), None).await;
            assert_eq!(unhandled(&store, "app").await, 0, "{case}");
        }
    }

    /// A take whose commit reached the store but whose answer did not (a connection lost at
    /// the commit) moved the claim's watermark without the run knowing: the run reports what
    /// it covered, and the events it did not push wait for a follow-up run.
    async fn events_a_run_took_in_without_hearing_back_get_a_follow_up_run(at: Location) {
        let store = open_as(&at, "a").await;
        let oid = |c: char| Oid::parse(&c.to_string().repeat(40)).unwrap();
        let main = "refs/heads/main";
        let push = |old: char, new: char| enqueue_move(&store, "app", main, (old, new));
        push('a', 'b').await;
        let claim = claim_one(&store, now_ms(), "app").await;
        push('b', 'c').await;
        let taken = store
            .take_later_pushes("app", &claim.focus, &claim.claimed)
            .await
            .unwrap();
        assert!(taken.is_some(), "the store took b -> c into the claim");
        // The run never heard of it: it pushed b and reports its claim's watermark.
        finish(&store, &claim, &ok_report("app"), None).await;
        assert_eq!(
            unhandled(&store, "app").await,
            1,
            "b -> c is not counted as synced"
        );
        let follow_up = claim_one(&store, now_ms(), "app").await;
        assert_eq!(
            follow_up.claimed,
            RefMap::from([(main.to_string(), oid('c'))])
        );
        finish(&store, &follow_up, &ok_report("app"), None).await;
        assert_eq!(unhandled(&store, "app").await, 0);
    }
    async fn no_focus_when_an_event_named_no_refs_or_the_last_run_failed(at: Location) {
        let store = open_as(&at, "a").await;
        let main = names(&["refs/heads/main"]);
        enqueue_plain(&store, "app", Trigger::Webhook, "", &main).await;
        enqueue_plain(&store, "app", Trigger::Poll, "", &[]).await;
        let claim = claim_one(&store, now_ms(), "app").await;
        assert_eq!(claim.focus, Vec::<String>::new(), "the poll named no refs");
        finish(&store, &claim, &failed_report("app"), Some(0)).await;

        // The retry covers no event: the whole selection.
        let retry = claim_one(&store, now_ms(), "app").await;
        assert_eq!(retry.triggers, vec![Trigger::Retry]);
        assert!(retry.focus.is_empty());
        finish(&store, &retry, &failed_report("app"), None).await;

        // After a failed run, a push naming one ref must not narrow the next run: the failed
        // run's refs may still be unsynced.
        enqueue_plain(&store, "app", Trigger::Webhook, "", &main).await;
        let claim = claim_one(&store, now_ms(), "app").await;
        assert!(claim.focus.is_empty(), "{:?}", claim.focus);
        finish(&store, &claim, &ok_report("app"), None).await;

        enqueue_plain(&store, "app", Trigger::Webhook, "", &main).await;
        assert_eq!(claim_one(&store, now_ms(), "app").await.focus, main);
    }

    async fn coalesces_events_while_queued_and_while_running(at: Location) {
        let store = open_as(&at, "a").await;
        for trigger in [
            Trigger::Webhook,
            Trigger::Poll,
            Trigger::Webhook,
            Trigger::Manual,
            Trigger::Poll,
        ] {
            enqueue_plain(&store, "app", trigger, "", &[]).await;
        }
        assert_eq!(store.queue_depth().await.unwrap(), 1);
        let claim = claim_one(&store, now_ms(), "app").await;
        assert_eq!(
            claim.triggers,
            vec![Trigger::Webhook, Trigger::Poll, Trigger::Manual]
        );
        assert!(store.claim(now_ms(), 10).await.unwrap().is_empty());

        // Events during the run: not claimable until it finishes, then exactly one follow-up.
        for _ in 0..3 {
            enqueue_plain(&store, "app", Trigger::Poll, "", &[]).await;
        }
        assert!(store.claim(now_ms(), 10).await.unwrap().is_empty());
        assert_eq!(store.next_due().await.unwrap(), None);
        finish(&store, &claim, &ok_report("app"), None).await;
        assert_eq!(
            unhandled(&store, "app").await,
            3,
            "the run handled only its own events"
        );

        let follow_up = claim_one(&store, now_ms(), "app").await;
        assert_eq!(follow_up.triggers, vec![Trigger::Poll]);
        assert_eq!(follow_up.attempt, 0);
        finish(&store, &follow_up, &ok_report("app"), None).await;
        assert_eq!(unhandled(&store, "app").await, 0);
        assert!(store
            .claim(now_ms() + 1_000_000, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.run_count("app").await.unwrap(), 2);
    }

    async fn concurrent_claims_never_share_a_mirror(at: Location) {
        // Two stores (two nodes: their own pools) as well as clones of one: all must serialize.
        let a = open_as(&at, "a").await;
        let b = open_as(&at, "b").await;
        let names: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
        for name in &names {
            enqueue_plain(&a, name, Trigger::Webhook, "", &[]).await;
        }
        let now = now_ms();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    loop {
                        let claims = store.claim(now, 3).await.unwrap();
                        if claims.is_empty() {
                            return got;
                        }
                        got.extend(claims.into_iter().map(|c| c.mirror));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all.sort();
        assert_eq!(all, names, "every mirror claimed exactly once");
    }

    async fn retries_wait_for_their_time_and_new_events_reset_them(at: Location) {
        let store = open_as(&at, "a").await;
        enqueue_plain(&store, "app", Trigger::Webhook, "", &[]).await;
        let now = now_ms();
        let claim = claim_one(&store, now, "app").await;
        let retry_at = now + 60_000;
        let out = finish(&store, &claim, &failed_report("app"), Some(retry_at)).await;
        assert_eq!(out.failure_streak, 1);

        assert!(store.claim(now_ms(), 10).await.unwrap().is_empty());
        assert!(store.claim(retry_at - 1, 10).await.unwrap().is_empty());
        assert_eq!(store.next_due().await.unwrap(), Some(retry_at));
        assert_eq!(store.queue_depth().await.unwrap(), 1);
        let status = store.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.state, MirrorState::Queued);
        assert_eq!(status.retry_at, Some(retry_at));

        let retry = claim_one(&store, retry_at, "app").await;
        assert_eq!(retry.triggers, vec![Trigger::Retry]);
        assert_eq!(retry.attempt, 1);
        let retry_at2 = retry_at + 120_000;
        let out = finish(&store, &retry, &failed_report("app"), Some(retry_at2)).await;
        assert_eq!(out.failure_streak, 2);
        assert!(store.claim(retry_at2 - 1, 10).await.unwrap().is_empty());

        // A fresh event: due now, first try again.
        enqueue_plain(&store, "app", Trigger::Manual, "", &[]).await;
        let status = store.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.retry_at, None);
        let fresh = claim_one(&store, now_ms(), "app").await;
        assert_eq!(fresh.triggers, vec![Trigger::Manual]);
        assert_eq!(fresh.attempt, 0);
        let out = finish(&store, &fresh, &ok_report("app"), None).await;
        assert_eq!(out.failure_streak, 0);
        assert_eq!(store.queue_depth().await.unwrap(), 0);
    }

    async fn a_new_event_during_a_failing_run_wins_over_the_retry(at: Location) {
        let store = open_as(&at, "a").await;
        enqueue_plain(&store, "app", Trigger::Webhook, "", &[]).await;
        let now = now_ms();
        let claim = claim_one(&store, now, "app").await;
        enqueue_plain(&store, "app", Trigger::Poll, "", &[]).await;
        finish(&store, &claim, &failed_report("app"), Some(now + 60_000)).await;
        let next = claim_one(&store, now + 1, "app").await;
        assert_eq!(next.triggers, vec![Trigger::Poll]);
        assert_eq!(next.attempt, 0);
    }

    /// The SQLite pools of a store (the tests that are about SQLite itself).
    fn sqlite_pools(store: &Store) -> (&SqlitePool, &SqlitePool) {
        match &store.db {
            Db::Sqlite { read, write } => (read, write),
            Db::Postgres(_) => panic!("an SQLite store was expected"),
        }
    }

    fn sqlite_at(dir: &tempfile::TempDir) -> (PathBuf, Location) {
        let path = dir.path().join("ferry.db");
        (path.clone(), Location::Sqlite(path))
    }

    #[tokio::test]
    async fn sqlite_requeues_interrupted_syncs_when_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let (_, at) = sqlite_at(&dir);
        let store = open_as(&at, "a").await;
        enqueue_plain(&store, "app", Trigger::Webhook, "", &[]).await;
        enqueue_plain(&store, "app", Trigger::Poll, "", &[]).await;
        claim_one(&store, now_ms(), "app").await;
        assert!(store.claim(now_ms(), 10).await.unwrap().is_empty());
        // The process dies mid-sync: no finish.
        let (read, write) = sqlite_pools(&store);
        write.close().await;
        read.close().await;
        drop(store);

        let store = open_as(&at, "a2").await;
        assert_eq!(unhandled(&store, "app").await, 2);
        let again = claim_one(&store, now_ms(), "app").await;
        assert_eq!(again.triggers, vec![Trigger::Webhook, Trigger::Poll]);
        assert_eq!(again.taken_from, None, "requeued, not taken over");
        finish(&store, &again, &ok_report("app"), None).await;
        assert_eq!(unhandled(&store, "app").await, 0);
        assert_eq!(store.run_count("app").await.unwrap(), 1);
    }

    async fn release_requeues_a_running_mirror_with_its_error_until_a_run_is_recorded(
        at: Location,
    ) {
        let store = open_as(&at, "a").await;
        enqueue_plain(&store, "app", Trigger::Webhook, "", &[]).await;
        enqueue_plain(&store, "app", Trigger::Poll, "", &[]).await;
        let now = now_ms();
        claim_one(&store, now, "app").await;
        let retry_at = now + 60_000;
        assert!(store.release("app", retry_at, "boom").await.unwrap());

        let status = store.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.state, MirrorState::Queued);
        assert_eq!(status.retry_at, Some(retry_at));
        assert_eq!(status.interrupted.as_deref(), Some("boom"));
        assert_eq!(
            unhandled(&store, "app").await,
            2,
            "its events wait for a run"
        );
        assert_eq!(store.run_count("app").await.unwrap(), 0);
        assert!(store.claim(retry_at - 1, 10).await.unwrap().is_empty());
        assert_eq!(store.next_due().await.unwrap(), Some(retry_at));
        assert!(
            !store.release("app", retry_at, "again").await.unwrap(),
            "only a running mirror is released"
        );

        let retry = claim_one(&store, retry_at, "app").await;
        assert_eq!(retry.triggers, vec![Trigger::Webhook, Trigger::Poll]);
        assert_eq!(retry.attempt, 1);
        let status = store.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.state, MirrorState::Syncing);
        assert_eq!(
            status.interrupted.as_deref(),
            Some("boom"),
            "until recorded"
        );
        finish(&store, &retry, &failed_report("app"), Some(retry_at + 1)).await;
        let status = store.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.interrupted, None, "a recorded run clears it");
        assert_eq!(unhandled(&store, "app").await, 0);
    }

    async fn a_read_only_store_shows_a_running_sync_as_it_is_and_writes_nothing(at: Location) {
        let store = open_as(&at, "a").await;
        enqueue_plain(&store, "app", Trigger::Webhook, "", &[]).await;
        let claim = claim_one(&store, now_ms(), "app").await;

        let reader = Store::open_read_only(&at).await.unwrap();
        let status = reader.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.state, MirrorState::Syncing, "not requeued");
        assert_eq!(status.node.as_deref(), Some("a"));
        assert!(reader
            .enqueue(
                "app",
                Trigger::Manual,
                "",
                &[],
                (&RefMap::new(), &RefMap::new())
            )
            .await
            .is_err());
        assert!(reader.heartbeat(now_ms()).await.is_err());
        assert!(store.claim(now_ms(), 10).await.unwrap().is_empty());
        assert_eq!(store.event_count("app").await.unwrap(), 1);
        finish(&store, &claim, &ok_report("app"), None).await;
        assert_eq!(reader.runs("app", 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn sqlite_read_only_leaves_no_files_behind_and_creates_no_database() {
        let dir = tempfile::tempdir().unwrap();
        let (path, at) = sqlite_at(&dir);
        let store = open_as(&at, "a").await;
        enqueue_plain(&store, "app", Trigger::Webhook, "", &[]).await;
        let claim = claim_one(&store, now_ms(), "app").await;
        finish(&store, &claim, &ok_report("app"), None).await;

        // The service stopped cleanly: everything checkpointed, and no -wal or -shm file left
        // beside the database. (SQLite removes them when the last connection closes, unless
        // that one is read-only; the scenario is made explicit rather than left to the order
        // in which the pools close.)
        let (read, write) = sqlite_pools(&store);
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(write)
            .await
            .unwrap();
        read.close().await;
        write.close().await;
        for leftover in ["ferry.db-wal", "ferry.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(leftover));
        }
        let reader = Store::open_read_only(&at).await.unwrap();
        let status = reader.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.state, MirrorState::Idle);
        sqlite_pools(&reader).0.close().await;
        assert!(path.exists());

        let missing = dir.path().join("missing.db");
        assert!(Store::open_read_only(&Location::Sqlite(missing.clone()))
            .await
            .is_err());
        assert!(!missing.exists(), "nothing created");
    }

    #[tokio::test]
    async fn sqlite_reads_holding_every_read_connection_do_not_hold_up_an_enqueue() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_as(&sqlite_at(&dir).1, "a").await;
        let (read, _) = sqlite_pools(&store);
        let mut held = Vec::new();
        for _ in 0..sqlite::READ_CONNECTIONS {
            held.push(read.acquire().await.unwrap());
        }
        let enqueued = tokio::time::timeout(
            Duration::from_secs(5),
            store.enqueue(
                "app",
                Trigger::Webhook,
                "push",
                &[],
                (&RefMap::new(), &RefMap::new()),
            ),
        )
        .await;
        assert!(matches!(enqueued, Ok(Ok(_))), "{enqueued:?}");
        drop(held);
        assert_eq!(store.event_count("app").await.unwrap(), 1);
        let written = sqlx::query("DELETE FROM events").execute(read).await;
        assert!(written.is_err(), "the read connections are read-only");
    }

    async fn states_streaks_and_destination_errors_follow_the_reports(at: Location) {
        let store = open_as(&at, "a").await;
        store
            .register_mirrors(&[config("app", &[D1, D2], "f1")])
            .await
            .unwrap();

        async fn run(store: &Store, report: &MirrorReport) -> (FinishOutcome, MirrorStatus) {
            enqueue_plain(store, "app", Trigger::Webhook, "", &[]).await;
            let claim = claim_one(store, now_ms(), "app").await;
            let out = finish(store, &claim, report, None).await;
            (out, store.mirror("app").await.unwrap().unwrap())
        }

        let (out, st) = run(&store, &report("app", vec![dest_ok(D1), dest_ok(D2)])).await;
        assert_eq!((st.state, out.failure_streak), (MirrorState::Idle, 0));
        let first_success = st.destinations[0].last_success_at;
        assert!(first_success.is_some());

        // A network failure on one destination.
        let (out, st) = run(
            &store,
            &report("app", vec![dest_error(D1, ErrorKind::Network), dest_ok(D2)]),
        )
        .await;
        assert_eq!((st.state, out.failure_streak), (MirrorState::Failing, 1));
        assert_eq!(st.failure_streak, 1);
        assert_eq!(st.destinations[0].url, D1);
        assert_eq!(st.destinations[0].last_success_at, first_success);
        assert_eq!(
            st.destinations[0].last_error.as_ref().map(|e| e.kind),
            Some(ErrorKind::Network)
        );
        assert!(st.destinations[0].last_attempt_at > first_success);
        assert_eq!(st.destinations[1].last_error, None);
        assert!(!out.was_notified);
        store.mark_notified("app", true).await.unwrap();

        // Divergence only: by the destination's error, then by its refs.
        let (out, st) = run(
            &store,
            &report("app", vec![dest_error(D1, ErrorKind::Diverged)]),
        )
        .await;
        assert_eq!((st.state, out.failure_streak), (MirrorState::Diverged, 2));
        assert!(out.was_notified);
        let refs = vec![
            ref_report("refs/heads/main", Outcome::Unchanged, None),
            ref_report(
                "refs/heads/dev",
                Outcome::Diverged,
                Some(ErrorKind::Diverged),
            ),
        ];
        let (out, st) = run(&store, &report("app", vec![dest_refs(D1, refs)])).await;
        assert_eq!((st.state, out.failure_streak), (MirrorState::Diverged, 3));
        let error = st.destinations[0].last_error.clone().unwrap();
        assert_eq!(error.kind, ErrorKind::Diverged);
        assert!(error.message.starts_with("refs/heads/dev: "), "{error:?}");
        assert_eq!(error.hint, ErrorKind::Diverged.hint());

        // Divergence plus another problem is a failure.
        let refs = vec![
            ref_report(
                "refs/heads/dev",
                Outcome::Diverged,
                Some(ErrorKind::Diverged),
            ),
            ref_report(
                "refs/heads/main",
                Outcome::Rejected,
                Some(ErrorKind::Protected),
            ),
        ];
        let (out, st) = run(
            &store,
            &report(
                "app",
                vec![dest_refs(D1, refs), dest_error(D2, ErrorKind::Diverged)],
            ),
        )
        .await;
        assert_eq!((st.state, out.failure_streak), (MirrorState::Failing, 4));

        // A source failure is a failure whatever the destinations say.
        let mut source_failed = report("app", vec![]);
        source_failed.ok = false;
        source_failed.source.ok = false;
        source_failed.source.error = Some(ErrorReport::new(ErrorKind::Auth, "denied"));
        let (out, st) = run(&store, &source_failed).await;
        assert_eq!((st.state, out.failure_streak), (MirrorState::Failing, 5));

        // Recovery: streak reset; the notification flag is the service's to clear.
        let (out, st) = run(&store, &report("app", vec![dest_ok(D1), dest_ok(D2)])).await;
        assert_eq!((st.state, out.failure_streak), (MirrorState::Idle, 0));
        assert!(out.was_notified);
        assert!(st.destinations.iter().all(|d| d.last_error.is_none()));
        store.mark_notified("app", false).await.unwrap();
        let (out, _) = run(&store, &failed_report("app")).await;
        assert!(!out.was_notified);
        assert!(store.mark_notified("nope", true).await.is_err());
    }

    async fn a_fleets_registration_retires_only_its_own_members(at: Location) {
        let store = open_as(&at, "a").await;
        store
            .register_mirrors(&[config("lone", &[D1], "l1")])
            .await
            .unwrap();
        let changed = store
            .register_fleet(
                "acme",
                &[
                    config("acme/app", &[D1], "f1"),
                    config("acme/web", &[D2], "f1"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(changed.len(), 2);
        store
            .register_fleet("other", &[config("other/x", &[D1], "o1")])
            .await
            .unwrap();
        let fleets: Vec<(String, Option<String>)> = store
            .mirrors()
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.name, m.fleet))
            .collect();
        assert_eq!(
            fleets,
            vec![
                ("lone".to_owned(), None),
                ("acme/app".to_owned(), Some("acme".to_owned())),
                ("acme/web".to_owned(), Some("acme".to_owned())),
                ("other/x".to_owned(), Some("other".to_owned())),
            ],
            "the config file's mirrors first, then each fleet's"
        );
        // acme loses web: only acme's members are looked at.
        let changed = store
            .register_fleet("acme", &[config("acme/app", &[D1], "f1")])
            .await
            .unwrap();
        assert!(changed.is_empty());
        assert_eq!(store.mirror("acme/web").await.unwrap(), None);
        assert!(store.mirror("other/x").await.unwrap().is_some());
        assert!(store.mirror("lone").await.unwrap().is_some());
        // The config file's mirrors leave the members alone, and the other way round.
        store.register_mirrors(&[]).await.unwrap();
        assert_eq!(store.mirror("lone").await.unwrap(), None);
        assert!(store.mirror("acme/app").await.unwrap().is_some());
        // A fleet no longer configured: its members are retired.
        store.retire_fleets_except(&["acme"]).await.unwrap();
        assert_eq!(store.mirror("other/x").await.unwrap(), None);
        assert!(store.mirror("acme/app").await.unwrap().is_some());
    }

    async fn discoveries_are_recorded_per_fleet_and_a_timer_can_be_made_due(at: Location) {
        let store = open_as(&at, "a").await;
        let ok = FleetStatus {
            name: "acme".into(),
            attempted_at: 1_000,
            succeeded_at: Some(1_000),
            members: 3,
            error: None,
            problems: vec!["team/x: cannot create".into()],
            node: Some("a".into()),
        };
        store.record_discovery(&ok).await.unwrap();
        let failed = FleetStatus {
            attempted_at: 2_000,
            succeeded_at: None,
            error: Some("cannot list".into()),
            problems: vec![],
            ..ok.clone()
        };
        store.record_discovery(&failed).await.unwrap();
        let recorded = store.fleets().await.unwrap();
        assert_eq!(
            recorded,
            vec![FleetStatus {
                succeeded_at: Some(1_000),
                ..failed
            }],
            "a failure keeps when the last success was"
        );

        let every = Duration::from_secs(600);
        assert!(store
            .take_timer("discover:acme", 10_000, every)
            .await
            .unwrap());
        assert!(!store
            .take_timer("discover:acme", 11_000, every)
            .await
            .unwrap());
        store.make_due("discover:acme", 12_000).await.unwrap();
        assert!(store
            .take_timer("discover:acme", 12_000, every)
            .await
            .unwrap());
        assert!(!store
            .take_timer("discover:acme", 13_000, every)
            .await
            .unwrap());
    }

    async fn register_mirrors_detects_new_and_changed_configuration(at: Location) {
        let store = open_as(&at, "a").await;
        let mut changed = store
            .register_mirrors(&[config("web", &[D1, D2], "w1"), config("app", &[D1], "a1")])
            .await
            .unwrap();
        changed.sort();
        assert_eq!(changed, vec!["app", "web"]);
        let listed = store.mirrors().await.unwrap();
        let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, vec!["web", "app"], "configuration order");
        assert_eq!(listed[0].state, MirrorState::Idle);
        assert_eq!(listed[0].source, SRC);
        assert_eq!(listed[0].last_run, None);
        let urls: Vec<&str> = listed[0]
            .destinations
            .iter()
            .map(|d| d.url.as_str())
            .collect();
        assert_eq!(urls, vec![D1, D2]);

        let unchanged = store
            .register_mirrors(&[config("web", &[D1, D2], "w1"), config("app", &[D1], "a1")])
            .await
            .unwrap();
        assert!(unchanged.is_empty());

        // web loses a destination (new fingerprint); app is dropped from the configuration.
        enqueue_plain(&store, "app", Trigger::Webhook, "", &[]).await;
        let changed = store
            .register_mirrors(&[config("web", &[D2], "w2")])
            .await
            .unwrap();
        assert_eq!(changed, vec!["web"]);
        let listed = store.mirrors().await.unwrap();
        assert_eq!(listed.len(), 1);
        let urls: Vec<&str> = listed[0]
            .destinations
            .iter()
            .map(|d| d.url.as_str())
            .collect();
        assert_eq!(urls, vec![D2]);
        assert_eq!(store.mirror("app").await.unwrap(), None);
        assert!(
            store.claim(now_ms(), 10).await.unwrap().is_empty(),
            "removed mirrors wait"
        );
        assert_eq!(store.next_due().await.unwrap(), None);
        assert_eq!(store.event_count("app").await.unwrap(), 1, "history kept");

        // Back with the same configuration: listed and claimable again, not "changed".
        let changed = store
            .register_mirrors(&[config("web", &[D2], "w2"), config("app", &[D1], "a1")])
            .await
            .unwrap();
        assert!(changed.is_empty());
        assert_eq!(store.mirrors().await.unwrap().len(), 2);
        claim_one(&store, now_ms(), "app").await;
    }

    async fn behind_since_covers_unhandled_and_failed_events(at: Location) {
        let store = open_as(&at, "a").await;
        let behind =
            |store: Store| async move { store.mirror("app").await.unwrap().unwrap().behind_since };

        let e1 = enqueue_plain(&store, "app", Trigger::Webhook, "", &[]).await;
        let t1 = received_at(&store, e1).await;
        assert_eq!(behind(store.clone()).await, Some(t1));
        let claim = claim_one(&store, now_ms(), "app").await;
        assert_eq!(behind(store.clone()).await, Some(t1), "running");

        // A failed run keeps the mirror behind since its events, through later failures.
        finish(&store, &claim, &failed_report("app"), None).await;
        assert_eq!(behind(store.clone()).await, Some(t1));
        enqueue_plain(&store, "app", Trigger::Poll, "", &[]).await;
        let claim = claim_one(&store, now_ms(), "app").await;
        finish(&store, &claim, &failed_report("app"), None).await;
        assert_eq!(behind(store.clone()).await, Some(t1));

        // Success clears it, except for events that arrived during the run.
        enqueue_plain(&store, "app", Trigger::Manual, "", &[]).await;
        let claim = claim_one(&store, now_ms(), "app").await;
        let e4 = enqueue_plain(&store, "app", Trigger::Poll, "", &[]).await;
        let t4 = received_at(&store, e4).await;
        finish(&store, &claim, &ok_report("app"), None).await;
        assert_eq!(behind(store.clone()).await, Some(t4));
        let claim = claim_one(&store, now_ms(), "app").await;
        finish(&store, &claim, &ok_report("app"), None).await;
        assert_eq!(behind(store.clone()).await, None);

        // Failures after a success count only their own events.
        let e5 = enqueue_plain(&store, "app", Trigger::Webhook, "", &[]).await;
        let t5 = received_at(&store, e5).await;
        let claim = claim_one(&store, now_ms(), "app").await;
        finish(&store, &claim, &failed_report("app"), None).await;
        assert_eq!(behind(store.clone()).await, Some(t5));
    }
    async fn prune_keeps_the_newest_runs_of_each_mirror(at: Location) {
        let store = open_as(&at, "a").await;
        let report = report_for_prune("p");
        for _ in 0..5 {
            enqueue_plain(&store, "p", Trigger::Webhook, "x", &[]).await;
            let claim = store.claim(now_ms(), 1).await.unwrap().remove(0);
            let finish = Finish {
                mirror: "p",
                started_at: claim.started_at,
                finished_at: now_ms(),
                trigger: Trigger::Webhook,
                report: &report,
                retry_at: None,
                covered_through: Some(claim.through),
            };
            store.finish(finish).await.unwrap();
        }
        enqueue_plain(&store, "p", Trigger::Webhook, "still pending", &[]).await;
        assert_eq!(store.prune(2).await.unwrap(), 3);
        assert_eq!(store.run_count("p").await.unwrap(), 2);
        assert_eq!(
            store.event_count("p").await.unwrap(),
            3,
            "the kept runs' events and the pending one"
        );
        let runs = store.runs("p", 10).await.unwrap();
        assert!(
            runs[0].summary.id > runs[1].summary.id && runs[1].summary.id >= 4,
            "the newest are kept"
        );
    }

    async fn a_lapsed_claim_is_taken_over_with_its_events_and_the_old_node_records_nothing(
        at: Location,
    ) {
        let a = open_as(&at, "a").await;
        let b = open_as(&at, "b").await;
        enqueue_plain(
            &a,
            "app",
            Trigger::Webhook,
            "",
            &names(&["refs/heads/main"]),
        )
        .await;
        let t0 = now_ms();
        let claim = claim_one(&a, t0, "app").await;
        let lease = LEASE.as_millis() as i64;
        assert!(
            b.claim(t0 + lease - 1, 10).await.unwrap().is_empty(),
            "the lease holds"
        );
        assert_eq!(
            b.next_due().await.unwrap(),
            Some(t0 + lease),
            "b waits for the lease"
        );
        assert_eq!(a.next_due().await.unwrap(), None, "a runs it");
        enqueue_plain(&a, "app", Trigger::Poll, "", &[]).await;

        // a stops heartbeating: b takes the mirror over once the lease has lapsed (past the
        // affinity grace too: a, its preferred node maybe, is gone), covering every event.
        let late = t0 + lease + AFFINITY_GRACE_MS;
        let taken = claim_one(&b, late, "app").await;
        assert_eq!(taken.taken_from.as_deref(), Some("a"));
        assert_eq!(taken.triggers, vec![Trigger::Webhook, Trigger::Poll]);
        assert!(taken.focus.is_empty(), "the poll named no refs");
        let status = b.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.state, MirrorState::Syncing);
        assert_eq!(status.node.as_deref(), Some("b"));
        let why = status.interrupted.unwrap_or_default();
        assert!(why.contains("taken over from node a"), "{why}");

        // a comes back with its result: refused, nothing recorded, nothing released.
        let refused = a
            .finish(Finish {
                mirror: "app",
                started_at: claim.started_at,
                finished_at: late,
                trigger: Trigger::Webhook,
                report: &ok_report("app"),
                retry_at: None,
                covered_through: Some(claim.through),
            })
            .await
            .unwrap_err();
        assert!(
            format!("{refused:#}").contains("took app over"),
            "{refused:#}"
        );
        assert!(!a.release("app", late, "x").await.unwrap());
        assert_eq!(a.run_count("app").await.unwrap(), 0);
        assert_eq!(unhandled(&a, "app").await, 2);

        finish(&b, &taken, &ok_report("app"), None).await;
        assert_eq!(unhandled(&a, "app").await, 0);
        let runs = a.runs("app", 10).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].summary.node.as_deref(), Some("b"));
        let status = a.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.node.as_deref(), Some("b"), "the move is visible");
        assert_eq!(status.interrupted, None);
    }

    async fn heartbeats_renew_claims_and_list_the_nodes(at: Location) {
        let a = open_as(&at, "a").await;
        let b = open_as(&at, "b").await;
        let t0 = now_ms();
        assert_eq!(a.heartbeat(t0).await.unwrap(), 0);
        b.heartbeat(t0 + 1).await.unwrap();
        let nodes = a.nodes().await.unwrap();
        let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, vec!["b", "a"], "newest heartbeat first");
        assert_eq!(nodes[1].heartbeat_at, t0);
        assert_eq!(nodes[1].version, env!("CARGO_PKG_VERSION"));

        for m in ["m1", "m2"] {
            enqueue_plain(&a, m, Trigger::Webhook, "", &[]).await;
        }
        let lease = LEASE.as_millis() as i64;
        // Past the grace: a takes both whichever node they prefer.
        let due = now_ms() + AFFINITY_GRACE_MS;
        let claims = a.claim(due, 10).await.unwrap();
        assert_eq!(claims.len(), 2);
        // Renewed halfway: still a's well past the first lease.
        assert_eq!(a.heartbeat(t0 + lease / 2).await.unwrap(), 2);
        let past_first = due + lease + AFFINITY_GRACE_MS;
        assert!(b.claim(past_first, 10).await.unwrap().is_empty());
        assert_eq!(
            b.claim(t0 + lease / 2 + lease + AFFINITY_GRACE_MS, 10)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            a.heartbeat(past_first).await.unwrap(),
            0,
            "a holds nothing now"
        );
    }

    async fn a_mirror_prefers_one_live_node_and_the_others_take_it_after_the_grace(at: Location) {
        let a = open_as(&at, "a").await;
        let b = open_as(&at, "b").await;
        let now = now_ms();
        a.heartbeat(now).await.unwrap();
        b.heartbeat(now).await.unwrap();
        let all: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
        for m in &all {
            enqueue_plain(&a, m, Trigger::Webhook, "", &[]).await;
        }
        let enqueued = now_ms();
        let mine = |claims: Vec<Claim>| -> Vec<String> {
            let mut names: Vec<String> = claims.into_iter().map(|c| c.mirror).collect();
            names.sort();
            names
        };
        let of_a = mine(a.claim(enqueued, 100).await.unwrap());
        let claims_of_b = b.claim(enqueued, 100).await.unwrap();
        let of_b = mine(claims_of_b.clone());
        assert!(!of_a.is_empty() && !of_b.is_empty(), "{of_a:?} {of_b:?}");
        let mut both = [of_a.clone(), of_b.clone()].concat();
        both.sort();
        assert_eq!(both, all, "each mirror to exactly one node");
        let live = vec!["a".to_owned(), "b".to_owned()];
        assert!(of_a.iter().all(|m| preferred_node(m, &live) == Some("a")));

        // b's mirrors come due again while b is busy: a leaves them to b for the grace only.
        for claim in &claims_of_b {
            let m = &claim.mirror;
            enqueue_plain(&b, m, Trigger::Poll, "", &[]).await;
            finish(&b, claim, &ok_report(m), None).await;
        }
        let due = now_ms();
        assert!(a.claim(due, 100).await.unwrap().is_empty(), "b's to take");
        assert_eq!(
            mine(a.claim(due + AFFINITY_GRACE_MS, 100).await.unwrap()),
            of_b
        );
        // With b gone (no heartbeat for a lease), a is every mirror's node.
        let later = now + LEASE.as_millis() as i64 + 1;
        a.heartbeat(later).await.unwrap();
        let gone = vec!["a".to_owned()];
        assert!(all.iter().all(|m| preferred_node(m, &gone) == Some("a")));
    }

    async fn a_node_that_leaves_requeues_its_syncs_at_once(at: Location) {
        let a = open_as(&at, "a").await;
        let b = open_as(&at, "b").await;
        a.heartbeat(now_ms()).await.unwrap();
        enqueue_plain(&a, "app", Trigger::Webhook, "", &[]).await;
        claim_one(&a, now_ms(), "app").await;
        a.leave().await.unwrap();
        assert!(a.nodes().await.unwrap().is_empty());
        let status = b.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.state, MirrorState::Queued);
        assert!(status.interrupted.unwrap_or_default().contains("stopped"));
        let again = claim_one(&b, now_ms(), "app").await;
        assert_eq!(again.triggers, vec![Trigger::Webhook]);
        assert_eq!(again.taken_from, None);
    }

    async fn a_shared_timer_fires_once_per_interval_whichever_node_asks(at: Location) {
        let a = open_as(&at, "a").await;
        let b = open_as(&at, "b").await;
        let every = Duration::from_secs(10);
        let t0 = now_ms();
        assert!(
            a.take_timer("poll:app", t0, every).await.unwrap(),
            "never fired"
        );
        assert!(!b.take_timer("poll:app", t0, every).await.unwrap());
        assert!(!a.take_timer("poll:app", t0 + 9_999, every).await.unwrap());
        assert!(
            b.take_timer("other", t0, every).await.unwrap(),
            "timers are separate"
        );
        assert!(b.take_timer("poll:app", t0 + 10_000, every).await.unwrap());
        assert!(!a.take_timer("poll:app", t0 + 10_000, every).await.unwrap());

        // Many nodes asking at once: exactly one fires.
        let later = t0 + 20_000;
        let asks: Vec<_> = (0..8)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { store.take_timer("poll:app", later, every).await })
            })
            .collect();
        let mut fired = 0;
        for ask in asks {
            fired += usize::from(ask.await.unwrap().unwrap());
        }
        assert_eq!(fired, 1);
    }

    async fn a_store_migrated_beyond_this_ferry_is_refused_with_a_clear_message(at: Location) {
        let store = open_as(&at, "a").await;
        on_db!(&store.db, |_read, write, _sql| {
            sqlx::query(
                "INSERT INTO _sqlx_migrations \
                   (version, description, success, checksum, execution_time) \
                 VALUES (9999, 'from a newer ferry', TRUE, $1, 0)",
            )
            .bind(vec![0u8; 48])
            .execute(write)
            .await
            .map(|done| done.rows_affected())
            .unwrap()
        });
        let node = Node {
            id: "old".to_owned(),
            lease: LEASE,
        };
        let refused = Store::open(&at, node).await.unwrap_err();
        let message = format!("{refused:#}");
        assert!(
            message.contains("migration 9999") && message.contains("newer ferry"),
            "{message}"
        );
        assert!(!message.contains("password"), "{message}");
    }

    fn report_for_prune(name: &str) -> MirrorReport {
        MirrorReport {
            name: name.into(),
            ok: true,
            duration_ms: 1,
            source: crate::engine::report::SourceReport {
                url: "s".into(),
                ok: true,
                refs: 1,
                error: None,
                digest: None,
            },
            destinations: Vec::new(),
        }
    }
}
