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
pub mod bitbucket;
pub mod codecommit;
pub mod directory;
pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod inventory;
pub mod plan;
pub mod routing;

use crate::config::{
    ConfiguredMirror, FleetDestination, FleetSource, FleetSpec, HostAccount, HostKind,
};
use crate::model::fleet::{Listing, Lookup, OnSourceDeleted, Repository, Visibility};
use api::{Api, ApiError, Usage};
use codecommit::CodeCommitApi;
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
    destinations: HashMap<String, Existing>,
    /// Source repository ids whose destination this run created.
    created: Vec<String>,
}

struct HostDestination {
    kind: HostKind,
    api: Api,
    site: Site,
}

/// A repository on a host destination: the host's id for it, its name there and where git
/// reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub id: String,
    pub name: String,
    pub clone_url: String,
}

/// The destination repository's name for a source path: destinations are flat (one owner or
/// group), so a nested path's `/` become `-`.
pub fn destination_name(repo: &Repository) -> String {
    repo.short_path().replace('/', "-")
}

/// A host destination account as discovery saw it, per host.
enum Site {
    GitHub(github::Destination),
    GitLab(gitlab::Destination),
    Gitea(gitea::Destination),
}

impl Site {
    async fn list(kind: HostKind, api: &Api, owner: &str) -> Result<Site, ApiError> {
        Ok(match kind {
            HostKind::GitHub => Site::GitHub(github::destination(api, owner).await?),
            HostKind::GitLab => Site::GitLab(gitlab::destination(api, owner).await?),
            HostKind::Gitea => Site::Gitea(gitea::destination(api, owner).await?),
            HostKind::Bitbucket => return Err(source_only()),
        })
    }

    /// The repositories there now, by name.
    fn existing(&self) -> &HashMap<String, Existing> {
        match self {
            Site::GitHub(d) => &d.existing,
            Site::GitLab(d) => &d.existing,
            Site::Gitea(d) => &d.existing,
        }
    }

    async fn create(
        &self,
        api: &Api,
        owner: &str,
        repo: &Repository,
        visibility: Visibility,
    ) -> Result<Existing, ApiError> {
        match self {
            Site::GitHub(d) => d.create(api, owner, repo, visibility).await,
            Site::GitLab(d) => d.create(api, owner, repo, visibility).await,
            Site::Gitea(d) => d.create(api, owner, repo, visibility).await,
        }
    }
}

/// Every repository of a host source's owner.
async fn list_host(kind: HostKind, api: &Api, owner: &str) -> Listing {
    match kind {
        HostKind::GitHub => github::list(api, owner).await,
        HostKind::GitLab => gitlab::list(api, owner).await,
        HostKind::Gitea => gitea::list(api, owner).await,
        HostKind::Bitbucket => bitbucket::list(api, owner).await,
    }
}

/// A direct lookup of a known repository missing from a complete listing: by name on
/// GitHub (its id lookup is undocumented), by id on GitLab and Gitea, by UUID on Bitbucket.
async fn look_up_host(kind: HostKind, api: &Api, owner: &str, known: &plan::Known) -> Lookup {
    match kind {
        HostKind::GitHub => github::lookup(api, owner, &known.path).await,
        HostKind::GitLab => gitlab::lookup(api, &known.id).await,
        HostKind::Gitea => gitea::lookup(api, &known.id).await,
        HostKind::Bitbucket => bitbucket::lookup(api, owner, &known.id).await,
    }
}

async fn set_default_branch(
    kind: HostKind,
    api: &Api,
    owner: &str,
    e: &Existing,
    branch: &str,
) -> Result<(), ApiError> {
    match kind {
        HostKind::GitHub | HostKind::Gitea => {
            github::set_default_branch(api, owner, &e.name, branch).await
        }
        HostKind::GitLab => gitlab::set_default_branch(api, &e.id, branch).await,
        HostKind::Bitbucket => Err(source_only()),
    }
}

async fn archive(kind: HostKind, api: &Api, owner: &str, e: &Existing) -> Result<(), ApiError> {
    match kind {
        HostKind::GitHub | HostKind::Gitea => github::archive(api, owner, &e.name).await,
        HostKind::GitLab => gitlab::archive(api, &e.id).await,
        HostKind::Bitbucket => Err(source_only()),
    }
}

async fn delete(kind: HostKind, api: &Api, owner: &str, e: &Existing) -> Result<(), ApiError> {
    match kind {
        HostKind::GitHub | HostKind::Gitea => github::delete(api, owner, &e.name).await,
        HostKind::GitLab => gitlab::delete(api, &e.id).await,
        HostKind::Bitbucket => Err(source_only()),
    }
}

