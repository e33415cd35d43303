//! Narrow runs: a push event names the refs it changed, and the service's run for it fetches,
//! plans and pushes only those, leaving every other ref (and its record entry) alone; a named
//! ref the source no longer has sends the run down the full path, which deletes it.

use crate::fast_path::logging_git;
use crate::harness::{branches_and_tags, servers, Ferry, Repo, Transport};
use crate::service::{delivery, hmac_hex, mirror_toml, Serve, SECRET};
use ferry_testkit::WRITER;
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

    let main = src.commit("main moves");
    src.git(&["checkout", "-q", "dev"]);
    src.commit("dev moves");
    src.git(&["checkout", "-q", "main"]);
    src.push(&["main", "dev"]);
    std::fs::remove_file(&log).unwrap();

    let report = push_with_id(&serve, "app", "refs/heads/main", &main, 2);
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
        fetched[0].ends_with(&format!(" {main}:refs/heads/main")),
        "only main was fetched, by the id the event named: {fetched:?}"
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
    post_push(serve, mirror, refname, &"0".repeat(40), new);
    serve.wait(
        &format!("run {runs} of {mirror}"),
        Duration::from_secs(30),
        || serve.runs(mirror).len() >= runs && serve.mirror(mirror)["state"] == "idle",
    );
    serve.runs(mirror)[0]["report"].clone()
}

/// Posts a signed GitHub push of `refname` from `old` to `new` for `mirror`; returns once the
/// service has committed the event.
fn post_push(serve: &Serve, mirror: &str, refname: &str, old: &str, new: &str) {
    let body = serde_json::json!({ "ref": refname, "before": old, "after": new })
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
}

/// A git that logs as [`logging_git`] does and, while `<dir>/hold` exists, holds every fetch
/// (for a minute at most) once it has marked it in `<dir>/fetching`.
fn git_holding_fetches(dir: &Path, log: &Path) -> String {
    let logging = logging_git(dir, log);
    let (hold, fetching) = (dir.join("hold"), dir.join("fetching"));
    let path = dir.join("git-holding-fetches");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$1\" = fetch ] && [ -e '{hold}' ]; then\n  touch '{fetching}'\n  i=0\n  while [ -e '{hold}' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\nfi\nexec '{logging}' \"$@\"\n",
            hold = hold.display(),
            fetching = fetching.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[test]
fn pushes_that_come_in_while_a_run_fetches_are_taken_in_and_only_the_last_commit_is_pushed() {
    let (src, dst) = (Repo::source("later-src"), Repo::empty("later-dst"));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("git.log");
    let git = git_holding_fetches(dir.path(), &log);
    let toml = mirror_toml(
        "app",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    let serve = Serve::start_with_env("", &toml, &[("FERRY_GIT", git.as_str())]);
    serve.wait_converged("app", &src.path(), &dst.path());
    // From here on the destination logs every update of its branches.
    let status = std::process::Command::new(ferry_testkit::git_binary().unwrap())
        .arg("-C")
        .arg(dst.path())
        .args(["config", "core.logAllRefUpdates", "true"])
        .status()
        .unwrap();
    assert!(status.success());
    let runs = serve.runs("app").len();
    let first = src.refs()["refs/heads/main"].clone();

    // Three pushes, one after another; the run the first one starts is held in its fetch
    // until the other two are in the queue.
    std::fs::write(dir.path().join("hold"), "").unwrap();
    let mut old = first.clone();
    for (i, message) in ["one", "two", "three"].into_iter().enumerate() {
        let new = src.commit(message);
        src.push(&["main"]);
        post_push(&serve, "app", "refs/heads/main", &old, &new);
        if i == 0 {
            let fetching = dir.path().join("fetching");
            serve.wait("the first push's fetch", Duration::from_secs(30), || {
                fetching.exists()
            });
        }
        old = new;
    }
    std::fs::remove_file(dir.path().join("hold")).unwrap();

    let report = finished_run(&serve, runs + 1);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        serve.runs("app").len(),
        runs + 1,
        "one run for the three pushes"
    );
    assert_eq!(
        serve.mirror("app")["behind_since"],
        Value::Null,
        "every event handled"
    );
    let main = ref_entry(&report, "refs/heads/main");
    assert_eq!(main["outcome"], "updated", "{report}");
    assert_eq!(dst.refs()["refs/heads/main"], old);
    let reflog = std::fs::read_to_string(dst.path().join("logs/refs/heads/main")).unwrap();
    let updates: Vec<(&str, &str)> = reflog
        .lines()
        .filter_map(|l| l.split_whitespace().next().zip(l.split_whitespace().nth(1)))
        .collect();
    assert_eq!(
        updates,
        [(first.as_str(), old.as_str())],
        "the destination took the last commit, in one update"
    );
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

#[test]
fn an_event_id_the_source_does_not_have_falls_back_to_fetching_the_ref_by_name() {
    let (src, dst) = (Repo::source("badid-src"), Repo::empty("badid-dst"));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("git.log");
    let serve = serve(&src, &dst, &log);
    src.commit("main moves");
    src.push(&["main"]);
    std::fs::remove_file(&log).unwrap();

    // The delivery's `after` is an id no repository has.
    let report = push_webhook(&serve, "refs/heads/main", 2);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(dst.refs()["refs/heads/main"], src.refs()["refs/heads/main"]);
    let fetched = fetches(&log);
    assert!(
        fetched
            .last()
            .is_some_and(|f| f.ends_with(" +refs/heads/main:refs/heads/main")),
        "the ref was fetched by name in the end: {fetched:?}"
    );
    assert_eq!(planned_refs(&report), ["refs/heads/main"], "{report}");
}

/// The requests nginx served for the repository at `url` with this request line start
/// (e.g. `POST`) and path end (e.g. `/git-upload-pack`).
fn http_requests(url: &str, method: &str, end: &str) -> usize {
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| format!("\"{method} /{path}{end}"))
        .expect("an http url");
    std::fs::read_to_string(servers().http_access_log())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&path))
        .count()
}

