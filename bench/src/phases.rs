//! Where one `ferry sync`'s time goes. With `FERRY_LOG=ferry=debug` (and
//! stderr not a terminal) ferry logs one JSON line per git process it ran,
//! `{"message":"git finished","args":"fetch --prune ...","elapsed_ms":N,...}`
//! (src/engine/git.rs). Each call is put in a phase by its subcommand and by
//! its order relative to the first push.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The message of ferry's per-git-call debug line.
const GIT_FINISHED: &str = "git finished";

/// git's own options that take a separate value (`git -c k=v ls-remote`):
/// the subcommand is the first argument after them.
const OPTIONS_WITH_VALUE: [&str; 2] = ["-c", "-C"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// `git fetch` into the cache, and listing the source (a cache with
    /// thousands of refs lists it to fetch only the changed refs).
    Fetch,
    /// Listing a destination before the first push: what the sync record
    /// now stands in for.
    Listing,
    Push,
    /// Listing a destination after a push (`--verify`, or an incomplete
    /// porcelain report).
    Verify,
    /// Everything else: for-each-ref, merge-base, cat-file, gc, init, ...
    Bookkeeping,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Fetch,
        Phase::Listing,
        Phase::Push,
        Phase::Verify,
        Phase::Bookkeeping,
    ];
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Fetch => "fetch",
            Phase::Listing => "listing",
            Phase::Push => "push",
            Phase::Verify => "verify",
            Phase::Bookkeeping => "bookkeeping",
        })
    }
}

/// One git process as ferry logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitCall {
    pub subcommand: String,
    pub phase: Phase,
    /// Whole milliseconds (ferry logs `as_millis`, truncated).
    pub elapsed_ms: u64,
}

/// Count and summed elapsed time of the calls of one phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTotal {
    pub calls: usize,
    pub elapsed_ms: u64,
}

/// One profiled ferry run: its wall time and its git calls in log order.
#[derive(Debug, Clone)]
pub struct Profile {
    pub wall: Duration,
    pub calls: Vec<GitCall>,
}

impl Profile {
    /// Reads ferry's stderr; `source_url` tells the source's listing from a
    /// destination's. A log without git calls is a run that started none (a
    /// no-op between local repositories); the caller knows whether its run
    /// had to (see `Fixture::profile`).
    pub fn from_log(stderr: &str, wall: Duration, source_url: &str) -> Result<Profile> {
        let mut calls = vec![];
        let mut pushed = false;
        for line in stderr.lines().filter(|l| l.starts_with('{')) {
            let event: Value = serde_json::from_str(line)
                .with_context(|| format!("ferry logged a line that is not JSON: {line}"))?;
            if event["message"] != GIT_FINISHED {
                continue;
            }
            let (args, elapsed_ms) = match (event["args"].as_str(), event["elapsed_ms"].as_u64()) {
                (Some(args), Some(ms)) => (args, ms),
                _ => bail!("a {GIT_FINISHED:?} line without args or elapsed_ms: {line}"),
            };
            let subcommand = subcommand(args).unwrap_or("?").to_owned();
            let phase = classify(&subcommand, args, source_url, pushed);
            pushed |= phase == Phase::Push;
            calls.push(GitCall {
                subcommand,
                phase,
                elapsed_ms,
            });
        }
        Ok(Profile { wall, calls })
    }

    pub fn total(&self, phase: Phase) -> PhaseTotal {
        self.calls
            .iter()
            .filter(|c| c.phase == phase)
            .fold(PhaseTotal::default(), |t, c| PhaseTotal {
                calls: t.calls + 1,
                elapsed_ms: t.elapsed_ms + c.elapsed_ms,
            })
    }

    /// How many times each bookkeeping subcommand ran, by name.
    pub fn bookkeeping(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for call in self.calls.iter().filter(|c| c.phase == Phase::Bookkeeping) {
            *counts.entry(call.subcommand.as_str()).or_default() += 1;
        }
        counts
    }
}

