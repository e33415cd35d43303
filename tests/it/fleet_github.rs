//! Fleets on GitHub: a fake GitHub API (crates/testkit/src/github) whose every request and
//! answer is checked against GitHub's published OpenAPI description, serving real git through
//! the test nginx. Small pages force paging; faults and rate limits are injected.

use crate::harness::{branches_and_tags, servers, Ferry, Run};
use ferry_testkit::github::{FakeOptions, GitHubFake, RepoSpec};
use ferry_testkit::{WorkRepo, WRITER};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const SOURCE_ORG: &str = "acme";
const DEST_ORG: &str = "acme-mirror";

/// A fake GitHub with pages of 3 and the test nginx's writer password as the token (so the
/// same secret works for git over HTTP as `writer`).
fn fake(options: impl FnOnce(&mut FakeOptions)) -> GitHubFake {
    let mut o = FakeOptions::new(WRITER.1);
    o.max_page_size = 3;
    options(&mut o);
    let fake = GitHubFake::start(servers(), o).expect("start the fake GitHub");
    fake.add_org(SOURCE_ORG).expect("source org");
    fake.add_org(DEST_ORG).expect("destination org");
    fake
}

/// Adds a source repository with one commit on its default branch.
fn source_repo(fake: &GitHubFake, name: &str, spec: RepoSpec) -> ferry_testkit::github::FakeRepo {
    let branch = spec.default_branch.clone().unwrap_or_else(|| "main".into());
    let repo = fake.add_repo(SOURCE_ORG, name, spec).expect("add repo");
    push_commit(&repo.path, &branch, name);
    repo
}

fn push_commit(bare: &Path, branch: &str, content: &str) {
    let work = WorkRepo::new().expect("work repo");
    work.commit("f.txt", content, content).expect("commit");
    work.git(&[
        "push",
        "-q",
        "--force",
        &bare.display().to_string(),
        &format!("HEAD:refs/heads/{branch}"),
    ])
    .expect("push");
}

struct Setup {
    dir: tempfile::TempDir,
    ferry: Ferry,
}

impl Setup {
    /// A config with one GitHub-to-GitHub fleet; `extra` goes into the fleet's table and
    /// `destination_extra` into its destination.
    fn new(fake: &GitHubFake, extra: &str, destination_extra: &str) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let account = |owner: &str| {
            format!(
                "provider = \"github\", owner = \"{owner}\", token_env = \"GH_TOKEN\", api_url = \"{}\", username = \"{}\"",
                fake.base_url(),
                WRITER.0
            )
        };
        let text = format!(
            "[[fleet]]\nname = \"gh\"\nsource = {{ {} }}\ndestination = {{ {}, create = true{destination_extra} }}\n{extra}\n",
            account(SOURCE_ORG),
            account(DEST_ORG)
        );
        std::fs::write(dir.path().join("ferry.toml"), text).expect("config");
        Setup {
            dir,
            ferry: Ferry::new().env("GH_TOKEN", WRITER.1),
        }
    }

    fn config(&self) -> String {
        self.dir.path().join("ferry.toml").display().to_string()
    }

    fn sync(&self) -> Run {
        let run = self.ferry.sync(&["--config", &self.config()]);
        assert!(
            !run.stdout.contains(WRITER.1) && !run.stderr.contains(WRITER.1),
            "the token leaked: {run:?}"
        );
        run
    }

    fn list(&self) -> Value {
        let run = self
            .ferry
            .run("fleet", &["list", "--config", &self.config(), "--json"]);
        assert!(!run.stdout.contains(WRITER.1) && !run.stderr.contains(WRITER.1));
        run.json[0].clone()
    }
}

fn action<'a>(fleet: &'a Value, name: &str) -> &'a Value {
    fleet["repositories"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("{name} not listed: {fleet:#}"))
}

fn assert_honest(fake: &GitHubFake) {
    let v = fake.violations();
    assert!(v.is_empty(), "contract violations: {v:#?}");
}

