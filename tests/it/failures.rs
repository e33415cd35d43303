//! Failures are classified, explained, and never reported as success: credentials, missing
//! repositories, host keys, dead and stalling servers, cut connections, racing pushes.

use crate::harness::{branches_and_tags, servers, Ferry, Repo, Transport};
use ferry_testkit::{ProxyMode, TcpProxy, WorkRepo, READER, WRITER};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// Incompressible text, so transfers are as large as they look.
pub fn noise(len: usize, seed: u64) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0xff51_afd7_ed55_8ccd);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect()
}

#[test]
fn wrong_password_is_auth() {
    let (src, dst) = (Repo::source("auth-src"), Repo::empty("auth-dst"));
    let run = Ferry::with_test_credentials()
        .env("FERRY_DEST_PASSWORD", "not-the-password")
        .sync(&[&src.url(Transport::File), &dst.url(Transport::Http)]);
    run.assert_code(1);
    assert_eq!(
        run.dest_error_kind(0).as_deref(),
        Some("auth"),
        "{}",
        run.stdout
    );
    assert!(run.dest(0)["error"]["hint"]
        .as_str()
        .unwrap_or("")
        .contains("password"));
}

#[test]
fn read_only_user_is_permission() {
    let (src, dst) = (Repo::source("perm-src"), Repo::empty("perm-dst"));
    let run = Ferry::with_test_credentials()
        .env("FERRY_DEST_USERNAME", READER.0)
        .env("FERRY_DEST_PASSWORD", READER.1)
        .sync(&[&src.url(Transport::File), &dst.url(Transport::Http)]);
    run.assert_code(1);
    assert_eq!(
        run.dest_error_kind(0).as_deref(),
        Some("permission"),
        "{}",
        run.stdout
    );
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "failed");
}

#[test]
fn missing_repositories_are_not_found() {
    let src = Repo::source("nf-src");
    for t in [
        Transport::Http,
        Transport::Ssh,
        Transport::GitDaemon,
        Transport::File,
    ] {
        let run = Ferry::with_test_credentials()
            .sync(&[&src.url(Transport::File), &t.url("does-not-exist")]);
        run.assert_code(1);
        assert_eq!(
            run.dest_error_kind(0).as_deref(),
            Some("not_found"),
            "{t:?}: {}",
            run.stdout
        );
    }
    let run = Ferry::with_test_credentials().sync(&[
        &Transport::Http.url("no-such-source"),
        &src.url(Transport::File),
    ]);
    run.assert_code(1);
    assert_eq!(
        run.source_error_kind().as_deref(),
        Some("not_found"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.dest(0)["ok"],
        false,
        "a destination is never ok when its source failed"
    );
}

#[test]
fn create_makes_a_missing_local_destination() {
    let src = Repo::source("create-src");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("new/mirror.git");
    let run = Ferry::new().sync(&[
        "--create",
        &src.url(Transport::File),
        &dest.display().to_string(),
    ]);
    run.assert_code(0);
    assert_eq!(branches_and_tags(&dest), branches_and_tags(&src.path()));
}

/// ferry killed (`kill -9`, a Lambda timeout) while it creates a local destination leaves no
/// half-made repository at the destination's path: the next run creates it whole, and
/// removes what the killed run left beside it.
#[test]
fn a_run_killed_while_creating_a_local_destination_leaves_no_half_made_repository() {
    let src = Repo::source("create-killed-src");
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("mirrors");
    let dest = parent.join("half-made-dest.git");
    let (s, d) = (src.url(Transport::File), dest.display().to_string());
    // A git that, asked to create the destination, creates part of it (a repository without
    // its HEAD) and then kills ferry, its parent.
    let wrapper = dir.path().join("git-killing-ferry");
    let real_git = ferry_testkit::git_binary().unwrap().display().to_string();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor last; do :; done\ncase \" $* \" in *\" init \"*) case \"$last\" in *half-made-dest.git*)\n  '{real_git}' \"$@\" && rm -f \"$last/HEAD\"; kill -9 $PPID; exit 137;;\nesac;; esac\nexec '{real_git}' \"$@\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ferry = Ferry::new().env("FERRY_GIT", &wrapper.display().to_string());
    let killed = ferry.sync(&["--create", &s, &d]);
    assert_eq!(killed.code, -1, "ferry was killed: {}", killed.stderr);
    assert!(
        !dest.exists(),
        "a half-made repository at the destination's path"
    );
    let left_by_the_killed_run = parent.join(".half-made-dest.git.ferry-new");
    assert!(
        left_by_the_killed_run.join("objects").is_dir()
            && !left_by_the_killed_run.join("HEAD").exists(),
        "the killed run was creating the destination beside its path"
    );

    let ferry = ferry.env("FERRY_GIT", &real_git);
    ferry.sync(&["--create", &s, &d]).assert_code(0);
    assert_eq!(branches_and_tags(&dest), branches_and_tags(&src.path()));
    let left: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["half-made-dest.git"], "only the destination is left");
}

