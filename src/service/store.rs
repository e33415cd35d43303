//! The durable state of `ferry serve`: the queue of syncs, the events that caused them, the
//! history of runs and the per-mirror and per-destination status, in one SQLite file.
//!
//! The store is the service's memory across restarts, so every write that the outside world
//! relies on is committed before the call returns: a webhook is answered 202 only after
//! [`Store::enqueue`] has committed its event (WAL, `synchronous = FULL`, so it survives a
//! power loss). The queue is one `pending` row per mirror (see the migration for the schema):
//!
//! - `queued`: a run is needed; `running`: a run is in progress; both may be set (events
//!   arrived during the run: exactly one follow-up run, however many arrived).
//! - `not_before`: the earliest time the run may start (a retry waits for it);
//!   `attempt`: retries so far.
//! - `interrupted`: why the last run ended without recording a result ([`Store::release`]).
//!
//! Every write that reads what it then changes (enqueue, claim, finish, registering mirrors)
//! starts with `BEGIN IMMEDIATE`, taking SQLite's write lock up front:
//! two dispatchers claiming at once are serialized instead of both reading the same queued row,
//! and no transaction fails half-way with `SQLITE_BUSY` when it upgrades from read to write.
//!
//! One process owns a database file: [`Store::open`] treats every running sync as interrupted.
//! Anyone else reads it through [`Store::open_read_only`].

use crate::engine::report::{DestinationReport, ErrorReport, MirrorReport};
use crate::model::mirror::Trigger;
use crate::service::status::{
    now_ms, DestinationStatus, MirrorState, MirrorStatus, RunDetail, RunSummary,
};
use anyhow::{bail, Context, Result};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// Takes the write lock at the start of the transaction (see the module documentation).
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// Read-only connections for the status reads (the page, metrics, the API, the dispatcher's
/// look at what is due).
const READ_CONNECTIONS: u32 = 4;

/// How long a write waits for the write connection (the same as for SQLite's write lock),
/// so that a stuck writer turns into errors (503 for a webhook) rather than hung requests.
const WRITE_WAIT: Duration = Duration::from_secs(5);

/// A handle on the database; cheap to clone (two connection pools).
///
/// Reads and writes use separate pools, so that no amount of read traffic (the page, the API,
/// metrics scrapes) can keep an enqueue waiting for a connection: `read` holds read-only
/// connections (WAL readers never block the writer nor wait for it), `write` the single
/// connection every write goes through. SQLite admits one writer at a time anyway; queueing
/// for one connection in the pool is fair and wakes at once, where several connections would
/// queue on the write lock in SQLite's busy handler, which sleeps and polls.
#[derive(Debug, Clone)]
pub struct Store {
    read: SqlitePool,
    write: SqlitePool,
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
}

/// A due `pending` row as `claim` reads it.
#[derive(sqlx::FromRow)]
struct DueRow {
    mirror: String,
    attempt: i64,
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
    source: String,
    state: String,
    failure_streak: i64,
    queued: Option<bool>,
    running: Option<bool>,
    not_before: Option<i64>,
    attempt: Option<i64>,
    interrupted: Option<String>,
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
}

/// A `runs` row with its report as JSON.
#[derive(sqlx::FromRow)]
struct RunRow {
    #[sqlx(flatten)]
    summary: RunSummaryRow,
    report: String,
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
        })
    }
}

const STATUS_SELECT: &str = "SELECT m.name, m.source, m.state, m.failure_streak, \
     p.queued, p.running, p.not_before, p.attempt, p.interrupted \
     FROM mirrors m LEFT JOIN pending p ON p.mirror = m.name";

impl Store {
    /// Opens (creating it and its parent directories if needed) the database at `path`,
    /// migrates it, and requeues every sync that was running when the previous process died:
    /// its events are still unhandled, so running it again loses nothing.
    pub async fn open(path: &Path) -> Result<Store> {
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
        // The write connection stays open for the life of the store: an enqueue never waits
        // for a connection to be opened.
        let write = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(WRITE_WAIT)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening the database {}", path.display()))?;
        sqlx::migrate!("./migrations")
            .run(&write)
            .await
            .with_context(|| format!("migrating the database {}", path.display()))?;
        let read = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options.create_if_missing(false).read_only(true))
            .await
            .with_context(|| format!("opening the database {} for reading", path.display()))?;

