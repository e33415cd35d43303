//! Pushes started beside the fetch: an event that says what its ref points at now, or the
//! source's listing in a run that plans from records, lets the run start the push it expects
//! to make before the commit is fetched, held at a `pre-push` gate.
//! The run releases it only when its plan makes exactly that push; otherwise the held push is
//! dropped and sends nothing, and a lease that no longer holds is re-planned as ever.

use crate::fast_path::{
    listings_of, logging_git_with, main_diverged_and_theirs_is_kept, with_logged_git,
};
use crate::harness::{Ferry, Repo, Run, Transport};
use std::path::Path;

/// The `git push` command lines of a logged run, and how many of them were held at the gate.
fn pushes(log: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let pushes: Vec<&str> = text
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "push"))
        .collect();
    let held = pushes
        .iter()
        .filter(|l| l.contains("core.hooksPath="))
        .count();
    (pushes.len(), held)
}

/// Asserts that `run` updated the destination's main to `new` with one push, the held one.
fn main_landed_by_the_held_push(run: &Run, dst: &Repo, new: &str, log: &Path) {
    run.assert_code(0);
    assert_eq!(
        run.ref_result(0, "refs/heads/main").1,
        "updated",
        "{}",
        run.stdout
    );
    assert_eq!(dst.refs()["refs/heads/main"], new);
    assert_eq!(
        pushes(log),
        (1, 1),
        "one push, the one started beside the fetch"
    );
}

/// A source and destination over HTTP, synced once; and a ferry logging its git calls.
fn synced(prefix: &str) -> (Repo, Repo, Ferry, tempfile::TempDir) {
    synced_over(prefix, Transport::Http)
}

/// A source and destination reached over `transport`, synced once; and a ferry logging its
/// git calls.
fn synced_over(prefix: &str, transport: Transport) -> (Repo, Repo, Ferry, tempfile::TempDir) {
    let (src, dst) = (
        Repo::source(&format!("{prefix}-src")),
        Repo::empty(&format!("{prefix}-dst")),
    );
    let (ferry, dir, log) = with_logged_git(Ferry::with_test_credentials());
    ferry
        .sync(&[&src.url(transport), &dst.url(transport)])
        .assert_code(0);
    std::fs::remove_file(&log).unwrap();
    (src, dst, ferry, dir)
}

#[test]
fn an_event_naming_the_new_id_pushes_by_the_push_started_beside_the_fetch() {
    let (src, dst, ferry, dir) = synced("ahead");
    let log = dir.path().join("git.log");
    let new = src.commit("one more");
    src.push(&["main"]);

    let named = format!("refs/heads/main={new}");
    let run = ferry.sync(&[
        "--ref",
        &named,
        &src.url(Transport::Http),
        &dst.url(Transport::Http),
    ]);
    main_landed_by_the_held_push(&run, &dst, &new, &log);
}

#[test]
fn a_held_push_the_plan_does_not_make_is_dropped_and_sends_nothing() {
    let (src, dst, ferry, dir) = synced("dropped");
    let log = dir.path().join("git.log");
    let [s, d] = [src.url(Transport::Http), dst.url(Transport::Http)];
    let older = src.commit("older");
    let newer = src.commit("newer");
    src.push(&["main"]);
    ferry.sync(&[&s, &d]).assert_code(0);
    assert_eq!(dst.refs()["refs/heads/main"], newer);
    std::fs::remove_file(&log).unwrap();

    // A redelivered event naming the older id: the push it suggests (main back to older) is
    // started, but the plan (main is where the source has it) pushes nothing.
    let named = format!("refs/heads/main={older}");
    let run = ferry.sync(&["--ref", &named, &s, &d]);
    run.assert_code(0);
    assert_eq!(
        pushes(&log),
        (1, 1),
        "the push suggested by the event was started"
    );
    assert_eq!(
        run.ref_result(0, "refs/heads/main"),
        ("unchanged".to_owned(), "unchanged".to_owned()),
        "{}",
        run.stdout
    );
    assert_eq!(
        dst.refs()["refs/heads/main"],
        newer,
        "the held push never went on"
    );
}

#[test]
fn a_held_push_whose_lease_no_longer_holds_is_replanned_and_overwrites_nothing() {
    let (src, dst, ferry, dir) = synced("stale");
    let log = dir.path().join("git.log");
    let [s, d] = [src.url(Transport::Http), dst.url(Transport::Http)];
    let new = src.commit("one more");
    src.push(&["main"]);
    let theirs = commit_behind_ferry_s_back(&dst);

    let named = format!("refs/heads/main={new}");
    let run = ferry.sync(&["--ref", &named, &s, &d]);
    run.assert_code(1);
    let (pushed, held) = pushes(&log);
    assert_eq!(held, 1, "the push was started beside the fetch");
    assert_eq!(
        pushed, 1,
        "and not pushed again: the re-plan keeps their commit"
    );
    assert_eq!(
        listings_of(&log, &d),
        1,
        "the lost lease had the destination listed"
    );
    main_diverged_and_theirs_is_kept(&run, &dst, &theirs);
}

