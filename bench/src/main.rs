//! ferry's benchmark: how long it takes to propagate ONE new commit with
//! ferry (warm cache) versus the classic clone+push-mirror, a raw cached git
//! baseline and the floor (pushing just that commit), plus the no-op cost and
//! ferry's peak memory. Prints a markdown table and target verdicts, and
//! where one sync's time goes (git processes per phase, from ferry's debug
//! log of one extra run per row); then the service section: a real `ferry
//! serve` driven by signed webhooks (latency to the destination,
//! acknowledgement latency under load, idle memory with 100 mirrors, cost of
//! a burst), with its own table and verdicts.
//!
//! With the many-refs repository, the first-sync rows: a migration's first run (10,000 refs to
//! an empty destination, empty cache) against the classic clone + push.
//!
//! Then the Git LFS rows: an incremental sync with 1,000 (and 100) LFS objects where one
//! commit adds one, with LFS and without.
//!
//! Then the cluster section: three `ferry serve` nodes on one PostgreSQL (webhook -> destination
//! and acknowledgement latency with the webhooks spread over the nodes, and the takeover of a
//! node killed with SIGKILL mid-sync).
//!
//! `cargo run --release -p ferry-bench -- [--quick] [--runs N] [--repo NAME]
//! [--sync-only | --service-only | --cluster-only | --lfs-only | --fleet-only]`
//! (`--service-only` runs both
//! service sections; `--repo` keeps one repository's rows of the CLI table).
//!
//! With `--fleet-only`, only the fleet rows: `ferry sync` over a fleet of 200 small
//! repositories (first sync, a pass where nothing changed, its API requests).

mod cluster;
mod ferry_bin;
mod first_sync;
mod fixture;
mod fleet;
mod lfs;
mod method;
mod phases;
mod report;
mod repos;
mod runner;
mod sampler;
mod serve;
mod service;
mod service_report;
mod stats;
mod transport;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferry_testkit::{git, Servers};

use crate::fixture::Fixture;
use crate::repos::{generated, Generated, RepoSpec};
use crate::runner::{run_row, Rounds, Row};
use crate::transport::Transport;

const DEFAULT_RUNS: usize = 5;
const QUICK_RUNS: usize = 2;
const CLASSIC_RUNS_LARGE: usize = 3;
/// A first sync of 10,000 refs takes seconds: at most this many rounds.
const FIRST_SYNC_RUNS: usize = 3;

const USAGE: &str = "usage: ferry-bench [--quick] [--runs N] [--repo NAME] [--ferry PATH]
                   [--sync-only | --service-only | --cluster-only | --lfs-only | --fleet-only]";

/// Which sections a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sections {
    All,
    /// The CLI table (and its targets) only.
    Sync,
    /// The one-node service section and the cluster section.
    Service,
    /// The cluster section (three nodes on PostgreSQL) only.
    Cluster,
    /// The Git LFS rows only.
    Lfs,
    /// The fleet rows only.
    Fleet,
}

struct Options {
    quick: bool,
    runs: usize,
    sections: Sections,
    /// Only this repository's rows in the CLI table (`small`, `large`, `many-refs`).
    repo: Option<String>,
    /// A ferry binary to measure instead of the one built from this tree (another build, to
    /// compare two side by side in alternating runs).
    ferry: Option<PathBuf>,
}