        let recovered = sqlx::query(
            "UPDATE pending SET queued = 1, running = 0, not_before = ?1, claimed_through = NULL \
             WHERE running = 1",
        )
        .bind(now_ms())
        .execute(&write)
        .await
        .context("requeueing syncs interrupted by the previous process")?
        .rows_affected();
        if recovered > 0 {
            tracing::info!(
                recovered,
                "requeued syncs that were running when ferry stopped"
            );
        }
        Ok(Store { read, write })
    }

    /// Opens an existing database for reading only, as `ferry status` and `ferry runs` do when
    /// the service does not answer: no migration, no requeueing of running syncs (the service
    /// may be alive and running them), and SQLite refuses any write on these connections.
    pub async fn open_read_only(path: &Path) -> Result<Store> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .with_context(|| format!("opening the database {} read-only", path.display()))?;
        // Both roles on the one read-only connection: any write is refused by SQLite.
        Ok(Store {
            read: pool.clone(),
            write: pool,
        })
    }

    /// Records an accepted trigger and makes sure a run will handle it. Returns once the event
    /// is committed. Coalesces: a mirror already queued stays one queued run (made due now,
    /// with its retry count reset, because a fresh event deserves an immediate try); a mirror
    /// that is running gets exactly one follow-up run.
    /// `refs`: the full names of the refs a push event said it changed (empty: none named).
    pub async fn enqueue(
        &self,
        mirror: &str,
        trigger: Trigger,
        detail: &str,
        refs: &[String],
    ) -> Result<i64> {
        let now = now_ms();
        let refs = if refs.is_empty() {
            None
        } else {
            Some(serde_json::to_string(refs).context("encoding an event's refs")?)
        };
        let mut tx = self
            .write
            .begin_with(BEGIN_WRITE)
            .await
            .context("starting the enqueue transaction")?;
        ensure_mirror(&mut tx, mirror).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (mirror, trigger_name, detail, received_at, refs) \
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        )
        .bind(mirror)
        .bind(trigger.as_str())
        .bind(detail)
        .bind(now)
        .bind(refs)
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("recording a {} event for {mirror}", trigger.as_str()))?;
        sqlx::query(
            "INSERT INTO pending (mirror, queued, running, not_before, attempt) \
             VALUES (?1, 1, 0, ?2, 0) \
             ON CONFLICT (mirror) DO UPDATE SET \
               queued = 1, not_before = MIN(not_before, excluded.not_before), attempt = 0",
        )
        .bind(mirror)
        .bind(now)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("queueing a sync of {mirror}"))?;
        tx.commit()
            .await
            .with_context(|| format!("committing the event for {mirror}"))?;
        Ok(id)
    }

    /// Takes up to `limit` due mirrors (queued, not running, `not_before <= now`, longest due
    /// first) and marks them running, in one write transaction so that two callers never take
    /// the same mirror. Mirrors dropped from the configuration are never claimed.
    pub async fn claim(&self, now: i64, limit: usize) -> Result<Vec<Claim>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Most wake-ups (a webhook for a mirror that is already queued or running) find
        // nothing due: answer those with a read, without taking the write lock that every
        // webhook's enqueue needs too.
        let anything_due: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pending p JOIN mirrors m ON m.name = p.mirror \
             WHERE p.queued = 1 AND p.running = 0 AND p.not_before <= ?1 \
               AND m.config_state <> 'removed')",
        )
        .bind(now)
        .fetch_one(&self.read)
        .await
        .context("checking for due syncs")?;
        if !anything_due {
            return Ok(Vec::new());
        }
        let mut tx = self
            .write
            .begin_with(BEGIN_WRITE)
            .await
            .context("starting the claim transaction")?;
        let due: Vec<DueRow> = sqlx::query_as(
            "SELECT p.mirror, p.attempt FROM pending p JOIN mirrors m ON m.name = p.mirror \
             WHERE p.queued = 1 AND p.running = 0 AND p.not_before <= ?1 \
               AND m.config_state <> 'removed' \
             ORDER BY p.not_before, p.mirror LIMIT ?2",
        )
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .context("listing due syncs")?;

        let mut claims = Vec::with_capacity(due.len());
        for DueRow { mirror, attempt } in due {
            // The events this run covers: every one recorded so far (we hold the write lock,
            // so none can arrive between this read and the commit).
            let through: i64 =
                sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events WHERE mirror = ?1")
                    .bind(&mirror)
                    .fetch_one(&mut *tx)
                    .await
                    .with_context(|| format!("reading the events of {mirror}"))?;
            let taken = sqlx::query(
                "UPDATE pending SET queued = 0, running = 1, claimed_through = ?2 \
                 WHERE mirror = ?1 AND queued = 1 AND running = 0",
            )
            .bind(&mirror)
            .bind(through)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("claiming {mirror}"))?
            .rows_affected();
            if taken != 1 {
                continue;
            }
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT trigger_name FROM events WHERE mirror = ?1 AND run_id IS NULL \
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
            let focus = claim_focus(&mut tx, &mirror, through).await?;
            claims.push(Claim {
                mirror,
                triggers,
                attempt: to_u32(attempt),
                started_at: now,
                focus,
            });
        }
        tx.commit().await.context("committing the claim")?;
        Ok(claims)
    }

    /// Records a finished run in one transaction: the run and its report, the events it
    /// handled (those its claim covered), the queue (a follow-up run if events arrived
    /// meanwhile, else a retry if asked for, else nothing), the destinations' status and the
    /// mirror's state and failure streak.
    pub async fn finish(&self, f: Finish<'_>) -> Result<FinishOutcome> {
        let mirror = f.mirror;
        let report_json = serde_json::to_string(f.report)
            .with_context(|| format!("serializing the report of {mirror}"))?;
        let mut tx = self
            .write
            .begin_with(BEGIN_WRITE)
            .await
            .context("starting the finish transaction")?;
        ensure_mirror(&mut tx, mirror).await?;

        let run_id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (mirror, trigger_name, started_at, finished_at, ok, report) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )
        .bind(mirror)
        .bind(f.trigger.as_str())
        .bind(f.started_at)
        .bind(f.finished_at)
        .bind(f.report.ok)
        .bind(&report_json)
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("recording the run of {mirror}"))?;

        let pending: Option<Pending> = sqlx::query_as(
            "SELECT queued, running, claimed_through FROM pending WHERE mirror = ?1",
        )
        .bind(mirror)
        .fetch_optional(&mut *tx)
        .await
        .with_context(|| format!("reading the queue entry of {mirror}"))?;

        // The events this run handled. The claim's watermark is exact; without one (a run
        // that was not claimed) fall back to the events received before the run started.
        let handled = match pending.as_ref().filter(|p| p.running) {
            Some(Pending {
                claimed_through: Some(through),
                ..
            }) => sqlx::query(
                "UPDATE events SET run_id = ?2 \
                 WHERE mirror = ?1 AND run_id IS NULL AND id <= ?3",
            )
            .bind(mirror)
            .bind(run_id)
            .bind(*through),
            _ => sqlx::query(
                "UPDATE events SET run_id = ?2 \
                 WHERE mirror = ?1 AND run_id IS NULL AND received_at <= ?3",
            )
            .bind(mirror)
            .bind(run_id)
            .bind(f.started_at),
        };
        handled
            .execute(&mut *tx)
            .await
            .with_context(|| format!("marking the events of {mirror} handled"))?;

        let queue = if pending.as_ref().is_some_and(|p| p.queued) {
            // Events arrived during the run: one immediate follow-up, a fresh first try.
            sqlx::query(
                "UPDATE pending SET running = 0, not_before = ?2, attempt = 0, \
                 claimed_through = NULL, interrupted = NULL WHERE mirror = ?1",
            )
            .bind(mirror)
            .bind(f.finished_at)
        } else if let Some(at) = f.retry_at {
            sqlx::query(
                "INSERT INTO pending (mirror, queued, running, not_before, attempt) \
                 VALUES (?1, 1, 0, ?2, 1) \
                 ON CONFLICT (mirror) DO UPDATE SET queued = 1, running = 0, \
                   not_before = excluded.not_before, attempt = attempt + 1, \
                   claimed_through = NULL, interrupted = NULL",
            )
            .bind(mirror)
            .bind(at)
        } else {
            sqlx::query("DELETE FROM pending WHERE mirror = ?1").bind(mirror)
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
            "SELECT config_state, failure_streak, notified FROM mirrors WHERE name = ?1",
        )
        .bind(mirror)
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("reading the state of {mirror}"))?;

        for (position, d) in f.report.destinations.iter().enumerate() {
            record_destination(&mut tx, mirror, position, d, f.finished_at, &config_state).await?;
        }

        let failure_streak = if f.report.ok { 0 } else { streak_before + 1 };
        sqlx::query(
            "UPDATE mirrors SET state = ?2, failure_streak = ?3, \
             source_digest = COALESCE(?4, source_digest) WHERE name = ?1",
        )
        .bind(mirror)
        .bind(state_after(f.report).as_str())
        .bind(failure_streak)
        .bind(f.report.source.digest.as_deref())
        .execute(&mut *tx)
        .await
        .with_context(|| format!("updating the state of {mirror}"))?;

        tx.commit()
            .await
            .with_context(|| format!("committing the run of {mirror}"))?;
        Ok(FinishOutcome {
            run_id,
            failure_streak: to_u32(failure_streak),
            was_notified,
        })
    }

    /// Puts a claimed mirror whose run ended without recording a result (its task panicked, or
    /// [`Store::finish`] kept failing) back in the queue, due at `retry_at` with one more
    /// attempt counted, and keeps `error` for the status until a run records its result. The
    /// events the run covered stay unhandled, so the next run covers them. Returns false, and
    /// changes nothing, when the mirror is not running (its result was recorded after all).
    pub async fn release(&self, mirror: &str, retry_at: i64, error: &str) -> Result<bool> {
        let released = sqlx::query(
            "UPDATE pending SET queued = 1, running = 0, not_before = ?2, \
               attempt = attempt + 1, claimed_through = NULL, interrupted = ?3 \
             WHERE mirror = ?1 AND running = 1",
        )
        .bind(mirror)
        .bind(retry_at)
        .bind(error)
        .execute(&self.write)
        .await
        .with_context(|| format!("putting {mirror} back in the queue"))?
        .rows_affected();
        Ok(released == 1)
    }

    /// Remembers whether a failure notification is outstanding for the mirror's current
    /// streak: true after sending one (so it is sent once per streak), false after the
    /// recovery notice.
    pub async fn mark_notified(&self, mirror: &str, notified: bool) -> Result<()> {
        let updated = sqlx::query("UPDATE mirrors SET notified = ?2 WHERE name = ?1")
            .bind(mirror)
            .bind(notified)
            .execute(&self.write)
            .await
            .with_context(|| format!("recording the notification state of {mirror}"))?
            .rows_affected();
        if updated == 0 {
            bail!("the store knows no mirror named {mirror}");
        }
        Ok(())
    }

    /// Makes the store's list of mirrors the configuration's, so that status shows every
    /// configured mirror and destination before its first run: upserts each (name, redacted
    /// source, redacted destinations, config fingerprint) in order, drops the status of
    /// destinations no longer configured, and retires mirrors no longer configured (their
    /// history stays; they are neither listed nor claimed). Returns the names whose
    /// fingerprint is new or changed: the service syncs those with [`Trigger::Config`].
    pub async fn register_mirrors(
        &self,
        mirrors: &[(String, String, Vec<String>, String)],
    ) -> Result<Vec<String>> {
        let mut tx = self
            .write
            .begin_with(BEGIN_WRITE)
            .await
            .context("starting the registration transaction")?;
        let mut changed = Vec::new();
        let mut names = HashSet::new();
        for (position, (name, source, destinations, fingerprint)) in mirrors.iter().enumerate() {
            names.insert(name.as_str());
            let stored: Option<Option<String>> =
                sqlx::query_scalar("SELECT fingerprint FROM mirrors WHERE name = ?1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .with_context(|| format!("reading the fingerprint of {name}"))?;
            if stored.flatten().as_deref() != Some(fingerprint.as_str()) {
                changed.push(name.clone());
            }
            sqlx::query(
                "INSERT INTO mirrors (name, source, fingerprint, config_state, position) \
                 VALUES (?1, ?2, ?3, 'configured', ?4) \
                 ON CONFLICT (name) DO UPDATE SET source = excluded.source, \
                   fingerprint = excluded.fingerprint, config_state = 'configured', \
                   position = excluded.position",
            )
            .bind(name)
            .bind(source)
            .bind(fingerprint)
            .bind(position as i64)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("registering the mirror {name}"))?;

            for (position, url) in destinations.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO destinations (mirror, url, position) VALUES (?1, ?2, ?3) \
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
                sqlx::query_scalar("SELECT url FROM destinations WHERE mirror = ?1")
                    .bind(name)
                    .fetch_all(&mut *tx)
                    .await
                    .with_context(|| format!("listing the destinations of {name}"))?;
            for url in stored_urls.iter().filter(|u| !destinations.contains(u)) {
                sqlx::query("DELETE FROM destinations WHERE mirror = ?1 AND url = ?2")
                    .bind(name)
                    .bind(url)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("dropping a destination of {name}"))?;
            }
        }

        let live: Vec<String> =
            sqlx::query_scalar("SELECT name FROM mirrors WHERE config_state <> 'removed'")
                .fetch_all(&mut *tx)
                .await
                .context("listing the known mirrors")?;
        for name in live.iter().filter(|n| !names.contains(n.as_str())) {
            sqlx::query("UPDATE mirrors SET config_state = 'removed' WHERE name = ?1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("retiring the mirror {name}"))?;
            sqlx::query("DELETE FROM destinations WHERE mirror = ?1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("dropping the destinations of {name}"))?;
        }
        tx.commit()
            .await
            .context("committing the mirror registration")?;
        Ok(changed)
    }

    /// Every configured mirror, in configuration order, read from one snapshot.
    pub async fn mirrors(&self) -> Result<Vec<MirrorStatus>> {
        let mut tx = self.read.begin().await.context("starting a status read")?;
        let rows: Vec<StatusRow> = sqlx::query_as(&format!(
            "{STATUS_SELECT} WHERE m.config_state = 'configured' ORDER BY m.position, m.name"
        ))
        .fetch_all(&mut *tx)
        .await
        .context("listing the mirrors")?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(status_of(&mut tx, row).await?);
        }
        tx.commit().await.context("ending a status read")?;
        Ok(out)
    }

    /// One mirror's status; `None` for a mirror the store does not know or that was removed
    /// from the configuration.
    pub async fn mirror(&self, name: &str) -> Result<Option<MirrorStatus>> {
        let mut tx = self.read.begin().await.context("starting a status read")?;
        let row: Option<StatusRow> = sqlx::query_as(&format!(
            "{STATUS_SELECT} WHERE m.name = ?1 AND m.config_state <> 'removed'"
        ))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .with_context(|| format!("reading the mirror {name}"))?;
        let status = match row {
            Some(row) => Some(status_of(&mut tx, row).await?),
            None => None,
        };
        tx.commit().await.context("ending a status read")?;
        Ok(status)
    }

    /// The mirror's last `limit` runs with their reports, newest first.
    pub async fn runs(&self, mirror: &str, limit: usize) -> Result<Vec<RunDetail>> {
        let rows: Vec<RunRow> = sqlx::query_as(
            "SELECT id, mirror, trigger_name, started_at, finished_at, ok, report FROM runs \
             WHERE mirror = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(mirror)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.read)
        .await
        .with_context(|| format!("listing the runs of {mirror}"))?;
        rows.into_iter()
            .map(|RunRow { summary, report }| {
                let report = serde_json::from_str(&report)
                    .with_context(|| format!("reading the report of run {}", summary.id))?;
                Ok(RunDetail {
                    summary: summary.into_summary()?,
                    report,
                })
            })
            .collect()
    }

    /// How many mirrors are queued or running (a gauge for metrics and the page).
    pub async fn queue_depth(&self) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM pending p JOIN mirrors m ON m.name = p.mirror \
             WHERE p.running = 1 OR (p.queued = 1 AND m.config_state <> 'removed')",
        )
        .fetch_one(&self.read)
        .await
        .context("counting the queue")
    }

    /// How many events the mirror has received (for tests).
    #[cfg(test)]
    pub async fn event_count(&self, mirror: &str) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE mirror = ?1")
            .bind(mirror)
            .fetch_one(&self.read)
            .await
            .with_context(|| format!("counting the events of {mirror}"))
    }

    /// How many runs of the mirror are recorded (for tests).
    #[cfg(test)]
    pub async fn run_count(&self, mirror: &str) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE mirror = ?1")
            .bind(mirror)
            .fetch_one(&self.read)
            .await
            .with_context(|| format!("counting the runs of {mirror}"))
    }

    /// Keeps the newest `keep` runs of every mirror and deletes older runs with the events they
    /// handled, so the store does not grow forever. Returns how many runs were deleted. Events
    /// not yet handled are never deleted.
    pub async fn prune(&self, keep: i64) -> Result<u64> {
        let mut tx = self.write.begin().await.context("starting a prune")?;
        const OLD_RUNS: &str = "SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY mirror ORDER BY id DESC) AS newer \
             FROM runs) WHERE newer > ?1";
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
        tx.commit().await.context("committing a prune")?;
        Ok(deleted)
    }

    /// The digest of the source refs the mirror's last run synced from (`None`: no run read
    /// the source yet).
    pub async fn source_digest(&self, mirror: &str) -> Result<Option<String>> {
        let digest: Option<Option<String>> =
            sqlx::query_scalar("SELECT source_digest FROM mirrors WHERE name = ?1")
                .bind(mirror)
                .fetch_optional(&self.read)
                .await
                .with_context(|| format!("reading the last synced source of {mirror}"))?;
        Ok(digest.flatten())
    }

    /// When the next claimable sync becomes due (it may be in the past), so the dispatcher can
    /// sleep until then; `None` when nothing is waiting. A mirror queued behind its own running
    /// sync is not counted: it becomes due when that run finishes.
    pub async fn next_due(&self) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT MIN(p.not_before) FROM pending p JOIN mirrors m ON m.name = p.mirror \
             WHERE p.queued = 1 AND p.running = 0 AND m.config_state <> 'removed'",
        )
        .fetch_one(&self.read)
        .await
        .context("reading when the next sync is due")
    }
}

