//! One (repository, transport) pair: a source, one destination per method
//! (all byte-identical copies of the generated repo), warm caches, and the
//! commands that are timed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ferry_testkit::{git, git_command, git_with_env, Servers};
use tempfile::TempDir;

use crate::method::Method;
use crate::phases::Profile;
use crate::repos::{copy_repo, Generated};
use crate::sampler::{run_sampled, run_timed};
use crate::transport::Transport;

/// The file each benchmark commit changes in the source.
const MARKER_FILE: &str = "ferry-bench.txt";

/// The result of one timed operation.
pub struct Measurement {
    pub elapsed: Duration,
    /// Peak RSS of the ferry process (ferry methods only).
    pub peak_kib: Option<u64>,
}

pub struct Fixture<'a> {
    servers: &'a Servers,
    ferry: &'a Path,
    transport: Transport,
    /// Prefix of this pair's repositories in the servers' repos dir.
    prefix: String,
    /// ferry's cache, the raw baseline's warm repo, classic clones.
    scratch: TempDir,
    commits_made: usize,
}

impl<'a> Fixture<'a> {
    /// Copies `repo` to the source and every destination, prepares the raw
    /// baseline's warm repo and fills ferry's cache with one untimed sync.
    pub fn new(
        servers: &'a Servers,
        ferry: &'a Path,
        transport: Transport,
        repo: &Generated,
    ) -> Result<Fixture<'a>> {
        let scratch = tempfile::Builder::new()
            .prefix("ferry-bench-")
            .tempdir()
            .context("failed to create a scratch dir")?;
        let fixture = Fixture {
            servers,
            ferry,
            transport,
            prefix: format!("{}-{transport}", repo.spec.name),
            scratch,
            commits_made: 0,
        };
        copy_repo(&repo.path, &fixture.repo_path("source"))?;
        for method in Method::PROPAGATING {
            if let Some(dest) = method.destination() {
                copy_repo(&repo.path, &fixture.repo_path(dest))?;
            }
        }
        copy_repo(&repo.path, &fixture.raw_warm_repo())?;
        for method in [Method::FerryNoop, Method::FerryEventNoop] {
            fixture.measure(method, "").with_context(|| {
                format!("failed to fill {method}'s cache (first, untimed sync)")
            })?;
        }
        Ok(fixture)
    }

    fn repo_name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn repo_path(&self, role: &str) -> PathBuf {
        self.servers.repo_path(&self.repo_name(role))
    }

    fn url(&self, role: &str) -> String {
        self.transport.url(self.servers, &self.repo_name(role))
    }

    fn source(&self) -> PathBuf {
        self.repo_path("source")
    }

    fn raw_warm_repo(&self) -> PathBuf {
        self.scratch.path().join("raw-warm.git")
    }

    fn destination(&self, method: Method) -> Result<&'static str> {
        method
            .destination()
            .with_context(|| format!("{method} has no destination"))
    }

    /// Commits a change of one small file on the source's main branch, right
    /// in the bare repo (as a push would): one new blob, tree and commit.
    pub fn new_commit(&mut self) -> Result<String> {
        self.commits_made += 1;
        let source = self.source();
        let old = git(&source, &["rev-parse", "refs/heads/main"])?;
        let label = format!("ferry-bench commit {}", self.commits_made);
        let commit = make_commit(&source, self.scratch.path(), &old, &label)?;
        git(&source, &["update-ref", "refs/heads/main", &commit, &old])?;
        Ok(commit)
    }

    /// `git ls-remote` of the source (local path, untimed).
    pub fn source_refs(&self) -> Result<String> {
        ls_remote_local(&self.source())
    }

    /// Fails unless `method`'s destination lists exactly `expected`.
    pub fn check_in_sync(&self, method: Method, expected: &str) -> Result<()> {
        let dest = self.repo_path(self.destination(method)?);
        let actual = ls_remote_local(&dest)?;
        if actual != expected {
            let differing: Vec<_> = actual
                .lines()
                .zip(expected.lines())
                .filter(|(a, e)| a != e)
                .take(3)
                .collect();
            bail!(
                "{} ({method}) is not in sync with the source: {} vs {} refs, e.g. {differing:?}",
                dest.display(),
                actual.lines().count(),
                expected.lines().count()
            );
        }
        Ok(())
    }

    /// Fails unless `method`'s destination has `oid` on main.
    pub fn check_has(&self, method: Method, oid: &str) -> Result<()> {
        let dest = self.repo_path(self.destination(method)?);
        let main = git(&dest, &["rev-parse", "refs/heads/main"])?;
        if main != oid {
            bail!("{method} left main at {main} instead of {oid}");
        }
        Ok(())
    }

    /// Runs `method` once (timed); `oid` is the new commit on the source.
    /// Dirty pages are flushed first (untimed), so the write-back of an
    /// earlier operation (a classic clone, the fixture's copies) does not
    /// land in this one's time.
    pub fn measure(&self, method: Method, oid: &str) -> Result<Measurement> {
        flush_dirty_pages()?;
        let result = match method {
            Method::Ferry | Method::FerryNoop | Method::FerryEvent | Method::FerryEventNoop => {
                self.ferry_sync(method, oid)
            }
            Method::RawCached => self.raw_cached(),
            Method::Floor => self.floor(oid),
            Method::Classic => self.classic(),
            Method::LsRemote => {
                self.git_timed(self.scratch.path(), &["ls-remote", &self.url("source")])
            }
        };
        result.with_context(|| format!("{method} failed ({}, {})", self.prefix, self.transport))
    }

    /// Timed runs never log (a `FERRY_LOG` in the bench's environment would
    /// cost them the writes).
    fn ferry_sync(&self, method: Method, oid: &str) -> Result<Measurement> {
        let mut cmd = self.ferry_command(method, oid)?;
        cmd.env_remove("FERRY_LOG");
        let sampled = run_sampled(cmd, "ferry")?;
        Ok(Measurement {
            elapsed: sampled.elapsed,
            peak_kib: sampled.peak_kib,
        })
    }

    /// Runs `method` (ferry or its no-op) once more with every git call
    /// logged, for the phase breakdown. Not for the timing table: the debug
    /// log is extra work. Dirty pages are flushed first, as for a timed run.
    pub fn profile(&self, method: Method, oid: &str) -> Result<Profile> {
        flush_dirty_pages()?;
        let mut cmd = self.ferry_command(method, oid)?;
        cmd.env("FERRY_LOG", "ferry=debug");
        let sampled = run_sampled(cmd, "ferry")
            .with_context(|| format!("profiled {method} failed ({})", self.prefix))?;
        let profile = Profile::from_log(&sampled.stderr, sampled.elapsed, &self.url("source"))
            .with_context(|| format!("cannot read the log of the profiled {method}"))?;
        // A run that propagates a commit runs git: none logged means the log format or
        // FERRY_LOG handling changed, and the breakdown would silently be empty.
        if profile.calls.is_empty() && Method::PROPAGATING.contains(&method) {
            bail!(
                "the profiled {method} logged no git calls with FERRY_LOG=ferry=debug; stderr:\n{}",
                sampled.stderr.trim_end()
            );
        }
        Ok(profile)
    }

    /// `ferry sync -q --cache-dir <warm cache> SRC DEST` with this
    /// transport's credentials (no `--verify`: the default path). The event
    /// methods add `--ref refs/heads/main=<oid>` (none when `oid` is empty)
    /// and have a cache of their own, so that ferry's run never fetched the
    /// commit for them.
    fn ferry_command(&self, method: Method, oid: &str) -> Result<Command> {
        let event = matches!(method, Method::FerryEvent | Method::FerryEventNoop);
        let cache = if event {
            "ferry-event-cache"
        } else {
            "ferry-cache"
        };
        let mut cmd = Command::new(self.ferry);
        cmd.arg("sync")
            .arg("-q")
            .arg("--cache-dir")
            .arg(self.scratch.path().join(cache));
        if event && !oid.is_empty() {
            cmd.arg("--ref").arg(format!("refs/heads/main={oid}"));
        }
        cmd.arg(self.url("source"))
            .arg(self.url(self.destination(method)?))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .envs(self.transport.ferry_env());
        Ok(cmd)
    }

    fn raw_cached(&self) -> Result<Measurement> {
        let warm = self.raw_warm_repo();
        let source = self.url("source");
        let fetch = self.git_timed(
            &warm,
            &[
                "fetch",
                "-q",
                "--prune",
                &source,
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            ],
        )?;
        let dest = self.url(self.destination(Method::RawCached)?);
        let push = self.git_timed(&warm, &["push", "-q", &dest, "refs/heads/main"])?;
        Ok(Measurement {
            elapsed: fetch.elapsed + push.elapsed,
            peak_kib: None,
        })
    }

    fn floor(&self, oid: &str) -> Result<Measurement> {
        let dest = self.url(self.destination(Method::Floor)?);
        let refspec = format!("{oid}:refs/heads/main");
        self.git_timed(&self.source(), &["push", "-q", &dest, &refspec])
    }

    /// Clone and push are timed; deleting the clone afterwards is not.
    fn classic(&self) -> Result<Measurement> {
        let clone = self.scratch.path().join("classic-mirror.git");
        let clone_arg = clone.to_string_lossy();
        let fetch = self.git_timed(
            self.scratch.path(),
            &["clone", "-q", "--mirror", &self.url("source"), &clone_arg],
        )?;
        let dest = self.url(self.destination(Method::Classic)?);
        let push = self.git_timed(&clone, &["push", "-q", "--mirror", &dest]);
        fs::remove_dir_all(&clone)
            .with_context(|| format!("failed to remove {}", clone.display()))?;
        Ok(Measurement {
            elapsed: fetch.elapsed + push?.elapsed,
            peak_kib: None,
        })
    }

    /// Times one hermetic `git` (testkit's isolated env + this transport's
    /// credentials).
    fn git_timed(&self, dir: &Path, args: &[&str]) -> Result<Measurement> {
        let mut cmd = git_command(dir)?;
        cmd.args(args).envs(self.transport.git_env());
        Ok(Measurement {
            elapsed: run_timed(cmd)?,
            peak_kib: None,
        })
    }
}

