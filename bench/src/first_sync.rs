//! The first-sync rows: a migration's first run, the many-refs repository (10,000 refs) to an
//! empty destination with an empty cache, against the classic clone + push (which is also what
//! a careful script does when it has nothing cached). Before ferry pushed many refs in bulk
//! (`engine::sync::pushes_in_bulk`) this took 32 s over file: git push compares each explicit
//! refspec and lease with every destination ref.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use ferry_testkit::{git, git_command, Servers};
use tempfile::TempDir;

use crate::repos::{copy_repo, Generated};
use crate::sampler::run_timed;
use crate::stats::Stats;
use crate::transport::Transport;

/// ferry's first sync over the classic's, at most.
const MAX_OVER_CLASSIC: f64 = 1.5;

pub struct FirstSyncRow {
    pub transport: Transport,
    pub refs: usize,
    pub ferry: Stats,
    pub classic: Stats,
}

/// Per transport, `runs` rounds of both (alternating which goes first), each to a fresh empty
/// destination, ferry with a fresh cache; each destination is checked to list exactly the
/// source's refs afterwards (untimed).
pub fn run(
    servers: &Servers,
    ferry: &Path,
    repo: &Generated,
    runs: usize,
) -> Result<Vec<FirstSyncRow>> {
    let pid = std::process::id();
    let source = format!("first-sync-src-{pid}");
    let source_path = servers.repo_path(&source);
    copy_repo(&repo.path, &source_path)?;
    let expected = listing(&source_path)?;
    let refs = expected.lines().count();
    let mut rows = Vec::new();
    let result = (|| {
        for transport in Transport::ALL {
            eprintln!("first sync of {refs} refs over {transport}...");
            let mut row = FirstSyncRow {
                transport,
                refs,
                ferry: Stats::default(),
                classic: Stats::default(),
            };
            for round in 0..runs {
                let order = if round % 2 == 0 {
                    [true, false]
                } else {
                    [false, true]
                };
                for with_ferry in order {
                    let dest = format!("first-sync-dst-{pid}-{transport}-{round}-{with_ferry}");
                    let dest_path = servers.create_bare(&dest)?;
                    let scratch = tempfile::Builder::new().prefix("ferry-first-").tempdir()?;
                    let (source_url, dest_url) = (
                        transport.url(servers, &source),
                        transport.url(servers, &dest),
                    );
                    crate::fixture::flush_dirty_pages()?;
                    let elapsed = if with_ferry {
                        run_timed(ferry_command(
                            ferry,
                            &scratch,
                            transport,
                            &source_url,
                            &dest_url,
                        ))
                    } else {
                        classic(&scratch, transport, &source_url, &dest_url)
                    };
                    let checked = elapsed.and_then(|elapsed| {
                        if listing(&dest_path)? != expected {
                            bail!("{dest} does not list the source's refs after the first sync");
                        }
                        Ok(elapsed)
                    });
                    let _ = std::fs::remove_dir_all(&dest_path);
                    let elapsed = checked.with_context(|| {
                        format!(
                            "first sync with {} over {transport} failed",
                            if with_ferry { "ferry" } else { "classic" }
                        )
                    })?;
                    if with_ferry {
                        row.ferry.push(elapsed);
                    } else {
                        row.classic.push(elapsed);
                    }
                }
            }
            rows.push(row);
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&source_path);
    result.map(|()| rows)
}

fn ferry_command(
    ferry: &Path,
    scratch: &TempDir,
    transport: Transport,
    source: &str,
    dest: &str,
) -> Command {
    let mut cmd = Command::new(ferry);
    cmd.arg("sync")
        .arg("-q")
        .arg("--cache-dir")
        .arg(scratch.path().join("cache"))
        .arg(source)
        .arg(dest)
        .env_remove("FERRY_LOG")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .envs(transport.ferry_env());
    cmd
}

/// `git clone --mirror` + `git push --mirror`, both timed.
fn classic(
    scratch: &TempDir,
    transport: Transport,
    source: &str,
    dest: &str,
) -> Result<std::time::Duration> {
    let clone = scratch.path().join("mirror.git");
    let clone_arg = clone.to_string_lossy();
    let mut cmd = git_command(scratch.path())?;
    cmd.args(["clone", "-q", "--mirror", source, &clone_arg])
        .envs(transport.git_env());
    let fetch = run_timed(cmd)?;
    let mut cmd = git_command(&clone)?;
    cmd.args(["push", "-q", "--mirror", dest])
        .envs(transport.git_env());
    Ok(fetch + run_timed(cmd)?)
}

/// The branches and tags of a local repository, as `git for-each-ref` lists them.
fn listing(repo: &Path) -> Result<String> {
    git(
        repo,
        &[
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            "refs/heads",
            "refs/tags",
        ],
    )
}

pub fn table(rows: &[FirstSyncRow]) -> String {
    let mut out = String::from(
        "| transport | refs | ferry ms | classic ms | ferry/classic |\n|---|--:|--:|--:|--:|\n",
    );
    for r in rows {
        let (f, c) = (r.ferry.median_ms(), r.classic.median_ms());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.transport,
            r.refs,
            fmt(f),
            fmt(c),
            ratio(f, c).map_or("-".into(), |x| format!("{x:.2}x"))
        );
    }
    out
}

pub fn targets(rows: &[FirstSyncRow]) -> String {
    let worst = rows
        .iter()
        .map(|r| ratio(r.ferry.median_ms(), r.classic.median_ms()))
        .try_fold(0.0_f64, |worst, x| x.map(|x| worst.max(x)));
    let (status, detail) = match worst {
        Some(x) if !rows.is_empty() => (
            if x <= MAX_OVER_CLASSIC {
                "PASS"
            } else {
                "MISS"
            },
            format!("worst {x:.2}x"),
        ),
        _ => ("MISS", "not measured".to_owned()),
    };
    format!(
        "- **{status}** first sync of many refs to an empty destination <= {MAX_OVER_CLASSIC:.1}x \
         the classic clone + push: {detail}\n"
    )
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b)
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(transport: Transport, ferry: &[u64], classic: &[u64]) -> FirstSyncRow {
        FirstSyncRow {
            transport,
            refs: 10_000,
            ferry: Stats::from_millis(ferry),
            classic: Stats::from_millis(classic),
        }
    }

    #[test]
    fn the_target_is_judged_on_the_worst_transport() {
        let rows = [
            row(Transport::File, &[1000, 1100, 900], &[1000, 1000, 1000]),
            row(Transport::Http, &[1600], &[1000]),
        ];
        assert!(
            targets(&rows).starts_with("- **MISS**"),
            "{}",
            targets(&rows)
        );
        assert!(targets(&rows[..1]).starts_with("- **PASS**"));
        assert!(targets(&[]).contains("not measured"));
        assert!(targets(&[row(Transport::File, &[], &[1])]).contains("not measured"));
        assert!(table(&rows).contains("| http | 10000 | 1600 | 1000 | 1.60x |"));
    }
}
