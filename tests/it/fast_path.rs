//! The fast path: the receiving server's per-ref push report is the outcome; a listing after
//! the push happens only when asked for (`--verify`, reconcile runs) or when the report is
//! incomplete.

use crate::harness::{Ferry, Repo, Transport};
use std::path::Path;

/// A FERRY_GIT that logs each git command line (one per line) to `log`, then runs git.
pub(crate) fn logging_git(dir: &Path, log: &Path) -> String {
    let wrapper = dir.join("git-logging");
    let real = ferry_testkit::git_binary().unwrap().display().to_string();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{real}' \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper.display().to_string()
}

fn listings(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "ls-remote"))
        .count()
}

#[test]
fn a_push_report_is_the_outcome_and_only_verify_lists_again() {
    let (src, dst) = (Repo::source("fast-src"), Repo::empty("fast-dst"));
    let [s, d] = [src.url(Transport::Http), dst.url(Transport::Http)];
    let ferry = Ferry::with_test_credentials();
    ferry.sync(&[&s, &d]).assert_code(0);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("git.log");
    let git = logging_git(dir.path(), &log);
    let ferry = ferry.env("FERRY_GIT", &git);

    src.commit("one");
    src.push(&["main"]);
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "updated");
    assert_eq!(run.dest(0)["verified"], false, "{}", run.stdout);
    assert_eq!(dst.refs()["refs/heads/main"], src.refs()["refs/heads/main"]);
    assert_eq!(
        listings(&log),
        1,
        "one listing (beside the fetch), none after the push"
    );

    std::fs::remove_file(&log).unwrap();
    src.commit("two");
    src.push(&["main"]);
    let run = ferry.sync(&["--verify", &s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "updated");
    assert_eq!(run.dest(0)["verified"], true, "{}", run.stdout);
    assert_eq!(listings(&log), 2, "--verify lists again after the push");

    // The record the fast path kept is right: an upstream force-push is followed, not
    // reported as diverged.
    src.git(&["commit", "-q", "--amend", "-m", "two, rewritten"]);
    src.push(&["main"]);
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "forced");
}

/// A FERRY_GIT that logs each git command line to `log` and, once `<dir>/stall` exists,
/// holds every `ls-remote` of `stalled_url` for 20 s before running it: it writes its pid to
/// `<dir>/stalled` when the hold starts and touches `<dir>/listed` when it ends.
fn stalling_git(dir: &Path, log: &Path, stalled_url: &str) -> String {
    let wrapper = dir.join("git-stalling");
    let real = ferry_testkit::git_binary().unwrap().display().to_string();
    let (flag, pid) = (dir.join("stall"), dir.join("stalled"));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{log}'\n\
             if [ -e '{flag}' ] && [ \"$1\" = ls-remote ]; then\n\
             case \"$*\" in *'{stalled_url}'*) echo $$ > '{pid}'; sleep 20; touch '{listed}';; esac\nfi\n\
             exec '{real}' \"$@\"\n",
            log = log.display(),
            flag = flag.display(),
            pid = pid.display(),
            listed = dir.join("listed").display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper.display().to_string()
}

#[test]
fn with_a_record_the_push_does_not_wait_for_the_destination_listing_which_is_stopped() {
    let (src, dst) = (Repo::source("trust-src"), Repo::empty("trust-dst"));
    let [s, d] = [src.url(Transport::File), dst.url(Transport::File)];
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("git.log");
    let git = stalling_git(dir.path(), &log, &d);
    let ferry = Ferry::new().env("FERRY_GIT", &git);
    ferry.sync(&[&s, &d]).assert_code(0);

    // From now on a listing of the destination would hold the run for 20 s.
    std::fs::write(dir.path().join("stall"), "").unwrap();
    src.commit("one");
    src.push(&["main"]);
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "updated");
    assert_eq!(dst.refs()["refs/heads/main"], src.refs()["refs/heads/main"]);
    let pid: u32 = std::fs::read_to_string(dir.path().join("stalled"))
        .expect("the listing was started beside the fetch")
        .trim()
        .parse()
        .unwrap();
    assert!(
        crate::harness::ended(pid),
        "the listing the run did not need is not running"
    );
    assert!(
        !dir.path().join("listed").exists(),
        "the run did not wait for the listing: it was stopped"
    );
}

#[test]
fn a_record_proven_wrong_by_a_lost_lease_is_listed_and_replanned() {
    let (src, dst) = (Repo::source("lease-src"), Repo::empty("lease-dst"));
    let [s, d] = [src.url(Transport::File), dst.url(Transport::File)];
    let ferry = Ferry::new();
    ferry.sync(&[&s, &d]).assert_code(0);
    // Someone else moves the destination's main (a fast-forward ferry never saw), then the
    // source moves too: the record's value for main is wrong.
    let theirs = crate::policies::out_of_band_commit(&dst);
    src.commit("ours");
    src.push(&["main"]);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("git.log");
    let git = logging_git(dir.path(), &log);
    let run = ferry.env("FERRY_GIT", &git).sync(&[&s, &d]);
    run.assert_code(1);
    assert_eq!(
        run.ref_result(0, "refs/heads/main"),
        ("skip".into(), "diverged".into()),
        "{}",
        run.stdout
    );
    assert_eq!(
        dst.refs()["refs/heads/main"],
        theirs,
        "their commit is kept"
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    let push = calls
        .lines()
        .position(|l| l.starts_with("push"))
        .expect("the record's plan was pushed, with a lease");
    assert!(
        calls
            .lines()
            .skip(push)
            .any(|l| l.starts_with("ls-remote") && l.contains(&d)),
        "the lost lease listed the destination again: {calls}"
    );
}
