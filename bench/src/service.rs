//! The service section: a real `ferry serve` driven by signed webhooks.
//!
//! 1. webhook -> destination updated, over smart HTTP, one push at a time;
//! 2. webhook acknowledgement latency under an open-loop 200 requests/s;
//! 3. idle resident memory with 100 mirrors configured;
//! 4. queue cost of a burst of 10 webhooks vs one single-webhook sync;
//! 5. webhook acknowledgement latency while 500 slow clients hold connections that never
//!    finish their headers and the status page is read 100 times a second.

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
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
pub const SYNC_LIMIT: Duration = Duration::from_secs(60);
pub const STARTUP_LIMIT: Duration = Duration::from_secs(180);
/// Webhooks per burst (section 4).
pub const BURST: usize = 10;
/// Offered load of section 2.
pub const LOAD_RATE: u32 = 200;
/// Client threads of section 2, one keep-alive connection each.
pub const LOAD_CONNECTIONS: usize = 8;
/// Settle time before reading the idle memory (section 3).
pub const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// Section 5: connections that send half a request's headers and never the rest.
pub const SLOW_CLIENTS: usize = 500;
/// Section 5: `GET /` per second, over this many keep-alive connections.
pub const PAGE_RATE: u32 = 100;
pub const PAGE_CONNECTIONS: usize = 4;
/// Section 5: webhooks per second, over this many keep-alive connections.
pub const HOSTILE_HOOK_RATE: u32 = 50;
pub const HOSTILE_HOOK_CONNECTIONS: usize = 2;
/// How often section 5 looks for slow clients the service closed (to open new ones).
const SLOW_CHECK: Duration = Duration::from_millis(100);

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

