//! Fleets: discovery of a source's repositories, membership, and what happens to a member's
//! destination. [`discover`] gathers the facts (the listing, lookups, which destinations
//! exist and whose they are) and asks the pure [`plan`] what each repository is; [`settle`]
//! acts on it (creates, archives or deletes destinations, remembers the members);
//! [`after_sync`] sets the default branch of destinations created by this run.
//!
//! Architecture invariant: `fleet` imports only `config` and `model`. It finds mirrors; it
//! never syncs them: the front ends hand its members to the engine or the service like any
//! configured mirror.

pub mod api;
pub mod directory;
pub mod github;
pub mod inventory;
pub mod plan;
pub mod routing;

use crate::config::{ConfiguredMirror, FleetDestination, FleetSource, FleetSpec, HostAccount};
use crate::model::fleet::{Lookup, OnSourceDeleted, Repository};
use api::{Api, Usage};
use inventory::Inventory;
use plan::{Action, Facts, MemberPlan};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Repositories created at once before creation is paced (GitHub allows about 80 a minute).
const CREATE_BURST: usize = 10;
/// The pace after the burst.
const CREATE_INTERVAL: Duration = Duration::from_millis(750);

/// What one discovery of a fleet found and decided.
pub struct Discovery {
    pub fleet: String,
    /// Every listed or known repository, sorted by member name.
    pub plans: Vec<MemberPlan>,
    /// Why the listing may be missing repositories; members it misses go on syncing.
    pub incomplete: Option<String>,
    /// What else went wrong (a destination that could not be listed, ...).
    pub problems: Vec<String>,
    /// API requests made and how many were answered "not modified" (no quota used).
    pub usage: Usage,
    /// A host destination: its account as discovery saw it.
    destination: Option<HostDestination>,
    /// Host destination repositories by source repository id.
    destinations: HashMap<String, github::Existing>,
    /// Source repository ids whose destination this run created.
    created: Vec<String>,
}

struct HostDestination {
    api: Api,
    site: github::Destination,
}

impl Discovery {
    /// The members to sync, as mirrors; a member whose mirror cannot be built is reported
    /// in the second list instead (with its name). A member whose host destination is still
    /// to be created (a plan, or a sync whose creation failed and said so) is left out.
    pub fn members(&self, spec: &FleetSpec) -> (Vec<ConfiguredMirror>, Vec<String>) {
        let mut members = Vec::new();
        let mut problems = Vec::new();
        for p in self.plans.iter().filter(|p| p.action.syncs()) {
            let url = self
                .destinations
                .get(&p.repository.id)
                .map(|d| d.clone_url.as_str());
            if self.destination.is_some() && url.is_none() {
                continue;
            }
            match spec.member(&p.repository, url) {
                Ok(m) => members.push(m),
                Err(e) => problems.push(format!("{}: {e}", p.name)),
            }
        }
        (members, problems)
    }
}

fn etag_file(cache_dir: &Path, fleet: &str, side: &str) -> PathBuf {
    cache_dir
        .join("fleets")
        .join(format!("{fleet}.{side}.etags.json"))
}

fn host_api(
    account: &HostAccount,
    cache_dir: &Path,
    fleet: &str,
    side: &str,
) -> Result<Api, String> {
    Api::new(account, Some(etag_file(cache_dir, fleet, side)))
        .map_err(|e| format!("{side} API: {e}"))
}

