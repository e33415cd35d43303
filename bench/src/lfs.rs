//! The Git LFS rows: an incremental sync of a repository with many LFS objects where one
//! commit adds one object, with LFS (ferry's default, `auto`) against the same sync with
//! `--lfs false`, for 100 and 1,000 existing objects. Source and destinations are on the
//! testkit's nginx (smart HTTP + giftless, Basic auth); the source's objects are pushed with
//! the real git-lfs client.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use ferry_testkit::{git_with_env, LfsServer, Servers, WorkRepo, WRITER};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::sampler::run_timed;
use crate::stats::Stats;

/// Existing LFS objects per row.
pub const COUNTS: [usize; 2] = [100, 1000];
/// Size of each LFS object.
const OBJECT_BYTES: usize = 4096;
/// With LFS over without, at most.
const MAX_LFS_OVER_PLAIN: f64 = 1.5;
/// With LFS, 1,000 existing objects over 100, at most: the cost follows the change.
const MAX_GROWTH: f64 = 1.5;

pub struct LfsRow {
    pub objects: usize,
    pub with_lfs: Stats,
    pub without: Stats,
}

/// One source with `objects` LFS objects, a destination synced with LFS and one without.
struct LfsFixture<'a> {
    servers: &'a Servers,
    lfs: &'a LfsServer,
    ferry: &'a Path,
    work: WorkRepo,
    source: String,
    with_lfs: String,
    without: String,
    scratch: TempDir,
    added: usize,
}

impl<'a> LfsFixture<'a> {
    fn new(
        servers: &'a Servers,
        lfs: &'a LfsServer,
        ferry: &'a Path,
        objects: usize,
    ) -> Result<Self> {
        let pid = std::process::id();
        let name = |role: &str| format!("lfs-bench-{role}-{objects}-{pid}");
        let (source, with_lfs, without) = (name("src"), name("dst"), name("plain"));
        for repo in [&source, &with_lfs, &without] {
            servers.create_bare(repo)?;
        }
        let work = WorkRepo::new()?;
        work.git(&["lfs", "install", "--local"])?;
        work.git(&["lfs", "track", "*.bin"])?;
        for i in 0..objects {
            std::fs::write(
                work.path().join(format!("obj{i:05}.bin")),
                content(&format!("{objects}-{i}")),
            )?;
        }
        work.git(&["add", "."])?;
        work.git(&["commit", "-q", "-m", "many LFS objects"])?;
        let fixture = LfsFixture {
            servers,
            lfs,
            ferry,
            work,
            source,
            with_lfs,
            without,
            scratch: tempfile::tempdir()?,
            added: 0,
        };
        fixture.push()?;
        // The first syncs: every object goes to the LFS destination once.
        fixture.sync(true)?;
        fixture.sync(false)?;
        let stored = fixture.lfs.stored("git", &fixture.with_lfs).len();
        if stored != objects {
            bail!("the first sync left {stored} of {objects} LFS objects on the destination");
        }
        Ok(fixture)
    }

    fn url(&self, name: &str) -> String {
        self.servers.http_url(name)
    }

    /// Pushes the work repo's main to the source; git-lfs uploads the new objects.
    fn push(&self) -> Result<()> {
        git_with_env(
            self.work.path(),
            &["push", "-q", &self.url(&self.source), "main"],
            &self.servers.http_auth_env(WRITER),
        )
        .map(drop)
        .context("pushing to the LFS source failed")
    }

    /// One commit adding one new LFS object, pushed with it; returns its id.
    fn add_one(&mut self) -> Result<String> {
        self.added += 1;
        let bytes = content(&format!("new-{}", self.added));
        let file = format!("new{:04}.bin", self.added);
        std::fs::write(self.work.path().join(&file), &bytes)?;
        self.work.git(&["add", &file])?;
        self.work
            .git(&["commit", "-q", "-m", &format!("add {file}")])?;
        self.push()?;
        Ok(hex::encode(Sha256::digest(&bytes)))
    }

    fn cache(&self, lfs: bool) -> PathBuf {
        self.scratch
            .path()
            .join(if lfs { "cache-lfs" } else { "cache-plain" })
    }

