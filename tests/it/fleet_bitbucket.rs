//! Fleets from Bitbucket Cloud: a fake Bitbucket API (crates/testkit/src/bitbucket) whose
//! every request and answer is checked against Bitbucket's published API description, serving
//! real git through the test nginx, mirrored into an organisation of the fake Gitea. Small
//! pages force the `next` links to be followed; faults and rate limits are injected.

use crate::fleet_host::{
    action, deletes_only_on_a_complete_listing_and_a_lookup, push_commit, push_on_top, End, Ends,
    Setup,
};
use crate::harness::{branches_and_tags, servers};
use ferry_testkit::bitbucket::{BitbucketFake, FakeOptions, FakeRepo, RepoSpec};
use ferry_testkit::gitea::{self, GiteaFake};
use ferry_testkit::WRITER;
use std::time::Duration;

const WORKSPACE: &str = "acme";
const DEST: &str = "acme-mirror";

/// A fake Bitbucket (pages of 2, the workspace `acme`, the test nginx's writer as the user
/// and app password) and a fake Gitea with the destination organisation.
fn fakes(options: impl FnOnce(&mut FakeOptions)) -> (BitbucketFake, GiteaFake) {
    let mut o = FakeOptions::new(WRITER.0, WRITER.1);
    o.max_page_size = 2;
    options(&mut o);
    let bitbucket = BitbucketFake::start(servers(), o).expect("start the fake Bitbucket");
    bitbucket.add_workspace(WORKSPACE).expect("workspace");
    let gitea = GiteaFake::start(servers(), gitea::FakeOptions::new(WRITER.1))
        .expect("start the fake Gitea");
    gitea.add_org(DEST).expect("destination org");
    (bitbucket, gitea)
}

fn source_repo(fake: &BitbucketFake, slug: &str, spec: RepoSpec) -> FakeRepo {
    let branch = spec.mainbranch.clone().unwrap_or_else(|| "main".into());
    let repo = fake.add_repo(WORKSPACE, slug, spec).expect("add repo");
    push_commit(&repo.path, &branch, slug);
    repo
}

/// A fleet `bb` from the workspace to the Gitea organisation.
fn setup(bitbucket: &BitbucketFake, gitea: &GiteaFake, extra: &str) -> Setup {
    let api = bitbucket.api_url();
    let ends = Ends {
        source: End {
            provider: "bitbucket",
            api_url: &api,
            owner: WORKSPACE,
        },
        destination: End {
            provider: "gitea",
            api_url: gitea.base_url(),
            owner: DEST,
        },
    };
    Setup::new("bb", &ends, extra, "")
}

fn assert_honest(bitbucket: &BitbucketFake, gitea: &GiteaFake) {
    let v = bitbucket.violations();
    assert!(v.is_empty(), "Bitbucket contract violations: {v:#?}");
    let v = gitea.violations();
    assert!(v.is_empty(), "Gitea contract violations: {v:#?}");
}

