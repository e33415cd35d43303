//! Fleets on Gitea and Forgejo: a fake Gitea API (crates/testkit/src/gitea) whose every
//! request and answer is checked against Gitea's published API description, serving real git
//! through the test nginx. Small pages force paging; faults and rate limits are injected.

use crate::fleet_host::{
    action, an_unchanged_listing_is_answered_not_modified,
    deletes_only_on_a_complete_listing_and_a_lookup, push_commit, push_on_top, End, Ends, Setup,
};
use crate::harness::{branches_and_tags, servers};
use ferry_testkit::gitea::{FakeOptions, FakeRepo, GiteaFake, RepoSpec};
use ferry_testkit::WRITER;
use serde_json::Value;
use std::time::Duration;

const SOURCE: &str = "acme";
const DEST: &str = "acme-mirror";
const USER: &str = "alice";

/// A fake Gitea with pages of 3, the organisations `acme` and `acme-mirror`, the user
/// `alice`, and the test nginx's writer password as the token.
fn fake(options: impl FnOnce(&mut FakeOptions)) -> GiteaFake {
    let mut o = FakeOptions::new(WRITER.1);
    o.max_page_size = 3;
    options(&mut o);
    let fake = GiteaFake::start(servers(), o).expect("start the fake Gitea");
    fake.add_org(SOURCE).expect("source org");
    fake.add_org(DEST).expect("destination org");
    fake.add_user(USER).expect("user");
    fake
}

/// Adds a repository of `owner` with one commit on its default branch.
fn repo_of(fake: &GiteaFake, owner: &str, name: &str, spec: RepoSpec) -> FakeRepo {
    let branch = spec.default_branch.clone().unwrap_or_else(|| "main".into());
    let repo = fake.add_repo(owner, name, spec).expect("add repo");
    push_commit(&repo.path, &branch, name);
    repo
}

fn source_repo(fake: &GiteaFake, name: &str, spec: RepoSpec) -> FakeRepo {
    repo_of(fake, SOURCE, name, spec)
}

/// A fleet named `gt` from `source` to the organisation `acme-mirror`, through
/// `provider` (`gitea` or `forgejo`); `api_url` names the instance, ferry adds `/api/v1`.
fn setup_from(
    fake: &GiteaFake,
    provider: &str,
    source: &str,
    extra: &str,
    destination_extra: &str,
) -> Setup {
    let end = |owner| End {
        provider,
        api_url: fake.base_url(),
        owner,
    };
    let ends = Ends {
        source: end(source),
        destination: end(DEST),
    };
    Setup::new("gt", &ends, extra, destination_extra)
}

fn setup(fake: &GiteaFake, extra: &str, destination_extra: &str) -> Setup {
    setup_from(fake, "gitea", SOURCE, extra, destination_extra)
}

fn assert_honest(fake: &GiteaFake) {
    let v = fake.violations();
    assert!(v.is_empty(), "contract violations: {v:#?}");
}

#[test]
fn a_gitea_org_is_discovered_page_by_page_and_created_no_more_public_than_its_source() {
    let fake = fake(|_| {});
    source_repo(&fake, "app", RepoSpec::default());
    source_repo(
        &fake,
        "secret",
        RepoSpec {
            private: true,
            description: Some("keep it quiet".into()),
            ..RepoSpec::default()
        },
    );
    source_repo(
        &fake,
        "trunk-based",
        RepoSpec {
            default_branch: Some("trunk".into()),
            ..RepoSpec::default()
        },
    );
    source_repo(&fake, "lib", RepoSpec::default());
    source_repo(
        &fake,
        "old",
        RepoSpec {
            archived: true,
            ..RepoSpec::default()
        },
    );
    source_repo(
        &fake,
        "forked",
        RepoSpec {
            fork: true,
            ..RepoSpec::default()
        },
    );
    source_repo(&fake, "legacy-x", RepoSpec::default());
    let setup = setup(
        &fake,
        "exclude = [\"legacy-*\"]",
        ", visibility = \"public\"",
    );

    let listed = setup.list();
    assert_eq!(
        listed["repositories"].as_array().map(Vec::len),
        Some(7),
        "{listed:#}"
    );
    assert_eq!(action(&listed, "gt/old")["reason"], "archived");
    assert_eq!(action(&listed, "gt/forked")["reason"], "fork");
    assert_eq!(action(&listed, "gt/legacy-x")["reason"], "excluded");
    assert_eq!(action(&listed, "gt/app")["action"], "create");
    assert!(
        fake.requests_to("GET", "/orgs/{org}/repos") >= 3,
        "7 repositories in pages of 3 take 3 pages"
    );
    assert!(fake.created_repos().is_empty(), "list created something");

    let run = setup.sync();
    run.assert_code(0);
    let mut created = fake.created_repos();
    created.sort_by(|a, b| a.name.cmp(&b.name));
    let shown: Vec<(String, bool)> = created
        .iter()
        .map(|c| (c.name.clone(), c.private))
        .collect();
    assert_eq!(
        shown,
        [
            ("app".to_string(), false),
            ("lib".into(), false),
            ("secret".into(), true),
            ("trunk-based".into(), false),
        ]
    );
    assert_eq!(created[2].description.as_deref(), Some("keep it quiet"));
    for name in ["app", "lib", "secret", "trunk-based"] {
        let src = fake.repo(SOURCE, name).expect("source");
        let dst = fake.repo(DEST, name).expect("destination");
        assert_eq!(
            branches_and_tags(&dst.path),
            branches_and_tags(&src.path),
            "{name}"
        );
    }
    let default_branches: Vec<(String, Value)> = fake
        .patches()
        .into_iter()
        .map(|p| (p.repo, p.body["default_branch"].clone()))
        .collect();
    assert!(
        default_branches.contains(&("acme-mirror/trunk-based".into(), Value::from("trunk"))),
        "{default_branches:?}"
    );
    assert_honest(&fake);
}

