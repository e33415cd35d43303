//! `ferry serve`: the always-on service. Triggers (webhooks, CodeCommit events, polling,
//! reconciliation, manual requests) become durable events in the store; a dispatcher claims
//! mirrors that are due and runs one sync per mirror at a time on a bounded pool of workers;
//! results, retries and notifications go back through the store.
//!
//! ```text
//! POST /hooks/{m} ──┐
//! poll / reconcile ─┼─> store.enqueue (committed before 202) ─> wake
//! POST /api/../sync ┘
//! dispatcher: store.claim(due, free workers) -> sync::run_mirror_with(claim.focus) -> store.finish
//!             (transient failure: retry_at with backoff; failure streak: notify)
//!             result not recorded (panic, finish keeps failing) -> store.release
//! ```
//! [`run`] takes the listener and a shutdown future, so tests and `main` drive it the same way.
//!
//! Rooms: [`store`] (the durable queue and history), [`status`] (the read model the API, the
//! page and `ferry status` share), [`page`] and [`mirror_page`] (rendering), [`fleets`] (the mirror set that
//! changes as fleets are discovered again), `http` (the router), `server` (the connections:
//! cap, timeouts, shutdown).
//!
//! Architecture invariant: `service` imports `engine`, `intake`, `config` and `model`, never
//! `app`. Every answer about state comes from the store, not from memory.

pub mod fleets;
mod http;
pub mod mirror_page;
pub mod page;
mod server;
pub mod status;
pub mod store;

use crate::config::{ConfiguredMirror, ServeSettings};
use crate::engine::git::GitFailure;
use crate::engine::record::FileStore;
use crate::engine::report::MirrorReport;
use crate::engine::sync::{self, Mode, Records};
use crate::model::mirror::{Mirror, Settings, Trigger};
use crate::model::refs::RefMap;
use crate::service::fleets::{Fleets, Unrouted};
use crate::service::status::{now_ms, MirrorState};
use crate::service::store::{Claim, Finish, FinishOutcome, Registration, Store};
use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// The mirrors the service syncs: the config file's, and each fleet's members as its latest
/// discovery found them.
#[derive(Default)]
struct MirrorSet {
    configured: Vec<Arc<ConfiguredMirror>>,
    members: HashMap<String, Vec<Arc<ConfiguredMirror>>>,
    by_name: HashMap<String, Arc<ConfiguredMirror>>,
}

/// What a fleet's new members changed, by name.
struct Change {
    added: Vec<String>,
    removed: Vec<String>,
}

/// What the store records of a mirror: name, redacted source and destinations, fingerprint.
fn registration(m: &ConfiguredMirror) -> Registration {
    (
        m.mirror.name.clone(),
        m.mirror.source.display().to_owned(),
        m.mirror
            .destinations
            .iter()
            .map(|d| d.display().to_owned())
            .collect(),
        m.fingerprint(),
    )
}

/// Everything the service's tasks share.
pub struct Service {
    mirrors: RwLock<MirrorSet>,
    fleets: Option<Arc<dyn Fleets>>,
    /// Per fleet: poked when a webhook names a repository no discovery has found.
    discover_now: HashMap<String, Arc<Notify>>,
    /// Per fleet: the pushes waiting for that discovery.
    unrouted: Mutex<HashMap<String, Vec<Unrouted>>>,
    serve: ServeSettings,
    engine: Settings,
    store: Store,
    /// Poked whenever something may have become due (a new event, a finished run, another
    /// node's commit).
    wake: Notify,
    /// Poked when this node's claims are about to lapse: its running syncs must stop.
    lease_lost: Notify,
    metrics: PrometheusHandle,
    notifier: reqwest::Client,
    stopping: watch::Sender<bool>,
    /// Fleets whose first discovery on this node has not finished: the dispatcher waits for
    /// them, so that it does not claim members this node does not know yet.
    undiscovered: watch::Sender<usize>,
}

