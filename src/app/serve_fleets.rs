//! `ferry serve`'s fleets: the service's [`Fleets`] over `crate::fleet`. Discovery acts as
//! in `ferry sync` (creates destinations, handles deleted sources, remembers the members);
//! each discovery's plans answer which member an org-level webhook is about; and a created
//! destination gets the source's default branch after its member's first successful sync.

use super::fleet::find;
use crate::config::{ConfiguredMirror, FleetSpec};
use crate::fleet::codecommit::CodeCommitApi;
use crate::fleet::plan::{Action, MemberPlan};
use crate::fleet::{self, routing, Discovery};
use crate::intake::webhook::Origin;
use crate::service::fleets::{Discovered, FleetFuture, FleetInfo, Fleets, Route};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

pub struct ServedFleets {
    specs: Vec<FleetSpec>,
    infos: Vec<FleetInfo>,
    cache_dir: PathBuf,
    codecommit: Option<Box<dyn CodeCommitApi>>,
    state: Mutex<HashMap<String, FleetState>>,
}

/// What the service remembers of a fleet's discoveries.
#[derive(Default)]
struct FleetState {
    /// The latest discovery's plans: the routing table.
    plans: Vec<MemberPlan>,
    /// The members the latest discovery handed to the service.
    members: Vec<ConfiguredMirror>,
    /// Discoveries that created destinations, with the members whose first successful sync
    /// is still to come (then their default branch is set).
    created: Vec<(Arc<Discovery>, HashSet<String>)>,
}

impl ServedFleets {
    pub fn new(
        specs: Vec<FleetSpec>,
        cache_dir: PathBuf,
        codecommit: Option<Box<dyn CodeCommitApi>>,
    ) -> ServedFleets {
        let infos = specs
            .iter()
            .map(|s| {
                let (secret, provider) = s.webhook();
                FleetInfo {
                    name: s.name.clone(),
                    discover_interval: s.discover_interval,
                    webhook_secret: secret.cloned(),
                    webhook_provider: provider,
                }
            })
            .collect();
        ServedFleets {
            specs,
            infos,
            cache_dir,
            codecommit,
            state: Mutex::new(HashMap::new()),
        }
    }

    fn state(&self) -> MutexGuard<'_, HashMap<String, FleetState>> {
        // Every change below is a whole assignment or push: a panic cannot leave half of one.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn discover_one(&self, name: &str) -> Discovered {
        let Some(spec) = self.specs.iter().find(|s| s.name == name) else {
            return Discovered::Failed(format!("no fleet named '{name}' is configured"));
        };
        let found = find(spec, &self.cache_dir, true, self.codecommit.as_deref()).await;
        let Some(discovery) = found.discovery else {
            return Discovered::Failed(found.problems.join("; "));
        };
        let created: HashSet<String> = discovery
            .plans
            .iter()
            .filter(|p| p.action == Action::Create)
            .map(|p| p.name.clone())
            .collect();
        let mut state = self.state();
        let fleet = state.entry(name.to_owned()).or_default();
        // A member the plans still sync but that could not be built this time (a listing
        // that failed has no clone URL for it) keeps the mirror it had: a failed listing
        // never stops a known member.
        let mut members = found.members;
        let still: HashSet<&str> = discovery
            .plans
            .iter()
            .filter(|p| p.action.syncs())
            .map(|p| p.name.as_str())
            .collect();
        let built: HashSet<String> = members.iter().map(|m| m.mirror.name.clone()).collect();
        members.extend(
            fleet
                .members
                .iter()
                .filter(|m| {
                    still.contains(m.mirror.name.as_str()) && !built.contains(&m.mirror.name)
                })
                .cloned(),
        );
        fleet.members = members.clone();
        fleet.plans = discovery.plans.clone();
        if !created.is_empty() {
            fleet.created.push((Arc::new(discovery), created));
        }
        Discovered::Members {
            members,
            problems: found.problems,
        }
    }

    async fn after_first_sync(&self, member: &str) -> Vec<String> {
        let Some(spec) = self
            .specs
            .iter()
            .find(|s| member.starts_with(&format!("{}/", s.name)))
        else {
            return Vec::new();
        };
        let waiting: Vec<Arc<Discovery>> = self
            .state()
            .get(&spec.name)
            .map(|f| {
                f.created
                    .iter()
                    .filter(|(_, members)| members.contains(member))
                    .map(|(d, _)| d.clone())
                    .collect()
            })
            .unwrap_or_default();
        let synced = HashSet::from([member.to_owned()]);
        let mut problems = Vec::new();
        for discovery in waiting {
            let failed = fleet::after_sync(spec, &discovery, &synced).await;
            if failed.is_empty() {
                let mut state = self.state();
                if let Some(f) = state.get_mut(&spec.name) {
                    for (d, members) in &mut f.created {
                        if Arc::ptr_eq(d, &discovery) {
                            members.remove(member);
                        }
                    }
                    f.created.retain(|(_, members)| !members.is_empty());
                }
            }
            problems.extend(failed);
        }
        problems
    }
}

impl Fleets for ServedFleets {
    fn fleets(&self) -> &[FleetInfo] {
        &self.infos
    }

    fn discover<'a>(&'a self, fleet: &'a str) -> FleetFuture<'a, Discovered> {
        Box::pin(self.discover_one(fleet))
    }

    fn route(&self, fleet: &str, origin: &Origin) -> Option<Route> {
        let state = self.state();
        let plans = &state.get(fleet)?.plans;
        routing::member(plans, origin.id.as_deref(), origin.path.as_deref()).map(|r| Route {
            member: r.plan.name.clone(),
            moved: r.moved,
        })
    }

    fn synced<'a>(&'a self, member: &'a str) -> FleetFuture<'a, Vec<String>> {
        Box::pin(self.after_first_sync(member))
    }
}
