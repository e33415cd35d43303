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
