//! The fast path: the receiving server's per-ref push report is the outcome; a listing after
//! the push happens only when asked for (`--verify`, reconcile runs) or when the report is
//! incomplete.

use crate::harness::{Ferry, Repo, Run, Transport};
use std::path::Path;

/// A FERRY_GIT that logs each git command line (one per line) to `log`, then runs git.
pub(crate) fn logging_git(dir: &Path, log: &Path) -> String {
    logging_git_with(dir, log, "")
}

/// [`logging_git`], running git with `options` first (`-c protocol.version=0`, say).
pub(crate) fn logging_git_with(dir: &Path, log: &Path, options: &str) -> String {
    let real = ferry_testkit::git_binary().unwrap().display().to_string();
    script(
        &dir.join("git-logging"),
        &format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{real}' {options} \"$@\"\n",
            log.display()
        ),
    )
}

/// `ferry` with its git command lines logged (see [`logging_git`]): the ferry, the directory
/// holding the script and the log (keep it for the test's life), and the log's path.
pub(crate) fn with_logged_git(ferry: Ferry) -> (Ferry, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("git.log");
    let ferry = ferry.env("FERRY_GIT", &logging_git(dir.path(), &log));
    (ferry, dir, log)
}

/// Writes an executable script at `path`; returns its path for `FERRY_GIT`.
fn script(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
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
        listings_of(&log, &d),
        0,
        "the record's plan was pushed, and the push's report is the outcome"
    );

    std::fs::remove_file(&log).unwrap();
    src.commit("two");
    src.push(&["main"]);
    let run = ferry.sync(&["--verify", &s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "updated");
    assert_eq!(run.dest(0)["verified"], true, "{}", run.stdout);
    assert_eq!(
        listings_of(&log, &d),
        2,
        "--verify lists before the push and again after it"
    );

    // The record the fast path kept is right: an upstream force-push is followed, not
    // reported as diverged.
    src.git(&["commit", "-q", "--amend", "-m", "two, rewritten"]);
    src.push(&["main"]);
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "forced");
}

/// Someone's own branch `theirs` on the destination, at its main.
fn branch_behind_ferry_s_back(dst: &Repo) {
    ferry_testkit::git(
        &dst.path(),
        &["update-ref", "refs/heads/theirs", "refs/heads/main"],
    )
    .unwrap();
}

/// Asserts that `run` found the destination's main diverged and left `theirs` there.
pub(crate) fn main_diverged_and_theirs_is_kept(run: &Run, dst: &Repo, theirs: &str) {
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
}

/// The logged git command lines that list `url`.
pub(crate) fn listings_of(log: &Path, url: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "ls-remote") && l.contains(url))
        .count()
}

#[test]
fn with_a_record_a_remote_destination_is_listed_neither_for_a_push_nor_for_a_no_op() {
    let (src, dst) = (Repo::source("trust-src"), Repo::empty("trust-dst"));
    let [s, d] = [src.url(Transport::File), dst.url(Transport::Http)];
    let (ferry, _dir, log) = with_logged_git(Ferry::with_test_credentials());
    ferry.sync(&[&s, &d]).assert_code(0);
    assert_eq!(listings_of(&log, &d), 1, "no record yet: listed");

    std::fs::remove_file(&log).unwrap();
    src.commit("one");
    src.push(&["main"]);
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "updated");
    assert_eq!(dst.refs()["refs/heads/main"], src.refs()["refs/heads/main"]);
    assert_eq!(listings_of(&log, &d), 0, "the record's plan was pushed");

    // Someone adds a branch on the destination. A no-op trusts the record: one look at the
    // source, no round trip to the destination, nothing said about their branch.
    branch_behind_ferry_s_back(&dst);
    std::fs::remove_file(&log).unwrap();
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "unchanged");
    assert_eq!(run.dest(0)["verified"], false, "{}", run.stdout);
    assert!(
        run.dest(0)["refs"]
            .as_array()
            .is_some_and(|refs| refs.iter().all(|r| r["ref"] != "refs/heads/theirs")),
        "{}",
        run.stdout
    );
    assert_eq!(
        listings_of(&log, &d),
        0,
        "a no-op does not list the destination"
    );

    // A run that lists (--verify, as reconcile runs do) sees their branch, and keeps it.
    let run = ferry.sync(&["--verify", &s, &d]);
    run.assert_code(0);
    assert_eq!(
        run.ref_result(0, "refs/heads/theirs"),
        ("skip".into(), "unchanged".into()),
        "{}",
        run.stdout
    );
    assert!(listings_of(&log, &d) > 0);
    assert!(dst.refs().contains_key("refs/heads/theirs"));
}