#[test]
fn a_sync_from_the_record_pushes_by_the_push_started_from_the_fetch_s_own_listing() {
    let (src, dst, ferry, dir) = synced("listed");
    let log = dir.path().join("git.log");
    let [s, d] = [src.url(Transport::Http), dst.url(Transport::Http)];
    let calls =
        lands_by_the_push_started_from_the_fetch_s_listing(&src, &dst, &ferry, &log, [&s, &d]);
    assert_eq!(
        source_fetches(&calls, &s),
        ["+refs/heads/*:refs/heads/*".to_owned()],
        "one fetch, by name"
    );
}

#[test]
fn a_protocol_v0_source_s_advertisement_in_the_fetch_s_trace_starts_the_push_beside_the_fetch() {
    // Over SSH a server speaks v0 unless its sshd passes GIT_PROTOCOL on, as stock ones do not.
    let (src, dst) = (Repo::source("v0-held-src"), Repo::empty("v0-held-dst"));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("git.log");
    let v0 = logging_git_with(dir.path(), &log, "-c protocol.version=0");
    let ferry = Ferry::with_test_credentials().env("FERRY_GIT", &v0);
    let [s, d] = [src.url(Transport::Ssh), dst.url(Transport::Ssh)];
    ferry.sync(&[&s, &d]).assert_code(0);
    std::fs::remove_file(&log).unwrap();
    lands_by_the_push_started_from_the_fetch_s_listing(&src, &dst, &ferry, &log, [&s, &d]);
}

/// A new commit on the source's main lands by the one push, started from the fetch's own
/// listing (the source is not listed otherwise); then a no-op runs that fetch alone. Returns
/// the git command lines of the run that landed it.
fn lands_by_the_push_started_from_the_fetch_s_listing(
    src: &Repo,
    dst: &Repo,
    ferry: &Ferry,
    log: &Path,
    [s, d]: [&str; 2],
) -> String {
    let new = src.commit("one more");
    src.push(&["main"]);
    let run = ferry.sync(&[s, d]);
    main_landed_by_the_held_push(&run, dst, &new, log);
    let calls = std::fs::read_to_string(log).unwrap();
    assert_eq!(
        listings_of(log, s),
        0,
        "the fetch listed the source: {calls}"
    );

    // Nothing changed: the fetch's listing says so, and nothing else runs.
    std::fs::remove_file(log).unwrap();
    ferry.sync(&[s, d]).assert_all_unchanged(0);
    let no_op = std::fs::read_to_string(log).unwrap();
    assert_eq!(no_op.lines().count(), 1, "{no_op}");
    assert_eq!(source_fetches(&no_op, s).len(), 1, "{no_op}");
    calls
}

/// The first refspec of each fetch from `source` in a log of git command lines.
fn source_fetches(calls: &str, source: &str) -> Vec<String> {
    calls
        .lines()
        .filter(|l| l.starts_with("fetch ") && l.contains(source))
        .filter_map(|l| {
            l.split(source)
                .nth(1)?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// A commit on the destination's main made behind ferry's back; returns its id.
fn commit_behind_ferry_s_back(dst: &Repo) -> String {
    let theirs = ferry_testkit::git(
        &dst.path(),
        &[
            "commit-tree",
            "refs/heads/main^{tree}",
            "-p",
            "refs/heads/main",
            "-m",
            "theirs",
        ],
    )
    .unwrap()
    .trim()
    .to_owned();
    ferry_testkit::git(&dst.path(), &["update-ref", "refs/heads/main", &theirs]).unwrap();
    theirs
}

#[test]
fn a_local_destination_planned_from_its_record_gets_the_push_started_beside_the_fetch() {
    let (src, dst, ferry, dir) = synced_over("local-held", Transport::File);
    let [s, d] = [src.url(Transport::File), dst.url(Transport::File)];
    let new = src.commit("one more");
    src.push(&["main"]);

    let run = ferry.sync(&[&s, &d]);
    main_landed_by_the_held_push(&run, &dst, &new, &dir.path().join("git.log"));
}

#[test]
fn a_local_destination_changed_behind_ferry_s_back_fails_the_held_push_s_lease_and_keeps_their_commit(
) {
    let (src, dst, ferry, dir) = synced_over("local-stale", Transport::File);
    let log = dir.path().join("git.log");
    let [s, d] = [src.url(Transport::File), dst.url(Transport::File)];
    src.commit("one more");
    src.push(&["main"]);
    let theirs = commit_behind_ferry_s_back(&dst);

    let run = ferry.sync(&[&s, &d]);
    run.assert_code(1);
    assert_eq!(
        pushes(&log),
        (1, 1),
        "the push was started beside the fetch, and not made again"
    );
    main_diverged_and_theirs_is_kept(&run, &dst, &theirs);
}