#[test]
fn a_push_whose_new_id_is_ahead_of_the_cache_is_fetched_by_id_without_listing_the_source() {
    let (src, dst) = (Repo::source("byid-src"), Repo::empty("byid-dst"));
    let source_url = src.url(Transport::Http);
    let toml = format!(
        "[[mirror]]\nname = \"app\"\nsource = {{ url = \"{source_url}\", username = \"{}\", password_env = \"SRC_PASSWORD\" }}\ndestinations = [\"{}\"]\nwebhook_secret_file = \"hook-secret\"\n",
        WRITER.0,
        dst.url(Transport::File),
    );
    let serve = Serve::start_with_env("", &toml, &[("SRC_PASSWORD", WRITER.1)]);
    serve.wait_converged("app", &src.path(), &dst.path());

    let new = src.commit("one more");
    src.push(&["main"]);
    let posts_before = http_requests(&source_url, "POST", "/git-upload-pack");
    let report = push_with_id(&serve, "app", "refs/heads/main", &new, 2);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(dst.refs()["refs/heads/main"], new);
    // Protocol v2 over HTTP: a fetch by name POSTs ls-refs, then fetch; by id only fetch.
    assert_eq!(
        http_requests(&source_url, "POST", "/git-upload-pack") - posts_before,
        1,
        "one request to the source's upload-pack: the fetch itself, no ref listing"
    );
}

/// The requests nginx served so far for the source's upload-pack: (advertisement GETs, POSTs).
fn upload_pack_requests(url: &str) -> (usize, usize) {
    (
        http_requests(url, "GET", "/info/refs?service=git-upload-pack"),
        http_requests(url, "POST", "/git-upload-pack"),
    )
}

/// A ferry with its own cache that has synced `src` (over HTTP) to `dst` once.
fn synced_once(src: &Repo, dst: &Repo) -> Ferry {
    let ferry = Ferry::with_test_credentials();
    ferry
        .sync(&[&src.url(Transport::Http), &dst.url(Transport::File)])
        .assert_code(0);
    ferry
}

/// Commits to the source's main and syncs it (over HTTP) to `dst`; returns the requests the
/// sync made to the source's upload-pack (advertisement GETs, POSTs).
fn one_commit_synced(src: &Repo, dst: &Repo, ferry: &Ferry) -> (usize, usize) {
    let (s, d) = (src.url(Transport::Http), dst.url(Transport::File));
    src.commit("one more");
    src.push(&["main"]);
    let before = upload_pack_requests(&s);
    ferry.sync(&[&s, &d]).assert_code(0);
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
    let after = upload_pack_requests(&s);
    (after.0 - before.0, after.1 - before.1)
}

/// The refs `refs/pull/<n>/head` for n below `count`, at the source's main, outside the
/// default selection (a busy GitHub repository's pull requests).
fn add_pull_refs(src: &Repo, count: usize) {
    let head = src.refs()["refs/heads/main"].clone();
    let pulls: String = (0..count)
        .map(|n| format!("create refs/pull/{n}/head {head}\n"))
        .collect();
    crate::engine_trust::update_refs(&src.path(), &pulls);
}

/// Syncs `src` (over HTTP) to `dst` when nothing changed; returns the requests the sync made
/// to the source's upload-pack (advertisement GETs, POSTs).
fn no_op_synced(src: &Repo, dst: &Repo, ferry: &Ferry) -> (usize, usize) {
    let s = src.url(Transport::Http);
    let before = upload_pack_requests(&s);
    ferry
        .sync(&[&s, &dst.url(Transport::File)])
        .assert_all_unchanged(0);
    let after = upload_pack_requests(&s);
    (after.0 - before.0, after.1 - before.1)
}

