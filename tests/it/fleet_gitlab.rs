//! Fleets on GitLab: a fake GitLab API (crates/testkit/src/gitlab) whose every request and
//! answer is checked against GitLab's published API description, serving real git through the
//! test nginx. Small pages force paging; subgroups, faults and rate limits are exercised.

use crate::fleet_host::{
    action, an_unchanged_listing_is_answered_not_modified,
    deletes_only_on_a_complete_listing_and_a_lookup, push_commit, push_on_top, End, Ends, Setup,
};
use crate::harness::{branches_and_tags, servers};
use ferry_testkit::gitlab::{FakeOptions, FakeProject, GitLabFake, ProjectSpec};
use ferry_testkit::WRITER;
use serde_json::Value;
use std::time::Duration;

const SOURCE: &str = "acme/platform";
const DEST: &str = "mirror";
/// The source group as GitLab's `:id` takes it in a path.
const SOURCE_ID: &str = "acme%2Fplatform";

/// A fake GitLab with pages of 2, the groups `acme`, `acme/platform`, `acme/platform/sub`
/// and `mirror`, and the test nginx's writer password as the token.
fn fake(options: impl FnOnce(&mut FakeOptions)) -> GitLabFake {
    let mut o = FakeOptions::new(WRITER.1);
    o.max_page_size = 2;
    options(&mut o);
    let fake = GitLabFake::start(servers(), o).expect("start the fake GitLab");
    for group in ["acme", SOURCE, "acme/platform/sub", DEST] {
        fake.add_group(group).expect("group");
    }
    fake
}

/// Adds a source project with one commit on its default branch.
fn source_project(fake: &GitLabFake, path: &str, spec: ProjectSpec) -> FakeProject {
    let branch = spec.default_branch.clone().unwrap_or_else(|| "main".into());
    let (group, name) = match path.rsplit_once('/') {
        Some((sub, name)) => (format!("{SOURCE}/{sub}"), name),
        None => (SOURCE.to_string(), path),
    };
    let project = fake.add_project(&group, name, spec).expect("add project");
    push_commit(&project.path, &branch, path);
    project
}

/// A GitLab-to-GitLab fleet named `gl`. `api_url` names the instance, as users write it;
/// ferry adds `/api/v4`.
fn setup(fake: &GitLabFake, extra: &str, destination_extra: &str) -> Setup {
    let end = |owner| End {
        provider: "gitlab",
        api_url: fake.base_url(),
        owner,
    };
    let ends = Ends {
        source: end(SOURCE),
        destination: end(DEST),
    };
    Setup::new("gl", &ends, extra, destination_extra)
}

fn assert_honest(fake: &GitLabFake) {
    let v = fake.violations();
    assert!(v.is_empty(), "contract violations: {v:#?}");
}

const LISTING: &str = "/api/v4/groups/{id}/projects";

#[test]
fn a_gitlab_group_is_discovered_with_its_subgroups_and_created_no_more_public_than_its_source() {
    let fake = fake(|_| {});
    source_project(&fake, "app", ProjectSpec::default());
    source_project(
        &fake,
        "secret",
        ProjectSpec {
            private: true,
            description: Some("keep it quiet".into()),
            ..ProjectSpec::default()
        },
    );
    source_project(
        &fake,
        "trunk-based",
        ProjectSpec {
            default_branch: Some("trunk".into()),
            ..ProjectSpec::default()
        },
    );
    source_project(&fake, "sub/lib", ProjectSpec::default());
    source_project(
        &fake,
        "old",
        ProjectSpec {
            archived: true,
            ..ProjectSpec::default()
        },
    );
    source_project(
        &fake,
        "forked",
        ProjectSpec {
            fork: true,
            ..ProjectSpec::default()
        },
    );
    source_project(&fake, "legacy-x", ProjectSpec::default());
    // Not in the source group: never listed.
    fake.add_project("acme", "elsewhere", ProjectSpec::default())
        .expect("project outside the source group");
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
    assert_eq!(action(&listed, "gl/old")["reason"], "archived");
    assert_eq!(action(&listed, "gl/forked")["reason"], "fork");
    assert_eq!(action(&listed, "gl/legacy-x")["reason"], "excluded");
    assert_eq!(action(&listed, "gl/sub/lib")["action"], "create");
    assert_eq!(action(&listed, "gl/app")["action"], "create");
    assert!(
        fake.requests_to("GET", LISTING) >= 4,
        "7 projects in pages of 2 take 4 pages (and the destination's listing one)"
    );
    assert!(fake.created_projects().is_empty(), "list created something");

    let run = setup.sync();
    run.assert_code(0);
    let mut created = fake.created_projects();
    created.sort_by(|a, b| a.path.cmp(&b.path));
    let shown: Vec<(String, String, String)> = created
        .iter()
        .map(|c| (c.namespace.clone(), c.path.clone(), c.visibility.clone()))
        .collect();
    let expected = [
        ("app", "public"),
        ("secret", "private"),
        ("sub-lib", "public"),
        ("trunk-based", "public"),
    ]
    .map(|(p, v)| (DEST.to_string(), p.to_string(), v.to_string()));
    assert_eq!(shown, expected);
    assert_eq!(created[1].description.as_deref(), Some("keep it quiet"));
    for (source, destination) in [
        ("app", "app"),
        ("secret", "secret"),
        ("sub/lib", "sub-lib"),
        ("trunk-based", "trunk-based"),
    ] {
        let src = fake.project(SOURCE, source).expect("source project");
        let dst = fake.project(DEST, destination).expect("destination");
        assert_eq!(
            branches_and_tags(&dst.path),
            branches_and_tags(&src.path),
            "{source}"
        );
    }
    let default_branches: Vec<(String, Value)> = fake
        .updates()
        .into_iter()
        .map(|u| (u.project, u.body["default_branch"].clone()))
        .collect();
    assert!(
        default_branches.contains(&("mirror/trunk-based".into(), Value::from("trunk"))),
        "{default_branches:?}"
    );
    assert!(default_branches.contains(&("mirror/app".into(), Value::from("main"))));
    assert_honest(&fake);
}

