//! Fleets in the service: a mirror set that changes while the service runs. The service knows
//! fleets only through [`Fleets`], which the front end implements over `crate::fleet` (the
//! service never imports it): discover a fleet again, say which member an event's repository
//! is, and finish a member's first sync (a created destination's default branch).
//!
//! Each fleet has one task ([`keep_discovering`]): it discovers at start (the dispatcher
//! waits for every fleet's first discovery, whether it worked or not), then every
//! `discover_interval` once for all nodes (the store's shared timer `discover:<fleet>`), and
//! at once when a webhook names a repository no discovery has found (the timer is made due, so
//! a crash loses nothing). A discovery swaps the fleet's members in [`Service`]'s set,
//! registers them in the store (new or changed members get a `config` sync; members gone are
//! retired), and records its outcome for the page and the API. A discovery that fails changes
//! nothing: the known members go on syncing, and the failure is logged and recorded.

use super::{every_interval, Service};
use crate::config::ConfiguredMirror;
use crate::intake::webhook::{Origin, Provider};
use crate::model::mirror::Trigger;
use crate::model::refs::RefMap;
use crate::model::remote::Secret;
use crate::service::status::{now_ms, FleetStatus};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{AbortHandle, JoinSet};

pub type FleetFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A fleet as the service sees it.
#[derive(Debug, Clone)]
pub struct FleetInfo {
    pub name: String,
    /// How often to discover again (`None`: at start, and when a webhook names a repository
    /// no discovery has found).
    pub discover_interval: Option<Duration>,
    /// What deliveries to `POST /hooks/{fleet}` authenticate with (the members' secret).
    pub webhook_secret: Option<Secret>,
    pub webhook_provider: Option<Provider>,
}

/// What one discovery of a fleet came to.
pub enum Discovered {
    /// The members to sync now, and what went wrong short of failing the whole discovery
    /// (one line each).
    Members {
        members: Vec<ConfiguredMirror>,
        problems: Vec<String>,
    },
    /// Nothing could be decided (the source could not be listed at all): the known members
    /// stay as they are.
    Failed(String),
}

/// Where the fleets' members come from.
pub trait Fleets: Send + Sync {
    fn fleets(&self) -> &[FleetInfo];
    /// Discovers the fleet, acts on what it found (creates destinations, handles deleted
    /// sources) and returns its members.
    fn discover<'a>(&'a self, fleet: &'a str) -> FleetFuture<'a, Discovered>;
    /// The member of `fleet` whose source repository `origin` names, as of the latest
    /// discovery (by the host's repository id when the event has one, else by its path).
    fn route(&self, fleet: &str, origin: &Origin) -> Option<Route>;
    /// After a member's successful sync: what the fleet does then (the default branch of a
    /// destination it created). Returns what went wrong, one line each.
    fn synced<'a>(&'a self, member: &'a str) -> FleetFuture<'a, Vec<String>>;
}

/// The member an event is about.
#[derive(Debug, Clone)]
pub struct Route {
    pub member: String,
    /// Found by its id under another path: renamed since the last discovery (discover
    /// again: the member follows the rename).
    pub moved: bool,
}

/// The shared timer of a fleet's discovery.
fn timer(fleet: &str) -> String {
    format!("discover:{fleet}")
}

/// A push to an org-level hook for a repository no discovery had found, waiting for the
/// discovery it triggered.
pub(super) struct Unrouted {
    pub origin: Origin,
    pub provider: Provider,
    pub refs: Vec<String>,
    pub ids: RefMap,
    pub olds: RefMap,
}

impl Service {
    /// Asks this node to discover `fleet` again now (a claim of a member it does not know:
    /// another node discovered it).
    pub(super) fn discover_here(&self, fleet: &str) {
        if let Some(wake) = self.discover_now.get(fleet) {
            wake.notify_one();
        }
    }

    /// The fleet named `name`, if the service serves one.
    pub(super) fn fleet(&self, name: &str) -> Option<&FleetInfo> {
        self.fleets
            .as_ref()?
            .fleets()
            .iter()
            .find(|f| f.name == name)
    }