impl Service {
    /// `fleets`: where fleet members come from (`None`: the configured mirrors only).
    pub fn new(
        mirrors: Vec<ConfiguredMirror>,
        fleets: Option<Arc<dyn Fleets>>,
        serve: ServeSettings,
        engine: Settings,
        store: Store,
    ) -> anyhow::Result<Arc<Service>> {
        let configured: Vec<Arc<ConfiguredMirror>> = mirrors.into_iter().map(Arc::new).collect();
        let by_name = configured
            .iter()
            .map(|m| (m.mirror.name.clone(), m.clone()))
            .collect();
        let fleet_count = fleets.as_ref().map_or(0, |f| f.fleets().len());
        let discover_now = fleets
            .iter()
            .flat_map(|f| f.fleets())
            .map(|f| (f.name.clone(), Arc::new(Notify::new())))
            .collect();
        let notifier = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client for notifications")?;
        Ok(Arc::new(Service {
            mirrors: RwLock::new(MirrorSet {
                configured,
                members: HashMap::new(),
                by_name,
            }),
            fleets,
            discover_now,
            unrouted: Mutex::new(HashMap::new()),
            serve,
            engine,
            store,
            wake: Notify::new(),
            lease_lost: Notify::new(),
            metrics: metrics_handle()?,
            notifier,
            stopping: watch::channel(false).0,
            undiscovered: watch::channel(fleet_count).0,
        }))
    }

    fn mirror(&self, name: &str) -> Option<Arc<ConfiguredMirror>> {
        self.set().by_name.get(name).cloned()
    }

