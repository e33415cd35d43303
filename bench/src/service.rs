//! The service section: a real `ferry serve` driven by signed webhooks.
//!
//! 1. webhook -> destination updated, over smart HTTP, one push at a time;
//! 2. webhook acknowledgement latency under an open-loop 200 requests/s;
//! 3. idle resident memory with 100 mirrors configured;
//! 4. queue cost of a burst of 10 webhooks vs one single-webhook sync.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ferry_testkit::{generate_repo, git, git_command, Servers, WRITER};
use serde_json::Value;
use tempfile::TempDir;

use crate::fixture::{flush_dirty_pages, make_commit};
use crate::repos::{copy_repo, Generated};
use crate::serve::{rss_kib, HookClient, RefReader, Serve, PASSWORD_VAR, SECRET_VAR};
use crate::stats::ms;

/// The HTTP mirror (sections 1 and 4) and the file:// one (section 2).
const HTTP_MIRROR: &str = "http";
const FILE_MIRROR: &str = "file";
/// How often the destination's main is read while waiting for a commit.
pub const REF_POLL: Duration = Duration::from_millis(2);
const SYNC_LIMIT: Duration = Duration::from_secs(60);
const STARTUP_LIMIT: Duration = Duration::from_secs(180);
/// Webhooks per burst (section 4).
pub const BURST: usize = 10;
/// Offered load of section 2.
pub const LOAD_RATE: u32 = 200;
/// Client threads of section 2, one keep-alive connection each.
pub const LOAD_CONNECTIONS: usize = 8;
/// Settle time before reading the idle memory (section 3).
pub const IDLE_SETTLE: Duration = Duration::from_secs(2);

/// How much of each measurement to do.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub pushes: usize,
    pub load_secs: u32,
    pub mirrors: usize,
    pub burst_rounds: usize,
}

impl Counts {
    pub fn new(quick: bool) -> Counts {
        if quick {
            Counts {
                pushes: 20,
                load_secs: 2,
                mirrors: 100,
                burst_rounds: 2,
            }
        } else {
            Counts {
                pushes: 100,
                load_secs: 5,
                mirrors: 100,
                burst_rounds: 5,
            }
        }
    }
}

/// `sync finished` log lines of one mirror over one phase.
#[derive(Debug, Default, Clone)]
pub struct SyncLog {
    pub durations_ms: Vec<f64>,
    pub failed: usize,
}

pub struct Propagation {
    pub samples: Vec<Duration>,
    pub log: SyncLog,
}

pub struct Load {
    pub latencies: Vec<Duration>,
    pub not_accepted: usize,
    pub errors: Vec<String>,
    /// Worst delay of a send behind its schedule.
    pub max_send_lag: Duration,
    /// From the first scheduled send to the last response.
    pub wall: Duration,
    pub log: SyncLog,
}

impl Load {
    pub fn achieved_rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

pub struct Memory {
    pub mirrors: usize,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// From the process start to every mirror idle after its first sync.
    pub startup: Duration,
    /// The first syncs of all mirrors.
    pub log: SyncLog,
}

pub struct Burst {
    pub singles: Vec<Duration>,
    pub bursts: Vec<Duration>,
    /// How long sending the 10 webhooks (and their pushes) took.
    pub sending: Vec<Duration>,
    /// Runs recorded per burst.
    pub runs: Vec<usize>,
    pub log: SyncLog,
}

pub struct ServiceResults {
    pub counts: Counts,
    pub repo: String,
    pub propagation: Propagation,
    pub load: Load,
    pub memory: Memory,
    pub burst: Burst,
    /// Wall time of the whole section.
    pub elapsed: Duration,
}

/// Runs the whole section against `servers` with `repo` as the mirrored repository.
pub fn run(
    servers: &Servers,
    ferry: &Path,
    repo: &Generated,
    counts: Counts,
) -> Result<ServiceResults> {
    let started = Instant::now();
    let mut bench = Bench::new(servers, ferry, repo)?;
    eprintln!(
        "service: 1/4 webhook -> destination over http ({} pushes)...",
        counts.pushes
    );
    let propagation = bench.propagation(counts.pushes)?;
    eprintln!(
        "service: 4/4 burst of {BURST} webhooks ({} rounds)...",
        counts.burst_rounds
    );
    let burst = bench.burst(counts.burst_rounds)?;
    eprintln!(
        "service: 2/4 webhook acks at {LOAD_RATE}/s for {} s...",
        counts.load_secs
    );
    let load = bench.load(counts.load_secs)?;
    drop(bench);
    eprintln!(
        "service: 3/4 idle memory with {} mirrors...",
        counts.mirrors
    );
    let memory = memory(ferry, counts.mirrors)?;
    Ok(ServiceResults {
        counts,
        repo: format!("{} ({})", repo.spec.name, repo.describe()),
        propagation,
        load,
        memory,
        burst,
        elapsed: started.elapsed(),
    })
}

/// One `ferry serve` with the HTTP mirror and the file:// mirror.
struct Bench<'a> {
    servers: &'a Servers,
    serve: Serve,
    scratch: TempDir,
    hooks: HookClient,
    dest: RefReader,
    source: PathBuf,
    commits: usize,
}