    /// The member of `fleet` an event's repository is, if any discovery has found it.
    pub(super) fn route(&self, fleet: &str, origin: &Origin) -> Option<Route> {
        self.fleets.as_ref()?.route(fleet, origin)
    }

    /// A push to a repository of `fleet` that no discovery has found: discover now (durably:
    /// the fleet's timer is due), then route the push.
    pub(super) async fn discover_for(&self, fleet: &str, push: Unrouted) -> anyhow::Result<()> {
        self.store.make_due(&timer(fleet), now_ms()).await?;
        self.unrouted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(fleet.to_owned())
            .or_default()
            .push(push);
        self.discover_here(fleet);
        Ok(())
    }
}

/// Discovers `fleet` at start, then every interval (once for all nodes) and whenever a
/// webhook asks; keeps its members' polling and reconciliation timers running.
pub(super) async fn keep_discovering(svc: Arc<Service>, fleet: FleetInfo) {
    let mut stop = svc.stopping.subscribe();
    let mut timers = MemberTimers::default();
    let wake = svc.discover_now.get(&fleet.name).cloned();
    let mut first = true;
    let mut starting = true;
    while !svc.is_stopping() {
        let fire = if first {
            first = false;
            // Every node discovers at start (it must know the members); the shared timer
            // moves on so that the next discovery waits an interval.
            if let Some(every) = fleet.discover_interval {
                let _ = svc
                    .store
                    .take_timer(&timer(&fleet.name), now_ms(), every)
                    .await;
            }
            true
        } else {
            // Until the interval has passed (spread over the nodes), or a webhook asks.
            let wait = fleet
                .discover_interval
                .map_or(Duration::from_secs(3600), |d| {
                    d.mul_f64(0.8 + fastrand::f64() * 0.4)
                });
            let asked = async {
                match &wake {
                    Some(w) => w.notified().await,
                    None => std::future::pending().await,
                }
            };
            let asked = tokio::select! {
                _ = tokio::time::sleep(wait) => false,
                _ = asked => true,
                _ = stop.changed() => continue,
            };
            // Asked on this node (a webhook, or a claim of a member this node has not
            // discovered yet): discover here whatever the timer says; the timer moves on.
            let fired = match fleet.discover_interval {
                Some(every) => {
                    match svc
                        .store
                        .take_timer(&timer(&fleet.name), now_ms(), every)
                        .await
                    {
                        Ok(fired) => fired,
                        Err(e) => {
                            tracing::warn!(fleet = %fleet.name, error = %format!("{e:#}"), "cannot read the shared timer");
                            false
                        }
                    }
                }
                None => false,
            };
            fired || asked
        };
        if fire {
            rediscover(&svc, &fleet.name, &mut timers).await;
        }
        if std::mem::take(&mut starting) {
            svc.undiscovered.send_modify(|n| *n = n.saturating_sub(1));
        }
        route_unrouted(&svc, &fleet.name).await;
        // Reap the timers of members gone (aborted) so the set does not grow.
        while timers.running.try_join_next().is_some() {}
    }
    timers.stop_all();
    while timers.running.join_next().await.is_some() {}
}

/// The polling and reconciliation timers of a fleet's members, stopped when a member leaves.
#[derive(Default)]
struct MemberTimers {
    running: JoinSet<()>,
    by_member: HashMap<String, Vec<AbortHandle>>,
}

impl MemberTimers {
    fn start(&mut self, svc: &Arc<Service>, member: &ConfiguredMirror) {
        let name = member.mirror.name.clone();
        let mut handles = Vec::new();
        if let Some(every) = member.poll_interval {
            handles.push(self.running.spawn(every_interval(
                svc.clone(),
                name.clone(),
                every,
                Trigger::Poll,
            )));
        }
        if let Some(every) = member.reconcile_interval {
            handles.push(self.running.spawn(every_interval(
                svc.clone(),
                name.clone(),
                every,
                Trigger::Reconcile,
            )));
        }
        self.by_member.insert(name, handles);
    }