    fn set(&self) -> std::sync::RwLockReadGuard<'_, MirrorSet> {
        // The set is only ever swapped whole; a panic elsewhere cannot leave it half-changed.
        self.mirrors.read().unwrap_or_else(|e| e.into_inner())
    }

    /// How many members of `fleet` the service syncs now.
    fn member_count(&self, fleet: &str) -> usize {
        self.set().members.get(fleet).map_or(0, Vec::len)
    }

    /// Makes `members` the fleet's members. A member name that a configured mirror (or
    /// another fleet's member) has already is left to that one.
    fn set_members(&self, fleet: &str, members: Vec<Arc<ConfiguredMirror>>) -> Change {
        let mut set = self.mirrors.write().unwrap_or_else(|e| e.into_inner());
        let before: Vec<String> = set
            .members
            .get(fleet)
            .map(|m| m.iter().map(|m| m.mirror.name.clone()).collect())
            .unwrap_or_default();
        for name in &before {
            set.by_name.remove(name);
        }
        let mut added = Vec::new();
        let mut kept = Vec::new();
        for m in members {
            let name = m.mirror.name.clone();
            if set.by_name.contains_key(&name) {
                tracing::error!(mirror = %name, fleet = %fleet, "a fleet member has the name of another mirror; it is not synced");
                continue;
            }
            if !before.contains(&name) {
                added.push(name.clone());
            }
            set.by_name.insert(name, m.clone());
            kept.push(m);
        }
        let removed = before
            .into_iter()
            .filter(|n| !kept.iter().any(|m| &m.mirror.name == n))
            .collect();
        set.members.insert(fleet.to_owned(), kept);
        Change { added, removed }
    }

    /// Records a trigger durably and wakes the dispatcher. Returns the event id. `refs`: the
    /// refs a push event named (empty for any other trigger); `ids` and `olds`: what it said
    /// some of them point at now and pointed at before.
    async fn trigger(
        &self,
        mirror: &str,
        trigger: Trigger,
        detail: &str,
        refs: &[String],
        (ids, olds): (&RefMap, &RefMap),
    ) -> anyhow::Result<i64> {
        let id = self
            .store
            .enqueue(mirror, trigger, detail, refs, (ids, olds))
            .await?;
        self.wake.notify_one();
        Ok(id)
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

/// Serves until `shutdown` resolves, then stops taking work, lets running syncs finish within
/// the grace period and returns. What is queued stays queued in the store.
pub async fn run(
    listener: TcpListener,
    service: Arc<Service>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let configured: Vec<Arc<ConfiguredMirror>> = service.set().configured.clone();
    let registrations: Vec<Registration> = configured.iter().map(|m| registration(m)).collect();
    for name in service.store.register_mirrors(&registrations).await? {
        service
            .trigger(
                &name,
                Trigger::Config,
                "the mirror is new or its configuration changed",
                &[],
                (&RefMap::new(), &RefMap::new()),
            )
            .await?;
    }

    let mut background = JoinSet::new();
    // The first heartbeat before any claim: the other nodes count this one live from now on.
    service
        .store
        .heartbeat(now_ms())
        .await
        .context("recording this node in the store")?;
    background.spawn(heartbeat(service.clone()));
    if let Some(wake_ups) = service.store.wake_ups().await? {
        background.spawn(listen_for_wake_ups(service.clone(), wake_ups));
    }
    background.spawn(dispatch(service.clone()));
    background.spawn(prune_history(service.clone()));
    for m in &configured {
        let name = &m.mirror.name;
        if let Some(every) = m.poll_interval {
            background.spawn(every_interval(
                service.clone(),
                name.clone(),
                every,
                Trigger::Poll,
            ));
        }
        if let Some(every) = m.reconcile_interval {
            background.spawn(every_interval(
                service.clone(),
                name.clone(),
                every,
                Trigger::Reconcile,
            ));
        }
    }
    let served: Vec<fleets::FleetInfo> = service
        .fleets
        .iter()
        .flat_map(|f| f.fleets().iter().cloned())
        .collect();
    let names: Vec<&str> = served.iter().map(|f| f.name.as_str()).collect();
    service.store.retire_fleets_except(&names).await?;
    let fleet_count = served.len();
    for fleet in served {
        background.spawn(fleets::keep_discovering(service.clone(), fleet));
    }
    tracing::info!(
        listen = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
        mirrors = configured.len(),
        fleets = fleet_count,
        workers = service.serve.workers,
        node = service.store.node(),
        "ferry serve is ready"
    );

    let stopper = service.clone();
    server::serve(
        listener,
        http::router(service.clone()),
        &service.serve,
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new work; running syncs get the grace period");
            stopper.stopping.send_replace(true);
        },
    )
    .await;
    // The dispatcher drains on its own; the timers just stop.
    service.stopping.send_replace(true);
    while let Some(done) = background.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a background task failed");
        }
    }
    if let Err(e) = service.store.leave().await {
        tracing::warn!(error = %format!("{e:#}"), "cannot record that this node stopped; its unfinished syncs move to other nodes when their lease lapses");
    }
    Ok(())
}

/// Renews this node's claims every third of the lease. When renewing has failed for so long
/// that the claims are about to lapse (the store is unreachable), the node stops its running
/// syncs ([`Service::lease_lost`]): another node may take them over once they lapse, and a
/// mirror must never sync on two nodes at once.
async fn heartbeat(svc: Arc<Service>) {
    let lease = svc.serve.lease;
    let every = lease / 3;
    let mut stop = svc.stopping.subscribe();
    let mut renewed = std::time::Instant::now();
    let mut fenced = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
        if svc.is_stopping() {
            return;
        }
        // The claims are renewed to the attempt's start plus the lease; an attempt may take
        // at most `every`, so a stuck store cannot delay the decision below past the lapse.
        let attempt = std::time::Instant::now();
        let outcome = tokio::time::timeout(every, svc.store.heartbeat(now_ms())).await;
        match outcome {
            Ok(Ok(_)) => {
                renewed = attempt;
                fenced = false;
            }
            failed => {
                let e = match failed {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => "the store did not answer in time".to_owned(),
                };
                tracing::warn!(error = %e, "cannot renew this node's claims");
                // Stop a whole interval before the lapse, not at it: the next attempt could
                // come too late.
                if !fenced && renewed.elapsed() + every >= lease {
                    tracing::error!("this node's claims are about to lapse: stopping its running syncs (other nodes take them over)");
                    fenced = true;
                    svc.lease_lost.notify_one();
                }
            }
        }
    }
}

