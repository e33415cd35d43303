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
        let dir = tempfile::tempdir().expect("temp dir");
        let wrapper = dir.path().join("git-logging");
        let log = dir.path().join("calls.log");
        let real = ferry_testkit::git_binary()
            .expect("git")
            .display()
            .to_string();
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
/// cache, and the source was fetched once (a wiped cache fetches again).
fn assert_cache_kept(planted: &Path, calls: &[String]) {
    assert!(planted.exists(), "the cache was rebuilt: {calls:#?}");
    assert_eq!(count(calls, "init"), 0, "a cache was created: {calls:#?}");
    assert_eq!(
        count(calls, "fetch"),
        1,
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
    assert_cache_kept(&planted, &calls);

    proxy.set_mode(ProxyMode::Forward);
    ferry.sync(&[&s, &url]).assert_code(0);
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
    assert_cache_kept(&planted, &git_log.take());
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
    assert_cache_kept(&planted, &git_log.take());
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
    assert_cache_kept(&planted, &git_log.take());
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