/// Lists the fleet's source and destination and decides every repository. Reads the
/// inventory but changes nothing. `Err` when nothing could be decided at all.
pub async fn discover(spec: &FleetSpec, cache_dir: &Path) -> Result<Discovery, String> {
    let known = Inventory::new(cache_dir, &spec.name).load()?;
    let mut usage = Usage::default();
    let (listing, lookups) = match &spec.source {
        FleetSource::Directory { root } => {
            let root = root.clone();
            let known = known.clone();
            // Walking a directory tree blocks; keep it off the async workers.
            tokio::task::spawn_blocking(move || {
                let listing = directory::discover(&root);
                let lookups: HashMap<String, Lookup> = plan::to_look_up(&listing, &known)
                    .into_iter()
                    .map(|k| (k.id.clone(), directory::lookup(&root, &k.path)))
                    .collect();
                (listing, lookups)
            })
            .await
            .map_err(|e| format!("discovery stopped: {e}"))?
        }
        FleetSource::GitHub(account) => {
            let api = host_api(account, cache_dir, &spec.name, "source")?;
            let listing = github::list(&api, &account.owner).await;
            let mut lookups = HashMap::new();
            for k in plan::to_look_up(&listing, &known) {
                lookups.insert(
                    k.id.clone(),
                    github::lookup(&api, &account.owner, &k.path).await,
                );
            }
            api.save();
            add(&mut usage, api.usage());
            (listing, lookups)
        }
    };
    let mut discovery = Discovery {
        fleet: spec.name.clone(),
        plans: Vec::new(),
        incomplete: listing.incomplete.clone(),
        problems: Vec::new(),
        usage,
        destination: None,
        destinations: HashMap::new(),
        created: Vec::new(),
    };
    let mut missing = HashSet::new();
    let mut foreign = HashSet::new();
    match &spec.destination {
        FleetDestination::Directory { .. } => {
            for r in &listing.repositories {
                if spec.destination.local_path(r).is_some_and(|p| !p.exists()) {
                    missing.insert(r.id.clone());
                }
            }
        }
        FleetDestination::Url { .. } => {}
        FleetDestination::GitHub {
            account,
            adopt_existing,
            ..
        } => {
            let api = host_api(account, cache_dir, &spec.name, "destination")?;
            match github::destination(&api, &account.owner).await {
                Ok(site) => {
                    let theirs: HashMap<&str, Option<&String>> = known
                        .iter()
                        .map(|k| (k.id.as_str(), k.destination_id.as_ref()))
                        .collect();
                    let known_repos = known.iter().map(|k| Repository {
                        id: k.id.clone(),
                        path: k.path.clone(),
                        ..Repository::default()
                    });
                    let all: Vec<Repository> = listing
                        .repositories
                        .iter()
                        .cloned()
                        .chain(known_repos)
                        .collect();
                    let by_id: HashMap<&str, &github::Existing> =
                        site.existing.values().map(|e| (e.id.as_str(), e)).collect();
                    for r in &all {
                        // A member keeps the destination ferry made for it, whatever its name
                        // is now: a rename on the source re-points, it never duplicates.
                        let mine = theirs
                            .get(r.id.as_str())
                            .copied()
                            .flatten()
                            .and_then(|d| by_id.get(d.as_str()));
                        if let Some(e) = mine {
                            discovery.destinations.insert(r.id.clone(), (*e).clone());
                            continue;
                        }
                        match site.existing.get(&github::destination_name(r)) {
                            None => {
                                missing.insert(r.id.clone());
                            }
                            Some(e) => {
                                if *adopt_existing {
                                    discovery.destinations.insert(r.id.clone(), e.clone());
                                } else {
                                    foreign.insert(r.id.clone());
                                }
                            }
                        }
                    }
                    discovery.destination = Some(HostDestination { api, site });
                }
                Err(e) => discovery.problems.push(format!(
                    "listing the destination {} on GitHub: {e}; its members are not synced \
                     and nothing is created until it can be listed",
                    account.owner
                )),
            }
        }
    }
    discovery.plans = plan::plan(Facts {
        fleet: &spec.name,
        listing: &listing,
        filter: &spec.filter,
        known: &known,
        lookups: &lookups,
        missing_destinations: &missing,
        foreign_destinations: &foreign,
        on_source_deleted: spec.on_source_deleted,
    });
    if let Some(d) = &discovery.destination {
        d.api.save();
        add(&mut discovery.usage, d.api.usage());
    }
    Ok(discovery)
}

fn add(total: &mut Usage, more: Usage) {
    total.requests += more.requests;
    total.not_modified += more.not_modified;
}