/// Wakes the dispatcher whenever another node commits something that may be due.
async fn listen_for_wake_ups(svc: Arc<Service>, mut wake_ups: store::WakeUps) {
    let mut stop = svc.stopping.subscribe();
    loop {
        let next = tokio::select! {
            next = wake_ups.next() => next,
            _ = stop.changed() => return,
        };
        match next {
            Ok(()) => svc.wake.notify_one(),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot listen for wake-ups; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// How often the dispatcher tries again to put back in the queue a run that ended without
/// recording its result, while the store refuses.
const RELEASE_RETRY: Duration = Duration::from_secs(2);

/// The shortest wait between two looks at the queue: a sync due now that this node did not
/// claim (it waits for its preferred node during the affinity grace) is looked at again then.
const RECHECK: Duration = Duration::from_millis(100);

/// A claimed run whose task ended without recording its result: its mirror stays `running`
/// in the store, so nothing claims it, until [`Store::release`] puts it back in the queue.
struct Unrecorded {
    mirror: String,
    attempt: u32,
    error: String,
}

/// Claims due mirrors while workers are free, runs them, puts back in the queue the runs that
/// ended without recording a result, and on shutdown waits for the running syncs up to the
/// grace period (then cancels them: the git processes are killed and the store re-queues those
/// mirrors at the next start).
async fn dispatch(svc: Arc<Service>) {
    let mut running: JoinSet<anyhow::Result<()>> = JoinSet::new();
    // The claim behind each task, to release its mirror if the task panics.
    let mut claimed: HashMap<tokio::task::Id, (String, u32)> = HashMap::new();
    let mut unrecorded: Vec<Unrecorded> = Vec::new();
    let mut stop = svc.stopping.subscribe();
    let mut undiscovered = svc.undiscovered.subscribe();
    tokio::select! {
        _ = undiscovered.wait_for(|n| *n == 0) => {}
        _ = stop.changed() => {}
    }
    while !svc.is_stopping() {
        release_unrecorded(&svc, &mut unrecorded).await;
        let free = svc.serve.workers.saturating_sub(running.len());
        if free > 0 {
            match svc.store.claim(now_ms(), free).await {
                Ok(claims) => {
                    for claim in claims {
                        let key = (claim.mirror.clone(), claim.attempt);
                        let svc = svc.clone();
                        let task = running.spawn(async move { execute(&svc, claim).await });
                        claimed.insert(task.id(), key);
                    }
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "cannot read the queue"),
            }
        }
        let mut idle = match svc.store.next_due().await {
            Ok(Some(due)) => Duration::from_millis((due - now_ms()).clamp(0, 60_000) as u64),
            _ => Duration::from_secs(60),
        }
        .max(RECHECK);
        if !unrecorded.is_empty() {
            idle = idle.min(RELEASE_RETRY);
        }
        tokio::select! {
            _ = svc.wake.notified() => {}
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                unrecorded.extend(ended(&mut claimed, done));
            }
            _ = tokio::time::sleep(idle) => {}
            _ = stop.changed() => {}
            _ = svc.lease_lost.notified() => {
                // Cancelled tasks end as unrecorded runs: released if still this node's.
                running.abort_all();
            }
        }
    }
    let grace = svc.serve.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = running.join_next_with_id().await {
            unrecorded.extend(ended(&mut claimed, done));
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            running = running.len(),
            "syncs still running after the grace period; stopping them (they run again at the next start)"
        );
        running.shutdown().await;
    }
    // What still cannot be released is requeued when the store is next opened.
    release_unrecorded(&svc, &mut unrecorded).await;
}

/// What a finished task leaves to do: `Some` when its run's result is not in the store (the
/// task panicked, or [`execute`] could not record it).
fn ended(
    claimed: &mut HashMap<tokio::task::Id, (String, u32)>,
    done: Result<(tokio::task::Id, anyhow::Result<()>), tokio::task::JoinError>,
) -> Option<Unrecorded> {
    let (id, error) = match done {
        Ok((id, Ok(()))) => {
            claimed.remove(&id);
            return None;
        }
        Ok((id, Err(e))) => (id, format!("{e:#}")),
        Err(e) => (e.id(), task_failure(e)),
    };
    let (mirror, attempt) = claimed.remove(&id)?;
    tracing::error!(mirror = %mirror, error = %error, "a sync ended without recording its result");
    metrics::counter!("ferry_runs_unrecorded_total", "mirror" => mirror.clone()).increment(1);
    Some(Unrecorded {
        mirror,
        attempt,
        error,
    })
}

/// Why a task ended without a value: its panic message, or that it was cancelled.
fn task_failure(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "the sync task was cancelled".to_owned();
    }
    let payload = e.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|m| (*m).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    format!("the sync task panicked: {message}")
}