    fn stop(&mut self, member: &str) {
        for h in self.by_member.remove(member).into_iter().flatten() {
            h.abort();
        }
    }

    fn stop_all(&mut self) {
        for (_, handles) in self.by_member.drain() {
            for h in handles {
                h.abort();
            }
        }
    }
}

/// One discovery of `fleet`: swap its members, register them, record the outcome.
async fn rediscover(svc: &Arc<Service>, fleet: &str, timers: &mut MemberTimers) {
    let Some(fleets) = svc.fleets.clone() else {
        return;
    };
    let attempted_at = now_ms();
    let outcome = fleets.discover(fleet).await;
    let mut status = FleetStatus {
        name: fleet.to_owned(),
        attempted_at,
        succeeded_at: None,
        members: 0,
        error: None,
        problems: Vec::new(),
        node: Some(svc.store.node().to_owned()),
    };
    match outcome {
        Discovered::Failed(why) => {
            tracing::error!(fleet = %fleet, error = %why, "fleet discovery failed; its known members go on syncing");
            status.error = Some(why);
            status.members = svc.member_count(fleet);
        }
        Discovered::Members { members, problems } => {
            for p in &problems {
                tracing::warn!(fleet = %fleet, problem = %p, "fleet discovery");
            }
            status.problems = problems;
            let registrations: Vec<_> = members.iter().map(super::registration).collect();
            match svc.store.register_fleet(fleet, &registrations).await {
                Ok(changed) => {
                    let members: Vec<Arc<ConfiguredMirror>> =
                        members.into_iter().map(Arc::new).collect();
                    status.members = members.len();
                    status.succeeded_at = Some(now_ms());
                    let change = svc.set_members(fleet, members);
                    for gone in &change.removed {
                        timers.stop(gone);
                    }
                    for added in &change.added {
                        if let Some(m) = svc.mirror(added) {
                            timers.start(svc, &m);
                        }
                    }
                    tracing::info!(fleet = %fleet, members = status.members, added = change.added.len(), removed = change.removed.len(), "fleet discovered");
                    for name in changed {
                        if let Err(e) = svc
                            .trigger(
                                &name,
                                Trigger::Config,
                                "the fleet member is new or its configuration changed",
                                &[],
                                (&RefMap::new(), &RefMap::new()),
                            )
                            .await
                        {
                            tracing::error!(mirror = %name, error = %format!("{e:#}"), "cannot queue a sync");
                        }
                    }
                }
                Err(e) => {
                    let why = format!("cannot register the members in the store: {e:#}");
                    tracing::error!(fleet = %fleet, error = %why, "fleet discovery");
                    status.error = Some(why);
                    status.members = svc.member_count(fleet);
                }
            }
        }
    }
    if let Err(e) = svc.store.record_discovery(&status).await {
        tracing::warn!(fleet = %fleet, error = %format!("{e:#}"), "cannot record the fleet's discovery");
    }
}

/// Routes the pushes that waited for this discovery; a repository the discovery did not make
/// a member (excluded, archived, ...) is dropped with a log line.
async fn route_unrouted(svc: &Service, fleet: &str) {
    let waiting = svc
        .unrouted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(fleet)
        .unwrap_or_default();
    for push in waiting {
        let Some(Route { member, .. }) = svc.route(fleet, &push.origin) else {
            tracing::info!(fleet = %fleet, repository = %push.origin, "a pushed repository is not a member after discovery; ignored");
            continue;
        };
        let detail = format!(
            "{} push {} (fleet hook, after discovery)",
            push.provider.as_str(),
            push.refs.join(" ")
        );
        if let Err(e) = svc
            .trigger(
                &member,
                Trigger::Webhook,
                &detail,
                &push.refs,
                (&push.ids, &push.olds),
            )
            .await
        {
            tracing::error!(mirror = %member, error = %format!("{e:#}"), "cannot queue a sync");
        }
    }
}
