//! The cluster section: three `ferry serve` nodes on one PostgreSQL (the testkit's, from
//! Debian's packages), every node with its own data and cache directory.
//!
//! 1. webhook -> destination updated over smart HTTP, each webhook sent to the next node in
//!    turn (the node that answers is often not the one that syncs: the wake-up crosses nodes);
//! 2. webhook acknowledgement latency at the one-node section's open-loop rate, the
//!    connections spread over the nodes;
//! 3. takeover: the node running a sync is killed with SIGKILL; how long until another node has
//!    claimed the mirror, and until that node's run has finished, against the lease.

use std::fmt::Write;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry_testkit::{Postgres, Servers, WRITER};
use serde_json::Value;
use tempfile::TempDir;

use crate::fixture::{flush_dirty_pages, make_commit};
use crate::repos::{copy_repo, Generated};
use crate::serve::{HookClient, RefReader, Serve, PASSWORD_VAR};
use crate::service::{
    join_load, mirror_toml, open_loop, scratch_dir, sync_log, toml_str, Load, Propagation, Sender,
    LOAD_CONNECTIONS, LOAD_RATE, REF_POLL, STARTUP_LIMIT, SYNC_LIMIT,
};
use crate::service_report::{
    ack_target, load_note, log_note, propagation_targets, spread, verdict,
};

pub const NODES: [&str; 3] = ["bench-a", "bench-b", "bench-c"];
/// The nodes' lease: short, so a takeover round stays short (the default is 30 s).
pub const LEASE: Duration = Duration::from_secs(5);
/// A lease lapses its length after the victim's last renewal, which came before the kill;
/// the survivors may take this long more to see it lapse and claim the work.
const NOTICE: Duration = Duration::from_secs(1);
/// How long the slow mirror's destination holds each push (its pre-receive hook sleeps): the
/// kill lands mid-sync.
const SLOW_PUSH_SECONDS: u32 = 2;
const STORE_VAR: &str = "FERRY_BENCH_STORE_URL";

const HTTP_MIRROR: &str = "http";
const FILE_MIRROR: &str = "file";
const SLOW_MIRROR: &str = "slow";
/// Repository names (in the servers' repos dir) of the section's mirrors.
const REPOS: [&str; 6] = [
    "clu-http-source",
    "clu-http-dest",
    "clu-file-source",
    "clu-file-dest",
    "clu-slow-source",
    "clu-slow-dest",
];

/// How much of each measurement to do.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub pushes: usize,
    pub load_secs: u32,
    pub takeovers: usize,
}

impl Counts {
    pub fn new(quick: bool) -> Counts {
        if quick {
            Counts {
                pushes: 20,
                load_secs: 2,
                takeovers: 1,
            }
        } else {
            Counts {
                pushes: 100,
                load_secs: 5,
                takeovers: 3,
            }
        }
    }
}

/// One kill: from the SIGKILL to another node's claim, and to that node's run finishing.
pub struct Takeover {
    pub victim: String,
    pub claimed: Duration,
    pub finished: Duration,
    pub by: String,
}

pub struct ClusterResults {
    pub counts: Counts,
    pub repo: String,
    pub propagation: Propagation,
    pub load: Load,
    pub takeovers: Vec<Takeover>,
    pub elapsed: Duration,
}

pub fn run(
    servers: &Servers,
    ferry: &Path,
    repo: &Generated,
    counts: Counts,
) -> Result<ClusterResults> {
    let started = Instant::now();
    eprintln!("cluster: starting PostgreSQL and {} nodes...", NODES.len());
    let postgres = Postgres::start().context("failed to start PostgreSQL")?;
    let mut cluster = Cluster::new(servers, ferry, repo, &postgres)?;
    eprintln!(
        "cluster: 1/3 webhook -> destination over http ({} pushes, round-robin over the nodes)...",
        counts.pushes
    );
    let propagation = cluster.propagation(counts.pushes)?;
    eprintln!(
        "cluster: 2/3 webhook acks at {LOAD_RATE}/s for {} s over the nodes...",
        counts.load_secs
    );
    let load = cluster.load(counts.load_secs)?;
    eprintln!(
        "cluster: 3/3 takeover after kill -9 ({} rounds, lease {} s)...",
        counts.takeovers,
        LEASE.as_secs()
    );
    let takeovers = (0..counts.takeovers)
        .map(|_| cluster.takeover())
        .collect::<Result<Vec<_>>>()?;
    drop(cluster);
    drop(postgres);
    Ok(ClusterResults {
        counts,
        repo: format!("{} ({})", repo.spec.name, repo.describe()),
        propagation,
        load,
        takeovers,
        elapsed: started.elapsed(),
    })
}

struct Node {
    id: &'static str,
    dir: TempDir,
    serve: Serve,
}