/// Bitbucket is a fleet source only (the configuration refuses it as a destination).
fn source_only() -> ApiError {
    ApiError::Failed("Bitbucket is a fleet source only in this version".into())
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
            // A host destination not created yet, or not listed and not known: the
            // discovery's problems say why.
            if matches!(spec.destination, FleetDestination::Host { .. }) && url.is_none() {
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
    kind: HostKind,
    account: &HostAccount,
    cache_dir: &Path,
    fleet: &str,
    side: &str,
) -> Result<Api, String> {
    Api::new(kind, account, Some(etag_file(cache_dir, fleet, side)))
        .map_err(|e| format!("{side} API: {e}"))
}

/// Lists the fleet's source and destination and decides every repository. Reads the
/// inventory but changes nothing. `codecommit` lists CodeCommit sources (`None` in a build
/// without AWS support). `Err` when nothing could be decided at all.
pub async fn discover(
    spec: &FleetSpec,
    cache_dir: &Path,
    codecommit: Option<&dyn CodeCommitApi>,
) -> Result<Discovery, String> {
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
        FleetSource::Host { kind, account } => {
            list_source(*kind, account, spec, &known, cache_dir, &mut usage).await?
        }
        FleetSource::CodeCommit { region, .. } => {
            let api = codecommit.ok_or(
                "a CodeCommit source needs AWS support, and this ferry was built without it \
                 (the cargo feature `aws`, on by default)",
            )?;
            let region = region.as_deref();
            let (listing, requests) = api.list(region).await;
            usage.requests += requests;
            let mut lookups = HashMap::new();
            for k in plan::to_look_up(&listing, &known) {
                usage.requests += 1;
                lookups.insert(k.id.clone(), api.lookup(region, &k.path, &k.id).await);
            }
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
        FleetDestination::Host {
            kind,
            account,
            adopt_existing,
            ..
        } => {
            let api = host_api(*kind, account, cache_dir, &spec.name, "destination")?;
            match Site::list(*kind, &api, &account.owner).await {
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
                    let by_id: HashMap<&str, &Existing> = site
                        .existing()
                        .values()
                        .map(|e| (e.id.as_str(), e))
                        .collect();
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
                        match site.existing().get(&destination_name(r)) {
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
                    discovery.destination = Some(HostDestination {
                        kind: *kind,
                        api,
                        site,
                    });
                }
                Err(e) => {
                    // Known members go on syncing to the destinations ferry saw last time.
                    for k in &known {
                        if let (Some(id), Some(url)) = (&k.destination_id, &k.destination_url) {
                            discovery.destinations.insert(
                                k.id.clone(),
                                Existing {
                                    id: id.clone(),
                                    name: String::new(),
                                    clone_url: url.clone(),
                                },
                            );
                        }
                    }
                    discovery.problems.push(format!(
                        "listing the destination {} on {}: {e}; known members sync to the \
                         destinations they had, and nothing is created until it can be listed",
                        account.owner,
                        kind.name()
                    ))
                }
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

/// Lists a host source and looks up the known repositories the listing misses.
async fn list_source(
    kind: HostKind,
    account: &HostAccount,
    spec: &FleetSpec,
    known: &[plan::Known],
    cache_dir: &Path,
    usage: &mut Usage,
) -> Result<(Listing, HashMap<String, Lookup>), String> {
    let api = host_api(kind, account, cache_dir, &spec.name, "source")?;
    let listing = list_host(kind, &api, &account.owner).await;
    let mut lookups = HashMap::new();
    for k in plan::to_look_up(&listing, known) {
        lookups.insert(
            k.id.clone(),
            look_up_host(kind, &api, &account.owner, k).await,
        );
    }
    api.save();
    add(usage, api.usage());
    Ok((listing, lookups))
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
                    FleetDestination::Host {
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
                        destination_name(&p.repository)
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
    let ids: HashMap<String, (String, String)> = discovery
        .destinations
        .iter()
        .map(|(k, v)| (k.clone(), (v.id.clone(), v.clone_url.clone())))
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
        (FleetDestination::Host { account, .. }, Some(d)) => {
            // Only a destination ferry created (or adopted) for this member is touched.
            let Some(e) = discovery.destinations.get(&p.repository.id) else {
                return Err(
                    "its destination repository is not one ferry created; left alone".into(),
                );
            };
            let result = match then {
                OnSourceDeleted::Archive => archive(d.kind, &d.api, &account.owner, e).await,
                OnSourceDeleted::Delete => delete(d.kind, &d.api, &account.owner, e).await,
                OnSourceDeleted::Keep => Ok(()),
            };
            let then = format!("{then:?}").to_lowercase();
            result.map_err(|err| format!("{then} of the destination {}: {err}", e.name))
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
    let (FleetDestination::Host { account, .. }, Some(d)) =
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
        let Some(e) = discovery.destinations.get(id) else {
            continue;
        };
        if let Err(e) = set_default_branch(d.kind, &d.api, &account.owner, e, branch).await {
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