/// Creates the mirror's row if the store has not heard of it (an ad hoc mirror: enqueued
/// without being registered), so that events and runs can reference it.
async fn ensure_mirror(conn: &mut SqliteConnection, mirror: &str) -> Result<()> {
    sqlx::query("INSERT INTO mirrors (name) VALUES (?1) ON CONFLICT (name) DO NOTHING")
        .bind(mirror)
        .execute(conn)
        .await
        .with_context(|| format!("recording the mirror {mirror}"))?;
    Ok(())
}

/// Updates one destination's status after a run. A configured mirror's destinations were
/// registered beforehand; one that is no longer configured (the configuration changed during
/// the run) is not brought back. An ad hoc mirror's destinations are created on first sight.
async fn record_destination(
    conn: &mut SqliteConnection,
    mirror: &str,
    position: usize,
    d: &DestinationReport,
    finished_at: i64,
    config_state: &str,
) -> Result<()> {
    let error = destination_error(d)
        .map(|e| serde_json::to_string(&e))
        .transpose()
        .with_context(|| format!("serializing the error of a destination of {mirror}"))?;
    let updated = sqlx::query(
        "UPDATE destinations SET last_attempt_at = ?3, \
           last_success_at = CASE WHEN ?4 THEN ?3 ELSE last_success_at END, \
           last_error = ?5 \
         WHERE mirror = ?1 AND url = ?2",
    )
    .bind(mirror)
    .bind(&d.url)
    .bind(finished_at)
    .bind(d.ok)
    .bind(&error)
    .execute(&mut *conn)
    .await
    .with_context(|| format!("updating a destination of {mirror}"))?
    .rows_affected();
    if updated == 0 && config_state == "adhoc" {
        sqlx::query(
            "INSERT INTO destinations \
               (mirror, url, position, last_success_at, last_attempt_at, last_error) \
             VALUES (?1, ?2, ?3, CASE WHEN ?4 THEN ?5 END, ?5, ?6)",
        )
        .bind(mirror)
        .bind(&d.url)
        .bind(position as i64)
        .bind(d.ok)
        .bind(finished_at)
        .bind(&error)
        .execute(&mut *conn)
        .await
        .with_context(|| format!("recording a destination of {mirror}"))?;
    }
    Ok(())
}

