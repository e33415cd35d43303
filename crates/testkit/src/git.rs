//! Running `git` hermetically, scratch working repositories, and fast
//! synthetic repository generation.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::process::{describe_command, find_program};

/// Identity used for every commit and tag made by this crate.
pub const GIT_NAME: &str = "Ferry Testkit";
/// E-mail used for every commit and tag made by this crate.
pub const GIT_EMAIL: &str = "testkit@ferry.invalid";
/// Fixed author/committer date (2023-11-14T22:13:20Z) so commit ids are
/// reproducible across runs and machines.
pub const GIT_DATE: &str = "1700000000 +0000";

/// Variables that would redirect git to another repository or config if they
/// leaked in from the environment (e.g. when tests run inside a git hook).
const LEAKY_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "GIT_PROXY_COMMAND",
    // These override `http.sslCAInfo` & co. given with `-c`, which would
    // make the HTTPS server's self-signed certificate untrusted.
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "GIT_SSL_NO_VERIFY",
    "GIT_SSL_CERT",
    "GIT_SSL_KEY",
    "GIT_SSL_VERSION",
    "GIT_SSL_CIPHER_LIST",
    "GIT_HTTP_PROXY_AUTHMETHOD",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// Absolute path of the `git` binary, resolved once.
pub fn git_binary() -> Result<&'static Path> {
    static GIT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    match GIT.get_or_init(|| find_program("git").map_err(|e| format!("{e:#}"))) {
        Ok(path) => Ok(path.as_path()),
        Err(msg) => Err(anyhow::anyhow!("{msg}")),
    }
}

/// A `git` command running in `dir` with an isolated environment: no system
/// or global config, fixed identity and dates, no terminal prompts, and no
/// inherited `GIT_DIR`-style or proxy variables. Add args/env and run it with
/// [`run_git`] (or by hand when you need the exit status and stderr).
pub fn git_command(dir: &Path) -> Result<Command> {
    let mut cmd = Command::new(git_binary()?);
    cmd.current_dir(dir);
    for var in LEAKY_VARS {
        cmd.env_remove(var);
    }
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", GIT_NAME)
        .env("GIT_AUTHOR_EMAIL", GIT_EMAIL)
        .env("GIT_AUTHOR_DATE", GIT_DATE)
        .env("GIT_COMMITTER_NAME", GIT_NAME)
        .env("GIT_COMMITTER_EMAIL", GIT_EMAIL)
        .env("GIT_COMMITTER_DATE", GIT_DATE)
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .stdin(Stdio::null());
    Ok(cmd)
}

/// Runs a command built by [`git_command`] and returns its trimmed stdout, or
/// an error containing the command line, exit status, stderr and stdout.
pub fn run_git(mut cmd: Command) -> Result<String> {
    let output = cmd
        .output()
        .with_context(|| format!("failed to run {}", describe_command(&cmd)))?;
    check_output(&cmd, output)
}

pub(crate) fn check_output(cmd: &Command, output: Output) -> Result<String> {
    if !output.status.success() {
        let dir = cmd
            .get_current_dir()
            .map(|d| format!(" in {}", d.display()))
            .unwrap_or_default();
        bail!(
            "{}{dir} failed ({}):\nstderr:\n{}\nstdout:\n{}",
            describe_command(cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end(),
            String::from_utf8_lossy(&output.stdout).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Runs `git` with an isolated environment (`GIT_CONFIG_NOSYSTEM=1`,
/// `GIT_CONFIG_GLOBAL=/dev/null`, fixed author/committer identity and dates,
/// `GIT_TERMINAL_PROMPT=0`) and returns trimmed stdout or an error with stderr.
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    git_with_env::<&str, &str>(dir, args, &[])
}

/// Like [`git`], with extra environment variables (e.g. `GIT_SSH_COMMAND`).
pub fn git_with_env<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    dir: &Path,
    args: &[&str],
    env: &[(K, V)],
) -> Result<String> {
    let mut cmd = git_command(dir)?;
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_git(cmd)
}

/// A non-bare working repo in a temp dir, with a fixed identity and dates, to
/// make commits and push them. Deleted on drop.
pub struct WorkRepo {
    dir: TempDir,
}

impl WorkRepo {
    /// `git init -b main` in a fresh temp dir.
    pub fn new() -> Result<WorkRepo> {
        let dir = tempfile::Builder::new()
            .prefix("ferry-testkit-work-")
            .tempdir()
            .context("failed to create a temp dir for a work repo")?;
        git(dir.path(), &["init", "-q", "-b", "main"])?;
        Ok(WorkRepo { dir })
    }

    /// The working tree (the repository is `path()/.git`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `content` to `file` (parent directories are created), stages it
    /// and commits with message `msg`; returns the new commit id. Always
    /// creates a commit, even when the content did not change, so tests can
    /// rely on "one call = one new commit".
    pub fn commit(&self, file: &str, content: &str, msg: &str) -> Result<String> {
        let path = self.dir.path().join(file);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("failed to create {}", parent.display()))?;
        }
        fs::write(&path, content).with_context(|| format!("failed to write {}", path.display()))?;
        self.git(&["add", "--", file])?;
        self.git(&["commit", "-q", "--allow-empty", "-m", msg])?;
        self.git(&["rev-parse", "HEAD"])
    }

    /// Runs git in the repo (isolated environment, see [`git`]) and returns
    /// trimmed stdout; the error contains stderr on failure.
    pub fn git(&self, args: &[&str]) -> Result<String> {
        git(self.dir.path(), args)
    }

    /// Like [`WorkRepo::git`] with extra environment variables.
    pub fn git_with_env<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        &self,
        args: &[&str],
        env: &[(K, V)],
    ) -> Result<String> {
        git_with_env(self.dir.path(), args, env)
    }
}