/// Repository names (in the servers' repos dir) of the section's mirrors.
const REPOS: [&str; 4] = [
    "svc-http-source",
    "svc-http-dest",
    "svc-file-source",
    "svc-file-dest",
];

impl<'a> Bench<'a> {
    fn new(servers: &'a Servers, ferry: &Path, repo: &Generated) -> Result<Bench<'a>> {
        let scratch = scratch_dir()?;
        for name in REPOS {
            let path = servers.repo_path(name);
            if path.exists() {
                fs::remove_dir_all(&path)
                    .with_context(|| format!("failed to remove {}", path.display()))?;
            }
            copy_repo(&repo.path, &path)?;
        }
        let http = |name: &str| {
            format!(
                "{{ url = {}, username = {}, password_env = \"{PASSWORD_VAR}\" }}",
                toml_str(&servers.http_url(name)),
                toml_str(WRITER.0)
            )
        };
        let config = format!(
            "{}{}{}",
            serve_section(scratch.path()),
            mirror_toml(HTTP_MIRROR, &http(REPOS[0]), &http(REPOS[1])),
            mirror_toml(
                FILE_MIRROR,
                &toml_str(&servers.file_url(REPOS[2])),
                &toml_str(&servers.file_url(REPOS[3]))
            ),
        );
        flush_dirty_pages()?;
        let serve = Serve::start(ferry, scratch.path(), &config, WRITER.1)?;
        serve.wait_all_idle(STARTUP_LIMIT)?;
        for name in [HTTP_MIRROR, FILE_MIRROR] {
            let last = serve.get_json(&format!("/api/mirrors/{name}"))?;
            if last["last_run"]["ok"] != Value::Bool(true) {
                bail!(
                    "the first sync of mirror {name} failed: {last}; logs:\n{}",
                    serve.log_tail(20)
                );
            }
        }
        Ok(Bench {
            hooks: serve.hook_client(HTTP_MIRROR),
            dest: RefReader::new(&servers.repo_path(REPOS[1])),
            source: servers.repo_path(REPOS[0]),
            servers,
            serve,
            scratch,
            commits: 0,
        })
    }

    /// A new commit on top of the source's main, not yet on any ref.
    fn commit_on(&mut self, parent: &str) -> Result<String> {
        self.commits += 1;
        let label = format!("ferry-bench service commit {}", self.commits);
        make_commit(&self.source, self.scratch.path(), parent, &label)
    }

    fn source_main(&self) -> Result<String> {
        git(&self.source, &["rev-parse", "refs/heads/main"])
    }

    fn move_main(&self, new: &str, old: &str) -> Result<()> {
        git(&self.source, &["update-ref", "refs/heads/main", new, old]).map(drop)
    }

    /// Push one commit, send one webhook, time until the destination has it.
    fn one_push(&mut self) -> Result<Duration> {
        let old = self.source_main()?;
        let oid = self.commit_on(&old)?;
        self.move_main(&oid, &old)?;
        let started = Instant::now();
        self.hooks.send_accepted()?;
        let seen = self.dest.wait_for(&oid, REF_POLL, SYNC_LIMIT)?;
        let elapsed = seen - started;
        self.serve.wait_idle(HTTP_MIRROR, SYNC_LIMIT)?;
        Ok(elapsed)
    }

    fn propagation(&mut self, pushes: usize) -> Result<Propagation> {
        flush_dirty_pages()?;
        let logs_before = self.serve.log_events().len();
        let mut samples = vec![];
        for i in 0..pushes {
            samples.push(self.one_push()?);
            if (i + 1) % 20 == 0 || i + 1 == pushes {
                eprintln!("  {}/{pushes} pushes", i + 1);
            }
        }
        Ok(Propagation {
            samples,
            log: self.sync_log(HTTP_MIRROR, logs_before),
        })
    }

    fn burst(&mut self, rounds: usize) -> Result<Burst> {
        flush_dirty_pages()?;
        let logs_before = self.serve.log_events().len();
        let mut result = Burst {
            singles: vec![],
            bursts: vec![],
            sending: vec![],
            runs: vec![],
            log: SyncLog::default(),
        };
        // One untimed round first (the same warm-up as the table's).
        for round in 0..=rounds {
            let single = self.one_push()?;
            let runs_before = self.serve.run_count(HTTP_MIRROR)?;
            let base = self.source_main()?;
            let mut chain = vec![];
            let mut parent = base.clone();
            for _ in 0..BURST {
                parent = self.commit_on(&parent)?;
                chain.push(parent.clone());
            }
            let mut mover = RefMover::new(&self.source)?;
            let mut old = base;
            let started = Instant::now();
            for oid in &chain {
                mover.advance(oid, &old)?;
                self.hooks.send_accepted()?;
                old.clone_from(oid);
            }
            let sent = started.elapsed();
            let seen = self.dest.wait_for(&old, REF_POLL, SYNC_LIMIT)?;
            let total = seen - started;
            self.serve.wait_idle(HTTP_MIRROR, SYNC_LIMIT)?;
            let runs = self.serve.run_count(HTTP_MIRROR)? - runs_before;
            eprintln!(
                "  {}: single {:.1} ms, burst {:.1} ms (sent in {:.1} ms, {runs} runs)",
                if round == 0 {
                    "warm-up".to_string()
                } else {
                    format!("round {round}/{rounds}")
                },
                ms(single),
                ms(total),
                ms(sent)
            );
            if round > 0 {
                result.singles.push(single);
                result.bursts.push(total);
                result.sending.push(sent);
                result.runs.push(runs);
            }
        }
        result.log = self.sync_log(HTTP_MIRROR, logs_before);
        Ok(result)
    }

    /// Open loop: request i is due at start + i/rate; connection i % N sends
    /// it (sleeping until it is due, or at once when late); its latency runs
    /// from when it was due (so a slow answer is not hidden by a late send)
    /// to the end of its response.
    fn load(&mut self, secs: u32) -> Result<Load> {
        let logs_before = self.serve.log_events().len();
        let total = (LOAD_RATE * secs) as usize;
        let interval = Duration::from_secs(1) / LOAD_RATE;
        let clients: Vec<HookClient> = (0..LOAD_CONNECTIONS)
            .map(|_| self.serve.hook_client(FILE_MIRROR))
            .collect();
        // Open every connection first (untimed).
        for c in &clients {
            c.send_accepted()?;
        }
        self.serve.wait_idle(FILE_MIRROR, SYNC_LIMIT)?;
        flush_dirty_pages()?;
        let start = Instant::now() + Duration::from_millis(50);
        let start = Arc::new(start);
        let threads: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(k, client)| {
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    let mut out = ThreadLoad::default();
                    for i in (k..total).step_by(LOAD_CONNECTIONS) {
                        let due = *start + interval * i as u32;
                        let now = Instant::now();
                        if due > now {
                            thread::sleep(due - now);
                        }
                        out.max_lag = out
                            .max_lag
                            .max(Instant::now().saturating_duration_since(due));
                        match client.send() {
                            Ok(202) => out.latencies.push(due.elapsed()),
                            Ok(_) => out.not_accepted += 1,
                            Err(e) => out.errors.push(format!("{e:#}")),
                        }
                        out.last = Some(Instant::now());
                    }
                    out
                })
            })
            .collect();
        let mut load = Load {
            latencies: vec![],
            not_accepted: 0,
            errors: vec![],
            max_send_lag: Duration::ZERO,
            wall: Duration::ZERO,
            log: SyncLog::default(),
        };
        let mut last = *start;
        for t in threads {
            let out = t.join().map_err(|_| anyhow!("a load thread panicked"))?;
            load.latencies.extend(out.latencies);
            load.not_accepted += out.not_accepted;
            load.errors.extend(out.errors);
            load.max_send_lag = load.max_send_lag.max(out.max_lag);
            last = out.last.map_or(last, |l| last.max(l));
        }
        load.wall = last - *start;
        self.serve.wait_idle(FILE_MIRROR, SYNC_LIMIT)?;
        load.log = self.sync_log(FILE_MIRROR, logs_before);
        Ok(load)
    }

    /// `sync finished` lines of `mirror` logged since `from`.
    fn sync_log(&self, mirror: &str, from: usize) -> SyncLog {
        sync_log(&self.serve.log_events()[from..], mirror)
    }
}

