//! The fast path: a destination's record stands in for listing it before the push (a lease
//! per ref catches a destination that changed), and the receiving server's per-ref push report
//! is the outcome; a listing after the push happens only when asked for (`--verify`, reconcile
//! runs) or when the report is incomplete.

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
fn a_trusted_record_replaces_both_listings_and_verify_brings_them_back() {
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
        0,
        "the record stood in for the listing; none after the push"
    );

    std::fs::remove_file(&log).unwrap();
    src.commit("two");
    src.push(&["main"]);
    let run = ferry.sync(&["--verify", &s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "updated");
    assert_eq!(run.dest(0)["verified"], true, "{}", run.stdout);
    assert_eq!(
        listings(&log),
        2,
        "--verify lists before and after the push"
    );

    // The record the fast path kept is right: an upstream force-push is followed, not
    // reported as diverged.
    src.git(&["commit", "-q", "--amend", "-m", "two, rewritten"]);
    src.push(&["main"]);
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "forced");
}

/// Pushes a commit nobody else has straight to the destination's `branch` (creating it when
/// `from` is given, as a child of that commit). Returns its id.
fn out_of_band(dst: &Repo, branch: &str, from: Option<&str>) -> String {
    let work = ferry_testkit::WorkRepo::new().unwrap();
    let path = dst.path().display().to_string();
    match from {
        None => {
            work.git(&[
                "fetch",
                "-q",
                &path,
                &format!("{branch}:{branch}"),
                "--update-head-ok",
            ])
            .unwrap();
            work.git(&["checkout", "-q", branch]).unwrap();
        }
        Some(base) => {
            work.git(&["fetch", "-q", &path, "main:main", "--update-head-ok"])
                .unwrap();
            work.git(&["checkout", "-q", "-b", branch, base]).unwrap();
        }
    }
    let oid = work
        .commit("oob.txt", "behind ferry's back", "out of band")
        .unwrap();
    work.git(&["push", "-q", &path, &format!("HEAD:refs/heads/{branch}")])
        .unwrap();
    oid
}

/// The record says main is at X, but someone pushed to main behind ferry's back, and created
/// the branch the source is about to create. The leases fail, ferry lists and re-plans: the
/// out-of-band commits are kept and reported as diverged, nothing is pushed over them, and the
/// rest of the sync goes through.
#[test]
fn a_wrong_record_fails_the_lease_and_the_replan_keeps_the_destinations_commits() {
    let (src, dst) = (Repo::source("trust-src"), Repo::empty("trust-dst"));
    src.git(&["branch", "dev"]);
    src.push(&["main", "dev"]);
    let [s, d] = [src.url(Transport::File), dst.url(Transport::File)];
    let ferry = Ferry::new();
    ferry.sync(&[&s, &d]).assert_code(0);

    let base = dst.refs()["refs/heads/main"].clone();
    let theirs_main = out_of_band(&dst, "main", None);
    let theirs_feature = out_of_band(&dst, "feature", Some(&base));
    src.commit("upstream");
    src.git(&["branch", "feature"]);
    src.git(&["checkout", "-q", "dev"]);
    src.commit("dev upstream");
    src.git(&["checkout", "-q", "main"]);
    src.push(&["main", "dev", "feature"]);

    let run = ferry.sync(&[&s, &d]);
    run.assert_code(1);
    assert_eq!(
        run.ref_result(0, "refs/heads/main"),
        ("skip".into(), "diverged".into())
    );
    assert_eq!(
        run.ref_result(0, "refs/heads/feature"),
        ("skip".into(), "diverged".into())
    );
    assert_eq!(run.ref_result(0, "refs/heads/dev").1, "updated");
    let now = dst.refs();
    assert_eq!(now["refs/heads/main"], theirs_main, "their main survives");
    assert_eq!(
        now["refs/heads/feature"], theirs_feature,
        "their feature survives"
    );
    assert_eq!(now["refs/heads/dev"], src.refs()["refs/heads/dev"]);
}

/// A destination emptied behind ferry's back (restored from an old backup, recreated): the
/// record is wrong for every ref, the leases fail, and the re-plan recreates what ferry had
/// pushed.
#[test]
fn a_destination_emptied_behind_ferrys_back_is_refilled_through_the_replan() {
    let (src, dst) = (Repo::source("refill-src"), Repo::empty("refill-dst"));
    src.git(&["tag", "v1"]);
    src.push(&["main", "v1"]);
    let [s, d] = [src.url(Transport::File), dst.url(Transport::File)];
    let ferry = Ferry::new();
    ferry.sync(&[&s, &d]).assert_code(0);
    for r in ["refs/heads/main", "refs/tags/v1"] {
        ferry_testkit::git(&dst.path(), &["update-ref", "-d", r]).unwrap();
    }
    src.commit("upstream");
    src.push(&["main"]);
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(dst.refs(), src.refs());
}