/// A source that advertises few refs is fetched with protocol v0 over HTTP: the advertisement
/// (the answer to the fetch's first request) is the listing. A one-commit sync then costs one
/// POST to the source (v2: `ls-refs`, then the fetch), and a no-op none.
#[test]
fn a_source_advertising_few_refs_is_listed_by_the_fetch_s_first_request_over_http() {
    let (src, dst) = (Repo::source("v0-src"), Repo::empty("v0-dst"));
    src.git(&["tag", "-a", "-m", "a release", "v1"]);
    src.push(&["v1"]);
    let ferry = synced_once(&src, &dst);

    assert_eq!(
        one_commit_synced(&src, &dst, &ferry),
        (1, 1),
        "one advertisement, one fetch"
    );

    assert_eq!(
        no_op_synced(&src, &dst, &ferry),
        (1, 0),
        "a no-op: the advertisement alone"
    );
}

/// A source advertising thousands of refs outside the selection (a busy GitHub repository's
/// `refs/pull/*`) is fetched with protocol v2 once ferry has seen them, so that it lists only
/// the selection.
#[test]
fn a_source_advertising_many_refs_beyond_the_selection_is_fetched_with_ref_prefixes() {
    let (src, dst) = (Repo::source("v2-src"), Repo::empty("v2-dst"));
    add_pull_refs(&src, 2_100);
    let ferry = synced_once(&src, &dst);

    assert_eq!(
        one_commit_synced(&src, &dst, &ferry),
        (1, 2),
        "capabilities, then ls-refs (the selection only) and the fetch"
    );
}

/// A source that comes to advertise thousands of refs beyond the selection while its selected
/// refs stay put is fetched with v2 from the sync after the first no-op that saw them: that
/// no-op's fetch is stopped once its listing matches, and the count is kept before.
#[test]
fn a_source_that_grows_many_refs_beyond_the_selection_is_fetched_with_v2_after_one_no_op() {
    let (src, dst) = (Repo::source("grow-src"), Repo::empty("grow-dst"));
    let ferry = synced_once(&src, &dst);
    add_pull_refs(&src, 2_100);

    assert_eq!(
        no_op_synced(&src, &dst, &ferry),
        (1, 0),
        "v0: the advertisement alone, 2,101 refs"
    );
    assert_eq!(
        no_op_synced(&src, &dst, &ferry),
        (1, 1),
        "v2: capabilities, then ls-refs of the selection"
    );
}

/// A source whose v0 advertisement the fetch's trace does not give as a listing (a ref name
/// past ASCII outside the selection, which git's trace escapes) is fetched with v2 from then
/// on, which does not list that ref at all.
#[test]
fn a_source_whose_v0_advertisement_is_unreadable_is_fetched_with_v2_from_then_on() {
    let (src, dst) = (
        Repo::source("unreadable-src"),
        Repo::empty("unreadable-dst"),
    );
    let head = src.refs()["refs/heads/main"].clone();
    crate::engine_trust::update_refs(&src.path(), &format!("create refs/pull/café {head}\n"));
    let ferry = synced_once(&src, &dst);

    assert_eq!(
        one_commit_synced(&src, &dst, &ferry),
        (1, 2),
        "capabilities, then ls-refs (the selection only) and the fetch"
    );
}

#[test]
fn a_stale_event_naming_an_older_id_does_not_move_the_destination_back() {
    let (src, dst) = (Repo::source("stale-src"), Repo::empty("stale-dst"));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("git.log");
    let serve = serve(&src, &dst, &log);
    let older = src.commit("older");
    src.push(&["main"]);
    let report = push_with_id(&serve, "app", "refs/heads/main", &older, 2);
    assert_eq!(report["ok"], true, "{report}");
    let newer = src.commit("newer");
    src.push(&["main"]);
    let report = push_with_id(&serve, "app", "refs/heads/main", &newer, 3);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(dst.refs()["refs/heads/main"], newer);

    // The first delivery again (a redelivery, or one that was held up): its id is behind the
    // cache, git refuses to move the ref back, and the ref fetched by name is still the newer.
    let report = push_with_id(&serve, "app", "refs/heads/main", &older, 4);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(dst.refs()["refs/heads/main"], newer, "{report}");
    assert_eq!(src.refs()["refs/heads/main"], newer);

    // A force-push: the event's id is not ahead of the cache either, and it is what the
    // source holds, so the ref fetched by name brings it.
    src.git(&["reset", "-q", "--hard", &older]);
    let rewritten = src.commit("rewritten");
    src.push(&["main"]);
    let report = push_with_id(&serve, "app", "refs/heads/main", &rewritten, 5);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(dst.refs()["refs/heads/main"], rewritten, "{report}");
}