/// Puts the mirrors of unrecorded runs back in the queue, with a retry time from the backoff;
/// keeps those the store refuses for the next round.
async fn release_unrecorded(svc: &Service, unrecorded: &mut Vec<Unrecorded>) {
    let mut refused = Vec::new();
    for run in unrecorded.drain(..) {
        let delay = backoff(&svc.serve, run.attempt);
        let retry_at = now_ms() + delay.as_millis() as i64;
        match svc.store.release(&run.mirror, retry_at, &run.error).await {
            Ok(true) => {
                tracing::warn!(mirror = %run.mirror, retry_in_ms = delay.as_millis() as u64, "queued again after a run without a recorded result");
                svc.wake.notify_one();
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(mirror = %run.mirror, error = %format!("{e:#}"), "cannot put the mirror back in the queue; trying again");
                refused.push(run);
            }
        }
    }
    *unrecorded = refused;
}

/// Tries to record a finished run this many times before giving it back to the dispatcher.
const FINISH_ATTEMPTS: u32 = 3;
/// The wait before the second try; it doubles before each further one.
const FINISH_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Runs one claimed mirror and records the result. `Err`: the result is not in the store (the
/// dispatcher puts the mirror back in the queue).
async fn execute(svc: &Service, claim: Claim) -> anyhow::Result<()> {
    let trigger = claim.triggers.first().copied().unwrap_or(Trigger::Retry);
    let Some(configured) = svc.mirror(&claim.mirror) else {
        // A fleet member another node discovered: discover here too, and run it after that
        // (the dispatcher puts it back in the queue with a retry time).
        if let Ok(Some(status)) = svc.store.mirror(&claim.mirror).await {
            if let Some(fleet) = status.fleet.filter(|f| svc.fleet(f).is_some()) {
                svc.discover_here(&fleet);
                anyhow::bail!(
                    "this node has not discovered this member of the fleet {fleet} yet; it discovers the fleet now"
                );
            }
        }
        anyhow::bail!("the mirror is no longer configured");
    };
    tracing::info!(mirror = %claim.mirror, trigger = trigger.as_str(), attempt = claim.attempt, taken_from = claim.taken_from.as_deref(), "sync started");
    if claim.taken_from.is_some() {
        metrics::counter!("ferry_takeovers_total").increment(1);
    }
    let store = FileStore::new(&svc.engine.cache_dir);
    let records = Records {
        store: &store,
        assumed: &RefMap::new(),
    };
    // A reconcile run is the full comparison: it always verifies with a fresh listing (and so
    // is never narrowed to the refs its events named).
    let reconciling = claim.triggers.contains(&Trigger::Reconcile) && !configured.mirror.verify;
    let verifying;
    let mirror = if reconciling {
        verifying = Mirror {
            verify: true,
            ..configured.mirror.clone()
        };
        &verifying
    } else {
        &configured.mirror
    };
    let later = QueuedPushes {
        store: &svc.store,
        mirror: &claim.mirror,
        covered_through: AtomicI64::new(claim.through),
    };
    let report = sync::run_mirror_with(
        mirror,
        &svc.engine,
        Mode::Sync,
        records,
        &claim.focus,
        &claim.claimed,
        Some(&later),
    )
    .await;
    let finished_at = now_ms();
    let retry_at = (!report.ok && report.has_transient_failure())
        .then(|| finished_at + backoff(&svc.serve, claim.attempt).as_millis() as i64);
    let result = if report.ok { "ok" } else { "failed" };
    metrics::counter!("ferry_syncs_total", "mirror" => claim.mirror.clone(), "result" => result)
        .increment(1);
    metrics::histogram!("ferry_sync_duration_seconds", "mirror" => claim.mirror.clone())
        .record((finished_at - claim.started_at).max(0) as f64 / 1000.0);
    tracing::info!(
        mirror = %claim.mirror,
        ok = report.ok,
        duration_ms = finished_at - claim.started_at,
        retry_in_ms = retry_at.map(|t| t - finished_at),
        "sync finished"
    );
    let finish = Finish {
        mirror: &claim.mirror,
        started_at: claim.started_at,
        finished_at,
        trigger,
        report: &report,
        retry_at,
        covered_through: Some(later.covered_through.load(Ordering::Relaxed)),
    };
    let outcome = record(svc, finish).await?;
    notify(svc, &report, outcome).await;
    if report.ok {
        if let Some(fleets) = &svc.fleets {
            for p in fleets.synced(&claim.mirror).await {
                tracing::warn!(mirror = %claim.mirror, problem = %p, "after the member's sync");
            }
        }
    }
    svc.wake.notify_one();
    Ok(())
}

/// The events queued for a running mirror, as a run takes them in (see
/// [`Store::take_later_pushes`]).
struct QueuedPushes<'a> {
    store: &'a Store,
    mirror: &'a str,
    /// The newest event the run covers: its claim's, then that of the events it took in. Only
    /// what the run heard back counts (see [`Finish::covered_through`]).
    covered_through: AtomicI64,
}