    /// `ferry sync -q` of the source to one destination (LFS `auto`, or `--lfs false`).
    fn command(&self, lfs: bool) -> Command {
        let mut cmd = Command::new(self.ferry);
        cmd.arg("sync")
            .arg("-q")
            .arg("--cache-dir")
            .arg(self.cache(lfs));
        if !lfs {
            cmd.args(["--lfs", "false"]);
        }
        cmd.arg(self.url(&self.source))
            .arg(self.url(if lfs { &self.with_lfs } else { &self.without }))
            .env("FERRY_SOURCE_USERNAME", WRITER.0)
            .env("FERRY_SOURCE_PASSWORD", WRITER.1)
            .env("FERRY_DEST_USERNAME", WRITER.0)
            .env("FERRY_DEST_PASSWORD", WRITER.1);
        cmd
    }

    fn sync(&self, lfs: bool) -> Result<std::time::Duration> {
        run_timed(self.command(lfs))
    }
}

/// Deterministic, incompressible content per seed.
fn content(seed: &str) -> Vec<u8> {
    ferry_testkit::test_bytes(seed, OBJECT_BYTES)
}

/// Measures every row: per round one new commit with one new object, then both syncs (in
/// alternating order), checked to have carried the object.
pub fn run(servers: &Servers, ferry: &Path, runs: usize) -> Result<Vec<LfsRow>> {
    let lfs = LfsServer::start(servers).context(
        "cannot start the LFS server (giftless and gunicorn come from scripts/test.sh; put target/test-tools/lfs/bin on PATH)",
    )?;
    let mut rows = Vec::new();
    for objects in COUNTS {
        eprintln!("LFS: {objects} objects, setting up (push and first syncs)...");
        let mut fixture = LfsFixture::new(servers, &lfs, ferry, objects)?;
        let mut row = LfsRow {
            objects,
            with_lfs: Stats::default(),
            without: Stats::default(),
        };
        // One untimed warm-up round, then the timed ones.
        for round in 0..=runs {
            let oid = fixture.add_one()?;
            let lfs_first = round % 2 == 0;
            let mut timings = [None, None];
            for lfs in [lfs_first, !lfs_first] {
                timings[usize::from(lfs)] = Some(fixture.sync(lfs)?);
            }
            if !lfs.stored("git", &fixture.with_lfs).contains(&oid) {
                bail!("the sync with LFS did not carry the new object {oid}");
            }
            if round > 0 {
                if let [Some(without), Some(with_lfs)] = timings {
                    row.with_lfs.push(with_lfs);
                    row.without.push(without);
                }
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

pub fn table(rows: &[LfsRow]) -> String {
    let mut out = String::from(
        "| existing LFS objects | with LFS ms | without LFS ms | with/without |\n|--:|--:|--:|--:|\n",
    );
    for r in rows {
        let (w, p) = (r.with_lfs.median_ms(), r.without.median_ms());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.objects,
            fmt(w),
            fmt(p),
            match (w, p) {
                (Some(w), Some(p)) if p > 0.0 => format!("{:.2}x", w / p),
                _ => "-".into(),
            }
        );
    }
    out
}

pub fn targets(rows: &[LfsRow]) -> String {
    let median = |objects: usize, lfs: bool| {
        rows.iter().find(|r| r.objects == objects).and_then(|r| {
            if lfs {
                r.with_lfs.median_ms()
            } else {
                r.without.median_ms()
            }
        })
    };
    let mut out = String::new();
    let mut verdict = |target: String, value: Option<f64>, max: f64| {
        let (status, detail) = match value {
            Some(v) => (if v <= max { "PASS" } else { "MISS" }, format!("{v:.2}x")),
            None => ("MISS", "not measured".to_owned()),
        };
        let _ = writeln!(out, "- **{status}** {target}: {detail}");
    };
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    verdict(
        format!("incremental sync, 1,000 LFS objects, one new: with LFS <= {MAX_LFS_OVER_PLAIN:.1}x without"),
        ratio(median(1000, true), median(1000, false)),
        MAX_LFS_OVER_PLAIN,
    );
    verdict(
        format!(
            "independent of the existing objects: 1,000 over 100, with LFS <= {MAX_GROWTH:.1}x"
        ),
        ratio(median(1000, true), median(100, true)),
        MAX_GROWTH,
    );
    out
}

fn fmt(ms: Option<f64>) -> String {
    ms.map_or("-".into(), |v| format!("{v:.1}"))
}
