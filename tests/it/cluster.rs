//! Several `ferry serve` nodes on one PostgreSQL store (the real binary, a real PostgreSQL):
//! webhooks spread over the nodes converge, no mirror is ever pushed by two nodes at once (a
//! hook in every destination proves it), a node killed with SIGKILL has its syncs taken over
//! within the lease, a PostgreSQL restart costs 503s and nothing accepted, and a rolling
//! restart loses nothing.

use crate::harness::{branches_and_tags, Repo, Transport};
use crate::service::{delivery, mirror_toml, push_commit, Serve, SECRET};
use ferry_testkit::Postgres;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The lease the nodes run with: short, so takeovers happen within a test's patience.
const LEASE_SECONDS: u64 = 3;

/// The PostgreSQL server the cluster tests share (one database each); the restart test starts
/// its own.
fn postgres() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| Postgres::start().expect("start PostgreSQL"))
}

/// A fresh database on the shared server, for tests elsewhere.
pub fn database_url(test: &str) -> String {
    database(postgres(), test)
}

fn database(pg: &Postgres, test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    pg.create_database(&format!("cluster_{test}_{n}"))
        .expect("create a database")
}

/// A source, a destination that records overlapping pushes, and its mirror's config.
struct Pair {
    name: String,
    src: Repo,
    dst: Repo,
}

/// The destination's pre-receive hook: holds an exclusive lock for the push's receiving
/// phase (plus `hold` seconds) and records, then refuses, a push that finds it already held.
fn guard_destination(dst: &Path, hold: &str) {
    let hook = dst.join("hooks").join("pre-receive");
    std::fs::create_dir_all(hook.parent().expect("hooks dir")).expect("hooks dir");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nexec 9>>ferry-push.lock\nif ! flock -n 9; then echo \"$$\" >> ferry-overlaps; exit 1; fi\ncat >/dev/null\nsleep {hold}\n"
        ),
    )
    .expect("write the hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn pairs(prefix: &str, n: usize, hold: &str) -> (Vec<Pair>, String) {
    let mut toml = String::new();
    let pairs: Vec<Pair> = (0..n)
        .map(|i| {
            let name = format!("{prefix}{i:02}");
            let src = Repo::source(&format!("{prefix}-src"));
            let dst = Repo::empty(&format!("{prefix}-dst"));
            guard_destination(&dst.path(), hold);
            toml += &mirror_toml(
                &name,
                &src.url(Transport::File),
                &dst.url(Transport::File),
                "",
            );
            Pair { name, src, dst }
        })
        .collect();
    (pairs, toml)
}

/// Starts a node of the cluster at `url`.
fn node(id: &str, url: &str, mirrors: &str) -> Serve {
    let serve = format!(
        "store_url_env = \"FERRY_STORE_URL\"\nnode_id = \"{id}\"\nlease = \"{LEASE_SECONDS}s\"\nworkers = 2"
    );
    Serve::start_full("", &serve, mirrors, &[("FERRY_STORE_URL", url)])
}

/// Starts the nodes at once (they migrate the store concurrently).
fn nodes(ids: &[&str], url: &str, mirrors: &str) -> Vec<Serve> {
    std::thread::scope(|s| {
        let starting: Vec<_> = ids
            .iter()
            .map(|id| s.spawn(move || node(id, url, mirrors)))
            .collect();
        starting
            .into_iter()
            .map(|t| t.join().expect("a node started"))
            .collect()
    })
}

/// POSTs a signed push webhook for `mirror` to the node at `base`: its status, `None` when the
/// node does not answer.
fn webhook(base: &str, mirror: &str) -> Option<u16> {
    let (headers, body) = delivery("github", "refs/heads/main", SECRET);
    let mut req = ureq::post(&format!("{base}/hooks/{mirror}")).timeout(Duration::from_secs(15));
    for (k, v) in &headers {
        req = req.set(k, v);
    }
    match req.send_bytes(&body) {
        Ok(r) => Some(r.status()),
        Err(ureq::Error::Status(code, _)) => Some(code),
        Err(_) => None,
    }
}

