//! The Lambda function's fleets (one function for a whole CodeCommit account, say): the
//! members are discovered when an invocation first needs them, again on every scheduled
//! event, and when an event names a repository no discovery found; a warm execution
//! environment keeps the latest members. Discovery acts as in `ferry sync` (creates
//! destinations, handles deleted sources, sets the default branch of a destination it created
//! once its member synced).
//!
//! Each fleet's inventory (what earlier discoveries took: ids for renames, deletions, the
//! destinations ferry created) must outlive cold starts, whose `/tmp` is empty: with a state
//! bucket it is copied from the bucket before each discovery and back after it. Discoveries
//! never race because the function runs one invocation at a time (reserved concurrency 1,
//! as the SAM template sets).

use super::fleet::find;
use crate::config::{ConfiguredMirror, FleetSpec};
use crate::engine::report::MirrorReport;
use crate::fleet::codecommit::CodeCommitApi;
use crate::fleet::inventory::Inventory;
use crate::fleet::plan::MemberPlan;
use crate::fleet::{self, routing, Discovery};
use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

pub type FileFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Files kept where cold starts find them (the state bucket).
pub trait KeptFiles: Send + Sync {
    fn get<'a>(&'a self, name: &'a str) -> FileFuture<'a, Option<Vec<u8>>>;
    fn put<'a>(&'a self, name: &'a str, bytes: Vec<u8>) -> FileFuture<'a, ()>;
}

#[cfg(feature = "aws")]
impl KeptFiles for crate::aws::s3::S3Records {
    fn get<'a>(&'a self, name: &'a str) -> FileFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.get_file(name))
    }

    fn put<'a>(&'a self, name: &'a str, bytes: Vec<u8>) -> FileFuture<'a, ()> {
        Box::pin(self.put_file(name, bytes))
    }
}

pub struct LambdaFleets {
    specs: Vec<FleetSpec>,
    codecommit: Option<Box<dyn CodeCommitApi>>,
    /// `None`: the inventories stay beside the cache (and a cold start loses them).
    kept: Option<Arc<dyn KeptFiles>>,
    cache_dir: PathBuf,
    latest: tokio::sync::Mutex<Option<Arc<Members>>>,
}

/// The members of every fleet as the latest discovery found them.
#[derive(Default)]
pub struct Members {
    pub mirrors: Vec<ConfiguredMirror>,
    /// Per fleet, the latest plans: which member an event is about.
    plans: Vec<Vec<MemberPlan>>,
}

/// What one discovery of every fleet found, for the invocation that ran it.
pub struct Discovered {
    pub members: Arc<Members>,
    /// One line per problem, naming the fleet; none stopped a member already known.
    pub problems: Vec<String>,
    /// For setting the default branch of the destinations this discovery created.
    discoveries: Vec<(usize, Discovery)>,
}