/// Section 5.
pub struct Hostile {
    /// The webhooks' acknowledgements (202), with the file:// mirror's syncs.
    pub acks: Load,
    /// The page requests (200).
    pub pages: Load,
    /// Slow clients still open at the end, and how many were closed by the service and
    /// opened again during the measurement.
    pub slow_open: usize,
    pub slow_reopened: usize,
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
    pub hostile: Hostile,
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
        "service: 1/5 webhook -> destination over http ({} pushes)...",
        counts.pushes
    );
    let propagation = bench.propagation(counts.pushes)?;
    eprintln!(
        "service: 4/5 burst of {BURST} webhooks ({} rounds)...",
        counts.burst_rounds
    );
    let burst = bench.burst(counts.burst_rounds)?;
    eprintln!(
        "service: 2/5 webhook acks at {LOAD_RATE}/s for {} s...",
        counts.load_secs
    );
    let load = bench.load(counts.load_secs)?;
    eprintln!(
        "service: 5/5 webhook acks at {HOSTILE_HOOK_RATE}/s with {SLOW_CLIENTS} slow clients \
         and {PAGE_RATE} GET / per s for {} s...",
        counts.load_secs
    );
    let hostile = bench.hostile(counts.load_secs)?;
    drop(bench);
    eprintln!(
        "service: 3/5 idle memory with {} mirrors...",
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
        hostile,
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
        self.hooks.send_push_accepted(&old, &oid)?;
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
                self.hooks.send_push_accepted(&old, oid)?;
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

    /// Webhook acks at [`LOAD_RATE`], open loop (see [`open_loop`]).
    fn load(&mut self, secs: u32) -> Result<Load> {
        let logs_before = self.serve.log_events().len();
        let clients = self.hook_senders(LOAD_CONNECTIONS)?;
        flush_dirty_pages()?;
        let start = Instant::now() + Duration::from_millis(50);
        let threads = open_loop(clients, LOAD_RATE, (LOAD_RATE * secs) as usize, 202, start);
        let mut load = join_load(threads, start)?;
        self.serve.wait_idle(FILE_MIRROR, SYNC_LIMIT)?;
        load.log = self.sync_log(FILE_MIRROR, logs_before);
        Ok(load)
    }

    /// Webhook acks at [`HOSTILE_HOOK_RATE`] while [`SLOW_CLIENTS`] connections never finish
    /// their headers and `GET /` is asked [`PAGE_RATE`] times a second, both open loop.
    fn hostile(&mut self, secs: u32) -> Result<Hostile> {
        let logs_before = self.serve.log_events().len();
        let hooks = self.hook_senders(HOSTILE_HOOK_CONNECTIONS)?;
        let pages = (0..PAGE_CONNECTIONS)
            .map(|_| page_sender(&self.serve.base))
            .collect::<Result<Vec<_>>>()?;
        let addr = self.serve.base.trim_start_matches("http://").to_owned();
        let slow = SlowClients::open(
            &addr,
            SLOW_CLIENTS,
            SYNC_LIMIT + Duration::from_secs(secs.into()),
        )?;
        flush_dirty_pages()?;
        let start = Instant::now() + Duration::from_millis(50);
        let hook_threads = open_loop(
            hooks,
            HOSTILE_HOOK_RATE,
            (HOSTILE_HOOK_RATE * secs) as usize,
            202,
            start,
        );
        let page_threads = open_loop(pages, PAGE_RATE, (PAGE_RATE * secs) as usize, 200, start);
        let acks = join_load(hook_threads, start);
        let pages = join_load(page_threads, start);
        let (slow_open, slow_reopened) = slow.close()?;
        let (mut acks, pages) = (acks?, pages?);
        self.serve.wait_idle(FILE_MIRROR, SYNC_LIMIT)?;
        acks.log = self.sync_log(FILE_MIRROR, logs_before);
        Ok(Hostile {
            acks,
            pages,
            slow_open,
            slow_reopened,
        })
    }

    /// `n` webhook senders to the file:// mirror, each on its own keep-alive connection,
    /// opened (untimed) by one delivery, whose sync is waited for.
    fn hook_senders(&self, n: usize) -> Result<Vec<Sender>> {
        let clients: Vec<HookClient> = (0..n)
            .map(|_| self.serve.hook_client(FILE_MIRROR))
            .collect();
        for c in &clients {
            c.send_accepted()?;
        }
        self.serve.wait_idle(FILE_MIRROR, SYNC_LIMIT)?;
        Ok(clients
            .into_iter()
            .map(|c| Box::new(move || c.send()) as Sender)
            .collect())
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

/// Sends one request and reads its whole answer; returns the status.
pub type Sender = Box<dyn FnMut() -> Result<u16> + Send>;

/// Open loop: request i of `total` is due at `start` + i/`rate`; sender i % N sends it
/// (sleeping until it is due, or at once when late); its latency runs from when it was due (so
/// a slow answer is not hidden by a late send) to the end of its response, and counts when the
/// answer is `expect`.
pub fn open_loop(
    senders: Vec<Sender>,
    rate: u32,
    total: usize,
    expect: u16,
    start: Instant,
) -> Vec<thread::JoinHandle<ThreadLoad>> {
    let interval = Duration::from_secs(1) / rate;
    let n = senders.len();
    senders
        .into_iter()
        .enumerate()
        .map(|(k, mut send)| {
            thread::spawn(move || {
                let mut out = ThreadLoad::default();
                for i in (k..total).step_by(n) {
                    let due = start + interval * i as u32;
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    out.max_lag = out
                        .max_lag
                        .max(Instant::now().saturating_duration_since(due));
                    match send() {
                        Ok(status) if status == expect => out.latencies.push(due.elapsed()),
                        Ok(_) => out.not_accepted += 1,
                        Err(e) => out.errors.push(format!("{e:#}")),
                    }
                    out.last = Some(Instant::now());
                }
                out
            })
        })
        .collect()
}

/// The threads of [`open_loop`] as one [`Load`] (its sync log left empty).
pub fn join_load(threads: Vec<thread::JoinHandle<ThreadLoad>>, start: Instant) -> Result<Load> {
    let mut load = Load {
        latencies: vec![],
        not_accepted: 0,
        errors: vec![],
        max_send_lag: Duration::ZERO,
        wall: Duration::ZERO,
        log: SyncLog::default(),
    };
    let mut last = start;
    for t in threads {
        let out = t.join().map_err(|_| anyhow!("a load thread panicked"))?;
        load.latencies.extend(out.latencies);
        load.not_accepted += out.not_accepted;
        load.errors.extend(out.errors);
        load.max_send_lag = load.max_send_lag.max(out.max_lag);
        last = out.last.map_or(last, |l| last.max(l));
    }
    load.wall = last - start;
    Ok(load)
}

/// `GET /` on its own keep-alive connection, opened (untimed) by a first request.
fn page_sender(base: &str) -> Result<Sender> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_idle_connections_per_host(1)
        .build();
    let url = format!("{base}/");
    let get = move || -> Result<u16> {
        let response = match agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e).with_context(|| format!("GET {url} failed")),
        };
        let status = response.status();
        // Read to the end so the connection goes back to the pool.
        let _ = response.into_string();
        Ok(status)
    };
    match get()? {
        200 => Ok(Box::new(get)),
        other => bail!("GET {base}/ answered {other}, not 200"),
    }
}