#[test]
fn a_no_op_between_local_repositories_runs_no_git_and_a_change_fetches_only_its_ref() {
    let (src, dst) = (Repo::source("local-src"), Repo::empty("local-dst"));
    src.git(&["branch", "dev"]);
    src.push(&["dev"]);
    let [s, d] = [src.url(Transport::File), dst.url(Transport::File)];
    let (ferry, _dir, log) = with_logged_git(Ferry::new());
    ferry.sync(&[&s, &d]).assert_code(0);

    std::fs::remove_file(&log).unwrap();
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "unchanged");
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(calls, "", "both repositories were read from their files");

    // Their branch on the local destination is read, so a no-op still reports it.
    branch_behind_ferry_s_back(&dst);
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(
        run.ref_result(0, "refs/heads/theirs"),
        ("skip".into(), "unchanged".into())
    );

    src.commit("one");
    src.push(&["main"]);
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "updated");
    assert_eq!(dst.refs()["refs/heads/main"], src.refs()["refs/heads/main"]);
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    let fetches: Vec<&str> = calls.lines().filter(|l| l.starts_with("fetch")).collect();
    assert_eq!(fetches.len(), 1, "{calls}");
    let main = src.refs()["refs/heads/main"].clone();
    assert!(
        fetches[0].ends_with(&format!(" +{main}:refs/heads/main")),
        "only the changed ref was fetched, by its listed id: {calls}"
    );
    assert!(!calls.contains("ls-remote"), "{calls}");

    // A branch the source deleted: git's own listing decides, and the mirror follows.
    src.push(&[":refs/heads/dev"]);
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(
        run.ref_result(0, "refs/heads/dev"),
        ("delete".into(), "deleted".into())
    );
    assert!(!dst.refs().contains_key("refs/heads/dev"));
}

#[test]
fn a_record_proven_wrong_by_a_lost_lease_is_listed_and_replanned() {
    let (src, dst) = (Repo::source("lease-src"), Repo::empty("lease-dst"));
    let [s, d] = [src.url(Transport::File), dst.url(Transport::Http)];
    let ferry = Ferry::with_test_credentials();
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
    main_diverged_and_theirs_is_kept(&run, &dst, &theirs);
    let calls = std::fs::read_to_string(&log).unwrap();
    let push = calls
        .lines()
        .position(|l| l.split_whitespace().any(|w| w == "push"))
        .expect("the record's plan was pushed, with a lease");
    assert!(
        calls
            .lines()
            .skip(push)
            .any(|l| l.starts_with("ls-remote") && l.contains(&d)),
        "the lost lease listed the destination again: {calls}"
    );
}

#[test]
fn a_protocol_v0_fetch_which_traces_no_ls_refs_answer_still_syncs_from_what_it_fetched() {
    let (src, dst) = (Repo::source("v0-trace-src"), Repo::empty("v0-trace-dst"));
    let [s, d] = [src.url(Transport::Http), dst.url(Transport::Http)];
    let ferry = Ferry::with_test_credentials();
    ferry.sync(&[&s, &d]).assert_code(0);
    let dir = tempfile::tempdir().unwrap();
    let real = ferry_testkit::git_binary().unwrap().display().to_string();
    let v0 = script(
        &dir.path().join("git-v0"),
        &format!("#!/bin/sh\nexec '{real}' -c protocol.version=0 \"$@\"\n"),
    );
    let ferry = ferry.env("FERRY_GIT", &v0);

    let new = src.commit("over protocol v0");
    src.push(&["main"]);
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "updated");
    assert_eq!(dst.refs()["refs/heads/main"], new);
    let run = ferry.sync(&[&s, &d]);
    run.assert_all_unchanged(0);
}