impl LambdaFleets {
    pub fn new(
        specs: Vec<FleetSpec>,
        codecommit: Option<Box<dyn CodeCommitApi>>,
        kept: Option<Arc<dyn KeptFiles>>,
        cache_dir: PathBuf,
    ) -> LambdaFleets {
        LambdaFleets {
            specs,
            codecommit,
            kept,
            cache_dir,
            latest: tokio::sync::Mutex::new(None),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The latest members, discovering first when this execution environment has none yet
    /// (then `Some` of that discovery).
    pub async fn members(&self) -> (Arc<Members>, Option<Discovered>) {
        if let Some(m) = self.latest.lock().await.clone() {
            return (m, None);
        }
        let discovered = self.discover().await;
        (discovered.members.clone(), Some(discovered))
    }

    /// Discovers every fleet. A fleet whose inventory cannot be read from the bucket is not
    /// discovered (forgetting its members would hide deletions and disown the destinations
    /// ferry created); it, and a fleet whose discovery failed outright, keeps the members the
    /// latest discovery found.
    pub async fn discover(&self) -> Discovered {
        let before = self.latest.lock().await.clone();
        let mut members = Members::default();
        let mut problems = Vec::new();
        let mut discoveries = Vec::new();
        for (i, spec) in self.specs.iter().enumerate() {
            let say = |p: &str| format!("fleet '{}': {p}", spec.name);
            // What the latest discovery found of this fleet: kept when this one cannot run.
            let keep = |members: &mut Members| {
                let prefix = format!("{}/", spec.name);
                let b = before.as_deref();
                members.mirrors.extend(
                    b.iter()
                        .flat_map(|b| &b.mirrors)
                        .filter(|m| m.mirror.name.starts_with(&prefix))
                        .cloned(),
                );
                let plans = b.and_then(|b| b.plans.get(i)).cloned();
                members.plans.push(plans.unwrap_or_default());
            };
            let inventory = Inventory::new(&self.cache_dir, &spec.name);
            if let Err(e) = self.pull(&spec.name, &inventory).await {
                problems.push(say(&format!("{e}; the fleet was not discovered again")));
                keep(&mut members);
                continue;
            }
            let found = find(spec, &self.cache_dir, true, self.codecommit.as_deref()).await;
            problems.extend(found.problems.iter().map(|p| say(p)));
            let Some(discovery) = found.discovery else {
                keep(&mut members);
                continue;
            };
            if let Err(e) = self.push(&spec.name, &inventory).await {
                problems.push(say(&e));
            }
            members.mirrors.extend(found.members);
            members.plans.push(discovery.plans.clone());
            discoveries.push((i, discovery));
        }
        for p in &problems {
            tracing::error!(problem = %p, "fleet discovery");
        }
        let members = Arc::new(members);
        *self.latest.lock().await = Some(members.clone());
        Discovered {
            members,
            problems,
            discoveries,
        }
    }

    /// Copies the fleet's inventory from the bucket over the local one (a cold start has
    /// none; a warm one may be behind another execution environment's).
    async fn pull(&self, fleet: &str, inventory: &Inventory) -> Result<(), String> {
        let Some(kept) = &self.kept else {
            return Ok(());
        };
        let Some(bytes) = kept.get(&kept_name(fleet)).await? else {
            return Ok(());
        };
        let path = inventory.path();
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        tokio::fs::write(path, bytes)
            .await
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Copies the fleet's inventory, as the discovery left it, to the bucket.
    async fn push(&self, fleet: &str, inventory: &Inventory) -> Result<(), String> {
        let Some(kept) = &self.kept else {
            return Ok(());
        };
        let path = inventory.path();
        match tokio::fs::read(path).await {
            Ok(bytes) => kept.put(&kept_name(fleet), bytes).await,
            // Nothing was ever taken: nothing to keep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// The members a CodeCommit event (or any event naming a repository by `id` and
    /// `name`) is about: by id, else by name, in every fleet.
    pub fn route(members: &Members, id: Option<&str>, name: Option<&str>) -> Vec<String> {
        members
            .plans
            .iter()
            .filter_map(|plans| routing::member(plans, id, name))
            .map(|r| r.plan.name.clone())
            .collect()
    }

    /// After the syncs of an invocation that discovered: the default branch of every
    /// destination that discovery created whose member synced.
    pub async fn after_sync(
        &self,
        discovered: &Discovered,
        reports: &[MirrorReport],
    ) -> Vec<String> {
        let synced: HashSet<String> = reports
            .iter()
            .filter(|r| r.ok)
            .map(|r| r.name.clone())
            .collect();
        let mut problems = Vec::new();
        for (i, discovery) in &discovered.discoveries {
            let Some(spec) = self.specs.get(*i) else {
                continue;
            };
            for p in fleet::after_sync(spec, discovery, &synced).await {
                tracing::error!(fleet = %spec.name, problem = %p, "after the first sync");
                problems.push(format!("fleet '{}': {p}", spec.name));
            }
        }
        problems
    }
}

/// The bucket object of a fleet's inventory, under the state prefix.
fn kept_name(fleet: &str) -> String {
    format!("fleets/{fleet}.json")
}