/// Connections that sent the start of a request's headers and never send the rest, held by a
/// thread that replaces any the service closes (as a persistent slow client would), until
/// [`SlowClients::close`] or its time limit.
struct SlowClients {
    stop: Arc<AtomicBool>,
    holder: thread::JoinHandle<Result<(usize, usize)>>,
}

impl SlowClients {
    fn open(addr: &str, count: usize, limit: Duration) -> Result<SlowClients> {
        let mut conns = (0..count)
            .map(|_| slow_connection(addr))
            .collect::<Result<Vec<_>>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let addr = addr.to_owned();
        let holder = thread::spawn(move || {
            let started = Instant::now();
            let mut reopened = 0;
            while !stopping.load(Ordering::Relaxed) && started.elapsed() < limit {
                for conn in &mut conns {
                    if closed(conn)? {
                        *conn = slow_connection(&addr)?;
                        reopened += 1;
                    }
                }
                thread::sleep(SLOW_CHECK);
            }
            let mut open = 0;
            for conn in &conns {
                if !closed(conn)? {
                    open += 1;
                }
            }
            Ok((open, reopened))
        });
        Ok(SlowClients { stop, holder })
    }

    /// Stops holding: how many were still open, and how many were opened again on the way.
    fn close(self) -> Result<(usize, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        self.holder
            .join()
            .map_err(|_| anyhow!("the slow clients' thread panicked"))?
    }
}

fn slow_connection(addr: &str) -> Result<TcpStream> {
    let mut conn =
        TcpStream::connect(addr).with_context(|| format!("failed to connect to {addr}"))?;
    conn.write_all(b"GET / HTTP/1.1\r\nHost: ferry-bench\r\nX-Slow: ")
        .context("failed to send half a header")?;
    Ok(conn)
}

/// Whether the service closed the connection (without waiting).
fn closed(conn: &TcpStream) -> Result<bool> {
    conn.set_nonblocking(true)
        .context("failed to make a socket nonblocking")?;
    let mut buf = [0u8; 256];
    let closed = match (&*conn).read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    conn.set_nonblocking(false)
        .context("failed to make a socket blocking")?;
    Ok(closed)
}

#[derive(Default)]
pub struct ThreadLoad {
    latencies: Vec<Duration>,
    not_accepted: usize,
    errors: Vec<String>,
    max_lag: Duration,
    last: Option<Instant>,
}

/// `sync finished` lines of `mirror` (of every mirror if it is empty).
pub fn sync_log(events: &[Value], mirror: &str) -> SyncLog {
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

pub fn scratch_dir() -> Result<TempDir> {
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
pub fn mirror_toml(name: &str, source: &str, dest: &str) -> String {
    format!(
        "[[mirror]]\nname = \"{name}\"\nsource = {source}\ndestinations = [{dest}]\n\
         webhook_secret_env = \"{SECRET_VAR}\"\npoll_interval = \"0\"\nreconcile_interval = \"0\"\n\n"
    )
}

/// A TOML basic string (JSON string escaping is valid TOML).
pub fn toml_str(s: &str) -> String {
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