impl Drop for Bench<'_> {
    fn drop(&mut self) {
        for name in REPOS {
            let _ = fs::remove_dir_all(self.servers.repo_path(name));
        }
    }
}

#[derive(Default)]
struct ThreadLoad {
    latencies: Vec<Duration>,
    not_accepted: usize,
    errors: Vec<String>,
    max_lag: Duration,
    last: Option<Instant>,
}

/// `sync finished` lines of `mirror` (of every mirror if it is empty).
fn sync_log(events: &[Value], mirror: &str) -> SyncLog {
    let mut log = SyncLog::default();
    for e in events {
        if e["message"] == "sync finished" && (mirror.is_empty() || e["mirror"] == mirror) {
            if let Some(d) = e["duration_ms"].as_f64() {
                log.durations_ms.push(d);
            }
            if e["ok"] != Value::Bool(true) {
                log.failed += 1;
            }
        }
    }
    log
}

/// Section 3: `mirrors` file:// mirrors of a tiny repo (sources are copies,
/// destinations empty bare repos), nothing but the initial config syncs.
fn memory(ferry: &Path, mirrors: usize) -> Result<Memory> {
    let scratch = scratch_dir()?;
    let tiny = scratch.path().join("tiny.git");
    generate_repo(&tiny, 20, 500, 0, 4).context("failed to generate the tiny repo")?;
    let mut config = serve_section(scratch.path());
    for i in 0..mirrors {
        let source = scratch.path().join(format!("repos/src-{i}.git"));
        let dest = scratch.path().join(format!("repos/dst-{i}.git"));
        copy_repo(&tiny, &source)?;
        fs::create_dir_all(&dest)
            .with_context(|| format!("failed to create {}", dest.display()))?;
        git(&dest, &["init", "-q", "--bare", "-b", "main", "."])?;
        config.push_str(&mirror_toml(
            &format!("m{i:03}"),
            &toml_str(&format!("file://{}", source.display())),
            &toml_str(&format!("file://{}", dest.display())),
        ));
    }
    flush_dirty_pages()?;
    let started = Instant::now();
    let serve = Serve::start(ferry, scratch.path(), &config, WRITER.1)?;
    serve.wait_all_idle(STARTUP_LIMIT)?;
    let startup = started.elapsed();
    let listed = serve.get_json("/api/mirrors")?;
    let listed = listed.as_array().map_or(0, Vec::len);
    if listed != mirrors {
        bail!("ferry serve lists {listed} mirrors, not {mirrors}");
    }
    let log = sync_log(&serve.log_events(), "");
    if log.failed > 0 {
        bail!(
            "{} of the first syncs failed; logs:\n{}",
            log.failed,
            serve.log_tail(20)
        );
    }
    thread::sleep(IDLE_SETTLE);
    let (rss_kib, hwm_kib) = rss_kib(serve.pid())?;
    Ok(Memory {
        mirrors,
        rss_kib,
        hwm_kib,
        startup,
        log,
    })
}

