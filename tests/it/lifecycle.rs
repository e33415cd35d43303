//! The everyday life of a mirror, over every transport: first mirror, new commits, branches
//! and tags coming and going, and a source force-push followed.

use crate::harness::{branches_and_tags, Ferry, Repo, Transport, ALL_TRANSPORTS};

fn lifecycle(t: Transport) {
    let src = Repo::source("life-src");
    let dst = Repo::empty("life-dst");
    src.git(&["tag", "-a", "v1", "-m", "release 1"]);
    src.git(&["branch", "dev"]);
    src.push(&["main", "dev", "v1"]);
    let ferry = Ferry::with_test_credentials();
    let args = [src.url(t), dst.url(t)];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // First mirror into an empty destination.
    let run = ferry.sync(&args);
    run.assert_code(0);
    assert_eq!(
        run.ref_result(0, "refs/heads/main"),
        ("create".into(), "created".into())
    );
    assert_eq!(
        run.ref_result(0, "refs/tags/v1"),
        ("create".into(), "created".into())
    );
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path()),
        "{t:?}: first mirror"
    );

    // Nothing changed: nothing to do, still exit 0.
    let run = ferry.sync(&args);
    run.assert_all_unchanged(0);

    // A new commit is a fast-forward.
    src.commit("second");
    src.push(&["main"]);
    let run = ferry.sync(&args);
    run.assert_code(0);
    assert_eq!(
        run.ref_result(0, "refs/heads/main"),
        ("update".into(), "updated".into())
    );
    assert_eq!(run.ref_result(0, "refs/heads/dev").1, "unchanged");

    // Branch create and delete; tag create, move and delete.
    src.git(&["branch", "feature"]);
    src.git(&["tag", "v2"]);
    src.push(&["feature", "v2"]);
    src.push(&[":refs/heads/dev"]);
    let run = ferry.sync(&args);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/feature").1, "created");
    assert_eq!(run.ref_result(0, "refs/tags/v2").1, "created");
    assert_eq!(
        run.ref_result(0, "refs/heads/dev"),
        ("delete".into(), "deleted".into())
    );
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path()),
        "{t:?}: create/delete"
    );

    src.commit("third");
    src.git(&["tag", "-f", "v2"]);
    src.push(&["main", "+refs/tags/v2:refs/tags/v2", ":refs/tags/v1"]);
    let run = ferry.sync(&args);
    run.assert_code(0);
    assert_eq!(
        run.ref_result(0, "refs/tags/v2").1,
        "updated",
        "a moved tag ahead of its old commit"
    );
    assert_eq!(run.ref_result(0, "refs/tags/v1").1, "deleted");

    // The source rewrites main: ferry pushed the old value, so it follows the force-push.
    src.git(&["reset", "-q", "--hard", "HEAD~2"]);
    src.commit("rewritten");
    src.push(&["+main"]);
    let run = ferry.sync(&args);
    run.assert_code(0);
    assert_eq!(
        run.ref_result(0, "refs/heads/main"),
        ("force".into(), "forced".into())
    );
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path()),
        "{t:?}: after force-push"
    );
}

#[test]
fn lifecycle_over_file() {
    lifecycle(Transport::File);
}

#[test]
fn lifecycle_over_http() {
    lifecycle(Transport::Http);
}

#[test]
fn lifecycle_over_https() {
    lifecycle(Transport::Https);
}

#[test]
fn lifecycle_over_ssh() {
    lifecycle(Transport::Ssh);
}

#[test]
fn lifecycle_over_git_daemon() {
    lifecycle(Transport::GitDaemon);
}

/// One source, one destination per transport, one run: every destination converges.
#[test]
fn one_source_many_destinations_across_transports() {
    let src = Repo::source("fan-src");
    src.git(&["tag", "v1"]);
    src.push(&["v1"]);
    let dests: Vec<Repo> = ALL_TRANSPORTS
        .iter()
        .map(|_| Repo::empty("fan-dst"))
        .collect();
    let mut args = vec![src.url(Transport::File)];
    args.extend(dests.iter().zip(ALL_TRANSPORTS).map(|(d, t)| d.url(t)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = Ferry::with_test_credentials().sync(&args);
    run.assert_code(0);
    for (i, d) in dests.iter().enumerate() {
        assert_eq!(run.dest(i)["ok"], true);
        assert_eq!(branches_and_tags(&d.path()), branches_and_tags(&src.path()));
    }
}

/// A source with thousands of refs: the first sync leaves the cache's refs packed and a commit
/// graph beside its objects; after it the cache lists the source first and fetches only what
/// changed. Creates, updates, deletes and no-ops must all still be right.
#[test]
fn many_refs_are_synced_by_listing_first_from_a_packed_cache_with_a_commit_graph() {
    let name = crate::harness::unique("many-src");
    let path = crate::harness::servers().repo_path(&name);
    ferry_testkit::generate_repo(&path, 50, 64, 4000, 7).unwrap();
    let dst = Repo::empty("many-dst");
    let ferry = Ferry::new();
    let (s, d) = (Transport::File.url(&name), dst.url(Transport::File));
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(branches_and_tags(&dst.path()), branches_and_tags(&path));
    let cache_packed = std::fs::read_dir(ferry.cache.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join("packed-refs"))
        .find(|p| p.exists())
        .expect("the cache packed its refs after the large first fetch");
    assert!(
        std::fs::metadata(&cache_packed).unwrap().len() >= 128 * 1024,
        "large enough to list first"
    );
    let cache = cache_packed.parent().expect("the cache repository");
    assert!(
        cache.join("objects/info/commit-graph").is_file(),
        "a commit graph after the large first fetch"
    );

    // One new commit on a branch, a deleted branch, a new tag.
    let work = ferry_testkit::WorkRepo::new().unwrap();
    let p = path.display().to_string();
    work.git(&["fetch", "-q", &p, "refs/heads/b-1:refs/heads/b-1"])
        .unwrap();
    work.git(&["checkout", "-q", "b-1"]).unwrap();
    work.commit("more.txt", "more", "more").unwrap();
    work.git(&["tag", "fresh-tag"]).unwrap();
    work.git(&["push", "-q", &p, "b-1", "fresh-tag", ":refs/heads/b-2"])
        .unwrap();
    let run = ferry.sync(&[&s, &d]);
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/b-1").1, "updated");
    assert_eq!(run.ref_result(0, "refs/heads/b-2").1, "deleted");
    assert_eq!(run.ref_result(0, "refs/tags/fresh-tag").1, "created");
    assert_eq!(branches_and_tags(&dst.path()), branches_and_tags(&path));

    let run = ferry.sync(&[&s, &d]);
    run.assert_all_unchanged(0);
}