#[test]
fn a_github_fleet_is_discovered_page_by_page_and_created_no_more_public_than_its_source() {
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
    let setup = Setup::new(
        &fake,
        "exclude = [\"legacy-*\"]",
        ", visibility = \"public\"",
    );

    let listed = setup.list();
    assert_eq!(listed["repositories"].as_array().map(Vec::len), Some(7));
    assert_eq!(action(&listed, "gh/old")["reason"], "archived");
    assert_eq!(action(&listed, "gh/forked")["reason"], "fork");
    assert_eq!(action(&listed, "gh/legacy-x")["reason"], "excluded");
    assert_eq!(action(&listed, "gh/app")["action"], "create");
    assert!(
        fake.requests_to("GET", "/orgs/{org}/repos") >= 3,
        "7 repositories in pages of 3 take 3 pages"
    );
    assert!(fake.created_repos().is_empty(), "list created something");

    let run = setup.sync();
    run.assert_code(0);
    let mut created = fake.created_repos();
    created.sort_by(|a, b| a.name.cmp(&b.name));
    let shown: Vec<(String, String)> = created
        .iter()
        .map(|c| (c.name.clone(), c.visibility.clone()))
        .collect();
    assert_eq!(
        shown,
        [
            ("app".to_string(), "public".to_string()),
            ("lib".into(), "public".into()),
            ("secret".into(), "private".into()),
            ("trunk-based".into(), "public".into()),
        ]
    );
    assert_eq!(created[2].description.as_deref(), Some("keep it quiet"));
    for name in ["app", "lib", "secret", "trunk-based"] {
        let src = fake.repo(SOURCE_ORG, name).expect("source");
        let dst = fake.repo(DEST_ORG, name).expect("destination");
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
        default_branches.contains(&("trunk-based".into(), Value::from("trunk"))),
        "{default_branches:?}"
    );
    assert!(default_branches.contains(&("app".into(), Value::from("main"))));
    assert_honest(&fake);
}

#[test]
fn a_fleet_pass_with_nothing_changed_costs_no_api_quota() {
    let fake = fake(|_| {});
    for name in ["a", "b", "c", "d"] {
        source_repo(&fake, name, RepoSpec::default());
    }
    let setup = Setup::new(&fake, "", "");
    setup.sync().assert_code(0);
    // The first pass after the sync sees the created destinations; the next sees nothing new.
    setup.list();
    let counted = fake.counters().counted;
    let listed = setup.list();
    assert_eq!(
        fake.counters().counted,
        counted,
        "an unchanged listing used quota"
    );
    assert!(listed["api_requests"].as_u64().unwrap_or(0) > 0);
    assert_eq!(listed["api_not_modified"], listed["api_requests"]);
    let run = setup.sync();
    run.assert_code(0);
    assert_eq!(fake.counters().counted, counted, "a no-op sync used quota");
    assert_honest(&fake);
}

#[test]
fn a_failed_page_or_a_failed_lookup_deletes_nothing() {
    let fake = fake(|_| {});
    for name in ["a", "b", "c", "d", "gone"] {
        source_repo(&fake, name, RepoSpec::default());
    }
    let setup = Setup::new(&fake, "on_source_deleted = \"delete\"", "");
    setup.sync().assert_code(0);
    fake.delete_repo(SOURCE_ORG, "gone").expect("delete source");

    // Page 2 of the listing fails: the listing is incomplete.
    fake.fail_next("GET", "/orgs/acme/repos?page=2", 500, 1);
    let run = setup.sync();
    run.assert_code(1);
    assert!(run.stderr.contains("incomplete"), "{}", run.stderr);
    assert!(
        fake.repo(DEST_ORG, "gone").is_some(),
        "deleted on a failed page"
    );

    // The listing is complete but the lookup that would confirm the deletion fails.
    fake.fail_next("GET", "/repos/acme/gone", 502, 1);
    let run = setup.sync();
    assert!(
        fake.repo(DEST_ORG, "gone").is_some(),
        "deleted on a failed lookup"
    );
    assert_eq!(fake.requests_to("DELETE", "/repos/{owner}/{repo}"), 0);
    assert_eq!(run.code, 1, "{}", run.stderr);

    // Complete listing and a lookup that says 404: now it goes.
    setup.sync();
    assert!(fake.repo(DEST_ORG, "gone").is_none());
    assert_eq!(fake.requests_to("DELETE", "/repos/{owner}/{repo}"), 1);
    assert!(fake.repo(DEST_ORG, "a").is_some());
    assert_honest(&fake);
}

