//! The benchmark repositories: what to generate, and a cache of generated
//! repos under `<target>/ferry-bench-repos` keyed by their parameters.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferry_testkit::{generate_repo, git};

/// Bump when the generated content changes, to invalidate cached repos.
const CACHE_VERSION: u32 = 1;

/// One repository shape to benchmark.
#[derive(Debug, Clone)]
pub struct RepoSpec {
    pub name: &'static str,
    pub commits: usize,
    pub bytes_per_commit: usize,
    pub extra_refs: usize,
    pub seed: u64,
    /// The "large" repo: the classic-vs-ferry target is judged on it, and
    /// the classic approach gets fewer runs there.
    pub large: bool,
}

impl RepoSpec {
    /// small (~2k commits / ~4 MB), large (~20k commits / ~90 MB) and
    /// many-refs (~10k refs, small history); `quick` shrinks all three ~10x.
    pub fn all(quick: bool) -> Vec<RepoSpec> {
        let scale = if quick { 10 } else { 1 };
        vec![
            RepoSpec {
                name: "small",
                commits: 2_000 / scale,
                bytes_per_commit: 2_000,
                extra_refs: 0,
                seed: 1,
                large: false,
            },
            RepoSpec {
                name: "large",
                commits: 20_000 / scale,
                bytes_per_commit: 4_500,
                extra_refs: 0,
                seed: 2,
                large: true,
            },
            RepoSpec {
                name: "many-refs",
                commits: 1_000 / scale,
                bytes_per_commit: 1_000,
                extra_refs: 10_000 / scale,
                seed: 3,
                large: false,
            },
        ]
    }

    /// The many-refs repo (one ref of thousands changes per sync): its
    /// ferry-vs-raw target is stricter than the commit-heavy repos'.
    pub fn many_refs(&self) -> bool {
        self.extra_refs > 0
    }

    fn cache_key(&self) -> String {
        format!(
            "{}-c{}-b{}-r{}-s{}-v{CACHE_VERSION}",
            self.name, self.commits, self.bytes_per_commit, self.extra_refs, self.seed
        )
    }
}

/// A generated repository and its measured shape.
#[derive(Debug, Clone)]
pub struct Generated {
    pub spec: RepoSpec,
    pub path: PathBuf,
    pub refs: usize,
    pub bytes: u64,
}

impl Generated {
    /// "2000 commits, 1 ref, 4.1 MB" for the table.
    pub fn describe(&self) -> String {
        format!(
            "{} commits, {} ref{}, {:.1} MB",
            self.spec.commits,
            self.refs,
            if self.refs == 1 { "" } else { "s" },
            self.bytes as f64 / 1e6
        )
    }
}

/// Returns the cached repo for `spec`, generating it first if needed.
pub fn generated(spec: &RepoSpec, cache_dir: &Path) -> Result<Generated> {
    let path = cache_dir.join(spec.cache_key());
    if !path.join("HEAD").exists() {
        generate_into(spec, &path)?;
    }
    let refs = git(&path, &["for-each-ref", "--format=%(refname)"])?
        .lines()
        .count();
    Ok(Generated {
        spec: spec.clone(),
        refs,
        bytes: dir_size(&path.join("objects"))?,
        path,
    })
}

/// Generates into a temp sibling and renames, so an interrupted run never
/// leaves a half-written repo in the cache.
fn generate_into(spec: &RepoSpec, path: &Path) -> Result<()> {
    let tmp = path.with_extension("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("failed to remove {}", tmp.display()))?;
    }
    eprintln!("generating {} repo ({})...", spec.name, spec.cache_key());
    let started = Instant::now();
    generate_repo(
        &tmp,
        spec.commits,
        spec.bytes_per_commit,
        spec.extra_refs,
        spec.seed,
    )
    .with_context(|| format!("failed to generate the {} repo", spec.name))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("failed to move {} to {}", tmp.display(), path.display()))?;
    eprintln!("  done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Total size of the files under `dir`.
pub fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("failed to read {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// `cp -a from to`: a byte-identical copy of a repository (same packs, same
/// refs), so every destination starts from exactly the same state.
pub fn copy_repo(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .context("failed to run cp")?;
    if !status.success() {
        bail!(
            "cp -a {} {} failed ({status})",
            from.display(),
            to.display()
        );
    }
    Ok(())
}