/// Waits until every destination holds its source's refs and every mirror is idle with
/// nothing behind, as any live node's API says.
fn wait_converged(api: &Serve, pairs: &[Pair], limit: Duration) {
    api.wait("every mirror to converge", limit, || {
        pairs.iter().all(|p| {
            branches_and_tags(&p.dst.path()) == branches_and_tags(&p.src.path()) && {
                let m = api.mirror(&p.name);
                m["state"] == "idle" && m["behind_since"].is_null()
            }
        })
    });
}

/// No destination saw two pushes at once (the hook's record), and no two recorded runs of a
/// mirror overlap in time.
fn assert_never_two_at_once(api: &Serve, pairs: &[Pair]) {
    for p in pairs {
        let overlaps = p.dst.path().join("ferry-overlaps");
        assert!(
            !overlaps.exists(),
            "{} was pushed by two nodes at once: {:?}",
            p.name,
            std::fs::read_to_string(&overlaps)
        );
        let mut runs: Vec<(i64, i64)> = api
            .runs(&p.name)
            .iter()
            .map(|r| {
                (
                    r["started_at"].as_i64().unwrap_or(0),
                    r["finished_at"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        runs.sort();
        for w in runs.windows(2) {
            assert!(w[0].1 <= w[1].0, "{}: runs overlap: {runs:?}", p.name);
        }
    }
}

/// The nodes that ran the mirrors' recorded runs.
fn run_nodes(api: &Serve, pairs: &[Pair]) -> std::collections::BTreeSet<String> {
    pairs
        .iter()
        .flat_map(|p| api.runs(&p.name))
        .filter_map(|r| r["node"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn three_nodes_converge_fifty_mirrors_and_never_push_one_mirror_from_two_nodes_at_once() {
    let url = database(postgres(), "fifty");
    let (pairs, toml) = pairs("fifty", 50, "0.05");
    let cluster = nodes(&["a", "b", "c"], &url, &toml);
    wait_converged(&cluster[0], &pairs, Duration::from_secs(90));

    let (code, body) = cluster[1].get("/api/nodes");
    assert_eq!(code, 200, "{body}");
    let listed: Vec<Value> = serde_json::from_str(&body).expect("nodes json");
    let mut ids: Vec<&str> = listed.iter().filter_map(|n| n["id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, vec!["a", "b", "c"], "any node shows the whole cluster");

    for (i, p) in pairs.iter().enumerate() {
        push_commit(&p.src, "second");
        assert_eq!(
            webhook(&cluster[i % 3].base, &p.name),
            Some(202),
            "{}",
            p.name
        );
    }
    wait_converged(&cluster[2], &pairs, Duration::from_secs(90));
    assert_never_two_at_once(&cluster[0], &pairs);
    let ran = run_nodes(&cluster[0], &pairs);
    assert!(ran.len() >= 2, "the work spreads over the nodes: {ran:?}");
}

#[test]
fn a_node_killed_mid_sync_has_its_syncs_taken_over_within_the_lease_and_nothing_is_lost() {
    let url = database(postgres(), "kill");
    // Each push holds its destination for a second: the kill lands mid-sync.
    let (pairs, toml) = pairs("kill", 9, "1");
    let mut cluster = nodes(&["a", "b", "c"], &url, &toml);
    wait_converged(&cluster[0], &pairs, Duration::from_secs(60));

    for (i, p) in pairs.iter().enumerate() {
        push_commit(&p.src, "second");
        assert_eq!(webhook(&cluster[i % 3].base, &p.name), Some(202));
    }
    // Kill c as soon as it runs a sync.
    let mut victims = Vec::new();
    cluster[0].wait("node c to run a sync", Duration::from_secs(30), || {
        victims = pairs
            .iter()
            .filter(|p| {
                let m = cluster[0].mirror(&p.name);
                m["state"] == "syncing" && m["node"] == "c"
            })
            .map(|p| p.name.clone())
            .collect();
        !victims.is_empty()
    });
    let killed_at = Instant::now();
    cluster[2].kill9();

    // Another node takes c's syncs over once their lease lapses, and says so.
    let survivors = &cluster[..2];
    survivors[0].wait(
        "another node to take c's syncs over",
        Duration::from_secs(LEASE_SECONDS * 3 + 5),
        || {
            victims.iter().all(|name| {
                let m = survivors[0].mirror(name);
                m["node"] != "c" && m["node"].is_string()
            })
        },
    );
    eprintln!(
        "takeover of {victims:?} seen {:?} after the kill (lease {LEASE_SECONDS} s)",
        killed_at.elapsed()
    );
    wait_converged(&survivors[0], &pairs, Duration::from_secs(60));
    assert_never_two_at_once(&survivors[0], &pairs);
    let takeovers: u64 = survivors
        .iter()
        .map(|s| {
            let (_, metrics) = s.get("/metrics");
            metrics
                .lines()
                .find(|l| l.starts_with("ferry_takeovers_total"))
                .and_then(|l| l.split_whitespace().last()?.parse().ok())
                .unwrap_or(0)
        })
        .sum();
    assert!(takeovers >= 1, "a survivor counted the takeover");
    for name in &victims {
        let runs = survivors[0].runs(name);
        assert!(
            runs.iter()
                .any(|r| r["node"] != "c" && r["trigger"] == "webhook"),
            "{name}: the webhook's event was handled by a survivor: {runs:?}"
        );
    }
}

#[test]
fn a_postgres_restart_answers_503_while_down_and_loses_nothing_accepted() {
    let mut pg = Postgres::start().expect("start a PostgreSQL of its own");
    let url = database(&pg, "restart");
    let (pairs, toml) = pairs("pgrestart", 3, "0");
    let cluster = nodes(&["a", "b"], &url, &toml);
    wait_converged(&cluster[0], &pairs, Duration::from_secs(60));

    // Accepted just before the stop: must survive it.
    push_commit(&pairs[0].src, "before the stop");
    assert_eq!(webhook(&cluster[0].base, &pairs[0].name), Some(202));
    pg.stop().expect("stop PostgreSQL");
    push_commit(&pairs[1].src, "while down");
    assert_eq!(
        webhook(&cluster[1].base, &pairs[1].name),
        Some(503),
        "nothing can be accepted without the store"
    );
    let (code, _) = cluster[0].get("/readyz");
    assert_eq!(code, 503, "not ready without the store");

    pg.start_again().expect("start PostgreSQL again");
    cluster[1].wait("webhooks accepted again", Duration::from_secs(30), || {
        webhook(&cluster[1].base, &pairs[1].name) == Some(202)
    });
    push_commit(&pairs[2].src, "after the restart");
    assert_eq!(webhook(&cluster[0].base, &pairs[2].name), Some(202));
    wait_converged(&cluster[0], &pairs, Duration::from_secs(60));
    assert_never_two_at_once(&cluster[1], &pairs);
}

#[test]
fn a_rolling_restart_of_every_node_loses_no_accepted_event() {
    let url = database(postgres(), "rolling");
    let (pairs, toml) = pairs("rolling", 6, "0.2");
    let mut cluster = nodes(&["a", "b", "c"], &url, &toml);
    wait_converged(&cluster[0], &pairs, Duration::from_secs(60));

    let bases: Vec<String> = cluster.iter().map(|n| n.base.clone()).collect();
    let accepted = AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // Pushes and webhooks all along, to whichever node answers (a restarted node listens
        // on a new free port: the load goes to the others, as behind a load balancer).
        s.spawn(|| {
            let mut i = 0;
            while !done.load(Ordering::Relaxed) && i < 200 {
                let p = &pairs[i % pairs.len()];
                push_commit(&p.src, &format!("rolling {i}"));
                let delivered = bases
                    .iter()
                    .cycle()
                    .skip(i)
                    .take(bases.len())
                    .any(|base| webhook(base, &p.name) == Some(202));
                if delivered {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        for n in cluster.iter_mut() {
            n.restart_gracefully();
        }
        done.store(true, Ordering::Relaxed);
    });
    assert!(
        accepted.load(Ordering::Relaxed) > 0,
        "webhooks were accepted during the restarts"
    );
    // One last round through the restarted nodes, then everything must have converged with
    // every accepted event handled (nothing behind).
    for (i, p) in pairs.iter().enumerate() {
        push_commit(&p.src, "after the rolling restart");
        assert_eq!(webhook(&cluster[i % 3].base, &p.name), Some(202));
    }
    wait_converged(&cluster[1], &pairs, Duration::from_secs(60));
    assert_never_two_at_once(&cluster[0], &pairs);
}
