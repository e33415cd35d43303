//! Divergence and prune policies, the plan command, atomic pushes, and the rules servers
//! enforce (hidden refs, non-fast-forward, deletions, hooks, request size).

use crate::harness::{branches_and_tags, refs_of, servers, Ferry, Repo, Transport};
use ferry_testkit::{git, WorkRepo};

/// Pushes a commit nobody else has straight to the destination's main (someone working
/// behind ferry's back). Returns its id.
pub(crate) fn out_of_band_commit(dst: &Repo) -> String {
    let work = WorkRepo::new().expect("work repo");
    let path = dst.path().display().to_string();
    work.git(&["fetch", "-q", &path, "main:main", "--update-head-ok"])
        .expect("fetch");
    work.git(&["checkout", "-q", "main"]).expect("checkout");
    let oid = work
        .commit(
            "oob.txt",
            "pushed to the destination directly",
            "out of band",
        )
        .expect("commit");
    work.git(&["push", "-q", &path, "main"]).expect("push");
    oid
}

fn urls(src: &Repo, dst: &Repo) -> [String; 2] {
    [src.url(Transport::File), dst.url(Transport::File)]
}

#[test]
fn out_of_band_commit_is_kept_then_overwritten_on_request() {
    let (src, dst) = (Repo::source("oob-src"), Repo::empty("oob-dst"));
    let [s, d] = urls(&src, &dst);
    let ferry = Ferry::new();
    ferry.sync(&[&s, &d]).assert_code(0);
    let theirs = out_of_band_commit(&dst);
    src.commit("upstream work");
    src.push(&["main"]);

    let run = ferry.sync(&[&s, &d]);
    run.assert_code(1);
    assert_eq!(
        run.ref_result(0, "refs/heads/main"),
        ("skip".into(), "diverged".into())
    );
    assert_eq!(
        run.ref_kind(0, "refs/heads/main").as_deref(),
        Some("diverged")
    );
    assert!(run.ref_entry(0, "refs/heads/main")["hint"]
        .as_str()
        .unwrap_or("")
        .contains("--divergence overwrite"));
    assert_eq!(
        dst.refs()["refs/heads/main"],
        theirs,
        "keep never loses the destination's commit"
    );

    // The human output says the same in plain words.
    let human = ferry.run("sync", &[&s, &d]);
    assert_eq!(human.code, 1);
    assert!(
        human.stdout.contains("refs/heads/main: diverged"),
        "{}",
        human.stdout
    );

    let run = ferry.sync(&["--divergence", "overwrite", &s, &d]);
    run.assert_code(0);
    assert_eq!(
        run.ref_result(0, "refs/heads/main"),
        ("force".into(), "forced".into())
    );
    assert_eq!(dst.refs()["refs/heads/main"], src.refs()["refs/heads/main"]);
}

#[test]
fn abort_pushes_nothing_to_a_diverged_destination() {
    let (src, dst) = (Repo::source("abort-src"), Repo::empty("abort-dst"));
    let [s, d] = urls(&src, &dst);
    let ferry = Ferry::new();
    ferry.sync(&[&s, &d]).assert_code(0);
    let theirs = out_of_band_commit(&dst);
    src.git(&["branch", "other"]);
    src.push(&["other"]);
    let run = ferry.sync(&["--divergence", "abort", &s, &d]);
    run.assert_code(1);
    assert_eq!(run.dest_error_kind(0).as_deref(), Some("diverged"));
    assert_eq!(
        run.ref_result(0, "refs/heads/other"),
        ("create".into(), "failed".into())
    );
    assert!(!dst.refs().contains_key("refs/heads/other"));
    assert_eq!(dst.refs()["refs/heads/main"], theirs);
}

#[test]
fn first_sync_onto_a_non_empty_destination() {
    let (src, dst) = (Repo::source("first-src"), Repo::empty("first-dst"));
    // The destination already has the source's first commit on main (an ancestor: fine to
    // fast-forward) and an unrelated history on "legacy" that the source also has.
    dst.work
        .git(&[
            "fetch",
            "-q",
            &src.path().display().to_string(),
            "main:main",
            "--update-head-ok",
        ])
        .unwrap();
    dst.push(&["main"]);
    src.commit("ahead");
    src.git(&["checkout", "-q", "-b", "legacy"]);
    src.commit("source legacy");
    src.push(&["main", "legacy"]);
    dst.work
        .git(&["checkout", "-q", "--orphan", "legacy"])
        .unwrap();
    dst.commit("destination legacy");
    dst.push(&["legacy"]);

    let [s, d] = urls(&src, &dst);
    let run = Ferry::new().sync(&[&s, &d]);
    run.assert_code(1);
    assert_eq!(
        run.ref_result(0, "refs/heads/main"),
        ("update".into(), "updated".into())
    );
    assert_eq!(
        run.ref_result(0, "refs/heads/legacy"),
        ("skip".into(), "diverged".into())
    );
}

