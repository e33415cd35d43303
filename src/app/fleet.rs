//! `ferry fleet list`, and the fleets' part of `ferry sync` / `ferry plan`: discover each
//! fleet, add its members to the mirrors to run, act on deleted sources. `ferry serve`'s
//! fleets (`serve_fleets.rs`) discover through [`find`] too.

use super::{cache_dir, select_mirrors, AppError, Names};
use crate::config::{Config, ConfigError, ConfiguredMirror, FleetSpec, RawOptions};
use crate::engine::report::RunReport;
use crate::engine::sync::Mode;
use crate::fleet::codecommit::CodeCommitApi;
use crate::fleet::plan::{Action, MemberPlan};
use crate::fleet::{self, Discovery};
use crate::model::fleet::SkipReason;
use crate::model::mirror::{Mirror, Settings};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Cache directory, where ferry remembers each fleet's members [default: as for sync].
    #[arg(long, value_name = "DIR", global = true)]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: FleetCommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// What discovery finds in each fleet's source and what ferry would do with each
    /// repository: mirror, create the destination, skip (and why), source deleted.
    /// Changes nothing.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Fleets to list (default: all).
    fleets: Vec<String>,
    /// The config file with the [[fleet]] tables.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The JSON of one fleet in `ferry fleet list --json`.
#[derive(serde::Serialize)]
struct FleetView<'a> {
    fleet: &'a str,
    /// Why the listing may be incomplete (its missing members keep syncing).
    incomplete: Option<&'a str>,
    /// Host API requests this listing made, and how many were answered "not modified" (an
    /// unchanged listing costs no quota).
    api_requests: u32,
    api_not_modified: u32,
    /// What else went wrong (a destination that could not be listed, ...).
    problems: &'a [String],
    repositories: &'a [MemberPlan],
}

pub fn run(fleet: &FleetArgs) -> Result<bool, AppError> {
    let FleetCommand::List(args) = &fleet.command;
    let config = Config::load(&args.config, &RawOptions::default())?;
    let cache_dir = cache_dir(fleet.cache_dir.clone(), config.cache_dir.clone())?;
    let specs = pick(&config.fleets, &args.fleets, &args.config)?;
    let discoveries = super::runtime(super::Threads::One)?.block_on(async {
        let codecommit = super::codecommit::api_for(specs.iter().copied()).await;
        let mut out = Vec::new();
        for spec in &specs {
            out.push(fleet::discover(spec, &cache_dir, codecommit.as_deref()).await);
        }
        out
    });
    let mut ok = true;
    let mut views = Vec::new();
    for (spec, discovery) in specs.iter().zip(&discoveries) {
        match discovery {
            Ok(d) => {
                ok &= d.incomplete.is_none() && d.problems.is_empty();
                views.push(FleetView {
                    fleet: &d.fleet,
                    incomplete: d.incomplete.as_deref(),
                    api_requests: d.usage.requests,
                    api_not_modified: d.usage.not_modified,
                    problems: &d.problems,
                    repositories: &d.plans,
                });
            }
            Err(e) => {
                ok = false;
                eprintln!("ferry: fleet '{}': {e}", spec.name);
            }
        }
    }
    if args.json {
        let json = serde_json::to_string_pretty(&views).context("cannot encode the listing")?;
        super::print_out(&format!("{json}\n"))?;
    } else {
        let text: String = views.iter().map(render).collect();
        super::print_out(&text)?;
    }
    Ok(ok)
}

/// The fleets `names` pick (all when empty); an unknown name is a usage error.
fn pick<'a>(
    fleets: &'a [FleetSpec],
    names: &[String],
    config: &std::path::Path,
) -> Result<Vec<&'a FleetSpec>, ConfigError> {
    if fleets.is_empty() {
        return Err(ConfigError(format!(
            "{} has no [[fleet]] tables",
            config.display()
        )));
    }
    if let Some(unknown) = names.iter().find(|n| !fleets.iter().any(|f| &f.name == *n)) {
        let known: Vec<&str> = fleets.iter().map(|f| f.name.as_str()).collect();
        return Err(ConfigError(format!(
            "no fleet named '{unknown}' in {} (it has: {})",
            config.display(),
            known.join(", ")
        )));
    }
    Ok(fleets
        .iter()
        .filter(|f| names.is_empty() || names.contains(&f.name))
        .collect())
}

fn render(view: &FleetView<'_>) -> String {
    let api = if view.api_requests > 0 {
        format!(
            " (API: {} requests, {} not modified)",
            view.api_requests, view.api_not_modified
        )
    } else {
        String::new()
    };
    let mut out = format!(
        "fleet {}: {} repositories{api}\n",
        view.fleet,
        view.repositories.len()
    );
    for p in view.problems {
        out.push_str(&format!("  problem: {p}\n"));
    }
    if let Some(why) = view.incomplete {
        out.push_str(&format!(
            "  warning: the listing may be incomplete ({why}); nothing is taken for deleted\n"
        ));
    }
    let width = view
        .repositories
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0);
    for p in view.repositories {
        out.push_str(&format!("  {:width$}  {}\n", p.name, p.action.describe()));
    }
    out
}

