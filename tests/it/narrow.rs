//! Narrow runs: a push event names the refs it changed, and the service's run for it fetches,
//! plans and pushes only those, leaving every other ref (and its record entry) alone; a named
//! ref the source no longer has sends the run down the full path, which deletes it.

use crate::fast_path::logging_git;
use crate::harness::{branches_and_tags, Repo, Transport};
use crate::service::{delivery, hmac_hex, mirror_toml, Serve, SECRET};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const ADMIN: (&str, &str) = ("ADMIN", "adm1n");

/// A service with one mirror from `src` to `dst` over the file transport, logging every git command line to
/// `log`; waits for the first (full) sync to converge.
fn serve(src: &Repo, dst: &Repo, log: &Path) -> Serve {
    let git = logging_git(log.parent().expect("log dir"), log);
    let toml = mirror_toml(
        "app",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    let serve = Serve::start_with_env(
        "admin_token_env = \"ADMIN\"",
        &toml,
        &[ADMIN, ("FERRY_GIT", git.as_str())],
    );
    serve.wait_converged("app", &src.path(), &dst.path());
    serve
}

/// Posts a signed GitHub push delivery naming `refname` and waits for the run that handles it
/// (the mirror's `runs`-th); returns that run's report.
fn push_webhook(serve: &Serve, refname: &str, runs: usize) -> Value {
    let (headers, body) = delivery("github", refname, SECRET);
    let (code, answer) = serve.post("/hooks/app", &headers, &body);
    assert_eq!(code, 202, "{answer}");
    finished_run(serve, runs)
}

/// Waits until the mirror has `runs` runs and is idle; returns the newest run's report.
fn finished_run(serve: &Serve, runs: usize) -> Value {
    serve.wait(
        &format!("run {runs} of app"),
        Duration::from_secs(30),
        || serve.runs("app").len() >= runs && serve.mirror("app")["state"] == "idle",
    );
    serve.runs("app")[0]["report"].clone()
}

fn planned_refs(report: &Value) -> Vec<String> {
    report["destinations"][0]["refs"]
        .as_array()
        .expect("refs")
        .iter()
        .map(|r| r["ref"].as_str().expect("name").to_owned())
        .collect()
}

/// The entry of `name` in the first destination's refs of a stored run report (null if absent).
fn ref_entry(report: &Value, name: &str) -> Value {
    report["destinations"][0]["refs"]
        .as_array()
        .and_then(|refs| refs.iter().find(|r| r["ref"] == name))
        .cloned()
        .unwrap_or_default()
}

fn fetches(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().next() == Some("fetch"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_push_webhook_syncs_only_the_refs_it_names() {
    let (src, dst) = (Repo::source("narrow-src"), Repo::empty("narrow-dst"));
    src.git(&["branch", "dev"]);
    src.push(&["main", "dev"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("git.log");
    let serve = serve(&src, &dst, &log);
    let old_dev = dst.refs()["refs/heads/dev"].clone();

    src.commit("main moves");
    src.git(&["checkout", "-q", "dev"]);
    src.commit("dev moves");
    src.git(&["checkout", "-q", "main"]);
    src.push(&["main", "dev"]);
    std::fs::remove_file(&log).unwrap();

    let report = push_webhook(&serve, "refs/heads/main", 2);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(planned_refs(&report), ["refs/heads/main"], "{report}");
    assert!(
        report["source"].get("digest").is_none(),
        "a narrow run records no digest of the whole source: {report}"
    );
    let now = dst.refs();
    assert_eq!(now["refs/heads/main"], src.refs()["refs/heads/main"]);
    assert_eq!(
        now["refs/heads/dev"], old_dev,
        "dev was not named: left alone"
    );
    let fetched = fetches(&log);
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert!(
        fetched[0].ends_with(" +refs/heads/main:refs/heads/main"),
        "only main was fetched: {fetched:?}"
    );
    let listed = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "ls-remote"))
        .count();
    assert_eq!(listed, 0, "the record stood in for listing the destination");
    assert_eq!(report["destinations"][0]["verified"], false, "{report}");

    // A full run (a manual sync names no refs) brings dev, and the record kept for dev by the
    // narrow run (its pre-run entry) makes it a plain update.
    let auth = [("authorization", format!("Bearer {}", ADMIN.1))];
    let (code, answer) = serve.post("/api/mirrors/app/sync", &auth, b"");
    assert_eq!(code, 202, "{answer}");
    let report = finished_run(&serve, 3);
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["source"]["digest"].is_string(), "{report}");
    let dev = ref_entry(&report, "refs/heads/dev");
    assert_eq!(dev["outcome"], "updated", "{report}");
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

#[test]
fn a_named_ref_the_source_deleted_falls_back_to_the_full_run_which_deletes_it() {
    let (src, dst) = (
        Repo::source("narrow-del-src"),
        Repo::empty("narrow-del-dst"),
    );
    src.git(&["branch", "dev"]);
    src.push(&["main", "dev"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("git.log");
    let serve = serve(&src, &dst, &log);
    assert!(dst.refs().contains_key("refs/heads/dev"));

    src.push(&[":dev"]);
    let report = push_webhook(&serve, "refs/heads/dev", 2);
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["source"]["digest"].is_string(),
        "the run took the full path: {report}"
    );
    let dev = ref_entry(&report, "refs/heads/dev");
    assert_eq!(dev["outcome"], "deleted", "{report}");
    assert!(!dst.refs().contains_key("refs/heads/dev"));
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

/// Posts a signed GitHub push of `refname` to `new` for `mirror` and waits for the mirror's
/// `runs`-th run; returns its report.
fn push_with_id(serve: &Serve, mirror: &str, refname: &str, new: &str, runs: usize) -> Value {
    let body = serde_json::json!({ "ref": refname, "before": "0".repeat(40), "after": new })
        .to_string()
        .into_bytes();
    let headers = [
        ("content-type", "application/json".to_owned()),
        ("x-github-event", "push".to_owned()),
        (
            "x-hub-signature-256",
            format!("sha256={}", hmac_hex(SECRET, &body)),
        ),
    ];
    let (code, answer) = serve.post(&format!("/hooks/{mirror}"), &headers, &body);
    assert_eq!(code, 202, "{answer}");
    serve.wait(
        &format!("run {runs} of {mirror}"),
        Duration::from_secs(30),
        || serve.runs(mirror).len() >= runs && serve.mirror(mirror)["state"] == "idle",
    );
    serve.runs(mirror)[0]["report"].clone()
}

#[test]
fn a_push_whose_new_id_the_shared_cache_already_holds_syncs_without_fetching() {
    let src = Repo::source("held-src");
    let (a, b) = (Repo::empty("held-a"), Repo::empty("held-b"));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("git.log");
    let git = logging_git(dir.path(), &log);
    // Two mirrors of one source share its cache.
    let toml = mirror_toml("a", &src.url(Transport::File), &a.url(Transport::File), "")
        + &mirror_toml("b", &src.url(Transport::File), &b.url(Transport::File), "");
    let serve = Serve::start_with_env("", &toml, &[("FERRY_GIT", git.as_str())]);
    serve.wait_converged("a", &src.path(), &a.path());
    serve.wait_converged("b", &src.path(), &b.path());
    std::fs::remove_file(&log).unwrap();

    let new = src.commit("one more");
    src.push(&["main"]);
    // a's push fetches the commit into the shared cache.
    let report = push_with_id(&serve, "a", "refs/heads/main", &new, 2);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(fetches(&log).len(), 1, "a fetched: {:?}", fetches(&log));
    std::fs::remove_file(&log).unwrap();

    // b's push names the commit the cache holds already: no fetch, and b gets it.
    let report = push_with_id(&serve, "b", "refs/heads/main", &new, 2);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(b.refs()["refs/heads/main"], new);
    assert_eq!(fetches(&log), Vec::<String>::new(), "b fetched again");
    assert_eq!(planned_refs(&report), ["refs/heads/main"], "{report}");
}