#[test]
fn a_forgejo_user_is_listed_when_the_owner_is_no_organisation() {
    let fake = fake(|_| {});
    for name in ["dotfiles", "notes"] {
        repo_of(&fake, USER, name, RepoSpec::default());
    }
    let setup = setup_from(&fake, "forgejo", USER, "", "");
    setup.sync().assert_code(0);
    for name in ["dotfiles", "notes"] {
        let src = fake.repo(USER, name).expect("source");
        let dst = fake.repo(DEST, name).expect("destination");
        assert_eq!(branches_and_tags(&dst.path), branches_and_tags(&src.path));
    }
    assert!(fake.requests_to("GET", "/users/{username}/repos") >= 1);
    assert_honest(&fake);
}

#[test]
fn an_unchanged_gitea_listing_is_answered_not_modified() {
    let fake = fake(|_| {});
    for name in ["a", "b", "c", "d"] {
        source_repo(&fake, name, RepoSpec::default());
    }
    let setup = setup(&fake, "", "");
    an_unchanged_listing_is_answered_not_modified(&setup, || fake.counters().not_modified);
    assert_honest(&fake);
}

#[test]
fn a_failed_or_truncated_gitea_page_or_a_failed_lookup_deletes_nothing() {
    let fake = fake(|_| {});
    // Sorted by name, `a-gone` is on the first page: deleting it changes that page, so a
    // cut-short first page cannot be answered from the cache.
    for name in ["a-gone", "b", "c", "d", "e"] {
        source_repo(&fake, name, RepoSpec::default());
    }
    let setup = setup(&fake, "on_source_deleted = \"delete\"", "");
    setup.sync().assert_code(0);
    fake.delete_repo(SOURCE, "a-gone").expect("delete source");
    deletes_only_on_a_complete_listing_and_a_lookup(
        &setup,
        &fake,
        (
            &format!("/api/v1/orgs/{SOURCE}/repos"),
            "/api/v1/repositories/",
        ),
        |name| fake.repo(DEST, name).is_some(),
        ("a-gone", &["b", "c", "d", "e"]),
    );
    assert_eq!(fake.requests_to("DELETE", "/repos/{owner}/{repo}"), 1);
    assert_honest(&fake);
}

#[test]
fn a_deleted_gitea_source_archives_its_destination_when_asked() {
    let fake = fake(|_| {});
    for name in ["keep", "gone"] {
        source_repo(&fake, name, RepoSpec::default());
    }
    let setup = setup(&fake, "on_source_deleted = \"archive\"", "");
    setup.sync().assert_code(0);
    fake.delete_repo(SOURCE, "gone").expect("delete source");
    setup.sync().assert_code(0);
    assert_eq!(fake.is_archived(DEST, "gone"), Some(true));
    assert_eq!(fake.is_archived(DEST, "keep"), Some(false));
    assert_honest(&fake);
}

#[test]
fn gitea_rate_limits_are_waited_out_not_failed() {
    let fake = fake(|o| {
        o.rate_limit = 6;
        o.rate_window = Duration::from_secs(1);
    });
    for name in ["a", "b", "c", "d"] {
        source_repo(&fake, name, RepoSpec::default());
    }
    fake.rate_limit_next(&format!("/api/v1/orgs/{SOURCE}/repos"), 1);
    let setup = setup(&fake, "", "");
    let run = setup.sync();
    run.assert_code(0);
    for name in ["a", "b", "c", "d"] {
        assert!(fake.repo(DEST, name).is_some(), "{name}: {}", run.stderr);
    }
    assert!(fake.counters().requests > fake.counters().counted);
    assert_honest(&fake);
}

#[test]
fn a_gitea_rename_on_the_source_re_points_the_member_instead_of_duplicating_it() {
    let fake = fake(|_| {});
    let original = source_repo(&fake, "app", RepoSpec::default());
    let setup = setup(&fake, "", "");
    setup.sync().assert_code(0);
    fake.rename_repo(SOURCE, "app", "app-renamed")
        .expect("rename");
    push_on_top(&original.path);
    let listed = setup.list();
    assert_eq!(action(&listed, "gt/app-renamed")["action"], "renamed");
    setup.sync().assert_code(0);
    assert_eq!(
        fake.created_repos().len(),
        1,
        "the rename created a duplicate"
    );
    let dst = fake.repo(DEST, "app").expect("the original destination");
    assert_eq!(
        branches_and_tags(&dst.path),
        branches_and_tags(&original.path)
    );
    assert_honest(&fake);
}

#[test]
fn a_gitea_destination_repository_ferry_did_not_create_is_an_error_and_left_alone() {
    let fake = fake(|_| {});
    source_repo(&fake, "app", RepoSpec::default());
    source_repo(&fake, "taken", RepoSpec::default());
    let theirs = repo_of(&fake, DEST, "taken", RepoSpec::default());
    push_commit(&theirs.path, "main", "not ours");
    let before = branches_and_tags(&theirs.path);
    let run = setup(&fake, "", "").sync();
    run.assert_code(1);
    assert!(run.stderr.contains("adopt_existing"), "{}", run.stderr);
    assert_eq!(branches_and_tags(&theirs.path), before);
    assert!(fake.repo(DEST, "app").is_some());
    assert_honest(&fake);
}