#[test]
fn unknown_and_changed_host_keys_are_told_apart() {
    let (src, dst) = (Repo::source("hk-src"), Repo::empty("hk-dst"));
    let s = servers();
    for (file, kind) in [
        (s.empty_known_hosts(), "host_key_unknown"),
        (s.wrong_known_hosts(), "host_key_changed"),
    ] {
        let run = Ferry::with_test_credentials()
            .env("FERRY_KNOWN_HOSTS", &file.display().to_string())
            .sync(&[&src.url(Transport::File), &dst.url(Transport::Ssh)]);
        run.assert_code(1);
        assert_eq!(
            run.dest_error_kind(0).as_deref(),
            Some(kind),
            "{}",
            run.stdout
        );
    }
}

fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn server_down_is_network() {
    let src = Repo::source("down-src");
    let port = dead_port();
    for url in [
        format!("http://127.0.0.1:{port}/git/x.git"),
        format!("git://127.0.0.1:{port}/x.git"),
    ] {
        let run = Ferry::with_test_credentials().sync(&[&src.url(Transport::File), &url]);
        run.assert_code(1);
        assert_eq!(
            run.dest_error_kind(0).as_deref(),
            Some("network"),
            "{url}: {}",
            run.stdout
        );
    }
}

#[test]
fn a_stalling_server_times_out_within_the_limit() {
    let src = Repo::source("stall-src");
    let target: SocketAddr = ([127, 0, 0, 1], servers().git_daemon_port()).into();
    let proxy = TcpProxy::start(target, ProxyMode::Stall).unwrap();
    let url = format!("git://127.0.0.1:{}/{}.git", proxy.port(), src.name);
    let started = Instant::now();
    let run = Ferry::new().sync(&[
        "--timeout",
        "2s",
        &url,
        &Repo::empty("stall-dst").url(Transport::File),
    ]);
    run.assert_code(1);
    assert_eq!(
        run.source_error_kind().as_deref(),
        Some("timeout"),
        "{}",
        run.stdout
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// A source with about 500 KB of incompressible history: transfers long enough to cut.
pub fn bulky_source(prefix: &str) -> Repo {
    let src = Repo::empty(prefix);
    for i in 0..5 {
        src.work
            .commit(&format!("f{i}.txt"), &noise(100_000, i), "bulk")
            .unwrap();
    }
    src.push(&["main"]);
    src
}

#[test]
fn a_connection_cut_mid_fetch_fails_and_a_rerun_converges() {
    let src = bulky_source("cut-src");
    let dst = Repo::empty("cut-dst");
    let target: SocketAddr = ([127, 0, 0, 1], servers().git_daemon_port()).into();
    let proxy = TcpProxy::start(target, ProxyMode::CutAfter { bytes: 4000 }).unwrap();
    let url = format!("git://127.0.0.1:{}/{}.git", proxy.port(), src.name);
    let ferry = Ferry::new();
    let run = ferry.sync(&[&url, &dst.url(Transport::File)]);
    run.assert_code(1);
    assert_eq!(
        run.source_error_kind().as_deref(),
        Some("network"),
        "{}",
        run.stdout
    );
    assert!(dst.refs().is_empty());
    proxy.set_mode(ProxyMode::Forward);
    ferry
        .sync(&[&url, &dst.url(Transport::File)])
        .assert_code(0);
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

#[test]
fn a_connection_cut_mid_push_fails_and_a_rerun_converges() {
    let src = bulky_source("cutp-src");
    let dst = Repo::empty("cutp-dst");
    let target: SocketAddr = ([127, 0, 0, 1], servers().git_daemon_port()).into();
    let proxy = TcpProxy::start(target, ProxyMode::Forward).unwrap();
    let url = format!("git://127.0.0.1:{}/{}.git", proxy.port(), dst.name);
    let ferry = Ferry::new();
    // The listing goes through; the push is cut.
    proxy.set_mode(ProxyMode::CutAfter { bytes: 6000 });
    let run = ferry.sync(&[&src.url(Transport::File), &url]);
    run.assert_code(1);
    assert_eq!(
        run.dest_error_kind(0).as_deref(),
        Some("network"),
        "{}",
        run.stdout
    );
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "failed");
    proxy.set_mode(ProxyMode::Forward);
    ferry
        .sync(&[&src.url(Transport::File), &url])
        .assert_code(0);
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

/// A FERRY_GIT that, the first time ferry pushes (`push` among its arguments, which may start
/// with `-c` options), first pushes `refspecs` from `racer` to the
/// destination `dst` (someone else's push landing between ferry's listing and its push).
/// Returns the wrapper's path and the marker file it leaves once the race was staged.
pub(crate) fn racing_git(
    dir: &std::path::Path,
    racer: &std::path::Path,
    dst: &str,
    refspecs: &str,
) -> (String, std::path::PathBuf) {
    let wrapper = dir.join("git-racing");
    let marker = dir.join("raced");
    let real_git = ferry_testkit::git_binary().unwrap().display().to_string();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" push \"*) if [ ! -e '{m}' ]; then touch '{m}'; env -u GIT_CONFIG_COUNT '{real_git}' -C '{r}' push -q --force '{dst}' {refspecs} >/dev/null 2>&1; fi;; esac\nexec '{real_git}' \"$@\"\n",
            m = marker.display(),
            r = racer.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper.display().to_string(), marker)
}

/// A push to the destination lands between ferry's listing and ferry's push. The lease makes
/// ferry's push fail instead of destroying that commit; ferry re-plans once and reports it.
#[test]
fn a_push_racing_the_sync_is_protected_by_the_lease() {
    let (src, dst) = (Repo::source("race-src"), Repo::empty("race-dst"));
    let ferry = Ferry::new();
    let [s, d] = [src.url(Transport::File), dst.url(Transport::File)];
    ferry.sync(&[&s, &d]).assert_code(0);
    src.commit("upstream");
    src.push(&["main"]);

    // Someone else's commit, ready to be pushed at the worst moment.
    let racer = WorkRepo::new().unwrap();
    racer
        .git(&[
            "fetch",
            "-q",
            &dst.path().display().to_string(),
            "main:main",
            "--update-head-ok",
        ])
        .unwrap();
    racer.git(&["checkout", "-q", "main"]).unwrap();
    let theirs = racer.commit("race.txt", "racing", "racing commit").unwrap();
    // FERRY_GIT wraps git so that, the first time ferry pushes, the racer pushes first.
    let dir = tempfile::tempdir().unwrap();
    let (wrapper, marker) = racing_git(
        dir.path(),
        racer.path(),
        &dst.path().display().to_string(),
        "main:main",
    );

    let run = ferry.env("FERRY_GIT", &wrapper).sync(&[&s, &d]);
    assert!(marker.exists(), "the race was staged");
    run.assert_code(1);
    assert_eq!(
        dst.refs()["refs/heads/main"],
        theirs,
        "the racing commit survives"
    );
    assert_eq!(
        run.ref_result(0, "refs/heads/main"),
        ("skip".into(), "diverged".into()),
        "re-planned against the new state"
    );
}

/// A race that makes the re-plan abort (divergence = abort, and the racer diverged another
/// ref): every ref the re-plan covered says it was held back by the abort, not that git was
/// silent about it.
#[test]
fn a_lease_replan_that_aborts_says_so_for_each_ref() {
    let (src, dst) = (
        Repo::source("abort-race-src"),
        Repo::empty("abort-race-dst"),
    );
    src.git(&["branch", "dev"]);
    src.push(&["main", "dev"]);
    let ferry = Ferry::new();
    let [s, d] = [src.url(Transport::File), dst.url(Transport::File)];
    ferry
        .sync(&["--divergence", "abort", &s, &d])
        .assert_code(0);
    let one = src.commit("one");
    src.commit("two");
    src.git(&["checkout", "-q", "dev"]);
    src.commit("dev upstream");
    src.git(&["checkout", "-q", "main"]);
    src.push(&["main", "dev"]);

    // The racer moves main to an ancestor of the source's main (safe to fast-forward) and
    // diverges dev, between ferry's listing and its push.
    let racer = WorkRepo::new().unwrap();
    let dst_path = dst.path().display().to_string();
    racer
        .git(&[
            "fetch",
            "-q",
            &src.path().display().to_string(),
            "main:upstream",
        ])
        .unwrap();
    racer.git(&["fetch", "-q", &dst_path, "dev:dev"]).unwrap();
    racer.git(&["checkout", "-q", "dev"]).unwrap();
    let theirs = racer.commit("race.txt", "racing", "racing commit").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (wrapper, marker) = racing_git(
        dir.path(),
        racer.path(),
        &dst_path,
        &format!("{one}:refs/heads/main dev:refs/heads/dev"),
    );

    let run = ferry
        .env("FERRY_GIT", &wrapper)
        .sync(&["--divergence", "abort", &s, &d]);
    assert!(marker.exists(), "the race was staged");
    run.assert_code(1);
    assert_eq!(
        dst.refs()["refs/heads/main"],
        one,
        "nothing pushed after the abort"
    );
    assert_eq!(
        dst.refs()["refs/heads/dev"],
        theirs,
        "the racing commit survives"
    );
    let main = run.ref_entry(0, "refs/heads/main");
    let reason = main["reason"].as_str().unwrap_or_default();
    assert_eq!(main["kind"], "diverged", "{main}");
    assert!(
        reason.contains("divergence = abort") && reason.contains("refs/heads/dev"),
        "{main}"
    );
    assert_eq!(
        run.ref_result(0, "refs/heads/dev"),
        ("skip".into(), "diverged".into())
    );
}

/// Hundreds of new refs go to the destination in one push by a pattern refspec with a bare
/// `--force-with-lease` (see `a_first_sync_of_thousands_of_refs_creates_them_in_one_push`).
/// One of them, created on the destination by someone else between ferry's listing and its
/// push, fails its lease (a create's: the ref must not exist) and is re-planned, not pushed
/// over.
#[test]
fn a_ref_created_on_the_destination_during_a_bulk_first_sync_survives() {
    let name = crate::harness::unique("bulk-race-src");
    let src = servers().repo_path(&name);
    ferry_testkit::generate_repo(&src, 20, 64, 400, 5).expect("generate");
    let dst = Repo::empty("bulk-race-dst");
    let (s, d) = (Transport::File.url(&name), dst.url(Transport::File));
    let racer = WorkRepo::new().unwrap();
    let theirs = racer.commit("race.txt", "racing", "racing commit").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (wrapper, marker) = racing_git(
        dir.path(),
        racer.path(),
        &dst.path().display().to_string(),
        "HEAD:refs/heads/b-7",
    );

    let run = Ferry::new().env("FERRY_GIT", &wrapper).sync(&[&s, &d]);
    assert!(marker.exists(), "the race was staged");
    run.assert_code(1);
    let held = dst.refs();
    assert_eq!(held["refs/heads/b-7"], theirs, "the racing commit survives");
    assert_eq!(
        run.ref_result(0, "refs/heads/b-7"),
        ("skip".into(), "diverged".into()),
        "re-planned against the new state: {}",
        run.stdout
    );
    let mut expected = branches_and_tags(&src);
    expected.insert("refs/heads/b-7".into(), theirs);
    assert_eq!(branches_and_tags(&dst.path()), expected, "the rest arrived");
}

#[test]
fn two_ferry_processes_share_one_cache_safely() {
    let src = Repo::source("two-src");
    let dsts = [Repo::empty("two-dst"), Repo::empty("two-dst")];
    let ferry = Ferry::new();
    let children: Vec<_> = dsts
        .iter()
        .map(|d| {
            ferry
                .command(
                    "sync",
                    &["--json", &src.url(Transport::File), &d.url(Transport::File)],
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        crate::harness::Run::from_output(out).assert_code(0);
    }
    for d in &dsts {
        assert_eq!(branches_and_tags(&d.path()), branches_and_tags(&src.path()));
    }
}

#[test]
fn a_damaged_cache_is_rebuilt_without_user_action() {
    let (src, dst) = (Repo::source("dmg-src"), Repo::empty("dmg-dst"));
    let [s, d] = [src.url(Transport::File), dst.url(Transport::File)];
    let ferry = Ferry::new();
    ferry.sync(&[&s, &d]).assert_code(0);
    let cache_repo = std::fs::read_dir(ferry.cache.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "git"))
        .expect("a cache repository");
    // Lose every object: refs now point at nothing.
    std::fs::remove_dir_all(cache_repo.join("objects")).unwrap();
    std::fs::create_dir_all(cache_repo.join("objects")).unwrap();
    src.commit("after damage");
    src.push(&["main"]);
    ferry.sync(&[&s, &d]).assert_code(0);
    // Half-written: the marker never made it.
    std::fs::remove_file(cache_repo.join("ferry-cache")).unwrap();
    src.commit("after half-written");
    src.push(&["main"]);
    ferry.sync(&[&s, &d]).assert_code(0);
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

#[test]
fn a_shallow_source_is_refused() {
    let src = Repo::source("shallow-src");
    src.commit("two");
    src.commit("three");
    src.push(&["main"]);
    let dir = tempfile::tempdir().unwrap();
    let shallow = dir.path().join("shallow.git");
    ferry_testkit::git(
        dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            "--depth",
            "1",
            &src.url(Transport::File),
            &shallow.display().to_string(),
        ],
    )
    .unwrap();
    let run = Ferry::new().sync(&[
        &format!("file://{}", shallow.display()),
        &Repo::empty("shallow-dst").url(Transport::File),
    ]);
    run.assert_code(1);
    assert_eq!(
        run.source_error_kind().as_deref(),
        Some("shallow_source"),
        "{}",
        run.stdout
    );
}

#[test]
fn https_needs_the_ca() {
    let (src, dst) = (Repo::source("ca-src"), Repo::empty("ca-dst"));
    let run = Ferry::new()
        .env("FERRY_DEST_USERNAME", WRITER.0)
        .env("FERRY_DEST_PASSWORD", WRITER.1)
        .sync(&[&src.url(Transport::File), &dst.url(Transport::Https)]);
    run.assert_code(1);
    assert_eq!(
        run.dest_error_kind(0).as_deref(),
        Some("network"),
        "{}",
        run.stdout
    );
}
