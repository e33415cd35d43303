//! What the engine trusts: a cache is only rebuilt on evidence that its own objects are
//! damaged, never because a remote failed; and the planner's ancestry questions cost a bounded
//! number of git processes however many refs lag.

use crate::failures::bulky_source;
use crate::harness::{branches_and_tags, servers, Ferry, Repo, Transport};
use ferry_testkit::{git, ProxyMode, TcpProxy};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A `FERRY_GIT` that appends each call's arguments to a log, one line per process ferry
/// spawns, and then runs the real git.
struct GitLog {
    _dir: tempfile::TempDir,
    wrapper: PathBuf,
    log: PathBuf,
}

impl GitLog {
    fn new() -> GitLog {
        let real = ferry_testkit::git_binary()
            .expect("git")
            .display()
            .to_string();
        GitLog::wrapping(&real)
    }

    /// A log of the calls that then run `real` (git, or another wrapper of it).
    fn wrapping(real: &str) -> GitLog {
        let dir = tempfile::tempdir().expect("temp dir");
        let wrapper = dir.path().join("git-logging");
        let log = dir.path().join("calls.log");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{real}' \"$@\"\n",
                log.display()
            ),
        )
        .expect("write the wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        GitLog {
            _dir: dir,
            wrapper,
            log,
        }
    }

    fn program(&self) -> String {
        self.wrapper.display().to_string()
    }

    /// The calls logged so far, and a fresh log from here on.
    fn take(&self) -> Vec<String> {
        let calls = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        calls.lines().map(str::to_owned).collect()
    }
}

/// The git subcommand of a logged call (after any `-c key=value` options).
fn subcommand(call: &str) -> &str {
    let mut words = call.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-c" {
            words.next();
        } else {
            return w;
        }
    }
    ""
}

/// A logged `git push`, also one whose arguments start with `-c` options.
fn is_push(call: &str) -> bool {
    call.split_whitespace().any(|w| w == "push")
}

fn count(calls: &[String], sub: &str) -> usize {
    calls.iter().filter(|c| subcommand(c) == sub).count()
}