/// `len` incompressible bytes, the same for a given `seed` on every machine
/// (large files for Git LFS fixtures).
pub fn test_bytes(seed: &str, len: usize) -> Vec<u8> {
    // FNV-1a of the seed text seeds the generator.
    let start = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut out = vec![0; len];
    SplitMix64(start).fill(&mut out);
    out
}

/// SplitMix64: tiny, fast and good enough to make incompressible test data
/// that is identical for a given seed on every machine.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Number of distinct files the generated history cycles through, so trees
/// stay small while every commit still changes exactly one file.
const GENERATED_FILES: usize = 64;

/// Every `ANNOTATED_TAG_EVERY`-th generated tag is annotated (the others are
/// lightweight). Annotated tags exercise peeling (`^{}` lines), but fast-import
/// writes each of their refs as a loose file, which is slow for thousands.
const ANNOTATED_TAG_EVERY: usize = 8;

/// A ref that [`generate_repo`] adds to `packed-refs` itself.
enum ExtraRef {
    /// `refs/heads/b-N` or a lightweight `refs/tags/t-N` at commit `:mark`.
    Direct { name: String, mark: usize },
    /// Annotated tag `t-N` at commit `:mark`, created by fast-import's `tag`
    /// command (its ref is then packed by `git pack-refs`).
    Annotated { tag: usize, mark: usize },
}