#[test]
fn a_listed_id_a_protocol_v0_source_no_longer_serves_is_fetched_by_name() {
    let (src, dst) = (Repo::source("v0-src"), Repo::empty("v0-dst"));
    // Enough refs that the cache lists the source before it fetches (see `Cache::strategy`).
    let head = src.refs()["refs/heads/main"].clone();
    let fillers: String = (0..2500)
        .map(|i| format!("create refs/tags/filler-{i:05} {head}\n"))
        .collect();
    crate::engine_trust::update_refs(&src.path(), &fillers);
    let [s, d] = [src.url(Transport::Http), dst.url(Transport::File)];
    let ferry = Ferry::with_test_credentials();
    ferry.sync(&[&s, &d]).assert_code(0);
    let listed = src.commit("listed");
    src.push(&["main"]);
    let newer = src.commit("newer");
    src.push(&["main:refs/kept/newer"]);

    // Every git call speaks protocol v0, which serves only the ids its refs point at; and
    // right after ferry lists the source, the source's main moves on to `newer`, so the
    // listed id is no longer one of them.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("git.log");
    let real = ferry_testkit::git_binary().unwrap().display().to_string();
    let moved = dir.path().join("moved");
    let wrapper = script(
        &dir.path().join("git-v0"),
        &format!(
            "#!/bin/sh\necho \"$*\" >> '{log}'\n'{real}' -c protocol.version=0 \"$@\"\nstatus=$?\n\
             case \" $* \" in *' ls-remote '*) if [ ! -e '{moved}' ]; then : > '{moved}'; \
             '{real}' --git-dir '{bare}' update-ref refs/heads/main {newer}; fi;; esac\n\
             exit $status\n",
            log = log.display(),
            moved = moved.display(),
            bare = src.path().display(),
        ),
    );

    let run = ferry.env("FERRY_GIT", &wrapper).sync(&[&s, &d]);
    run.assert_code(0);
    assert!(moved.exists(), "the source was listed");
    assert_eq!(
        dst.refs()["refs/heads/main"],
        newer,
        "the fetch by name brought what main points at now: {}",
        run.stdout
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    let fetches: Vec<&str> = calls.lines().filter(|l| l.starts_with("fetch")).collect();
    assert_eq!(fetches.len(), 2, "{calls}");
    assert!(
        fetches[0].ends_with(&format!(" +{listed}:refs/heads/main")),
        "{calls}"
    );
    assert!(
        fetches[1].ends_with(" +refs/heads/main:refs/heads/main"),
        "{calls}"
    );
}

#[test]
fn branches_the_source_deleted_leave_the_cache_in_one_git_call() {
    let (src, dst) = (Repo::source("gone-src"), Repo::empty("gone-dst"));
    for branch in ["one", "two", "three"] {
        src.git(&["branch", branch]);
        src.push(&[branch]);
    }
    let [s, d] = [src.url(Transport::File), dst.url(Transport::Http)];
    let (ferry, _dir, log) = with_logged_git(Ferry::with_test_credentials());
    ferry.sync(&[&s, &d]).assert_code(0);

    src.push(&[":refs/heads/one", ":refs/heads/two"]);
    std::fs::remove_file(&log).unwrap();
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    for gone in ["refs/heads/one", "refs/heads/two"] {
        assert_eq!(run.ref_result(0, gone), ("delete".into(), "deleted".into()));
        assert!(!dst.refs().contains_key(gone), "{gone}");
    }
    assert!(dst.refs().contains_key("refs/heads/three"));
    let calls = std::fs::read_to_string(&log).unwrap();
    let deletions: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("update-ref"))
        .collect();
    assert_eq!(deletions, ["update-ref --stdin"], "{calls}");
}

/// The one record file in `cache` (its `.json`; the settled stamp is the `.settled` beside it).
fn the_record_file(cache: &Path) -> std::path::PathBuf {
    let records: Vec<std::path::PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".records"))
        .flat_map(|dir| std::fs::read_dir(dir.path()).unwrap().flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    records[0].clone()
}

#[test]
fn a_settled_no_op_reads_no_record_and_reports_what_a_full_one_does() {
    settled_no_op_from(Transport::File);
}

/// A remote source's listing comes after the stamp is read: the record is not read either.
#[test]
fn a_settled_no_op_from_a_remote_source_reads_no_record_either() {
    settled_no_op_from(Transport::Http);
}