impl sync::LaterPushes for QueuedPushes<'_> {
    fn take<'a>(
        &'a self,
        focus: &'a [String],
        claimed: &'a RefMap,
    ) -> futures::future::BoxFuture<'a, Option<RefMap>> {
        Box::pin(async move {
            match self
                .store
                .take_later_pushes(self.mirror, focus, claimed)
                .await
            {
                Ok(Some(taken)) if sync::names_exactly(&taken.claimed, focus) => {
                    tracing::info!(mirror = %self.mirror, "pushes that came in during the fetch are taken into this run");
                    self.covered_through.store(taken.through, Ordering::Relaxed);
                    Some(taken.claimed)
                }
                // Ids the run would not take: the events they stand for wait for the follow-up.
                Ok(_) => None,
                Err(e) => {
                    // The run goes on with what it claimed; the follow-up takes the events,
                    // also when the store took them in and only its answer was lost.
                    tracing::warn!(mirror = %self.mirror, error = %format!("{e:#}"), "cannot read the events that came in during the run");
                    None
                }
            }
        })
    }
}

/// [`Store::finish`], tried [`FINISH_ATTEMPTS`] times with a growing wait in between (the
/// transaction either commits whole or not at all, so trying again is safe).
async fn record(svc: &Service, finish: Finish<'_>) -> anyhow::Result<FinishOutcome> {
    let mut delay = FINISH_RETRY_DELAY;
    let mut attempt = 1;
    loop {
        match svc.store.finish(finish).await {
            Ok(outcome) => return Ok(outcome),
            Err(e) if attempt < FINISH_ATTEMPTS => {
                tracing::warn!(mirror = %finish.mirror, attempt, error = %format!("{e:#}"), "cannot record the run; trying again");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => {
                return Err(e.context(format!(
                    "cannot record the run ({FINISH_ATTEMPTS} attempts)"
                )))
            }
        }
    }
}

/// Whether polling sees the source's refs differ from what the mirror last synced from.
async fn poll(svc: &Service, configured: &ConfiguredMirror) -> Result<bool, GitFailure> {
    let name = &configured.mirror.name;
    // Without the digest (an error reading it, or no run yet) the engine compares the source
    // with the cache: the worst case is a missed poll until the next run records one.
    let last = svc.store.source_digest(name).await.unwrap_or_else(|e| {
        tracing::warn!(mirror = %name, error = %format!("{e:#}"), "cannot read the last synced source state");
        None
    });
    sync::source_changed(&configured.mirror, &svc.engine, last.as_deref()).await
}

/// Exponential backoff with jitter: base * 2^attempt, capped, then 50-100% of that.
fn backoff(serve: &ServeSettings, attempt: u32) -> Duration {
    let exp = serve.retry_base.saturating_mul(1u32 << attempt.min(16));
    let capped = exp.min(serve.retry_max);
    capped.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// One notification when a failure streak reaches the threshold, one when it ends.
async fn notify(svc: &Service, report: &MirrorReport, outcome: FinishOutcome) {
    let Some(url) = &svc.serve.notify_url else {
        return;
    };
    let event = if !report.ok
        && outcome.failure_streak >= svc.serve.notify_after
        && !outcome.was_notified
    {
        "failing"
    } else if report.ok && outcome.was_notified {
        "recovered"
    } else {
        return;
    };
    let errors: Vec<serde_json::Value> = report
        .failures()
        .into_iter()
        .map(|f| serde_json::json!({ "where": f.place, "kind": f.error.kind, "message": f.error.message, "hint": f.error.hint }))
        .collect();
    let body = serde_json::json!({
        "event": event,
        "mirror": report.name,
        "failure_streak": outcome.failure_streak,
        "errors": errors,
    });
    match svc.notifier.post(url.clone()).json(&body).send().await {
        Ok(resp) if resp.status().is_success() => {
            let notified = event == "failing";
            if let Err(e) = svc.store.mark_notified(&report.name, notified).await {
                tracing::error!(error = %format!("{e:#}"), "cannot record the notification");
            }
        }
        Ok(resp) => {
            tracing::warn!(mirror = %report.name, status = %resp.status(), "the notification webhook refused the notification; will try again after the next run")
        }
        Err(e) => {
            tracing::warn!(mirror = %report.name, error = %e, "cannot send the notification; will try again after the next run")
        }
    }
}

/// Polling (compare the source with the cache; sync when they differ) or reconciliation
/// (a full sync whatever happened) for one mirror, every `every` with jitter.
/// Ends when the mirror is no longer served (a fleet member gone from its source).
async fn every_interval(svc: Arc<Service>, name: String, every: Duration, trigger: Trigger) {
    let mut stop = svc.stopping.subscribe();
    // Spread the first round over the interval so a hundred mirrors do not poll at once.
    let mut wait = every.mul_f64(fastrand::f64());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if svc.is_stopping() {
            return;
        }
        wait = every.mul_f64(0.8 + fastrand::f64() * 0.4);
        let Some(configured) = svc.mirror(&name) else {
            return;
        };
        let name = &configured.mirror.name;
        // Once per interval for all the nodes sharing the store.
        match svc
            .store
            .take_timer(&format!("{}:{name}", trigger.as_str()), now_ms(), every)
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(mirror = %name, error = %format!("{e:#}"), "cannot read the shared timer");
                continue;
            }
        }
        let busy = matches!(
            svc.store.mirror(name).await,
            Ok(Some(s)) if matches!(s.state, MirrorState::Queued | MirrorState::Syncing)
        );
        if busy {
            continue;
        }
        let detail = match trigger {
            Trigger::Poll => match poll(&svc, &configured).await {
                Ok(true) => "polling saw the source's refs change",
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(mirror = %name, kind = e.kind.as_str(), error = %e.message, "polling the source failed");
                    continue;
                }
            },
            _ => "periodic reconciliation",
        };
        if let Err(e) = svc
            .trigger(name, trigger, detail, &[], (&RefMap::new(), &RefMap::new()))
            .await
        {
            tracing::error!(mirror = %name, error = %format!("{e:#}"), "cannot queue a sync");
        }
    }
}