fn scratch_dir() -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix("ferry-bench-serve-")
        .tempdir()
        .context("failed to create a scratch dir")
}

/// `[serve]` on a free loopback port, store in `dir/data`, no polling and
/// no reconciliation (only webhooks and config changes trigger syncs).
fn serve_section(dir: &Path) -> String {
    format!(
        "[serve]\nlisten = \"127.0.0.1:0\"\ndata_dir = {}\n\n\
         [defaults]\npoll_interval = \"0\"\nreconcile_interval = \"0\"\n\n",
        toml_str(&dir.join("data").to_string_lossy())
    )
}

/// One `[[mirror]]`; `source` and `dest` are TOML values (a string or a table).
fn mirror_toml(name: &str, source: &str, dest: &str) -> String {
    format!(
        "[[mirror]]\nname = \"{name}\"\nsource = {source}\ndestinations = [{dest}]\n\
         webhook_secret_env = \"{SECRET_VAR}\"\npoll_interval = \"0\"\nreconcile_interval = \"0\"\n\n"
    )
}

/// A TOML basic string (JSON string escaping is valid TOML).
fn toml_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Moves `refs/heads/main` of a local bare repo like a push would, through
/// one long-lived `git update-ref --stdin` (a transaction per move, answered
/// before [`RefMover::advance`] returns), so a burst of pushes costs no
/// process start per push.
struct RefMover {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl RefMover {
    fn new(repo: &Path) -> Result<RefMover> {
        let mut cmd = git_command(repo)?;
        cmd.args(["update-ref", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .context("failed to start git update-ref --stdin")?;
        let stdin = child.stdin.take().context("no stdin pipe")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout pipe")?);
        Ok(RefMover {
            child,
            stdin,
            stdout,
        })
    }

    /// Moves main from `old` to `new` (fails if it is not at `old`).
    fn advance(&mut self, new: &str, old: &str) -> Result<()> {
        write!(
            self.stdin,
            "start\nupdate refs/heads/main {new} {old}\ncommit\n"
        )
        .and_then(|()| self.stdin.flush())
        .context("git update-ref --stdin went away")?;
        for expected in ["start: ok", "commit: ok"] {
            let mut line = String::new();
            self.stdout
                .read_line(&mut line)
                .context("failed to read from git update-ref --stdin")?;
            if line.trim_end() != expected {
                bail!("git update-ref --stdin answered {line:?}, expected {expected:?}");
            }
        }
        Ok(())
    }
}

impl Drop for RefMover {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
