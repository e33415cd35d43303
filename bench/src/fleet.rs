//! The fleet rows: `ferry sync --config` over a fleet of 200 small repositories, the first
//! sync (every destination created) and a pass where nothing changed, from a directory of
//! bare repositories and from a GitHub organisation (the test kit's fake GitHub, every
//! request and answer validated against GitHub's OpenAPI description, serving real git
//! through the test nginx) to a directory. For GitHub, the API requests a no-op pass makes
//! and how many count against the rate limit (answered 304 Not Modified: none should).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry_testkit::github::{FakeOptions, GitHubFake, RepoSpec};
use ferry_testkit::{generate_repo, Servers, WorkRepo, WRITER};
use tempfile::TempDir;

use crate::stats::Stats;

/// Repositories in the fleet.
pub const MEMBERS: usize = 200;

pub struct FleetRow {
    pub source: &'static str,
    pub first_sync: Duration,
    pub no_op: Stats,
    /// GitHub sources: API requests of one no-op pass, how many were answered 304, and how
    /// many counted against the rate limit.
    pub api: Option<(u64, u64, u64)>,
}

/// Both rows; the no-op pass timed `runs` times.
pub fn run(servers: &'static Servers, ferry: &Path, runs: usize) -> Result<Vec<FleetRow>> {
    Ok(vec![
        directory(ferry, runs).context("the directory fleet")?,
        github(servers, ferry, runs).context("the GitHub fleet")?,
    ])
}

/// A temp dir with a config whose fleet `bench` has `source` and a directory destination.
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new(source: &str) -> Result<Setup> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let config = format!(
            "cache_dir = \"{}\"\n[[fleet]]\nname = \"bench\"\nsource = {{ {source} }}\n\
             destination = {{ provider = \"directory\", path = \"{}\", create = true }}\n",
            dir.path().join("cache").display(),
            dir.path().join("backup").display()
        );
        std::fs::write(dir.path().join("ferry.toml"), config).context("write the config")?;
        Ok(Setup { dir })
    }

    fn backup(&self) -> PathBuf {
        self.dir.path().join("backup")
    }

    /// One `ferry sync -q --config`, timed; fails unless it exits 0.
    fn sync(&self, ferry: &Path, env: &[(&str, &str)]) -> Result<Duration> {
        let started = Instant::now();
        let out = Command::new(ferry)
            .args(["sync", "-q", "--config"])
            .arg(self.dir.path().join("ferry.toml"))
            .envs(env.iter().copied())
            .output()
            .context("run ferry sync")?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "ferry sync failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(took)
    }

    /// First sync, a check that the `expected` (source, destination path) pairs arrived,
    /// then `runs` no-op passes.
    fn measure(
        &self,
        ferry: &Path,
        env: &[(&str, &str)],
        runs: usize,
        expected: &[(&Path, &str)],
    ) -> Result<(Duration, Stats)> {
        let first_sync = self.sync(ferry, env)?;
        for (source, relative) in expected {
            let dest = self.backup().join(relative);
            if heads(source)? != heads(&dest)? {
                bail!("{} did not receive {}", dest.display(), source.display());
            }
        }
        let mut no_op = Stats::default();
        for _ in 0..runs {
            no_op.push(self.sync(ferry, env)?);
        }
        Ok((first_sync, no_op))
    }
}

fn heads(repo: &Path) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["for-each-ref", "--format=%(refname) %(objectname)"])
        .output()
        .with_context(|| format!("list {}", repo.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn directory(ferry: &Path, runs: usize) -> Result<FleetRow> {
    eprintln!("fleet: {MEMBERS} repositories, directory to directory...");
    let sources = tempfile::tempdir().context("temp dir")?;
    for i in 0..MEMBERS {
        generate_repo(
            &sources.path().join(format!("repo-{i:03}.git")),
            3,
            256,
            2,
            i as u64 + 1,
        )?;
    }
    let setup = Setup::new(&format!(
        "provider = \"directory\", path = \"{}\"",
        sources.path().display()
    ))?;
    let first = sources.path().join("repo-000.git");
    let last = sources.path().join(format!("repo-{:03}.git", MEMBERS - 1));
    let last_name = format!("repo-{:03}.git", MEMBERS - 1);
    let (first_sync, no_op) = setup.measure(
        ferry,
        &[],
        runs,
        &[(&first, "repo-000.git"), (&last, &last_name)],
    )?;
    Ok(FleetRow {
        source: "directory",
        first_sync,
        no_op,
        api: None,
    })
}

fn github(servers: &'static Servers, ferry: &Path, runs: usize) -> Result<FleetRow> {
    eprintln!("fleet: {MEMBERS} repositories, fake GitHub organisation to directory...");
    let fake = GitHubFake::start(servers, FakeOptions::new(WRITER.1))?;
    fake.add_org("acme")?;
    let work = WorkRepo::new()?;
    let mut repos = Vec::new();
    for i in 0..MEMBERS {
        let name = format!("repo-{i:03}");
        let repo = fake.add_repo("acme", &name, RepoSpec::default())?;
        work.commit("f.txt", &name, &name)?;
        work.git(&[
            "push",
            "-q",
            &repo.path.display().to_string(),
            "HEAD:refs/heads/main",
        ])?;
        repos.push((name, repo.path));
    }
    let setup = Setup::new(&format!(
        "provider = \"github\", owner = \"acme\", token_env = \"GH_TOKEN\", api_url = \"{}\", username = \"{}\"",
        fake.base_url(),
        WRITER.0
    ))?;
    let env = [("GH_TOKEN", WRITER.1)];
    let expected: Vec<(&Path, &str)> = [&repos[0], &repos[MEMBERS - 1]]
        .into_iter()
        .map(|(name, path)| (path.as_path(), name.as_str()))
        .collect();
    let (first_sync, mut no_op) = setup.measure(ferry, &env, runs, &expected)?;
    // One more no-op pass, with the API counted around it.
    let before = fake.counters();
    no_op.push(setup.sync(ferry, &env)?);
    let after = fake.counters();
    let violations = fake.violations();
    if !violations.is_empty() {
        bail!("the fake GitHub saw contract violations: {violations:#?}");
    }
    Ok(FleetRow {
        source: "GitHub (fake)",
        first_sync,
        no_op,
        api: Some((
            after.requests - before.requests,
            after.not_modified - before.not_modified,
            after.counted - before.counted,
        )),
    })
}

pub fn table(rows: &[FleetRow]) -> String {
    let mut out = String::from(
        "| source | first sync (s) | no-op pass, median (ms) | API requests of a no-op pass (304 / counted) |\n\
         | --- | ---: | ---: | --- |\n",
    );
    for r in rows {
        let api = match r.api {
            Some((requests, not_modified, counted)) => {
                format!("{requests} ({not_modified} / {counted})")
            }
            None => "none (no API)".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {api} |",
            r.source,
            r.first_sync.as_secs_f64(),
            r.no_op.median_ms().map_or_else(
                || "-".to_owned(),
                |m| format!("{m:.0} (n={})", r.no_op.len())
            ),
        );
    }
    out
}

pub fn targets(rows: &[FleetRow]) -> String {
    let mut out = String::new();
    for r in rows {
        if let Some((requests, _, counted)) = r.api {
            let status = if counted == 0 { "PASS" } else { "MISS" };
            let _ = writeln!(
                out,
                "- **{status}** a no-op pass over {MEMBERS} {} repositories costs no API quota: \
                 {counted} of {requests} requests counted",
                r.source
            );
        }
    }
    out
}
