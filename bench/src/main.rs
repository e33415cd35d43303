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
//! Then the Git LFS rows: an incremental sync with 1,000 (and 100) LFS objects where one
//! commit adds one, with LFS and without.
//!
//! With `--fleet-only`, only the fleet rows: `ferry sync` over a fleet of 200 small
//! repositories (first sync, a pass where nothing changed, its API requests).
//!
//! `cargo run --release -p ferry-bench [-- --quick] [-- --runs N] [-- --service-only | --lfs-only | --fleet-only]`

mod ferry_bin;
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

use std::path::Path;
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

const USAGE: &str =
    "usage: ferry-bench [--quick] [--runs N] [--service-only | --lfs-only | --fleet-only]";

struct Options {
    quick: bool,
    runs: usize,
    /// Skip the sync table; only the service section.
    service_only: bool,
    /// Only the Git LFS rows.
    lfs_only: bool,
    /// Only the fleet rows.
    fleet_only: bool,
}

fn parse_args() -> Result<Options> {
    let mut quick = false;
    let mut service_only = false;
    let mut lfs_only = false;
    let mut fleet_only = false;
    let mut runs = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--service-only" => service_only = true,
            "--lfs-only" => lfs_only = true,
            "--fleet-only" => fleet_only = true,
            "--runs" => {
                let n = args.next().context("--runs needs a number")?;
                let n: usize = n.parse().with_context(|| format!("bad --runs {n:?}"))?;
                if n == 0 {
                    bail!("--runs must be at least 1");
                }
                runs = Some(n);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let runs = runs.unwrap_or(if quick { QUICK_RUNS } else { DEFAULT_RUNS });
    if [service_only, lfs_only, fleet_only]
        .iter()
        .filter(|f| **f)
        .count()
        > 1
    {
        bail!("--service-only, --lfs-only and --fleet-only exclude each other\n{USAGE}");
    }
    Ok(Options {
        quick,
        runs,
        service_only,
        lfs_only,
        fleet_only,
    })
}

fn main() -> Result<()> {
    let started = Instant::now();
    let options = parse_args()?;
    eprintln!("building ferry (release)...");
    let ferry = ferry_bin::build_release()?;
    if options.fleet_only {
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
    if options.lfs_only {
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
    let repo_cache = ferry_bin::target_dir(&ferry)?.join("ferry-bench-repos");
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
    let (rows, lfs_rows) = if options.service_only {
        (vec![], vec![])
    } else {
        (
            measure_all(&servers, &ferry, &repos, rounds)?,
            lfs::run(&servers, &ferry, options.runs)?,
        )
    };
    let counts = service::Counts::new(options.quick);
    let service = repos
        .iter()
        .find(|r| r.spec.name == "small")
        .context("no small repo to mirror in the service section")
        .and_then(|repo| service::run(&servers, &ferry, repo, counts))
        .context("the service section failed");
    drop(servers);
    if !options.service_only {
        print_report(&options, &ferry, &rows)?;
        print_lfs(&lfs_rows);
    }
    let service = match service {
        Ok(results) => {
            print_service(&results);
            Ok(())
        }
        Err(e) => Err(e),
    };
    println!(
        "\nTotal benchmark time: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    service
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
         - raw cached: `git fetch --prune SRC '+refs/heads/*:refs/heads/*' \
         '+refs/tags/*:refs/tags/*'` into a warm bare repo + `git push DEST refs/heads/main`.\n\
         - floor: `git push DEST <new oid>:refs/heads/main` from the source repo itself.\n\
         - classic: fresh `git clone --mirror SRC` + `git push --mirror DEST` (deleting the \
         clone afterwards is not timed).\n\
         - no-op: `ferry sync` again with nothing changed, vs one `git ls-remote SRC`.\n\
         - peak RSS: VmHWM of the ferry process itself (not its git children), read from \
         /proc/<pid>/status every ~2 ms while it runs, last value read; max over all timed \
         ferry runs (sync and no-op) of the row.\n\
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