/// The first argument that is neither an option of git's own nor its value.
/// (`args` is ferry's space-joined argv; a subcommand never has spaces.)
fn subcommand(args: &str) -> Option<&str> {
    let mut words = args.split_whitespace();
    while let Some(word) = words.next() {
        if OPTIONS_WITH_VALUE.contains(&word) {
            words.next();
        } else if !word.starts_with('-') {
            return Some(word);
        }
    }
    None
}

/// The phase of one call; `pushed`: a push finished before it (log lines are
/// written as calls finish, and a verification starts after its push ended).
fn classify(subcommand: &str, args: &str, source_url: &str, pushed: bool) -> Phase {
    match subcommand {
        "fetch" => Phase::Fetch,
        "push" => Phase::Push,
        "ls-remote" if args.split_whitespace().any(|w| w == source_url) => Phase::Fetch,
        "ls-remote" if pushed => Phase::Verify,
        "ls-remote" => Phase::Listing,
        _ => Phase::Bookkeeping,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "file:///r/src.git";

    fn line(args: &str, ms: u64) -> String {
        serde_json::json!({
            "timestamp": "2026-01-01T00:00:00Z",
            "level": "DEBUG",
            "message": GIT_FINISHED,
            "args": args,
            "status": "exit status: 0",
            "elapsed_ms": ms,
            "stderr": "",
        })
        .to_string()
    }

    #[test]
    fn finds_the_subcommand_after_git_options() {
        assert_eq!(subcommand("fetch --prune -- x"), Some("fetch"));
        assert_eq!(
            subcommand("-c protocol.version=0 ls-remote --refs"),
            Some("ls-remote")
        );
        assert_eq!(subcommand("-C /tmp --no-pager gc --auto"), Some("gc"));
        assert_eq!(subcommand("--version"), None);
    }

    #[test]
    fn phases_follow_subcommand_and_order() {
        let log = [
            "not json: a plain warning".to_string(),
            line("for-each-ref --format=%(objectname) %(refname)", 2),
            line(
                "-c protocol.version=0 ls-remote --refs -- file:///r/src.git",
                5,
            ),
            line("ls-remote --refs --heads -- file:///r/dst.git", 7),
            line(
                "fetch --prune -- file:///r/src.git +refs/heads/*:refs/heads/*",
                30,
            ),
            line("gc --auto --quiet", 1),
            line(
                "push --porcelain -- file:///r/dst.git a:refs/heads/main",
                40,
            ),
            line("ls-remote --refs --heads -- file:///r/dst.git", 6),
            r#"{"level":"INFO","message":"sync finished"}"#.to_string(),
        ]
        .join("\n");
        let p = Profile::from_log(&log, Duration::from_millis(100), SOURCE).unwrap();
        let phases: Vec<Phase> = p.calls.iter().map(|c| c.phase).collect();
        assert_eq!(
            phases,
            [
                Phase::Bookkeeping,
                Phase::Fetch,
                Phase::Listing,
                Phase::Fetch,
                Phase::Bookkeeping,
                Phase::Push,
                Phase::Verify,
            ]
        );
        assert_eq!(
            p.total(Phase::Fetch),
            PhaseTotal {
                calls: 2,
                elapsed_ms: 35
            }
        );
        assert_eq!(p.total(Phase::Verify).elapsed_ms, 6);
        assert_eq!(
            p.bookkeeping().into_iter().collect::<Vec<_>>(),
            [("for-each-ref", 1), ("gc", 1)]
        );
    }

    #[test]
    fn a_git_line_without_timing_is_an_error_a_run_without_git_is_not() {
        let bad = r#"{"message":"git finished","args":"fetch"}"#;
        assert!(Profile::from_log(bad, Duration::ZERO, SOURCE).is_err());
        let profile = Profile::from_log("", Duration::ZERO, SOURCE).expect("a run without git");
        assert!(profile.calls.is_empty());
    }
}