struct Cluster<'a> {
    servers: &'a Servers,
    ferry: &'a Path,
    store_url: String,
    config_tail: String,
    nodes: Vec<Node>,
    scratch: TempDir,
    commits: usize,
}

impl<'a> Cluster<'a> {
    fn new(
        servers: &'a Servers,
        ferry: &'a Path,
        repo: &Generated,
        postgres: &Postgres,
    ) -> Result<Cluster<'a>> {
        for name in REPOS {
            let path = servers.repo_path(name);
            if path.exists() {
                fs::remove_dir_all(&path)
                    .with_context(|| format!("failed to remove {}", path.display()))?;
            }
            copy_repo(&repo.path, &path)?;
        }
        hold_pushes(&servers.repo_path(REPOS[5]))?;
        let store_url = postgres
            .create_database("ferry_bench_cluster")
            .context("failed to create the cluster's database")?;
        let http = |name: &str| {
            format!(
                "{{ url = {}, username = {}, password_env = \"{PASSWORD_VAR}\" }}",
                toml_str(&servers.http_url(name)),
                toml_str(WRITER.0)
            )
        };
        let file = |name: &str| toml_str(&servers.file_url(name));
        let config_tail = format!(
            "[defaults]\npoll_interval = \"0\"\nreconcile_interval = \"0\"\n\n{}{}{}",
            mirror_toml(HTTP_MIRROR, &http(REPOS[0]), &http(REPOS[1])),
            mirror_toml(FILE_MIRROR, &file(REPOS[2]), &file(REPOS[3])),
            mirror_toml(SLOW_MIRROR, &file(REPOS[4]), &file(REPOS[5])),
        );
        let mut cluster = Cluster {
            servers,
            ferry,
            store_url,
            config_tail,
            nodes: vec![],
            scratch: scratch_dir()?,
            commits: 0,
        };
        flush_dirty_pages()?;
        for id in NODES {
            let node = cluster.start_node(id, scratch_dir()?)?;
            cluster.nodes.push(node);
        }
        cluster.wait_all_idle()?;
        for name in [HTTP_MIRROR, FILE_MIRROR, SLOW_MIRROR] {
            let last = cluster.api().get_json(&format!("/api/mirrors/{name}"))?;
            if last["last_run"]["ok"] != Value::Bool(true) {
                bail!(
                    "the first sync of mirror {name} failed: {last}; logs:\n{}",
                    cluster.api().log_tail(20)
                );
            }
        }
        Ok(cluster)
    }

    /// Starts node `id` with its data (and cache) in `dir`.
    fn start_node(&self, id: &'static str, dir: TempDir) -> Result<Node> {
        let config = format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\ndata_dir = {}\nstore_url_env = \"{STORE_VAR}\"\n\
             node_id = \"{id}\"\nlease = \"{}s\"\n\n{}",
            toml_str(&dir.path().join("data").to_string_lossy()),
            LEASE.as_secs(),
            self.config_tail
        );
        let serve = Serve::start_with_env(
            self.ferry,
            dir.path(),
            &config,
            WRITER.1,
            &[(STORE_VAR, &self.store_url)],
        )
        .with_context(|| format!("failed to start node {id}"))?;
        Ok(Node { id, dir, serve })
    }

    /// Any live node: each shows the whole cluster.
    fn api(&self) -> &Serve {
        &self.nodes[0].serve
    }

    fn wait_all_idle(&self) -> Result<()> {
        self.api().wait_all_idle(STARTUP_LIMIT)
    }

    /// Section 1.
    fn propagation(&mut self, pushes: usize) -> Result<Propagation> {
        let source = self.servers.repo_path(REPOS[0]);
        let dest = RefReader::new(&self.servers.repo_path(REPOS[1]));
        let hooks: Vec<HookClient> = self
            .nodes
            .iter()
            .map(|n| n.serve.hook_client(HTTP_MIRROR))
            .collect();
        flush_dirty_pages()?;
        let logs_before = self.log_lengths();
        let mut samples = vec![];
        for i in 0..pushes {
            let (old, oid) = self.advance(&source)?;
            let started = Instant::now();
            hooks[i % hooks.len()].send_push_accepted(&old, &oid)?;
            let seen = dest.wait_for(&oid, REF_POLL, SYNC_LIMIT)?;
            samples.push(seen - started);
            self.api().wait_idle(HTTP_MIRROR, SYNC_LIMIT)?;
            if (i + 1) % 20 == 0 || i + 1 == pushes {
                eprintln!("  {}/{pushes} pushes", i + 1);
            }
        }
        Ok(Propagation {
            samples,
            log: self.sync_log(HTTP_MIRROR, &logs_before),
        })
    }

    /// Section 2: [`LOAD_CONNECTIONS`] keep-alive connections, dealt over the nodes.
    fn load(&mut self, secs: u32) -> Result<Load> {
        let clients: Vec<HookClient> = (0..LOAD_CONNECTIONS)
            .map(|k| {
                self.nodes[k % self.nodes.len()]
                    .serve
                    .hook_client(FILE_MIRROR)
            })
            .collect();
        // One untimed delivery each opens the connections.
        for c in &clients {
            c.send_accepted()?;
        }
        self.api().wait_idle(FILE_MIRROR, SYNC_LIMIT)?;
        let senders: Vec<Sender> = clients
            .into_iter()
            .map(|c| Box::new(move || c.send()) as Sender)
            .collect();
        let logs_before = self.log_lengths();
        flush_dirty_pages()?;
        let start = Instant::now() + Duration::from_millis(50);
        let threads = open_loop(senders, LOAD_RATE, (LOAD_RATE * secs) as usize, 202, start);
        let mut load = join_load(threads, start)?;
        self.api().wait_idle(FILE_MIRROR, SYNC_LIMIT)?;
        load.log = self.sync_log(FILE_MIRROR, &logs_before);
        Ok(load)
    }

    /// Section 3, one round: a webhook for the slow mirror, SIGKILL to the node that runs its
    /// sync, then the time until a survivor claims it and until the survivor's run finishes;
    /// the victim is started again (same id, same data) for the next round.
    fn takeover(&mut self) -> Result<Takeover> {
        let source = self.servers.repo_path(REPOS[4]);
        self.advance(&source)?;
        let runs_before = self.api().run_count(SLOW_MIRROR)?;
        self.nodes[0]
            .serve
            .hook_client(SLOW_MIRROR)
            .send_accepted()?;
        let mut victim = String::new();
        self.api().wait_until(
            "the slow mirror's sync to start",
            SYNC_LIMIT,
            REF_POLL,
            || {
                let m = self
                    .api()
                    .get_json(&format!("/api/mirrors/{SLOW_MIRROR}"))?;
                if m["state"] == "syncing" {
                    if let Some(node) = m["node"].as_str() {
                        victim = node.to_owned();
                        return Ok(true);
                    }
                }
                Ok(false)
            },
        )?;
        let index = self
            .nodes
            .iter()
            .position(|n| n.id == victim)
            .with_context(|| format!("the sync runs on {victim:?}, which is no node of ours"))?;
        let dead = self.nodes.remove(index);
        let killed = Instant::now();
        drop(dead.serve);
        let mut claimed = None;
        let mut by = String::new();
        let api = &self.nodes[0].serve;
        api.wait_until(
            "a survivor to take the slow mirror over and finish its run",
            LEASE * 4 + SYNC_LIMIT,
            REF_POLL,
            || {
                let m = api.get_json(&format!("/api/mirrors/{SLOW_MIRROR}"))?;
                let node = m["node"].as_str().unwrap_or(&victim);
                if claimed.is_none() && node != victim {
                    claimed = Some(killed.elapsed());
                    by = node.to_owned();
                }
                let last = &m["last_run"];
                Ok(claimed.is_some()
                    && m["state"] == "idle"
                    && last["ok"] == Value::Bool(true)
                    && last["node"].as_str().is_some_and(|n| n != victim)
                    && api.run_count(SLOW_MIRROR)? > runs_before)
            },
        )?;
        let finished = killed.elapsed();
        let claimed = claimed.context("no claim was seen")?;
        eprintln!(
            "  {victim} killed: claimed by {by} after {:.2} s, finished after {:.2} s",
            claimed.as_secs_f64(),
            finished.as_secs_f64()
        );
        let node = self.start_node(dead.id, dead.dir)?;
        self.nodes.insert(index, node);
        self.wait_all_idle()?;
        Ok(Takeover {
            victim,
            claimed,
            finished,
            by,
        })
    }

    /// A new commit on the main branch of the bare repository `source`; its id.
    /// Moves the source's main one new commit on: its old and new id.
    fn advance(&mut self, source: &Path) -> Result<(String, String)> {
        self.commits += 1;
        let old = ferry_testkit::git(source, &["rev-parse", "refs/heads/main"])?;
        let label = format!("ferry-bench cluster commit {}", self.commits);
        let oid = make_commit(source, self.scratch.path(), &old, &label)?;
        ferry_testkit::git(source, &["update-ref", "refs/heads/main", &oid, &old])?;
        Ok((old, oid))
    }

    fn log_lengths(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| n.serve.log_events().len())
            .collect()
    }

    /// `sync finished` lines of `mirror` on every node since `before`.
    fn sync_log(&self, mirror: &str, before: &[usize]) -> crate::service::SyncLog {
        let mut all = crate::service::SyncLog::default();
        for (node, from) in self.nodes.iter().zip(before) {
            let events = node.serve.log_events();
            let log = sync_log(&events[(*from).min(events.len())..], mirror);
            all.durations_ms.extend(log.durations_ms);
            all.failed += log.failed;
        }
        all
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        self.nodes.clear();
        for name in REPOS {
            let _ = fs::remove_dir_all(self.servers.repo_path(name));
        }
    }
}