#[test]
fn destination_only_refs_are_kept_by_synced_and_removed_by_all() {
    let (src, dst) = (Repo::source("prune-src"), Repo::empty("prune-dst"));
    let [s, d] = urls(&src, &dst);
    let ferry = Ferry::new();
    ferry.sync(&[&s, &d]).assert_code(0);
    // Someone's own branch on the destination.
    git(
        &dst.path(),
        &["update-ref", "refs/heads/theirs", "refs/heads/main"],
    )
    .unwrap();
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(
        run.ref_result(0, "refs/heads/theirs"),
        ("skip".into(), "unchanged".into())
    );
    assert!(dst.refs().contains_key("refs/heads/theirs"));

    let plan = ferry.plan(&["--prune", "all", &s, &d]);
    plan.assert_code(0);
    assert_eq!(plan.ref_entry(0, "refs/heads/theirs")["action"], "delete");
    assert!(
        dst.refs().contains_key("refs/heads/theirs"),
        "plan changes nothing"
    );

    let run = ferry.sync(&["--prune", "all", &s, &d]);
    run.assert_code(0);
    assert_eq!(
        run.ref_result(0, "refs/heads/theirs"),
        ("delete".into(), "deleted".into())
    );
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

#[test]
fn prune_never_keeps_refs_the_source_deleted() {
    let (src, dst) = (Repo::source("never-src"), Repo::empty("never-dst"));
    src.git(&["branch", "gone"]);
    src.push(&["gone"]);
    let [s, d] = urls(&src, &dst);
    let ferry = Ferry::new();
    ferry.sync(&[&s, &d]).assert_code(0);
    src.push(&[":refs/heads/gone"]);
    let run = ferry.sync(&["--prune", "never", &s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/gone").0, "skip");
    assert!(dst.refs().contains_key("refs/heads/gone"));
}

#[test]
fn plan_shows_actions_and_changes_no_destination() {
    let (src, dst) = (Repo::source("plan-src"), Repo::empty("plan-dst"));
    let [s, d] = urls(&src, &dst);
    let ferry = Ferry::new();
    let plan = ferry.plan(&[&s, &d]);
    plan.assert_code(0);
    assert_eq!(plan.json["plan_only"], true);
    assert_eq!(plan.ref_entry(0, "refs/heads/main")["action"], "create");
    assert!(plan
        .ref_entry(0, "refs/heads/main")
        .get("outcome")
        .is_none());
    assert!(dst.refs().is_empty());
    let human = ferry.run("plan", &[&s, &d]);
    assert!(
        human.stdout.contains("refs/heads/main: would create"),
        "{}",
        human.stdout
    );
}

#[test]
fn hidden_refs_are_rejected_and_the_other_refs_still_land() {
    let (src, dst) = (Repo::source("hidden-src"), Repo::empty("hidden-dst"));
    src.push(&["main:refs/pull/1/head"]);
    dst.config("receive.hideRefs", "refs/pull");
    src.git(&["branch", "dev"]);
    src.push(&["dev"]);
    let [s, d] = [src.url(Transport::Http), dst.url(Transport::Http)];
    let run = Ferry::with_test_credentials().sync(&[
        "--include",
        "refs/heads/*",
        "--include",
        "refs/pull/*",
        &s,
        &d,
    ]);
    run.assert_code(1);
    assert_eq!(
        run.ref_result(0, "refs/pull/1/head"),
        ("create".into(), "rejected".into())
    );
    assert_eq!(
        run.ref_kind(0, "refs/pull/1/head").as_deref(),
        Some("hidden_ref")
    );
    assert!(run.ref_entry(0, "refs/pull/1/head")["hint"]
        .as_str()
        .unwrap_or("")
        .contains("--exclude 'refs/pull/*'"));
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "created");
    assert_eq!(run.ref_result(0, "refs/heads/dev").1, "created");

    // The way out the hint gives works.
    let run = Ferry::with_test_credentials().sync(&[
        "--include",
        "refs/heads/*",
        "--include",
        "refs/pull/*",
        "--exclude",
        "refs/pull/*",
        &s,
        &d,
    ]);
    run.assert_code(0);
}

#[test]
fn atomic_push_applies_nothing_when_one_ref_is_refused() {
    let (src, dst) = (Repo::source("atomic-src"), Repo::empty("atomic-dst"));
    src.git(&["branch", "guarded"]);
    src.push(&["guarded"]);
    decline_in_update_hook(&dst, "refs/heads/guarded");
    let [s, d] = urls(&src, &dst);
    let run = Ferry::new().sync(&["--atomic", &s, &d]);
    run.assert_code(1);
    assert_eq!(run.ref_result(0, "refs/heads/guarded").1, "rejected");
    assert_eq!(
        run.ref_kind(0, "refs/heads/guarded").as_deref(),
        Some("protected")
    );
    let main = run.ref_entry(0, "refs/heads/main");
    assert_eq!(main["outcome"], "rejected");
    assert!(
        main["reason"].as_str().unwrap_or("").contains("atomic"),
        "{main}"
    );
    assert!(dst.refs().is_empty(), "atomic: all or nothing");

    // Without --atomic the other ref lands.
    let run = Ferry::new().sync(&[&s, &d]);
    run.assert_code(1);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "created");
}

fn decline_in_update_hook(dst: &Repo, refname: &str) {
    let hook = dst.path().join("hooks/update");
    let script = format!("#!/bin/sh\nif [ \"$1\" = {refname} ]; then echo '{refname} is protected' >&2; exit 1; fi\n");
    std::fs::write(&hook, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn server_rules_are_reported_per_ref() {
    let (src, dst) = (Repo::source("rules-src"), Repo::empty("rules-dst"));
    for b in ["rewritten", "doomed", "guarded"] {
        src.git(&["branch", b]);
    }
    src.push(&["rewritten", "doomed", "guarded"]);
    let [s, d] = urls(&src, &dst);
    let ferry = Ferry::new();
    ferry.sync(&[&s, &d]).assert_code(0);

    dst.config("receive.denyNonFastForwards", "true");
    dst.config("receive.denyDeletes", "true");
    decline_in_update_hook(&dst, "refs/heads/guarded");

    src.git(&["checkout", "-q", "rewritten"]);
    src.git(&["commit", "-q", "--amend", "-m", "rewritten history"]);
    src.git(&["checkout", "-q", "guarded"]);
    src.commit("guarded work");
    src.git(&["checkout", "-q", "main"]);
    src.commit("main work");
    src.push(&["+rewritten", "guarded", "main", ":refs/heads/doomed"]);

    let run = ferry.sync(&[&s, &d]);
    run.assert_code(1);
    assert_eq!(
        run.ref_result(0, "refs/heads/main").1,
        "updated",
        "one refusal does not block the rest"
    );
    assert_eq!(
        run.ref_kind(0, "refs/heads/rewritten").as_deref(),
        Some("non_fast_forward")
    );
    assert_eq!(
        run.ref_kind(0, "refs/heads/doomed").as_deref(),
        Some("deletion_prohibited")
    );
    assert_eq!(
        run.ref_kind(0, "refs/heads/guarded").as_deref(),
        Some("protected")
    );
    for r in [
        "refs/heads/rewritten",
        "refs/heads/doomed",
        "refs/heads/guarded",
    ] {
        assert_eq!(run.ref_result(0, r).1, "rejected", "{r}");
    }
    assert_eq!(dst.refs()["refs/heads/main"], src.refs()["refs/heads/main"]);
}

#[test]
fn request_too_large_is_reported_as_too_large() {
    let src = Repo::empty("big-src");
    // Incompressible, so the pack is well over the 16 KiB limit.
    let blob = crate::failures::noise(64_000, 1);
    src.work.commit("big.txt", &blob, "big").unwrap();
    src.push(&["main"]);
    let dst = Repo::empty("big-dst");
    let d = servers().limited_http_url(&dst.name);
    let run = Ferry::with_test_credentials().sync(&[&src.url(Transport::File), &d]);
    run.assert_code(1);
    assert_eq!(
        run.dest_error_kind(0).as_deref(),
        Some("too_large"),
        "{}",
        run.stdout
    );
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "failed");
    assert!(refs_of(&dst.path()).is_empty());
}

/// Two mirrors with the same source and destination but different ref selections keep
/// separate records: syncing one must not make the other forget what it pushed (which would
/// turn the next upstream force-push into a false "diverged").
#[test]
fn mirrors_with_different_selections_keep_separate_records() {
    let (src, dst) = (Repo::source("sel-src"), Repo::empty("sel-dst"));
    src.git(&["tag", "v1"]);
    src.push(&["main", "v1"]);
    let [s, d] = urls(&src, &dst);
    let ferry = Ferry::new();
    let heads = ["--include", "refs/heads/*"];
    let tags = ["--include", "refs/tags/*"];
    ferry.sync(&[&heads[..], &[&s, &d]].concat()).assert_code(0);
    ferry.sync(&[&tags[..], &[&s, &d]].concat()).assert_code(0);

    // Upstream rewrites main; the heads mirror pushed main, so it follows the force-push.
    src.git(&["commit", "-q", "--amend", "-m", "first, rewritten"]);
    src.push(&["main"]);
    let run = ferry.sync(&[&heads[..], &[&s, &d]].concat());
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "forced");
    assert_eq!(dst.refs()["refs/heads/main"], src.refs()["refs/heads/main"]);
}