/// Generates a repository quickly with `git fast-import`: `commits` linear
/// commits on `main`, each changing one file (`data/file-NN.bin`, cycling
/// through 64 files) with `bytes_per_commit` of pseudo-random
/// (incompressible, deterministic from `seed`) content, plus `extra_refs`
/// additional refs pointing at pseudo-randomly chosen commits: the first half
/// (rounded up) `refs/heads/b-N`, the rest `refs/tags/t-N` (every 8th tag,
/// starting with t-0, annotated; the others lightweight).
///
/// The repository is a new bare repo at `path` (which must not exist or be an
/// empty directory). Everything is streamed into a single fast-import
/// process, and extra refs are written straight into `packed-refs` (as `git
/// pack-refs` would), so ~20k commits / 90 MB or 10k refs take seconds.
pub fn generate_repo(
    path: &Path,
    commits: usize,
    bytes_per_commit: usize,
    extra_refs: usize,
    seed: u64,
) -> Result<()> {
    if extra_refs > 0 && commits == 0 {
        bail!("generate_repo: {extra_refs} extra refs requested but no commits to point them at");
    }
    if path.exists()
        && fs::read_dir(path)
            .with_context(|| format!("failed to read {}", path.display()))?
            .next()
            .is_some()
    {
        bail!(
            "generate_repo: {} already exists and is not empty",
            path.display()
        );
    }
    fs::create_dir_all(path).with_context(|| format!("failed to create {}", path.display()))?;
    git(path, &["init", "-q", "--bare", "-b", "main", "."])?;

    let mut rng = SplitMix64(seed);
    let heads = extra_refs.div_ceil(2);
    let refs: Vec<ExtraRef> = (0..extra_refs)
        .map(|n| {
            let mark = rng.below(commits) + 1;
            if n < heads {
                ExtraRef::Direct {
                    name: format!("refs/heads/b-{n}"),
                    mark,
                }
            } else if (n - heads) % ANNOTATED_TAG_EVERY == 0 {
                ExtraRef::Annotated {
                    tag: n - heads,
                    mark,
                }
            } else {
                ExtraRef::Direct {
                    name: format!("refs/tags/t-{}", n - heads),
                    mark,
                }
            }
        })
        .collect();

    let marks_file = path.join("testkit-fast-import.marks");
    let mut cmd = git_command(path)?;
    cmd.arg("fast-import")
        .arg("--quiet")
        .arg(format!("--export-marks={}", marks_file.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to start {}", describe_command(&cmd)))?;
    let stdin = child
        .stdin
        .take()
        .context("fast-import stdin was not captured")?;
    let write_result = write_fast_import_stream(
        BufWriter::with_capacity(1 << 20, stdin),
        commits,
        bytes_per_commit,
        &refs,
        &mut rng,
    );
    // Collect stderr even if writing failed: a broken pipe usually means
    // fast-import rejected the stream and said why on stderr.
    let output = child
        .wait_with_output()
        .context("failed to wait for git fast-import")?;
    check_output(&cmd, output).with_context(|| {
        format!(
            "git fast-import into {} failed{}",
            path.display(),
            match &write_result {
                Err(e) => format!(" (writing its input: {e:#})"),
                Ok(()) => String::new(),
            }
        )
    })?;
    write_result.context("failed to stream input to git fast-import")?;
    if extra_refs > 0 {
        // Packs main and the annotated tags (with their peeled lines).
        git(path, &["pack-refs", "--all"])?;
        add_packed_refs(path, &marks_file, &refs)?;
    }
    fs::remove_file(&marks_file)
        .with_context(|| format!("failed to remove {}", marks_file.display()))?;
    Ok(())
}

/// Merges `refs` (resolved through fast-import's exported marks) into the
/// repository's sorted `packed-refs` file, replacing it atomically. Writing
/// ten thousand loose ref files would take far longer than the history.
fn add_packed_refs(repo: &Path, marks_file: &Path, refs: &[ExtraRef]) -> Result<()> {
    let marks_text = fs::read_to_string(marks_file)
        .with_context(|| format!("failed to read {}", marks_file.display()))?;
    let mut marks = std::collections::HashMap::new();
    for line in marks_text.lines() {
        let parsed = line
            .strip_prefix(':')
            .and_then(|l| l.split_once(' '))
            .and_then(|(mark, oid)| Some((mark.parse::<usize>().ok()?, oid.to_string())));
        let (mark, oid) = parsed
            .with_context(|| format!("unexpected line {line:?} in {}", marks_file.display()))?;
        marks.insert(mark, oid);
    }

    let packed_path = repo.join("packed-refs");
    let packed = fs::read_to_string(&packed_path)
        .with_context(|| format!("failed to read {}", packed_path.display()))?;
    // (refname, full text of the entry including a following "^peeled" line)
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in packed.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with('^') {
            let last = entries.last_mut().with_context(|| {
                format!("peeled line without a ref in {}", packed_path.display())
            })?;
            last.1.push_str(line);
            last.1.push('\n');
            continue;
        }
        let (_, name) = line
            .split_once(' ')
            .with_context(|| format!("unexpected line {line:?} in {}", packed_path.display()))?;
        entries.push((name.to_string(), format!("{line}\n")));
    }
    for r in refs {
        if let ExtraRef::Direct { name, mark } = r {
            let oid = marks
                .get(mark)
                .with_context(|| format!("fast-import exported no object for mark :{mark}"))?;
            entries.push((name.clone(), format!("{oid} {name}\n")));
        }
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

    let tmp = repo.join("packed-refs.testkit-new");
    let mut out = BufWriter::new(
        fs::File::create(&tmp).with_context(|| format!("failed to create {}", tmp.display()))?,
    );
    out.write_all(b"# pack-refs with: peeled fully-peeled sorted \n")
        .and_then(|()| {
            entries
                .iter()
                .try_for_each(|(_, text)| out.write_all(text.as_bytes()))
        })
        .and_then(|()| out.flush())
        .with_context(|| format!("failed to write {}", tmp.display()))?;
    drop(out);
    fs::rename(&tmp, &packed_path)
        .with_context(|| format!("failed to replace {}", packed_path.display()))
}

fn write_fast_import_stream<W: Write>(
    mut out: W,
    commits: usize,
    bytes_per_commit: usize,
    refs: &[ExtraRef],
    rng: &mut SplitMix64,
) -> Result<()> {
    let mut content = vec![0u8; bytes_per_commit];
    let base_time: u64 = 1_700_000_000;
    writeln!(out, "feature done")?;
    for i in 0..commits {
        rng.fill(&mut content);
        let message = format!("commit {i}\n");
        write!(
            out,
            "commit refs/heads/main\nmark :{}\ncommitter {GIT_NAME} <{GIT_EMAIL}> {} +0000\ndata {}\n{message}",
            i + 1,
            base_time + i as u64,
            message.len()
        )?;
        write!(
            out,
            "M 100644 inline data/file-{:02}.bin\ndata {}\n",
            i % GENERATED_FILES,
            content.len()
        )?;
        out.write_all(&content)?;
        out.write_all(b"\n\n")?;
    }
    for r in refs {
        let ExtraRef::Annotated { tag: t, mark } = r else {
            continue;
        };
        let message = format!("tag t-{t}\n");
        write!(
            out,
            "tag t-{t}\nfrom :{mark}\ntagger {GIT_NAME} <{GIT_EMAIL}> {base_time} +0000\ndata {}\n{message}\n",
            message.len()
        )?;
    }
    writeln!(out, "done")?;
    out.flush()?;
    Ok(())
}