/// A pre-receive hook in the bare repository `dest` that holds every push for
/// [`SLOW_PUSH_SECONDS`].
fn hold_pushes(dest: &Path) -> Result<()> {
    let hook = dest.join("hooks").join("pre-receive");
    fs::create_dir_all(hook.parent().context("hooks dir")?)
        .with_context(|| format!("failed to create {}", dest.join("hooks").display()))?;
    fs::write(
        &hook,
        format!("#!/bin/sh\ncat >/dev/null\nsleep {SLOW_PUSH_SECONDS}\n"),
    )
    .with_context(|| format!("failed to write {}", hook.display()))?;
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("failed to make {} executable", hook.display()))
}

pub fn table(r: &ClusterResults) -> String {
    let mut out = String::new();
    out.push_str("| measurement | n | result | details |\n|---|--:|---|---|\n");
    let mut row = |what: &str, n: usize, result: String, details: String| {
        let _ = writeln!(out, "| {what} | {n} | {result} | {details} |");
    };
    let p = &r.propagation;
    row(
        "webhook -> destination updated (http, 1-commit push, webhooks round-robin)",
        p.samples.len(),
        spread(&p.samples),
        log_note(&p.log),
    );
    let l = &r.load;
    row(
        &format!(
            "webhook ack at {LOAD_RATE}/s offered, over {} nodes",
            NODES.len()
        ),
        l.latencies.len() + l.not_accepted + l.errors.len(),
        spread(&l.latencies),
        format!("{}; {}", load_note(l, 202), log_note(&l.log)),
    );
    let claimed: Vec<Duration> = r.takeovers.iter().map(|t| t.claimed).collect();
    let finished: Vec<Duration> = r.takeovers.iter().map(|t| t.finished).collect();
    let who: Vec<String> = r
        .takeovers
        .iter()
        .map(|t| format!("{} -> {}", t.victim, t.by))
        .collect();
    row(
        &format!(
            "takeover after kill -9: claimed by another node (lease {} s)",
            LEASE.as_secs()
        ),
        claimed.len(),
        spread(&claimed),
        who.join(", "),
    );
    row(
        "takeover after kill -9: the survivor's run finished",
        finished.len(),
        spread(&finished),
        format!("each push is held {SLOW_PUSH_SECONDS} s by the destination's hook"),
    );
    out
}