#[test]
fn a_bitbucket_workspace_is_listed_through_its_next_links_and_mirrored() {
    let (bitbucket, gitea) = fakes(|_| {});
    let app = source_repo(&bitbucket, "app", RepoSpec::default());
    let secret = source_repo(
        &bitbucket,
        "secret",
        RepoSpec {
            private: true,
            description: Some("keep it quiet".into()),
            ..RepoSpec::default()
        },
    );
    let trunk = source_repo(
        &bitbucket,
        "trunk-based",
        RepoSpec {
            mainbranch: Some("trunk".into()),
            ..RepoSpec::default()
        },
    );
    source_repo(
        &bitbucket,
        "forked",
        RepoSpec {
            fork: true,
            ..RepoSpec::default()
        },
    );
    let lib = source_repo(&bitbucket, "lib", RepoSpec::default());
    let setup = setup(&bitbucket, &gitea, "");

    let listed = setup.list();
    assert_eq!(
        listed["repositories"].as_array().map(Vec::len),
        Some(5),
        "{listed:#}"
    );
    assert_eq!(action(&listed, "bb/forked")["reason"], "fork");
    assert_eq!(action(&listed, "bb/app")["action"], "create");
    assert!(
        bitbucket.requests_to("GET", "/repositories/{workspace}") >= 3,
        "5 repositories in pages of 2 take 3 pages"
    );

    setup.sync().assert_code(0);
    let mut created = gitea.created_repos();
    created.sort_by(|a, b| a.name.cmp(&b.name));
    let shown: Vec<(String, bool)> = created
        .iter()
        .map(|c| (c.name.clone(), c.private))
        .collect();
    assert_eq!(
        shown,
        [
            ("app".to_string(), true),
            ("lib".into(), true),
            ("secret".into(), true),
            ("trunk-based".into(), true),
        ],
        "private by default"
    );
    assert_eq!(created[2].description.as_deref(), Some("keep it quiet"));
    for (slug, src) in [
        ("app", &app),
        ("lib", &lib),
        ("secret", &secret),
        ("trunk-based", &trunk),
    ] {
        let dst = gitea.repo(DEST, slug).expect("destination");
        assert_eq!(
            branches_and_tags(&dst.path),
            branches_and_tags(&src.path),
            "{slug}"
        );
    }
    assert!(
        gitea
            .patches()
            .iter()
            .any(|p| p.repo == "acme-mirror/trunk-based" && p.body["default_branch"] == "trunk"),
        "{:?}",
        gitea.patches()
    );
    assert_honest(&bitbucket, &gitea);
}

#[test]
fn a_failed_or_truncated_bitbucket_page_or_a_failed_lookup_deletes_nothing() {
    let (bitbucket, gitea) = fakes(|_| {});
    // Sorted by slug, `a-gone` is on the first page: deleting it changes that page.
    for slug in ["a-gone", "b", "c", "d"] {
        source_repo(&bitbucket, slug, RepoSpec::default());
    }
    let setup = setup(&bitbucket, &gitea, "on_source_deleted = \"delete\"");
    setup.sync().assert_code(0);
    bitbucket
        .delete_repo(WORKSPACE, "a-gone")
        .expect("delete source");
    let listing = format!("/2.0/repositories/{WORKSPACE}");
    deletes_only_on_a_complete_listing_and_a_lookup(
        &setup,
        &bitbucket,
        // The lookup by UUID: `/repositories/acme/{...}`.
        (&listing, &format!("{listing}/%7B")),
        |name| gitea.repo(DEST, name).is_some(),
        ("a-gone", &["b", "c", "d"]),
    );
    assert_honest(&bitbucket, &gitea);
}

#[test]
fn a_bitbucket_rename_keeps_the_member_and_an_unchanged_listing_is_answered_not_modified() {
    let (bitbucket, gitea) = fakes(|o| {
        o.rate_limit = 5;
        o.rate_window = Duration::from_secs(1);
    });
    let original = source_repo(&bitbucket, "app", RepoSpec::default());
    source_repo(&bitbucket, "lib", RepoSpec::default());
    bitbucket.rate_limit_next(&format!("/2.0/repositories/{WORKSPACE}"), 1);
    let setup = setup(&bitbucket, &gitea, "");
    setup.sync().assert_code(0);
    assert!(
        bitbucket.counters().requests > bitbucket.counters().counted,
        "no request was turned away by a limit"
    );

    bitbucket
        .rename_repo(WORKSPACE, "app", "app-renamed")
        .expect("rename");
    push_on_top(&original.path);
    let listed = setup.list();
    assert_eq!(action(&listed, "bb/app-renamed")["action"], "renamed");
    setup.sync().assert_code(0);
    assert_eq!(
        gitea.created_repos().len(),
        2,
        "the rename created a duplicate"
    );
    let dst = gitea.repo(DEST, "app").expect("the original destination");
    assert_eq!(
        branches_and_tags(&dst.path),
        branches_and_tags(&original.path)
    );

    setup.list();
    let before = bitbucket.counters().not_modified;
    let listed = setup.list();
    assert!(
        bitbucket.counters().not_modified > before,
        "the unchanged listing was not answered 304: {listed:#}"
    );
    assert_honest(&bitbucket, &gitea);
}