#[test]
fn known_members_keep_syncing_when_neither_organisation_can_be_listed() {
    let fake = fake(|_| {});
    let app = source_repo(&fake, "app", RepoSpec::default());
    let setup = Setup::new(&fake, "", "");
    setup.sync().assert_code(0);
    push_commit(&app.path, "main", "after the first sync");

    // Every listing fails from now on, as when the host is down when ferry starts.
    fake.fail_next("GET", "/orgs/", 500, 1000);
    let run = setup.sync();
    assert_eq!(
        run.code, 1,
        "the failed listings went unreported: {}",
        run.stderr
    );
    assert!(run.stderr.contains("incomplete"), "{}", run.stderr);
    let dest = fake.repo(DEST_ORG, "app").expect("the destination exists");
    assert_eq!(
        branches_and_tags(&dest.path),
        branches_and_tags(&app.path),
        "the known member was not synced: {}",
        run.stderr
    );
    assert_honest(&fake);
}

#[test]
fn rate_limits_are_waited_out_not_failed() {
    let fake = fake(|o| {
        o.rate_limit = 6;
        o.rate_window = Duration::from_secs(1);
    });
    for name in ["a", "b", "c", "d"] {
        source_repo(&fake, name, RepoSpec::default());
    }
    fake.secondary_limit_next("/orgs/acme/repos", 429, 1);
    let setup = Setup::new(&fake, "", "");
    let run = setup.sync();
    run.assert_code(0);
    for name in ["a", "b", "c", "d"] {
        assert!(
            fake.repo(DEST_ORG, name).is_some(),
            "{name}: {}",
            run.stderr
        );
    }
    assert!(
        fake.counters().requests > fake.counters().counted,
        "no request was turned away by a limit"
    );
    assert_honest(&fake);
}

#[test]
fn a_rename_on_the_source_re_points_the_member_instead_of_duplicating_it() {
    let fake = fake(|_| {});
    source_repo(&fake, "app", RepoSpec::default());
    let setup = Setup::new(&fake, "", "");
    setup.sync().assert_code(0);
    assert_eq!(fake.created_repos().len(), 1);

    fake.rename_repo(SOURCE_ORG, "app", "app-renamed")
        .expect("rename");
    let renamed = fake.repo(SOURCE_ORG, "app-renamed").expect("renamed");
    // A new commit on top of what the destination has (a fast-forward).
    let work = WorkRepo::new().expect("work repo");
    let bare = renamed.path.display().to_string();
    work.git(&["fetch", "-q", &bare, "main"]).expect("fetch");
    work.git(&["checkout", "-q", "-B", "next", "FETCH_HEAD"])
        .expect("checkout");
    work.commit("g.txt", "after", "after the rename")
        .expect("commit");
    work.git(&["push", "-q", &bare, "HEAD:refs/heads/main"])
        .expect("push");
    let listed = setup.list();
    assert_eq!(action(&listed, "gh/app-renamed")["action"], "renamed");
    let run = setup.sync();
    run.assert_code(0);
    assert_eq!(
        fake.created_repos().len(),
        1,
        "the rename created a duplicate"
    );
    let dst = fake
        .repo(DEST_ORG, "app")
        .expect("the original destination");
    assert_eq!(
        branches_and_tags(&dst.path),
        branches_and_tags(&renamed.path)
    );
    assert_honest(&fake);
}

#[test]
fn a_destination_repository_ferry_did_not_create_is_an_error_and_left_alone() {
    let fake = fake(|_| {});
    source_repo(&fake, "app", RepoSpec::default());
    source_repo(&fake, "taken", RepoSpec::default());
    let theirs = fake
        .add_repo(DEST_ORG, "taken", RepoSpec::default())
        .expect("someone else's repository");
    push_commit(&theirs.path, "main", "not ours");
    let before = branches_and_tags(&theirs.path);
    let setup = Setup::new(&fake, "", "");
    let run = setup.sync();
    run.assert_code(1);
    assert!(run.stderr.contains("adopt_existing"), "{}", run.stderr);
    assert_eq!(
        branches_and_tags(&theirs.path),
        before,
        "someone else's repository was changed"
    );
    assert!(fake.repo(DEST_ORG, "app").is_some());

    // Asked to adopt it, ferry mirrors into it (divergence rules still apply).
    let adopt = Setup::new(
        &fake,
        "divergence = \"overwrite\"",
        ", adopt_existing = true",
    );
    adopt.sync().assert_code(0);
    let src = fake.repo(SOURCE_ORG, "taken").expect("source");
    assert_eq!(
        branches_and_tags(&theirs.path),
        branches_and_tags(&src.path)
    );
    assert_honest(&fake);
}