/// Acts on a discovery: creates missing host destinations (paced), archives or deletes the
/// destinations of deleted sources as the fleet asks, then remembers the members for the
/// next discovery. Returns what went wrong, one line per problem; a destination that could
/// not be deleted stays known and is tried again.
pub async fn settle(spec: &FleetSpec, discovery: &mut Discovery, cache_dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut deleted = HashSet::new();
    let mut creations = 0;
    for p in &discovery.plans {
        match &p.action {
            Action::Create => {
                let (
                    FleetDestination::GitHub {
                        account,
                        create,
                        visibility,
                        ..
                    },
                    Some(d),
                ) = (&spec.destination, &discovery.destination)
                else {
                    continue;
                };
                if !create {
                    problems.push(format!(
                        "{}: the destination repository {} does not exist; create it, or set \
                         create = true on the fleet's destination",
                        p.name,
                        github::destination_name(&p.repository)
                    ));
                    continue;
                }
                if creations >= CREATE_BURST {
                    tokio::time::sleep(CREATE_INTERVAL).await;
                }
                creations += 1;
                match d
                    .site
                    .create(&d.api, &account.owner, &p.repository, *visibility)
                    .await
                {
                    Ok(existing) => {
                        tracing::info!(member = %p.name, "destination repository created");
                        discovery
                            .destinations
                            .insert(p.repository.id.clone(), existing);
                        discovery.created.push(p.repository.id.clone());
                    }
                    Err(e) => problems.push(format!(
                        "{}: creating the destination repository: {e}",
                        p.name
                    )),
                }
            }
            Action::SourceDeleted { then } if *then != OnSourceDeleted::Keep => {
                match act_on_deleted(spec, discovery, p, *then).await {
                    Ok(()) => {
                        tracing::info!(member = %p.name, action = ?then, "source deleted; destination handled");
                        if *then == OnSourceDeleted::Delete {
                            deleted.insert(p.repository.id.clone());
                        }
                    }
                    Err(e) => problems.push(format!("{}: {e}", p.name)),
                }
            }
            _ => {}
        }
    }
    let ids: HashMap<String, String> = discovery
        .destinations
        .iter()
        .map(|(k, v)| (k.clone(), v.id.clone()))
        .collect();
    let mut next = plan::next_known(&discovery.plans, &deleted, &ids);
    // A member whose destination could not be listed this time keeps what was known of it.
    if discovery.destination.is_none() {
        if let Ok(before) = Inventory::new(cache_dir, &spec.name).load() {
            for k in &mut next {
                if let Some(b) = before.iter().find(|b| b.id == k.id) {
                    k.destination_id = k.destination_id.take().or(b.destination_id.clone());
                }
            }
        }
    }
    if let Err(e) = Inventory::new(cache_dir, &spec.name).save(&next) {
        problems.push(e);
    }
    if let Some(d) = &discovery.destination {
        add(&mut discovery.usage, d.api.usage());
    }
    problems
}

async fn act_on_deleted(
    spec: &FleetSpec,
    discovery: &Discovery,
    p: &MemberPlan,
    then: OnSourceDeleted,
) -> Result<(), String> {
    match (&spec.destination, &discovery.destination) {
        (FleetDestination::Directory { .. }, _) if then == OnSourceDeleted::Delete => {
            delete_directory(&spec.destination, p).await
        }
        (FleetDestination::GitHub { account, .. }, Some(d)) => {
            // Only a destination ferry created (or adopted) for this member is touched.
            if !discovery.destinations.contains_key(&p.repository.id) {
                return Err(
                    "its destination repository is not one ferry created; left alone".into(),
                );
            }
            let name = github::destination_name(&p.repository);
            let result = match then {
                OnSourceDeleted::Archive => github::archive(&d.api, &account.owner, &name).await,
                OnSourceDeleted::Delete => github::delete(&d.api, &account.owner, &name).await,
                OnSourceDeleted::Keep => Ok(()),
            };
            result.map_err(|e| format!("{then:?} of the destination {name}: {e}").to_lowercase())
        }
        _ => Err("this destination cannot do that; the destination was left alone".into()),
    }
}

/// After the members synced: the default branch of every destination repository this run
/// created becomes the source's (`synced` holds the member names whose sync succeeded).
pub async fn after_sync(
    spec: &FleetSpec,
    discovery: &Discovery,
    synced: &HashSet<String>,
) -> Vec<String> {
    let (FleetDestination::GitHub { account, .. }, Some(d)) =
        (&spec.destination, &discovery.destination)
    else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for id in &discovery.created {
        let Some(p) = discovery.plans.iter().find(|p| &p.repository.id == id) else {
            continue;
        };
        let Some(branch) = &p.repository.default_branch else {
            continue;
        };
        if !synced.contains(&p.name) {
            continue;
        }
        let name = github::destination_name(&p.repository);
        if let Err(e) = github::set_default_branch(&d.api, &account.owner, &name, branch).await {
            problems.push(format!(
                "{}: setting the default branch to {branch}: {e}",
                p.name
            ));
        }
    }
    problems
}

async fn delete_directory(destination: &FleetDestination, p: &MemberPlan) -> Result<(), String> {
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