/// Runs (with their reports) kept per mirror; older ones are pruned hourly.
const KEEP_RUNS_PER_MIRROR: i64 = 1000;

/// How often the store's history is pruned (by one node of all those sharing it).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Keeps the store's history bounded: at start (unless another node pruned within the hour)
/// and then every hour.
async fn prune_history(svc: Arc<Service>) {
    let mut stop = svc.stopping.subscribe();
    loop {
        let prune = match svc.store.take_timer("prune", now_ms(), PRUNE_EVERY).await {
            Ok(true) => svc.store.prune(KEEP_RUNS_PER_MIRROR).await,
            Ok(false) => Ok(0),
            Err(e) => Err(e),
        };
        match prune {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "pruned old run history"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot prune old run history"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The process-wide Prometheus recorder (metrics macros need a global one).
fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("ferry_sync_duration_seconds".into()),
            &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
        )
        .context("cannot configure the metrics histogram")?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("cannot install the metrics recorder")?;
    metrics::describe_counter!(
        "ferry_syncs_total",
        "Syncs by mirror and result (ok, failed)"
    );
    metrics::describe_histogram!(
        "ferry_sync_duration_seconds",
        "Wall time of one sync of one mirror"
    );
    metrics::describe_counter!(
        "ferry_runs_unrecorded_total",
        "Runs that ended without recording their result (put back in the queue)"
    );
    metrics::describe_gauge!("ferry_queue_depth", "Mirrors queued or syncing");
    metrics::describe_counter!(
        "ferry_takeovers_total",
        "Syncs this node took over from a node whose claim lapsed"
    );
    metrics::describe_gauge!(
        "ferry_node_heartbeat_age_seconds",
        "Seconds since each node sharing the store last renewed its claims"
    );
    metrics::describe_gauge!(
        "ferry_mirror_lag_seconds",
        "How long a mirror has been behind its source (0 when in sync)"
    );
    metrics::describe_counter!(
        "ferry_webhook_requests_total",
        "Webhook requests by HTTP status"
    );
    Ok(HANDLE.get_or_init(|| handle).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn backoff_grows_and_is_capped() {
        let serve = crate::config::Config::parse(
            "[serve]\nretry_base = \"1s\"\nretry_max = \"8s\"\n[[mirror]]\nname = \"a\"\nsource = \"/a\"\ndestinations = [\"/b\"]\n",
            std::path::Path::new("/f.toml"),
            &crate::config::RawOptions::default(),
        )
        .unwrap()
        .serve;
        for attempt in 0..10 {
            let d = backoff(&serve, attempt);
            let full = Duration::from_secs(1 << attempt.min(3));
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }

    #[tokio::test]
    async fn a_panicked_sync_task_is_reported_with_its_message() {
        let joined = tokio::spawn(async { panic!("the cache vanished: {}", 42) }).await;
        let error = joined.expect_err("the task panicked");
        assert_eq!(
            task_failure(error),
            "the sync task panicked: the cache vanished: 42"
        );
        let joined = tokio::spawn(async { std::panic::panic_any(7_u8) }).await;
        let error = joined.expect_err("the task panicked");
        assert_eq!(task_failure(error), "the sync task panicked: no message");
    }
}