impl Drop for Fixture<'_> {
    /// Deletes this pair's repositories from the servers' repos dir (the
    /// scratch dir deletes itself).
    fn drop(&mut self) {
        let destinations = Method::PROPAGATING.iter().filter_map(|m| m.destination());
        for role in std::iter::once("source").chain(destinations) {
            let _ = fs::remove_dir_all(self.repo_path(role));
        }
    }
}

/// Writes a commit on top of `parent` in the bare `repo` that changes one
/// small file, without moving any ref: one new blob, tree and commit.
/// `scratch` holds a temporary index and the file's content.
pub fn make_commit(repo: &Path, scratch: &Path, parent: &str, label: &str) -> Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    let content = scratch.join("marker");
    let message = format!("{label} at {}\n", now.as_nanos());
    fs::write(&content, &message)
        .with_context(|| format!("failed to write {}", content.display()))?;
    let content = content.to_string_lossy();
    let blob = git(repo, &["hash-object", "-w", &content])?;
    let index = scratch.join("index");
    let env = [("GIT_INDEX_FILE", index.as_os_str())];
    git_with_env(repo, &["read-tree", parent], &env)?;
    let cacheinfo = format!("100644,{blob},{MARKER_FILE}");
    git_with_env(
        repo,
        &["update-index", "--add", "--cacheinfo", &cacheinfo],
        &env,
    )?;
    let tree = git_with_env(repo, &["write-tree"], &env)?;
    // Dated now, i.e. after its parent like a real new commit: testkit's
    // fixed date predates the generated history, and a commit older than
    // its parent makes git's date-ordered walks (push, fetch,
    // connectivity checks) crawl the whole history.
    let date = format!("{} +0000", now.as_secs());
    git_with_env(
        repo,
        &["commit-tree", &tree, "-p", parent, "-m", message.trim_end()],
        &[("GIT_COMMITTER_DATE", &date), ("GIT_AUTHOR_DATE", &date)],
    )
}

/// sync(1): write back all dirty pages.
pub fn flush_dirty_pages() -> Result<()> {
    let status = Command::new("sync")
        .status()
        .context("failed to run sync")?;
    if !status.success() {
        bail!("sync failed ({status})");
    }
    Ok(())
}

fn ls_remote_local(repo: &Path) -> Result<String> {
    let path = repo.to_string_lossy();
    git(repo, &["ls-remote", &path])
}