pub fn methods(r: &ClusterResults) -> String {
    format!(
        "{} `ferry serve` nodes (release build, `store_url_env` -> one PostgreSQL database of a \
         server the testkit starts from Debian's packages, `lease = \"{} s\"`, default workers, \
         each node its own data and cache dir) with the same mirrors, copies of the {} repo: \
         `http` (smart HTTP both ways), `file` and `slow` (file:// both ways; the `slow` \
         destination's pre-receive hook sleeps {SLOW_PUSH_SECONDS} s).\n\
         - webhook -> destination: as in the one-node section, with webhook i POSTed to node i \
         mod {}; whichever node claims the mirror runs the sync.\n\
         - webhook ack: as in the one-node section ({} s), with keep-alive connection k to \
         node k mod {}.\n\
         - takeover: a commit and a webhook for `slow`; as soon as the API says a node runs its \
         sync, that node gets SIGKILL; the clock starts at the kill and is read when a \
         survivor's API first names another node for the mirror (claimed) and when the mirror \
         is idle with a successful run by another node (finished); the killed node is then \
         started again (same id, same data) before the next round.\n\
         The cluster section took {:.1} s.\n",
        NODES.len(),
        LEASE.as_secs(),
        r.repo,
        NODES.len(),
        r.counts.load_secs,
        NODES.len(),
        r.elapsed.as_secs_f64(),
    )
}

pub fn targets(r: &ClusterResults) -> String {
    let mut out = String::new();
    let scope = format!(" with {} nodes", NODES.len());
    propagation_targets(&mut out, &r.propagation.samples, &scope);
    ack_target(&mut out, &r.load, &scope);
    let worst = r.takeovers.iter().map(|t| t.claimed).max();
    verdict(
        &mut out,
        !r.takeovers.is_empty() && worst.is_some_and(|w| w <= LEASE + NOTICE),
        format!(
            "a killed node's sync is taken over within the lease ({} s, + {} s to notice)",
            LEASE.as_secs(),
            NOTICE.as_secs()
        ),
        worst.map_or("no data".into(), |w| {
            format!(
                "worst claim {:.2} s after the kill (n={})",
                w.as_secs_f64(),
                r.takeovers.len()
            )
        }),
    );
    out
}