fn parse_args() -> Result<Options> {
    let mut quick = false;
    let mut sections = Sections::All;
    let mut repo = None;
    let mut runs = None;
    let mut ferry = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let only = match arg.as_str() {
            "--sync-only" => Some(Sections::Sync),
            "--service-only" => Some(Sections::Service),
            "--cluster-only" => Some(Sections::Cluster),
            "--lfs-only" => Some(Sections::Lfs),
            "--fleet-only" => Some(Sections::Fleet),
            _ => None,
        };
        if let Some(only) = only {
            if sections != Sections::All {
                bail!("only one of --sync-only, --service-only, --cluster-only, --lfs-only and --fleet-only\n{USAGE}");
            }
            sections = only;
            continue;
        }
        match arg.as_str() {
            "--quick" => quick = true,
            "--runs" => {
                let n = args.next().context("--runs needs a number")?;
                let n: usize = n.parse().with_context(|| format!("bad --runs {n:?}"))?;
                if n == 0 {
                    bail!("--runs must be at least 1");
                }
                runs = Some(n);
            }
            "--repo" => {
                let name = args.next().context("--repo needs a name")?;
                if !RepoSpec::all(false).iter().any(|spec| spec.name == name) {
                    bail!("unknown --repo {name:?}: use small, large or many-refs");
                }
                repo = Some(name);
            }
            "--ferry" => {
                let path = PathBuf::from(
                    args.next()
                        .context("--ferry needs the path of a ferry binary")?,
                );
                if !path.is_file() {
                    bail!("--ferry {}: no such file; give the path of a built ferry binary (target/release/ferry of another checkout)", path.display());
                }
                ferry = Some(path);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let runs = runs.unwrap_or(if quick { QUICK_RUNS } else { DEFAULT_RUNS });
    Ok(Options {
        quick,
        runs,
        sections,
        repo,
        ferry,
    })
}

fn main() -> Result<()> {
    let started = Instant::now();
    let options = parse_args()?;
    eprintln!("building ferry (release)...");
    // Built also when another binary is measured: generated repositories live beside it.
    let built = ferry_bin::build_release()?;
    let ferry = match &options.ferry {
        Some(other) => {
            eprintln!("measuring {} instead", other.display());
            other.clone()
        }
        None => built.clone(),
    };
    if options.sections == Sections::Fleet {
        eprintln!("starting git servers...");
        // The fake GitHub needs them for the whole run; the testkit's watchdog stops them
        // when this process exits.
        let servers: &'static Servers = Box::leak(Box::new(
            Servers::start().context("failed to start testkit's git servers")?,
        ));
        let rows = fleet::run(servers, &ferry, options.runs)?;
        println!("\n## Fleets\n");
        print!("{}", fleet::table(&rows));
        println!(
            "\n`ferry sync -q --config` of a fleet of {} small repositories (3 commits, 2 more \
             refs each) to a directory: the first sync creates every destination; a no-op pass \
             is the same command when nothing changed (discovery, one listing per repository, \
             nothing pushed). The GitHub source is the test kit's fake (every request and \
             answer validated against GitHub's OpenAPI description, pages of 100, git through \
             the test nginx); a no-op pass's API requests carry the ETag of the last answer.\n",
            fleet::MEMBERS
        );
        println!("## Fleet targets\n");
        print!("{}", fleet::targets(&rows));
        println!(
            "\nTotal benchmark time: {:.1} s",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    if options.sections == Sections::Lfs {
        eprintln!("starting git servers...");
        let servers = Servers::start().context("failed to start testkit's git servers")?;
        let rows = lfs::run(&servers, &ferry, options.runs)?;
        drop(servers);
        print_lfs(&rows);
        println!(
            "\nTotal benchmark time: {:.1} s",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let repo_cache = ferry_bin::target_dir(&built)?.join("ferry-bench-repos");
    let repos = RepoSpec::all(options.quick)
        .iter()
        .map(|spec| generated(spec, &repo_cache))
        .collect::<Result<Vec<_>>>()?;
    eprintln!("starting git servers...");
    let servers = Servers::start().context("failed to start testkit's git servers")?;
    let rounds = Rounds {
        runs: options.runs,
        classic_runs_large: CLASSIC_RUNS_LARGE,
    };
    let sync_part = matches!(options.sections, Sections::All | Sections::Sync);
    let (rows, first_rows, lfs_rows) = if sync_part {
        let measured: Vec<Generated> = repos
            .iter()
            .filter(|r| {
                options
                    .repo
                    .as_deref()
                    .is_none_or(|name| r.spec.name == name)
            })
            .cloned()
            .collect();
        let rows = measure_all(&servers, &ferry, &measured, rounds)?;
        let first_rows = match measured.iter().find(|r| r.spec.name == "many-refs") {
            Some(repo) => {
                first_sync::run(&servers, &ferry, repo, options.runs.min(FIRST_SYNC_RUNS))?
            }
            None => vec![],
        };
        // A failure here (giftless missing) is reported after the tables already measured.
        let lfs_rows = (options.sections == Sections::All)
            .then(|| lfs::run(&servers, &ferry, options.runs).context("the Git LFS rows failed"));
        (rows, first_rows, lfs_rows)
    } else {
        (vec![], vec![], None)
    };
    let small = repos
        .iter()
        .find(|r| r.spec.name == "small")
        .context("no small repo to mirror in the service sections")?;
    let service = matches!(options.sections, Sections::All | Sections::Service).then(|| {
        service::run(&servers, &ferry, small, service::Counts::new(options.quick))
            .context("the service section failed")
    });
    let cluster = matches!(
        options.sections,
        Sections::All | Sections::Service | Sections::Cluster
    )
    .then(|| {
        cluster::run(&servers, &ferry, small, cluster::Counts::new(options.quick))
            .context("the cluster section failed")
    });
    drop(servers);
    if sync_part {
        print_report(&options, &ferry, &rows)?;
    }
    if !first_rows.is_empty() {
        print_first_sync(&first_rows);
    }
    // Print what was measured before reporting a section that failed.
    let lfs = print_section(lfs_rows, |rows: &Vec<lfs::LfsRow>| print_lfs(rows));
    let service = print_section(service, print_service);
    let cluster = print_section(cluster, print_cluster);
    println!(
        "\nTotal benchmark time: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    lfs.and(service).and(cluster)
}

fn measure_all(
    servers: &Servers,
    ferry: &Path,
    repos: &[Generated],
    rounds: Rounds,
) -> Result<Vec<Row>> {
    let mut rows = vec![];
    for repo in repos {
        for transport in Transport::ALL {
            eprintln!("{} ({}) over {transport}:", repo.spec.name, repo.describe());
            let mut fixture = Fixture::new(servers, ferry, transport, repo)?;
            let row = run_row(&mut fixture, repo, transport, rounds).with_context(|| {
                format!("benchmark of {} over {transport} failed", repo.spec.name)
            })?;
            rows.push(row);
        }
    }
    Ok(rows)
}

fn print_report(options: &Options, ferry: &Path, rows: &[Row]) -> Result<()> {
    let git_version = git(Path::new("."), &["--version"])?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "# ferry benchmark{}\n",
        if options.quick { " (--quick)" } else { "" }
    );
    println!(
        "{} timed runs per method after 1 untimed warm-up (classic: {} on the large repo); \
         {git_version}; {cores} cores; ferry at {}.\n",
        options.runs,
        CLASSIC_RUNS_LARGE.min(options.runs),
        ferry.display()
    );
    print!("{}", report::table(rows));
    println!(
        "\nTimings are wall-clock ms to propagate ONE new commit on the source's main branch to \
         a destination that had everything before, as median (min, n runs); every method has \
         its own destination, checked to be in sync (ls-remote, untimed) before each run and to \
         have the new commit after it.\n\
         - ferry: `ferry sync -q --cache-dir <warm cache> SRC DEST` (no `--verify`: the \
         push's porcelain report is the outcome, no listing after the push).\n\
         - event: `ferry sync -q --ref refs/heads/main=<new oid> ...` with a warm cache of \
         its own (behind the source by the new commit): what a webhook or post-receive hook \
         naming the ref runs.\n\
         - raw cached: `git fetch --prune SRC '+refs/heads/*:refs/heads/*' \
         '+refs/tags/*:refs/tags/*'` into a warm bare repo + `git push DEST refs/heads/main`.\n\
         - floor: `git push DEST <new oid>:refs/heads/main` from the source repo itself.\n\
         - classic: fresh `git clone --mirror SRC` + `git push --mirror DEST` (deleting the \
         clone afterwards is not timed).\n\
         - no-op: `ferry sync` again with nothing changed, vs one `git ls-remote SRC`; event \
         no-op: the event's command again (its ref already matches).\n\
         - peak RSS: VmHWM of the ferry process itself (not its git children), read from \
         /proc/<pid>/status every ~2 ms while it runs, last value read; max over all timed \
         ferry runs (sync, event and both no-ops) of the row.\n\
         - http: smart HTTP via nginx + git-http-backend on loopback with Basic auth; git \
         baselines get the credentials from a credential helper reading env vars (like ferry).\n"
    );
    println!("## Targets\n");
    print!("{}", report::targets(rows));
    println!("\n## Where the time goes (one sync)\n");
    print!("{}", report::phase_table(rows));
    println!(
        "\nOne extra `ferry sync` per row and kind after the timed runs (not in the timings \
         above), with `FERRY_LOG=ferry=debug`: ferry's wall time, its git processes, and per \
         phase the sum of each git call's logged `elapsed_ms` (whole ms) with the call count. \
         fetch: `git fetch`, and `ls-remote` of the source (a cache with thousands of refs \
         lists it to fetch only what changed); listing: `ls-remote` of the destination before \
         the first push; push: `git push`; verify: `ls-remote` of the destination after a \
         push; bookkeeping: everything else (named in the last column). Phases overlap \
         (listing runs beside the fetch, `gc --auto` beside the push), and the wall time \
         also holds ferry's own work and process start-up."
    );
    Ok(())
}

fn print_first_sync(rows: &[first_sync::FirstSyncRow]) {
    println!("\n## First sync of many refs\n");
    print!("{}", first_sync::table(rows));
    println!(
        "\nMedian ms of a migration's first run: the many-refs repository to an empty \
         destination. ferry: `ferry sync -q` with an empty cache; classic: `git clone --mirror` \
         + `git push --mirror`. Each run has a fresh destination, checked afterwards to list \
         the source's branches and tags (untimed).\n"
    );
    print!("{}", first_sync::targets(rows));
}

fn print_lfs(rows: &[lfs::LfsRow]) {
    println!("\n## Git LFS\n");
    print!("{}", lfs::table(rows));
    println!(
        "\nMedian ms of `ferry sync -q` (warm cache and record) after one new commit that adds \
         one 4 KiB LFS object to a source holding the given number of LFS objects (pushed with \
         git-lfs): with LFS (the default, `auto`: scan the new commits, ask the destination's \
         LFS server, download the object from the source's, upload it, then push the ref) and \
         with `--lfs false` (refs only) to another destination. HTTP through nginx, git \
         http-backend and giftless (gunicorn), Basic auth.\n"
    );
    println!("## Git LFS targets\n");
    print!("{}", lfs::targets(rows));
}

fn print_service(results: &service::ServiceResults) {
    println!("\n## Service (`ferry serve`)\n");
    print!("{}", service_report::table(results));
    println!("\n{}", service_report::methods(results));
    println!("## Service targets\n");
    print!("{}", service_report::targets(results));
}

fn print_cluster(results: &cluster::ClusterResults) {
    println!(
        "\n## Cluster ({} `ferry serve` nodes on PostgreSQL)\n",
        cluster::NODES.len()
    );
    print!("{}", cluster::table(results));
    println!("\n{}", cluster::methods(results));
    println!("## Cluster targets\n");
    print!("{}", cluster::targets(results));
}

/// Prints a section that was measured; its error, if it failed.
fn print_section<T>(section: Option<Result<T>>, print: fn(&T)) -> Result<()> {
    match section {
        Some(Ok(results)) => {
            print(&results);
            Ok(())
        }
        Some(Err(e)) => Err(e),
        None => Ok(()),
    }
}