/// A settled no-op from a source reached over `transport` to an HTTP destination reads no
/// record and reports what a full one does; a change after it is still synced.
fn settled_no_op_from(transport: Transport) {
    let (src, dst) = (Repo::source("settled-src"), Repo::empty("settled-dst"));
    src.git(&["branch", "dev"]);
    src.push(&["dev"]);
    let [s, d] = [src.url(transport), dst.url(Transport::Http)];
    let (ferry, _dir, log) = with_logged_git(Ferry::with_test_credentials());
    ferry.sync(&[&s, &d]).assert_code(0);
    let record = the_record_file(ferry.cache.path());
    assert!(
        record.with_extension("settled").exists(),
        "the first sync left the destination exactly at the source: settled"
    );

    // The record is made unreadable in place, its size and time kept, so that its stamp
    // still names it: a run that read it would warn and list the destination (a first
    // sync's rules).
    let bytes = std::fs::read(&record).unwrap();
    let modified = std::fs::metadata(&record).unwrap().modified().unwrap();
    std::fs::write(&record, vec![b'#'; bytes.len()]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&record)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    std::fs::remove_file(&log).unwrap();
    let settled = ferry.sync(&[&s, &d]);
    settled.assert_code(0);
    assert!(!settled.stderr.contains("unreadable"), "{}", settled.stderr);
    assert_eq!(listings_of(&log, &d), 0, "the destination was not listed");
    assert_eq!(
        std::fs::read(&record).unwrap(),
        vec![b'#'; bytes.len()],
        "nothing was written"
    );

    // Without the stamp, the same no-op reads the record (and lists the destination, the
    // record being unreadable), and reports the same.
    std::fs::remove_file(record.with_extension("settled")).unwrap();
    let full = ferry.sync(&[&s, &d]);
    full.assert_code(0);
    assert!(full.stderr.contains("unreadable"), "{}", full.stderr);
    assert_eq!(listings_of(&log, &d), 1);
    assert_eq!(settled.dest(0)["refs"], full.dest(0)["refs"]);
    assert_eq!(settled.dest(0)["verified"], false);
    assert_eq!(settled.dest(0)["ok"], true);
    assert_eq!(
        full.dest(0)["refs"].as_array().map(Vec::len),
        Some(2),
        "{}",
        full.stdout
    );
    assert!(
        record.with_extension("settled").exists(),
        "the full run settled the record again"
    );

    // A settled record is no reason to miss a change.
    src.commit("one");
    src.push(&["main"]);
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "updated");
    assert_eq!(dst.refs()["refs/heads/main"], src.refs()["refs/heads/main"]);
}

#[test]
fn refs_with_non_ascii_names_are_mirrored_kept_unchanged_and_updated_over_every_path() {
    let (cafe, tag) = ("refs/heads/café", "refs/tags/版本-1");
    for (transport, dest) in [
        (Transport::Http, Transport::Http),
        (Transport::File, Transport::File),
        (Transport::Ssh, Transport::Http),
    ] {
        let (src, dst) = (Repo::source("utf8-src"), Repo::empty("utf8-dst"));
        src.push(&["main:refs/heads/café", "main:refs/tags/版本-1"]);
        let [s, d] = [src.url(transport), dst.url(dest)];
        let ferry = Ferry::with_test_credentials();
        ferry.sync(&[&s, &d]).assert_code(0);
        let source = src.refs();
        assert_eq!(dst.refs()[cafe], source[cafe], "{transport:?}");
        assert_eq!(dst.refs()[tag], source[tag], "{transport:?}");

        // A no-op: the names as git lists them are the names ferry recorded.
        ferry.sync(&[&s, &d]).assert_all_unchanged(0);

        // A change to the branch alone, from the command line and as an event.
        let new = src.commit(&format!("on café over {transport:?}"));
        src.push(&["HEAD:refs/heads/café"]);
        let run = ferry.sync(&[&s, &d]);
        run.assert_code(0);
        assert_eq!(run.ref_result(0, cafe).1, "updated", "{}", run.stdout);
        assert_eq!(run.ref_result(0, "refs/heads/main").1, "unchanged");
        assert_eq!(dst.refs()[cafe], new);
        let newer = src.commit(&format!("on café again over {transport:?}"));
        src.push(&["HEAD:refs/heads/café"]);
        let named = format!("{cafe}={newer}");
        let run = ferry.sync(&["--ref", &named, &s, &d]);
        run.assert_code(0);
        assert_eq!(run.ref_result(0, cafe).1, "updated", "{}", run.stdout);
        assert_eq!(dst.refs()[cafe], newer);
        ferry.sync(&[&s, &d]).assert_all_unchanged(0);
    }
}