/// The mirrors a `sync` or `plan` runs, once the fleets are discovered.
pub struct FleetRun {
    pub mirrors: Vec<Mirror>,
    /// Whether discovery went without a problem (reported on stderr).
    ok: bool,
    /// The discoveries, by fleet name, for what follows the sync.
    discoveries: Vec<(String, Discovery)>,
}

impl FleetRun {
    /// After the sync: the default branch of destinations this run created. The verdict of
    /// the fleets' part of the run.
    pub async fn finish(self, fleets: &[FleetSpec], report: &RunReport) -> bool {
        let synced: HashSet<String> = report
            .mirrors
            .iter()
            .filter(|m| m.failures().is_empty())
            .map(|m| m.name.clone())
            .collect();
        let mut ok = self.ok;
        for (name, discovery) in &self.discoveries {
            let Some(spec) = fleets.iter().find(|f| &f.name == name) else {
                continue;
            };
            for p in fleet::after_sync(spec, discovery, &synced).await {
                eprintln!("ferry: fleet '{name}': {p}");
                ok = false;
            }
        }
        ok
    }
}

/// `mirrors` plus the members of every fleet the picked names may reach, then the picked
/// ones. Discovery problems are reported on stderr and make the verdict a failure, but never
/// stop the other mirrors. A real sync also creates destinations, acts on deleted sources
/// and remembers the members; a plan changes nothing.
pub async fn with_members(
    mut mirrors: Vec<Mirror>,
    fleets: &[FleetSpec],
    names: &Names,
    settings: &Settings,
    mode: Mode,
) -> Result<FleetRun, AppError> {
    let mut ok = true;
    let mut discoveries = Vec::new();
    let codecommit = super::codecommit::api_for(fleets).await;
    for spec in fleets {
        let prefix = format!("{}/", spec.name);
        let wanted = names.picked.is_empty()
            || names
                .picked
                .iter()
                .any(|n| n.starts_with(&prefix) || *n == spec.name);
        if !wanted {
            continue;
        }
        let found = find(
            spec,
            &settings.cache_dir,
            mode == Mode::Sync,
            codecommit.as_deref(),
        )
        .await;
        for p in &found.problems {
            eprintln!("ferry: fleet '{}': {p}", spec.name);
        }
        ok &= found.problems.is_empty();
        mirrors.extend(found.members.into_iter().map(|m| m.mirror));
        if let Some(d) = found.discovery {
            discoveries.push((spec.name.clone(), d));
        }
    }
    // A fleet's own name picks all of its members.
    let mut picked = Vec::new();
    for n in &names.picked {
        match fleets.iter().find(|f| &f.name == n) {
            Some(f) => picked.extend(
                mirrors
                    .iter()
                    .filter(|m| m.name.starts_with(&format!("{}/", f.name)))
                    .map(|m| m.name.clone()),
            ),
            None => picked.push(n.clone()),
        }
    }
    if picked.is_empty() && !names.picked.is_empty() {
        return Err(AppError::Usage(ConfigError(format!(
            "nothing to sync: {} names no member that discovery found",
            names.picked.join(", ")
        ))));
    }
    let names = Names {
        picked,
        config: names.config.clone(),
    };
    Ok(FleetRun {
        mirrors: select_mirrors(mirrors, &names)?,
        ok,
        discoveries,
    })
}

/// One fleet's members, and what went wrong finding them, one line each.
pub(super) struct Found {
    pub(super) members: Vec<ConfiguredMirror>,
    pub(super) problems: Vec<String>,
    pub(super) discovery: Option<Discovery>,
}

/// Discovers a fleet; with `act`, also creates destinations, acts on deleted sources and
/// remembers the members. A fleet that cannot be discovered has no members, and says why.
pub(super) async fn find(
    spec: &FleetSpec,
    cache_dir: &Path,
    act: bool,
    codecommit: Option<&dyn CodeCommitApi>,
) -> Found {
    let mut discovery = match fleet::discover(spec, cache_dir, codecommit).await {
        Ok(d) => d,
        Err(e) => {
            return Found {
                members: Vec::new(),
                problems: vec![e],
                discovery: None,
            }
        }
    };
    let mut problems = std::mem::take(&mut discovery.problems);
    if let Some(why) = &discovery.incomplete {
        problems.push(format!(
            "the listing may be incomplete ({why}); members it misses are still synced and \
             nothing is taken for deleted"
        ));
    }
    if act {
        problems.extend(fleet::settle(spec, &mut discovery, cache_dir).await);
    }
    let (members, member_problems) = discovery.members(spec);
    problems.extend(member_problems);
    // A destination someone else owns is an error for that member (never taken over).
    problems.extend(
        discovery
            .plans
            .iter()
            .filter(|p| p.action == Action::Skip(SkipReason::DestinationTaken))
            .map(|p| format!("{}: {}", p.name, SkipReason::DestinationTaken.describe())),
    );
    Found {
        members,
        problems,
        discovery: Some(discovery),
    }
}