/// Assembles a mirror's status from its base row (inside the caller's read snapshot).
async fn status_of(conn: &mut SqliteConnection, row: StatusRow) -> Result<MirrorStatus> {
    let StatusRow {
        name,
        source,
        state: stored_state,
        failure_streak,
        queued,
        running,
        not_before,
        attempt,
        interrupted,
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

    let last: Option<RunSummaryRow> = sqlx::query_as(
        "SELECT id, mirror, trigger_name, started_at, finished_at, ok FROM runs \
         WHERE mirror = ?1 ORDER BY id DESC LIMIT 1",
    )
    .bind(&name)
    .fetch_optional(&mut *conn)
    .await
    .with_context(|| format!("reading the last run of {name}"))?;
    let last_run = last.map(RunSummaryRow::into_summary).transpose()?;

    // Behind since the oldest event no successful run has satisfied: the unhandled ones, and,
    // while the mirror is failing, those handled by the failed runs since the last success.
    let unhandled: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(received_at) FROM events WHERE mirror = ?1 AND run_id IS NULL",
    )
    .bind(&name)
    .fetch_one(&mut *conn)
    .await
    .with_context(|| format!("reading the unhandled events of {name}"))?;
    let failed = match &last_run {
        Some(run) if !run.ok => sqlx::query_scalar(
            "SELECT MIN(received_at) FROM events WHERE mirror = ?1 AND run_id > \
               COALESCE((SELECT MAX(id) FROM runs WHERE mirror = ?1 AND ok = 1), 0)",
        )
        .bind(&name)
        .fetch_one(&mut *conn)
        .await
        .with_context(|| format!("reading the events of the failed runs of {name}"))?,
        _ => None,
    };
    let behind_since = match (unhandled, failed) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };

    let rows: Vec<DestinationRow> = sqlx::query_as(
        "SELECT url, last_success_at, last_attempt_at, last_error FROM destinations \
         WHERE mirror = ?1 ORDER BY position, url",
    )
    .bind(&name)
    .fetch_all(&mut *conn)
    .await
    .with_context(|| format!("reading the destinations of {name}"))?;
    let destinations = rows
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
        state,
        source,
        failure_streak: to_u32(failure_streak),
        behind_since,
        retry_at,
        interrupted,
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

