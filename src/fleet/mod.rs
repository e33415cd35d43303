//! Fleets: discovery of a source's repositories, membership, and what happens to a member's
//! destination when its source is deleted. [`discover`] gathers the facts (the listing,
//! lookups, which destinations exist) and asks the pure [`plan`] what each repository is;
//! [`settle`] acts on it (deletes destinations when asked, remembers the members).
//!
//! Architecture invariant: `fleet` imports only `config` and `model`. It finds mirrors; it
//! never syncs them: the front ends hand its members to the engine or the service like any
//! configured mirror.

pub mod directory;
pub mod inventory;
pub mod plan;

use crate::config::{ConfiguredMirror, FleetDestination, FleetSource, FleetSpec};
use crate::model::fleet::{Listing, OnSourceDeleted};
use inventory::Inventory;
use plan::{Action, Facts, MemberPlan};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// What one discovery of a fleet found and decided.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub fleet: String,
    /// Every listed or known repository, sorted by member name.
    pub plans: Vec<MemberPlan>,
    /// Why the listing may be missing repositories; members it misses go on syncing.
    pub incomplete: Option<String>,
}

impl Discovery {
    /// The members to sync, as mirrors; a member whose mirror cannot be built is reported
    /// in the second list instead (with its name).
    pub fn members(&self, spec: &FleetSpec) -> (Vec<ConfiguredMirror>, Vec<String>) {
        let mut members = Vec::new();
        let mut problems = Vec::new();
        for p in self.plans.iter().filter(|p| p.action.syncs()) {
            match spec.member(&p.repository) {
                Ok(m) => members.push(m),
                Err(e) => problems.push(format!("{}: {e}", p.name)),
            }
        }
        (members, problems)
    }
}

/// Lists the fleet's source and decides every repository. Reads the inventory but changes
/// nothing. `Err` when nothing could be decided at all (the inventory cannot be read).
pub async fn discover(spec: &FleetSpec, cache_dir: &Path) -> Result<Discovery, String> {
    let known = Inventory::new(cache_dir, &spec.name).load()?;
    let spec_owned = spec.clone();
    let known_owned = known.clone();
    // Walking a directory tree blocks; keep it off the async workers.
    let (listing, lookups, missing) = tokio::task::spawn_blocking(move || {
        let listing = list(&spec_owned.source);
        let lookups: HashMap<String, _> = plan::to_look_up(&listing, &known_owned)
            .into_iter()
            .map(|k| (k.id.clone(), lookup(&spec_owned.source, &k.path)))
            .collect();
        let missing: HashSet<String> = listing
            .repositories
            .iter()
            .filter(|r| {
                spec_owned
                    .destination
                    .local_path(r)
                    .is_some_and(|p| !p.exists())
            })
            .map(|r| r.id.clone())
            .collect();
        (listing, lookups, missing)
    })
    .await
    .map_err(|e| format!("discovery stopped: {e}"))?;
    let plans = plan::plan(Facts {
        fleet: &spec.name,
        listing: &listing,
        filter: &spec.filter,
        known: &known,
        lookups: &lookups,
        missing_destinations: &missing,
        on_source_deleted: spec.on_source_deleted,
    });
    Ok(Discovery {
        fleet: spec.name.clone(),
        plans,
        incomplete: listing.incomplete,
    })
}

fn list(source: &FleetSource) -> Listing {
    match source {
        FleetSource::Directory { root } => directory::discover(root),
    }
}

fn lookup(source: &FleetSource, path: &str) -> crate::model::fleet::Lookup {
    match source {
        FleetSource::Directory { root } => directory::lookup(root, path),
    }
}

/// Acts on a discovery: deletes the destinations of deleted sources when the fleet asks for
/// it, then remembers the members for the next discovery. Returns what went wrong, one line
/// per problem; a destination that could not be deleted stays known and is tried again.
pub async fn settle(spec: &FleetSpec, discovery: &Discovery, cache_dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut deleted = HashSet::new();
    for p in &discovery.plans {
        if p.action
            != (Action::SourceDeleted {
                then: OnSourceDeleted::Delete,
            })
        {
            continue;
        }
        match delete_destination(&spec.destination, p).await {
            Ok(()) => {
                tracing::info!(member = %p.name, "source deleted; destination deleted");
                deleted.insert(p.repository.id.clone());
            }
            Err(e) => problems.push(format!("{}: {e}", p.name)),
        }
    }
    if let Err(e) =
        Inventory::new(cache_dir, &spec.name).save(&plan::next_known(&discovery.plans, &deleted))
    {
        problems.push(e);
    }
    problems
}

async fn delete_destination(destination: &FleetDestination, p: &MemberPlan) -> Result<(), String> {
    let Some(dir) = destination.local_path(&p.repository) else {
        return Err("this destination cannot delete repositories".into());
    };
    if !dir.exists() {
        return Ok(());
    }
    // Only ever a repository: a path that holds something else is left alone.
    if !directory::is_repository(&dir) {
        return Err(format!(
            "{} is not a bare repository; not deleted",
            dir.display()
        ));
    }
    tokio::fs::remove_dir_all(&dir)
        .await
        .map_err(|e| format!("cannot delete {}: {e}", dir.display()))
}