/// The one cache repository under a ferry cache dir.
fn cache_repo(cache_dir: &Path) -> PathBuf {
    std::fs::read_dir(cache_dir)
        .expect("cache dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "git"))
        .expect("a cache repository")
}

/// Fills the cache of `src` with a sync to a scratch destination and plants a file in it, which
/// a rebuilt cache loses. Returns the planted file; the git log starts empty.
fn warm_cache(ferry: &Ferry, git_log: &GitLog, src: &Repo) -> PathBuf {
    let warm = Repo::empty("trust-warm-dst");
    ferry
        .sync(&[&src.url(Transport::File), &warm.url(Transport::File)])
        .assert_code(0);
    let planted = cache_repo(ferry.cache.path()).join("planted-by-the-test");
    std::fs::write(&planted, "a rebuilt cache loses this file").expect("plant");
    git_log.take();
    planted
}

/// The cache survived the run that made `calls`: the planted file is there, git never created a
/// cache, and the source was fetched `fetches` times: once when it changed, not at all when the
/// cache held it already (a wiped cache fetches it again).
fn assert_cache_kept(planted: &Path, calls: &[String], fetches: usize) {
    assert!(planted.exists(), "the cache was rebuilt: {calls:#?}");
    assert_eq!(count(calls, "init"), 0, "a cache was created: {calls:#?}");
    assert_eq!(
        count(calls, "fetch"),
        fetches,
        "the source was fetched again: {calls:#?}"
    );
}

/// Repacks `repo` and garbles the middle of `oid`'s compressed data in the pack, as a bad disk
/// would: the pack's index still lists the object, reading it fails.
fn corrupt_object(repo: &Path, oid: &str) {
    git(repo, &["repack", "-a", "-d", "-q"]).expect("repack");
    let pack = std::fs::read_dir(repo.join("objects/pack"))
        .expect("pack dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "pack"))
        .expect("a pack");
    let listing =
        git(repo, &["verify-pack", "-v", &pack.display().to_string()]).expect("verify-pack");
    // "<oid> <type> <size> <size in pack> <offset> ..."
    let fields: Vec<&str> = listing
        .lines()
        .find(|l| l.starts_with(oid))
        .unwrap_or_else(|| panic!("{oid} is not in the pack: {listing}"))
        .split_whitespace()
        .collect();
    let (len, offset): (usize, usize) = (fields[3].parse().unwrap(), fields[4].parse().unwrap());
    let mut bytes = std::fs::read(&pack).expect("read pack");
    // Past the object's header, inside its zlib stream.
    for b in &mut bytes[offset + 4..offset + len.min(40)] {
        *b ^= 0xff;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(&pack, bytes).expect("write pack");
}

/// A destination hanging up mid-push is the destination's failure. The cache stays as it is,
/// and the rerun pushes from that same cache.
#[test]
fn a_destination_cut_mid_push_leaves_the_cache_in_place() {
    let src = bulky_source("trust-cut-src");
    let dst = Repo::empty("trust-cut-dst");
    let git_log = GitLog::new();
    let ferry = Ferry::new().env("FERRY_GIT", &git_log.program());
    let planted = warm_cache(&ferry, &git_log, &src);
    let s = src.url(Transport::File);

    let target: SocketAddr = ([127, 0, 0, 1], servers().git_daemon_port()).into();
    let proxy = TcpProxy::start(target, ProxyMode::CutAfter { bytes: 6000 }).unwrap();
    let url = format!("git://127.0.0.1:{}/{}.git", proxy.port(), dst.name);
    // The listing fits under the cut; the push's pack does not.
    let run = ferry.sync(&[&s, &url]);
    run.assert_code(1);
    assert_eq!(
        run.dest_error_kind(0).as_deref(),
        Some("network"),
        "{}",
        run.stdout
    );
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "failed");
    let calls = git_log.take();
    assert!(count(&calls, "push") >= 1, "the push was cut: {calls:#?}");
    assert_cache_kept(&planted, &calls, 0);

    proxy.set_mode(ProxyMode::Forward);
    ferry.sync(&[&s, &url]).assert_code(0);
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
    assert_cache_kept(&planted, &git_log.take(), 0);
}

/// A local destination whose own history is damaged fails the push with git's words for
/// unreadable objects ("inflate: data stream error", "bad object"), printed by its
/// receive-pack without a "remote:" prefix. They are about the destination, not the cache.
#[test]
fn a_damaged_destination_fails_without_wiping_the_cache() {
    let (src, dst) = (Repo::source("trust-dd-src"), Repo::empty("trust-dd-dst"));
    let git_log = GitLog::new();
    let ferry = Ferry::new().env("FERRY_GIT", &git_log.program());
    let planted = warm_cache(&ferry, &git_log, &src);
    let [s, d] = [src.url(Transport::File), dst.url(Transport::File)];
    ferry.sync(&[&s, &d]).assert_code(0);
    git_log.take();
    corrupt_object(&dst.path(), &dst.refs()["refs/heads/main"]);
    src.commit("after the destination broke");
    src.push(&["main"]);

    let run = ferry.sync(&[&s, &d]);
    run.assert_code(1);
    assert_eq!(
        run.ref_result(0, "refs/heads/main").1,
        "rejected",
        "{}",
        run.stdout
    );
    assert_cache_kept(&planted, &git_log.take(), 1);
}

/// A git killed with its ferry mid-fetch (`kill -9`, a Lambda timeout) can leave a ref's lock
/// file in the cache. Nothing else runs git in the cache while ferry holds its lock, so the
/// file is stale: the next run removes it and fetches, instead of failing on it for ever.
#[test]
fn a_lock_file_a_killed_fetch_left_in_the_cache_does_not_stop_the_next_sync() {
    let (src, dst) = (Repo::source("trust-lk-src"), Repo::empty("trust-lk-dst"));
    let git_log = GitLog::new();
    let ferry = Ferry::new().env("FERRY_GIT", &git_log.program());
    let planted = warm_cache(&ferry, &git_log, &src);
    let lock = cache_repo(ferry.cache.path()).join("refs/heads/main.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).expect("refs dir");
    std::fs::write(&lock, "").expect("plant a stale lock");
    src.commit("after the killed fetch");
    src.push(&["main"]);

    let [s, d] = [src.url(Transport::File), dst.url(Transport::File)];
    ferry.sync(&[&s, &d]).assert_code(0);
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
    assert!(!lock.exists(), "the stale lock is still there");
    // The failed fetch and the one after the lock was removed; the cache was kept.
    assert_cache_kept(&planted, &git_log.take(), 2);
}

/// A source whose pack is corrupt sends data that fails to unpack in the cache, and git says
/// so in the cache's process ("inflate: data stream error"). The cache's own objects are fine:
/// the source fails, the cache stays.
#[test]
fn a_corrupt_source_fails_without_wiping_the_cache() {
    let src = bulky_source("trust-cs-src");
    let dst = Repo::empty("trust-cs-dst");
    let git_log = GitLog::new();
    let ferry = Ferry::new().env("FERRY_GIT", &git_log.program());
    let planted = warm_cache(&ferry, &git_log, &src);
    src.work
        .commit("late.txt", &crate::failures::noise(100_000, 99), "late")
        .unwrap();
    src.push(&["main"]);
    let blob = src.git(&["rev-parse", "HEAD:late.txt"]);
    corrupt_object(&src.path(), &blob);

    let run = ferry.sync(&[&src.url(Transport::File), &dst.url(Transport::File)]);
    run.assert_code(1);
    assert!(run.source_error_kind().is_some(), "{}", run.stdout);
    assert_cache_kept(&planted, &git_log.take(), 1);
}

/// The other way round: when the cache's own pack is corrupt, a push sends the garbled bytes
/// and the destination fails to unpack them ("remote unpack failed"). That is a reason to check
/// the cache: it is found damaged, rebuilt, and the run still converges.
#[test]
fn a_corrupt_pack_in_the_cache_is_rebuilt_when_a_push_fails_on_it() {
    let src = bulky_source("trust-cc-src");
    let dst = Repo::empty("trust-cc-dst");
    let git_log = GitLog::new();
    let ferry = Ferry::new().env("FERRY_GIT", &git_log.program());
    let planted = warm_cache(&ferry, &git_log, &src);
    let cache = cache_repo(ferry.cache.path());
    let blob = src.git(&["rev-parse", "HEAD:f0.txt"]);
    corrupt_object(&cache, &blob);

    let run = ferry.sync(&[&src.url(Transport::File), &dst.url(Transport::File)]);
    run.assert_code(0);
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
    assert!(!planted.exists(), "the damaged cache was rebuilt");
}

/// Applies `update-ref --stdin` lines ("update <ref> <oid>") to a bare repository.
pub(crate) fn update_refs(repo: &Path, lines: &str) {
    use std::io::Write;
    let mut cmd = ferry_testkit::git_command(repo).expect("git");
    cmd.args(["update-ref", "--stdin"])
        .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("update-ref");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("write");
    assert!(child.wait().expect("wait").success(), "update-ref failed");
}

/// A new commit on top of `parent` (same tree) in a bare repository.
fn commit_on(repo: &Path, parent: &str, message: &str) -> String {
    let tree = git(repo, &["rev-parse", &format!("{parent}^{{tree}}")]).expect("tree");
    git(repo, &["commit-tree", &tree, "-p", parent, "-m", message]).expect("commit-tree")
}

/// A destination over 5,000 refs behind its source. The planner's ancestry questions are
/// answered by a handful of git processes, not one per ref, and the answers are git's:
/// fast-forwards update; a destination ahead of its source, or on a commit the cache does not
/// have, is diverged and kept.
#[test]
fn thousands_of_lagging_refs_are_planned_with_a_bounded_number_of_git_processes() {
    let servers = servers();
    let (src_name, dst_name) = (
        crate::harness::unique("lag-src"),
        crate::harness::unique("lag-dst"),
    );
    let (src, dst) = (servers.repo_path(&src_name), servers.repo_path(&dst_name));
    // Identical repositories: 60 commits on main, 2,700 branches and 2,700 tags on them (every
    // 8th tag annotated).
    for path in [&src, &dst] {
        ferry_testkit::generate_repo(path, 60, 64, 5400, 11).expect("generate");
    }
    let branch = |i: usize| format!("refs/heads/b-{i}");
    let tag = |i: usize| format!("refs/tags/t-{i}");
    let old_tip = git(&src, &["rev-parse", "main"]).unwrap();
    let root = git(&src, &["rev-list", "--max-parents=0", "main"]).unwrap();
    // The source moves main, b-10.. and the lightweight tags forward (5,053 refs), and b-5..b-9
    // back to the root.
    let new_tip = commit_on(&src, "main", "next");
    let forward: Vec<String> = std::iter::once("refs/heads/main".to_owned())
        .chain((10..2700).map(branch))
        .chain((0..2700).filter(|i| i % 8 != 0).map(tag))
        .collect();
    let mut moves = String::new();
    for name in &forward {
        moves += &format!("update {name} {new_tip}\n");
    }
    for i in 5..10 {
        moves += &format!("update {} {root}\n", branch(i));
    }
    update_refs(&src, &moves);
    // The destination has b-0..b-4 on a commit only it has, and b-5..b-9 on the old tip.
    let theirs = commit_on(&dst, "main", "out of band");
    let mut moves = String::new();
    for i in 0..5 {
        moves += &format!("update {} {theirs}\n", branch(i));
    }
    for i in 5..10 {
        moves += &format!("update {} {old_tip}\n", branch(i));
    }
    update_refs(&dst, &moves);

    let git_log = GitLog::new();
    let ferry = Ferry::new().env("FERRY_GIT", &git_log.program());
    let run = ferry.sync(&[
        &Transport::File.url(&src_name),
        &Transport::File.url(&dst_name),
    ]);
    let calls = git_log.take();
    let mut per_subcommand = std::collections::BTreeMap::new();
    for c in &calls {
        *per_subcommand.entry(subcommand(c)).or_insert(0) += 1;
    }
    assert!(
        calls.len() < 50,
        "{} git processes for one sync: {per_subcommand:?}",
        calls.len()
    );
    // Diverged refs fail the run; everything else is synced.
    run.assert_code(1);
    let outcomes = run.outcomes(0);
    for i in 0..10 {
        assert_eq!(outcomes[&branch(i)], "diverged", "{}", branch(i));
    }
    for name in &forward {
        assert_eq!(outcomes[name], "updated", "{name}");
    }
    let mut expected = branches_and_tags(&src);
    for i in 0..5 {
        expected.insert(branch(i), theirs.clone());
    }
    for i in 5..10 {
        expected.insert(branch(i), old_tip.clone());
    }
    assert_eq!(branches_and_tags(&dst), expected);
}

/// git push compares each explicit refspec and each lease with every ref the destination
/// advertises. A first sync of thousands of refs used to push them 2,000 at a time, each
/// batch slower than the last (32 s for 10,000 refs). Many refs now go in one push by a
/// pattern refspec, their leases read from remote-tracking refs, whose arguments do not grow
/// with the number of refs.
#[test]
fn a_first_sync_of_thousands_of_refs_creates_them_in_one_push() {
    let name = crate::harness::unique("bulk-src");
    let src = servers().repo_path(&name);
    ferry_testkit::generate_repo(&src, 40, 64, 4_500, 11).expect("generate");
    let dst = Repo::empty("bulk-dst");
    let git_log = GitLog::new();
    let ferry = Ferry::new().env("FERRY_GIT", &git_log.program());
    let (s, d) = (Transport::File.url(&name), dst.url(Transport::File));

    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(branches_and_tags(&dst.path()), branches_and_tags(&src));
    let push = created_in_one_push(&run, 4_501, &git_log);
    assert!(
        push.split_whitespace().count() < 20,
        "no per-ref arguments: {}",
        &push[..push.len().min(300)]
    );

    // The repository the push ran from is gone; one a killed run left behind goes next time.
    let cache = cache_repo(ferry.cache.path());
    assert_eq!(sending_repos(&cache), Vec::<String>::new());
    std::fs::create_dir_all(cache.join("ferry-send-left-by-a-killed-run.git/objects"))
        .expect("plant");

    // 300 new tags and one moved branch, in one push again: the branch's lease is a
    // remote-tracking ref of the repository the push runs from.
    let main = git(&src, &["rev-parse", "refs/heads/main"]).expect("main");
    let moved = commit_on(&src, &main, "moved");
    let mut lines = format!("update refs/heads/main {moved}\n");
    for i in 0..300 {
        lines.push_str(&format!("create refs/tags/bulk-{i} {moved}\n"));
    }
    update_refs(&src, &lines);
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(branches_and_tags(&dst.path()), branches_and_tags(&src));
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "updated");
    assert_eq!(run.ref_result(0, "refs/tags/bulk-299").1, "created");
    let calls = git_log.take();
    let pushes: Vec<&String> = calls.iter().filter(|c| is_push(c)).collect();
    assert_eq!(pushes.len(), 1, "{pushes:#?}");
    assert!(
        pushes[0].contains(" --force-with-lease ") && pushes[0].split_whitespace().count() < 20,
        "one lease option for every ref: {}",
        &pushes[0][..pushes[0].len().min(300)]
    );
    assert_eq!(sending_repos(&cache), Vec::<String>::new());
}

/// Asserts that `run` reported at least `at_least` refs, every one created, and that git ran
/// exactly one push (the logged calls since the log was last taken); returns that push.
fn created_in_one_push(run: &crate::harness::Run, at_least: usize, git_log: &GitLog) -> String {
    let outcomes = run.outcomes(0);
    assert!(
        outcomes.len() >= at_least,
        "{} refs reported",
        outcomes.len()
    );
    assert!(
        outcomes.values().all(|o| o == "created"),
        "every ref is reported created: {outcomes:?}"
    );
    let calls = git_log.take();
    let pushes: Vec<&String> = calls.iter().filter(|c| is_push(c)).collect();
    assert_eq!(pushes.len(), 1, "{pushes:#?}");
    pushes[0].clone()
}

/// The names of the per-push repositories in a cache.
fn sending_repos(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .expect("cache")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ferry-send-"))
        .collect()
}

/// Hundreds of branches moved at once go in one bulk push, and each keeps its lease: a
/// branch someone moved on the destination between ferry's listing and its push fails its
/// lease (the remote-tracking ref holds what ferry expected), is re-planned and kept; the
/// rest are updated.
#[test]
fn a_bulk_update_keeps_a_lease_on_every_ref() {
    let (src, dst, s, d) = bulk_pair(Transport::File, "bulk-move", 9);
    let ferry = Ferry::new();
    ferry.sync(&[&s, &d]).assert_code(0);
    let branches = every_branch_one_commit_forward(&src, "");
    assert!(branches >= 200, "{branches} branches");

    let racer = ferry_testkit::WorkRepo::new().expect("racer");
    let theirs = racer
        .commit("race.txt", "racing", "racing commit")
        .expect("commit");
    let dir = tempfile::tempdir().expect("dir");
    let (wrapper, marker) = crate::failures::racing_git(
        dir.path(),
        racer.path(),
        &dst.path().display().to_string(),
        "HEAD:refs/heads/b-3",
    );
    let run = ferry.env("FERRY_GIT", &wrapper).sync(&[&s, &d]);
    assert!(marker.exists(), "the race was staged");
    run.assert_code(1);
    assert_eq!(
        run.ref_result(0, "refs/heads/b-3"),
        ("skip".into(), "diverged".into()),
        "{}",
        run.stdout
    );
    let mut expected = branches_and_tags(&src);
    expected.insert("refs/heads/b-3".into(), theirs);
    assert_eq!(branches_and_tags(&dst.path()), expected);
    let outcomes = run.outcomes(0);
    let updated = outcomes.values().filter(|o| *o == "updated").count();
    assert_eq!(updated, branches - 1, "{outcomes:?}");
}

/// An atomic mirror's push is one `git push --atomic` whatever it holds: a bulk of moved
/// branches and a delete (which a pattern cannot express) go together.
#[test]
fn an_atomic_bulk_push_carries_its_deletes_in_the_same_push() {
    let (src, dst, s, d) = bulk_pair(Transport::File, "bulk-atomic", 13);
    let git_log = GitLog::new();
    let ferry = Ferry::new().env("FERRY_GIT", &git_log.program());
    ferry.sync(&["--atomic", &s, &d]).assert_code(0);
    assert_eq!(branches_and_tags(&dst.path()), branches_and_tags(&src));

    update_refs(&src, "delete refs/heads/b-0\n");
    every_branch_one_commit_forward(&src, "refs/heads/b-0");
    git_log.take();
    let run = ferry.sync(&["--atomic", &s, &d]);
    run.assert_code(0);
    assert_eq!(branches_and_tags(&dst.path()), branches_and_tags(&src));
    assert_eq!(run.ref_result(0, "refs/heads/b-0").1, "deleted");
    let calls = git_log.take();
    let pushes: Vec<&String> = calls.iter().filter(|c| is_push(c)).collect();
    assert_eq!(pushes.len(), 1, "{pushes:#?}");
    assert!(
        pushes[0].contains(" --atomic ") && pushes[0].contains(" :refs/heads/b-0"),
        "{}",
        &pushes[0][..pushes[0].len().min(400)]
    );
}

/// Over HTTP(S) git's remote helper spells a pattern refspec and a bare lease out per ref and
/// compares each with every ref (56 s for 10,000 creates). Many creates there go in one push
/// of `<id>:<ref>` refspecs that git reads from a configuration file in the cache, removed
/// afterwards (or by the next run, when a run was killed); the push's arguments do not grow
/// with the number of refs.
#[test]
fn a_first_sync_over_http_pushes_hundreds_of_creates_listed_in_a_file_it_removes() {
    let (src, dst, s, d) = bulk_pair(Transport::Http, "bulk-http", 17);
    let git_log = GitLog::new();
    let ferry = Ferry::with_test_credentials().env("FERRY_GIT", &git_log.program());

    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(branches_and_tags(&dst.path()), branches_and_tags(&src));
    let push = created_in_one_push(&run, 400, &git_log);
    assert!(
        push.contains("include.path=") && push.split_whitespace().count() < 20,
        "the refspecs are in a file, not in the arguments: {}",
        &push[..push.len().min(300)]
    );
    let cache = cache_repo(ferry.cache.path());
    assert_eq!(sending_repos(&cache), Vec::<String>::new());

    // One a killed run left behind goes with the next run.
    std::fs::write(cache.join("ferry-send-left-by-a-killed-run.config"), "").expect("plant");
    ferry.sync(&[&s, &d]).assert_code(0);
    assert_eq!(sending_repos(&cache), Vec::<String>::new());
}

/// The creates of a first sync over HTTP carry no lease (see the test above). Refs someone
/// else created on the destination between ferry's listing and its push are refused by git as
/// a lost lease would refuse them, re-planned and kept: a branch at a commit ferry lacks
/// ("fetch first"), a branch at a commit of the source that is not an ancestor of the
/// source's ("non-fast-forward") and a tag ("already exists"); the rest arrive.
#[test]
fn refs_created_on_an_http_destination_during_a_bulk_first_sync_survive() {
    let (src, dst, s, d) = bulk_pair(Transport::Http, "bulk-http-race", 19);
    // A side branch of the source, so that the cache has its commit.
    let main = git(&src, &["rev-parse", "refs/heads/main"]).expect("main");
    let side = commit_on(&src, &format!("{main}~1"), "side");
    update_refs(&src, &format!("create refs/heads/side {side}\n"));
    let racer = ferry_testkit::WorkRepo::new().expect("racer");
    let theirs = racer
        .commit("race.txt", "racing", "racing commit")
        .expect("commit");
    racer
        .git(&["fetch", "-q", &src.display().to_string(), "refs/heads/side"])
        .expect("fetch side");
    let tag = first_tag(&src);
    let dir = tempfile::tempdir().expect("dir");
    let (wrapper, marker) = crate::failures::racing_git(
        dir.path(),
        racer.path(),
        &dst.path().display().to_string(),
        &format!("HEAD:refs/heads/b-7 HEAD:{tag} {side}:refs/heads/b-9"),
    );
    let git_log = GitLog::wrapping(&wrapper);

    let run = Ferry::with_test_credentials()
        .env("FERRY_GIT", &git_log.program())
        .sync(&[&s, &d]);
    assert!(marker.exists(), "the race was staged");
    run.assert_code(1);
    let calls = git_log.take();
    let first_push = calls.iter().find(|c| is_push(c)).expect("a push");
    assert!(
        first_push.contains("include.path="),
        "the creates went listed: {}",
        &first_push[..first_push.len().min(300)]
    );
    for name in ["refs/heads/b-7", "refs/heads/b-9", tag.as_str()] {
        let (action, outcome) = run.ref_result(0, name);
        assert!(
            action == "skip" && outcome == "diverged",
            "{name} re-planned against the new state: {action} {outcome}\n{}",
            run.stdout
        );
    }
    let mut expected = branches_and_tags(&src);
    expected.insert("refs/heads/b-7".into(), theirs.clone());
    expected.insert("refs/heads/b-9".into(), side);
    expected.insert(tag, theirs);
    assert_eq!(branches_and_tags(&dst.path()), expected, "the rest arrived");
}

/// A branch someone created on the destination during the sync, at an older commit of the
/// source's branch: ferry's create, pushed without a lease, fast-forwards it (nothing on the
/// destination is lost), and the report says it was updated, not created.
#[test]
fn a_branch_created_at_an_older_commit_during_an_http_bulk_sync_is_reported_updated() {
    let (src, dst, s, d) = bulk_pair(Transport::Http, "bulk-http-ff", 23);
    let older = git(&src, &["rev-parse", "refs/heads/b-7"]).expect("b-7");
    let newer = commit_on(&src, &older, "newer b-7");
    update_refs(&src, &format!("update refs/heads/b-7 {newer} {older}\n"));
    let dir = tempfile::tempdir().expect("dir");
    let (wrapper, marker) = crate::failures::racing_git(
        dir.path(),
        &src,
        &dst.path().display().to_string(),
        &format!("{older}:refs/heads/b-7"),
    );

    let run = Ferry::with_test_credentials()
        .env("FERRY_GIT", &wrapper)
        .sync(&[&s, &d]);
    assert!(marker.exists(), "the race was staged");
    run.assert_code(0);
    assert_eq!(branches_and_tags(&dst.path()), branches_and_tags(&src));
    assert_eq!(
        run.ref_result(0, "refs/heads/b-7"),
        ("create".into(), "updated".into()),
        "{}",
        run.stdout
    );
    assert!(
        run.ref_entry(0, "refs/heads/b-7")["reason"]
            .as_str()
            .is_some_and(|r| r.contains("already held this ref")),
        "{}",
        run.stdout
    );
}

/// The first tag of `repo` by name.
fn first_tag(repo: &Path) -> String {
    branches_and_tags(repo)
        .into_keys()
        .find(|n| n.starts_with("refs/tags/"))
        .expect("a tag")
}

/// A generated source of 400 refs (200 branches) served from the test servers' directory, an
/// empty destination, and their URLs over `transport`.
fn bulk_pair(transport: Transport, prefix: &str, seed: u64) -> (PathBuf, Repo, String, String) {
    let name = crate::harness::unique(&format!("{prefix}-src"));
    let src = servers().repo_path(&name);
    ferry_testkit::generate_repo(&src, 20, 64, 400, seed).expect("generate");
    let dst = Repo::empty(&format!("{prefix}-dst"));
    let (s, d) = (transport.url(&name), dst.url(transport));
    (src, dst, s, d)
}

/// Moves every branch of `src` but `except` one new commit forward; returns how many moved.
fn every_branch_one_commit_forward(src: &Path, except: &str) -> usize {
    let mut lines = String::new();
    for (n, old) in branches_and_tags(src) {
        if n.starts_with("refs/heads/") && n != except {
            lines.push_str(&format!("update {n} {} {old}\n", commit_on(src, &old, &n)));
        }
    }
    update_refs(src, &lines);
    lines.lines().count()
}