#[test]
fn an_unchanged_gitlab_listing_is_answered_not_modified() {
    let fake = fake(|_| {});
    for name in ["a", "b", "c"] {
        source_project(&fake, name, ProjectSpec::default());
    }
    let setup = setup(&fake, "", "");
    an_unchanged_listing_is_answered_not_modified(&setup, || fake.counters().not_modified);
    assert_honest(&fake);
}

#[test]
fn a_failed_or_truncated_gitlab_page_or_a_failed_lookup_deletes_nothing() {
    let fake = fake(|_| {});
    // Created first, so it is on the first page (the listing is ordered by id): deleting it
    // changes that page, and a cut-short first page cannot be answered from the cache.
    for name in ["gone", "a", "b", "c", "d"] {
        source_project(&fake, name, ProjectSpec::default());
    }
    let setup = setup(&fake, "on_source_deleted = \"delete\"", "");
    setup.sync().assert_code(0);
    fake.delete_project(SOURCE, "gone").expect("delete source");
    deletes_only_on_a_complete_listing_and_a_lookup(
        &setup,
        &fake,
        (
            &format!("/api/v4/groups/{SOURCE_ID}/projects"),
            "/api/v4/projects/",
        ),
        |name| fake.project(DEST, name).is_some(),
        ("gone", &["a", "b", "c", "d"]),
    );
    assert_eq!(fake.requests_to("DELETE", "/api/v4/projects/{id}"), 1);
    assert_honest(&fake);
}

#[test]
fn a_deleted_gitlab_source_archives_its_destination_when_asked() {
    let fake = fake(|_| {});
    for name in ["keep", "gone"] {
        source_project(&fake, name, ProjectSpec::default());
    }
    let setup = setup(&fake, "on_source_deleted = \"archive\"", "");
    setup.sync().assert_code(0);
    fake.delete_project(SOURCE, "gone").expect("delete source");
    let listed = setup.list();
    assert_eq!(action(&listed, "gl/gone")["action"], "source_deleted");
    setup.sync().assert_code(0);
    assert_eq!(fake.is_archived(DEST, "gone"), Some(true));
    assert_eq!(fake.is_archived(DEST, "keep"), Some(false));
    assert_eq!(fake.requests_to("DELETE", "/api/v4/projects/{id}"), 0);
    assert_honest(&fake);
}

#[test]
fn gitlab_rate_limits_are_waited_out_not_failed() {
    let fake = fake(|o| {
        o.rate_limit = 8;
        o.rate_window = Duration::from_secs(1);
    });
    for name in ["a", "b", "c", "d"] {
        source_project(&fake, name, ProjectSpec::default());
    }
    fake.rate_limit_next(&format!("/api/v4/groups/{SOURCE_ID}/projects"), 1);
    let setup = setup(&fake, "", "");
    let run = setup.sync();
    run.assert_code(0);
    for name in ["a", "b", "c", "d"] {
        assert!(fake.project(DEST, name).is_some(), "{name}: {}", run.stderr);
    }
    assert!(
        fake.counters().requests > fake.counters().counted,
        "no request was turned away by a limit"
    );
    assert_honest(&fake);
}

#[test]
fn a_gitlab_rename_on_the_source_re_points_the_member_instead_of_duplicating_it() {
    let fake = fake(|_| {});
    let original = source_project(&fake, "app", ProjectSpec::default());
    let setup = setup(&fake, "", "");
    setup.sync().assert_code(0);
    assert_eq!(fake.created_projects().len(), 1);

    fake.rename_project(SOURCE, "app", "app-renamed")
        .expect("rename");
    // A new commit on top of what the destination has (a fast-forward).
    push_on_top(&original.path);
    let listed = setup.list();
    assert_eq!(action(&listed, "gl/app-renamed")["action"], "renamed");
    setup.sync().assert_code(0);
    assert_eq!(
        fake.created_projects().len(),
        1,
        "the rename created a duplicate"
    );
    let dst = fake.project(DEST, "app").expect("the original destination");
    assert_eq!(
        branches_and_tags(&dst.path),
        branches_and_tags(&original.path)
    );
    assert_honest(&fake);
}

#[test]
fn a_gitlab_destination_project_ferry_did_not_create_is_an_error_and_left_alone() {
    let fake = fake(|_| {});
    source_project(&fake, "app", ProjectSpec::default());
    source_project(&fake, "taken", ProjectSpec::default());
    let theirs = fake
        .add_project(DEST, "taken", ProjectSpec::default())
        .expect("someone else's project");
    push_commit(&theirs.path, "main", "not ours");
    let before = branches_and_tags(&theirs.path);
    let setup = setup(&fake, "", "");
    let run = setup.sync();
    run.assert_code(1);
    assert!(run.stderr.contains("adopt_existing"), "{}", run.stderr);
    assert_eq!(
        branches_and_tags(&theirs.path),
        before,
        "someone else's project was changed"
    );
    assert!(fake.project(DEST, "app").is_some());
    assert_honest(&fake);
}