/// The focus of a claim covering the mirror's unhandled events up to `through` (see
/// [`Claim::focus`]).
async fn claim_focus(tx: &mut SqliteConnection, mirror: &str, through: i64) -> Result<Vec<String>> {
    let failing: i64 = sqlx::query_scalar("SELECT failure_streak FROM mirrors WHERE name = ?1")
        .bind(mirror)
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("reading the failure streak of {mirror}"))?;
    if failing > 0 {
        return Ok(Vec::new());
    }
    let named: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT refs FROM events WHERE mirror = ?1 AND run_id IS NULL AND id <= ?2",
    )
    .bind(mirror)
    .bind(through)
    .fetch_all(&mut *tx)
    .await
    .with_context(|| format!("reading the refs of the events of {mirror}"))?;
    let mut focus = std::collections::BTreeSet::new();
    for refs in named {
        // An unreadable list counts as none named: the run takes the whole selection.
        let Some(refs) = refs.and_then(|r| serde_json::from_str::<Vec<String>>(&r).ok()) else {
            return Ok(Vec::new());
        };
        focus.extend(refs);
    }
    Ok(focus.into_iter().collect())
}

fn parse_trigger(name: &str) -> Result<Trigger> {
    Trigger::parse(name).with_context(|| format!("unknown trigger {name:?} in the store"))
}

/// Counters are stored as i64; they are never negative and never near u32::MAX.
fn to_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::Action;
    use crate::engine::report::{Outcome, RefReport, SourceReport};
    use crate::model::kind::ErrorKind;
    use crate::model::refs::Oid;

    const SRC: &str = "https://git.example.com/app.git";
    const D1: &str = "https://github.com/acme/app.git";
    const D2: &str = "https://gitlab.com/acme/app.git";

    async fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("state/ferry.db"))
            .await
            .expect("open store");
        (dir, store)
    }

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

    async fn finish(
        store: &Store,
        claim: &Claim,
        report: &MirrorReport,
        retry_at: Option<i64>,
    ) -> FinishOutcome {
        store
            .finish(Finish {
                mirror: &claim.mirror,
                started_at: claim.started_at,
                finished_at: claim.started_at + 1,
                trigger: claim.triggers[0],
                report,
                retry_at,
            })
            .await
            .expect("finish")
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
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE mirror = ?1 AND run_id IS NULL")
            .bind(mirror)
            .fetch_one(&store.read)
            .await
            .expect("count")
    }

    async fn received_at(store: &Store, event: i64) -> i64 {
        sqlx::query_scalar("SELECT received_at FROM events WHERE id = ?1")
            .bind(event)
            .fetch_one(&store.read)
            .await
            .expect("event")
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

    #[tokio::test]
    async fn enqueue_claim_finish_round_trip() {
        let (_dir, store) = temp_store().await;
        let event = store
            .enqueue("app", Trigger::Webhook, "push to main", &[])
            .await
            .unwrap();
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

    #[tokio::test]
    async fn a_claims_focus_is_the_union_of_the_refs_its_push_events_named() {
        let (_dir, store) = temp_store().await;
        let main = names(&["refs/heads/main"]);
        store
            .enqueue("app", Trigger::Webhook, "", &main)
            .await
            .unwrap();
        store
            .enqueue(
                "app",
                Trigger::Webhook,
                "",
                &names(&["refs/heads/dev", "refs/heads/main"]),
            )
            .await
            .unwrap();
        store
            .enqueue("app", Trigger::Codecommit, "", &names(&["refs/tags/v1"]))
            .await
            .unwrap();
        let claim = claim_one(&store, now_ms(), "app").await;
        assert_eq!(
            claim.focus,
            names(&["refs/heads/dev", "refs/heads/main", "refs/tags/v1"])
        );

        // An event during the run joins the follow-up only.
        store
            .enqueue("app", Trigger::Webhook, "", &names(&["refs/heads/next"]))
            .await
            .unwrap();
        finish(&store, &claim, &ok_report("app"), None).await;
        let follow_up = claim_one(&store, now_ms(), "app").await;
        assert_eq!(follow_up.focus, names(&["refs/heads/next"]));
    }

    #[tokio::test]
    async fn no_focus_when_an_event_named_no_refs_or_the_last_run_failed() {
        let (_dir, store) = temp_store().await;
        let main = names(&["refs/heads/main"]);
        store
            .enqueue("app", Trigger::Webhook, "", &main)
            .await
            .unwrap();
        store.enqueue("app", Trigger::Poll, "", &[]).await.unwrap();
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
        store
            .enqueue("app", Trigger::Webhook, "", &main)
            .await
            .unwrap();
        let claim = claim_one(&store, now_ms(), "app").await;
        assert!(claim.focus.is_empty(), "{:?}", claim.focus);
        finish(&store, &claim, &ok_report("app"), None).await;

        store
            .enqueue("app", Trigger::Webhook, "", &main)
            .await
            .unwrap();
        assert_eq!(claim_one(&store, now_ms(), "app").await.focus, main);
    }

    #[tokio::test]
    async fn coalesces_events_while_queued_and_while_running() {
        let (_dir, store) = temp_store().await;
        for trigger in [
            Trigger::Webhook,
            Trigger::Poll,
            Trigger::Webhook,
            Trigger::Manual,
            Trigger::Poll,
        ] {
            store.enqueue("app", trigger, "", &[]).await.unwrap();
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
            store.enqueue("app", Trigger::Poll, "", &[]).await.unwrap();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_never_share_a_mirror() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.db");
        // Two stores on one file as well as clones of one: both must serialize.
        let a = Store::open(&path).await.unwrap();
        let b = Store::open(&path).await.unwrap();
        let names: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
        for name in &names {
            a.enqueue(name, Trigger::Webhook, "", &[]).await.unwrap();
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

    #[tokio::test]
    async fn retries_wait_for_their_time_and_new_events_reset_them() {
        let (_dir, store) = temp_store().await;
        store
            .enqueue("app", Trigger::Webhook, "", &[])
            .await
            .unwrap();
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
        store
            .enqueue("app", Trigger::Manual, "", &[])
            .await
            .unwrap();
        let status = store.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.retry_at, None);
        let fresh = claim_one(&store, now_ms(), "app").await;
        assert_eq!(fresh.triggers, vec![Trigger::Manual]);
        assert_eq!(fresh.attempt, 0);
        let out = finish(&store, &fresh, &ok_report("app"), None).await;
        assert_eq!(out.failure_streak, 0);
        assert_eq!(store.queue_depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_new_event_during_a_failing_run_wins_over_the_retry() {
        let (_dir, store) = temp_store().await;
        store
            .enqueue("app", Trigger::Webhook, "", &[])
            .await
            .unwrap();
        let now = now_ms();
        let claim = claim_one(&store, now, "app").await;
        store.enqueue("app", Trigger::Poll, "", &[]).await.unwrap();
        finish(&store, &claim, &failed_report("app"), Some(now + 60_000)).await;
        let next = claim_one(&store, now + 1, "app").await;
        assert_eq!(next.triggers, vec![Trigger::Poll]);
        assert_eq!(next.attempt, 0);
    }

    #[tokio::test]
    async fn interrupted_syncs_are_claimable_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.db");
        let store = Store::open(&path).await.unwrap();
        store
            .enqueue("app", Trigger::Webhook, "", &[])
            .await
            .unwrap();
        store.enqueue("app", Trigger::Poll, "", &[]).await.unwrap();
        claim_one(&store, now_ms(), "app").await;
        assert!(store.claim(now_ms(), 10).await.unwrap().is_empty());
        // The process dies mid-sync: no finish.
        store.write.close().await;
        store.read.close().await;
        drop(store);

        let store = Store::open(&path).await.unwrap();
        assert_eq!(unhandled(&store, "app").await, 2);
        let again = claim_one(&store, now_ms(), "app").await;
        assert_eq!(again.triggers, vec![Trigger::Webhook, Trigger::Poll]);
        finish(&store, &again, &ok_report("app"), None).await;
        assert_eq!(unhandled(&store, "app").await, 0);
        assert_eq!(store.run_count("app").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn release_requeues_a_running_mirror_with_its_error_until_a_run_is_recorded() {
        let (_dir, store) = temp_store().await;
        store
            .enqueue("app", Trigger::Webhook, "", &[])
            .await
            .unwrap();
        store.enqueue("app", Trigger::Poll, "", &[]).await.unwrap();
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

    #[tokio::test]
    async fn a_read_only_store_shows_a_running_sync_as_it_is_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.db");
        let store = Store::open(&path).await.unwrap();
        store
            .enqueue("app", Trigger::Webhook, "", &[])
            .await
            .unwrap();
        let claim = claim_one(&store, now_ms(), "app").await;

        let reader = Store::open_read_only(&path).await.unwrap();
        let status = reader.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.state, MirrorState::Syncing, "not requeued");
        assert!(reader
            .enqueue("app", Trigger::Manual, "", &[])
            .await
            .is_err());
        assert!(reader.release("app", now_ms(), "no").await.is_err());
        assert!(store.claim(now_ms(), 10).await.unwrap().is_empty());
        assert_eq!(store.event_count("app").await.unwrap(), 1);
        finish(&store, &claim, &ok_report("app"), None).await;
        assert_eq!(reader.runs("app", 10).await.unwrap().len(), 1);
        reader.read.close().await;

        // The service stopped cleanly: everything checkpointed, and no -wal or -shm file left
        // beside the database. (SQLite removes them when the last connection closes, unless
        // that one is read-only; the scenario is made explicit rather than left to the order
        // in which the pools close.)
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&store.write)
            .await
            .unwrap();
        store.read.close().await;
        store.write.close().await;
        for leftover in ["ferry.db-wal", "ferry.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(leftover));
        }
        let reader = Store::open_read_only(&path).await.unwrap();
        let status = reader.mirror("app").await.unwrap().unwrap();
        assert_eq!(status.state, MirrorState::Idle);
        reader.read.close().await;

        let missing = dir.path().join("missing.db");
        assert!(Store::open_read_only(&missing).await.is_err());
        assert!(!missing.exists(), "nothing created");
    }

    #[tokio::test]
    async fn reads_holding_every_read_connection_do_not_hold_up_an_enqueue() {
        let (_dir, store) = temp_store().await;
        let mut held = Vec::new();
        for _ in 0..READ_CONNECTIONS {
            held.push(store.read.acquire().await.unwrap());
        }
        let enqueued = tokio::time::timeout(
            Duration::from_secs(5),
            store.enqueue("app", Trigger::Webhook, "push", &[]),
        )
        .await;
        assert!(matches!(enqueued, Ok(Ok(_))), "{enqueued:?}");
        drop(held);
        assert_eq!(store.event_count("app").await.unwrap(), 1);
        let written = sqlx::query("DELETE FROM events").execute(&store.read).await;
        assert!(written.is_err(), "the read connections are read-only");
    }

    #[tokio::test]
    async fn states_streaks_and_destination_errors_follow_the_reports() {
        let (_dir, store) = temp_store().await;
        store
            .register_mirrors(&[config("app", &[D1, D2], "f1")])
            .await
            .unwrap();

        async fn run(store: &Store, report: &MirrorReport) -> (FinishOutcome, MirrorStatus) {
            store
                .enqueue("app", Trigger::Webhook, "", &[])
                .await
                .unwrap();
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

    #[tokio::test]
    async fn register_mirrors_detects_new_and_changed_configuration() {
        let (_dir, store) = temp_store().await;
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
        store
            .enqueue("app", Trigger::Webhook, "", &[])
            .await
            .unwrap();
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

    #[tokio::test]
    async fn behind_since_covers_unhandled_and_failed_events() {
        let (_dir, store) = temp_store().await;
        let behind =
            |store: Store| async move { store.mirror("app").await.unwrap().unwrap().behind_since };

        let e1 = store
            .enqueue("app", Trigger::Webhook, "", &[])
            .await
            .unwrap();
        let t1 = received_at(&store, e1).await;
        assert_eq!(behind(store.clone()).await, Some(t1));
        let claim = claim_one(&store, now_ms(), "app").await;
        assert_eq!(behind(store.clone()).await, Some(t1), "running");

        // A failed run keeps the mirror behind since its events, through later failures.
        finish(&store, &claim, &failed_report("app"), None).await;
        assert_eq!(behind(store.clone()).await, Some(t1));
        store.enqueue("app", Trigger::Poll, "", &[]).await.unwrap();
        let claim = claim_one(&store, now_ms(), "app").await;
        finish(&store, &claim, &failed_report("app"), None).await;
        assert_eq!(behind(store.clone()).await, Some(t1));

        // Success clears it, except for events that arrived during the run.
        store
            .enqueue("app", Trigger::Manual, "", &[])
            .await
            .unwrap();
        let claim = claim_one(&store, now_ms(), "app").await;
        let e4 = store.enqueue("app", Trigger::Poll, "", &[]).await.unwrap();
        let t4 = received_at(&store, e4).await;
        finish(&store, &claim, &ok_report("app"), None).await;
        assert_eq!(behind(store.clone()).await, Some(t4));
        let claim = claim_one(&store, now_ms(), "app").await;
        finish(&store, &claim, &ok_report("app"), None).await;
        assert_eq!(behind(store.clone()).await, None);

        // Failures after a success count only their own events.
        let e5 = store
            .enqueue("app", Trigger::Webhook, "", &[])
            .await
            .unwrap();
        let t5 = received_at(&store, e5).await;
        let claim = claim_one(&store, now_ms(), "app").await;
        finish(&store, &claim, &failed_report("app"), None).await;
        assert_eq!(behind(store.clone()).await, Some(t5));
    }
    #[tokio::test]
    async fn prune_keeps_the_newest_runs_of_each_mirror() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ferry.db")).await.unwrap();
        let report = report_for_prune("p");
        for _ in 0..5 {
            store
                .enqueue("p", Trigger::Webhook, "x", &[])
                .await
                .unwrap();
            let claim = store.claim(now_ms(), 1).await.unwrap().remove(0);
            let finish = Finish {
                mirror: "p",
                started_at: claim.started_at,
                finished_at: now_ms(),
                trigger: Trigger::Webhook,
                report: &report,
                retry_at: None,
            };
            store.finish(finish).await.unwrap();
        }
        store
            .enqueue("p", Trigger::Webhook, "still pending", &[])
            .await
            .unwrap();
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
