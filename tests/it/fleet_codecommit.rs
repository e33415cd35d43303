//! Fleets from AWS CodeCommit: a fake CodeCommit (crates/testkit/src/codecommit) whose every
//! request and answer is checked against botocore's service model, and whose SigV4
//! signatures are verified, serving real git through the test nginx. ferry lists it with the
//! real AWS SDK. Pages of 3 force paging; failures and throttling are injected.

use crate::harness::{branches_and_tags, servers, Ferry, Run};
use crate::service::{codecommit_event, Serve, SECRET};
use ferry_testkit::codecommit::{CodeCommitFake, FakeOptions, FakeRepo, RepoSpec};
use ferry_testkit::github::{FakeOptions as GitHubOptions, GitHubFake};
use ferry_testkit::{WorkRepo, WRITER};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How many times the AWS SDK tries a call (its standard retry mode).
const SDK_ATTEMPTS: u32 = 3;

/// The variable the fleet's HTTPS Git password is read from.
const GIT_PASSWORD_VAR: &str = "CC_GIT_PASSWORD";

fn fake() -> CodeCommitFake {
    CodeCommitFake::start(servers(), FakeOptions::default()).expect("start the fake CodeCommit")
}

/// A repository with one commit on `branch` (its default when given).
fn repo(fake: &CodeCommitFake, name: &str, default_branch: Option<&str>) -> FakeRepo {
    let spec = RepoSpec {
        description: Some(format!("the {name} service")),
        default_branch: default_branch.map(str::to_owned),
        ..RepoSpec::default()
    };
    let repo = fake.add_repo(name, spec).expect("add repo");
    push_commit(&repo.path, default_branch.unwrap_or("main"), name);
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

/// The fleet's source table for the fake's account.
fn source(fake: &CodeCommitFake) -> String {
    let (username, _) = fake.git_credentials();
    format!(
        "{{ provider = \"codecommit\", region = \"{}\", username = \"{username}\", password_env = \"{GIT_PASSWORD_VAR}\" }}",
        fake.region()
    )
}

/// The environment ferry needs for the fake: the SDK's (credentials, region, endpoint) and
/// the HTTPS Git password.
fn env(fake: &CodeCommitFake) -> Vec<(String, String)> {
    let mut env = fake.sdk_env();
    env.push((GIT_PASSWORD_VAR.into(), fake.git_credentials().1.into()));
    env
}

fn ferry(fake: &CodeCommitFake) -> Ferry {
    env(fake).iter().fold(Ferry::new(), |f, (k, v)| f.env(k, v))
}

struct Setup {
    dir: tempfile::TempDir,
    ferry: Ferry,
    secrets: Vec<String>,
}

impl Setup {
    fn new(fake: &CodeCommitFake, destination: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!(
            "[[fleet]]\nname = \"cc\"\nsource = {}\ndestination = {destination}\n{extra}\n",
            source(fake)
        );
        std::fs::write(dir.path().join("ferry.toml"), text).expect("config");
        Setup {
            dir,
            ferry: ferry(fake),
            secrets: vec![
                fake.git_credentials().1.to_owned(),
                fake.secret_access_key().to_owned(),
            ],
        }
    }

    fn backup(&self) -> PathBuf {
        self.dir.path().join("backup")
    }

    fn config(&self) -> String {
        self.dir.path().join("ferry.toml").display().to_string()
    }

    fn assert_no_secret(&self, run: &Run) {
        for s in &self.secrets {
            assert!(
                !run.stdout.contains(s.as_str()) && !run.stderr.contains(s.as_str()),
                "a secret leaked: {run:?}"
            );
        }
    }

    fn sync(&self) -> Run {
        let run = self.ferry.sync(&["--config", &self.config()]);
        self.assert_no_secret(&run);
        run
    }

    fn list(&self) -> Value {
        let run = self
            .ferry
            .run("fleet", &["list", "--config", &self.config(), "--json"]);
        self.assert_no_secret(&run);
        run.json[0].clone()
    }
}

fn action<'a>(fleet: &'a Value, name: &str) -> &'a Value {
    fleet["repositories"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("{name} not listed: {fleet:#}"))
}

fn assert_honest(fake: &CodeCommitFake) {
    let v = fake.violations();
    assert!(v.is_empty(), "contract violations: {v:#?}");
    assert_eq!(
        fake.counters().auth_failures,
        0,
        "a request was not signed right"
    );
}

#[test]
fn a_codecommit_account_moves_to_a_github_organisation_page_by_page_private_with_its_description_and_default_branch(
) {
    let cc = fake();
    let names = ["app", "lib", "svc", "web"];
    let mut sources = Vec::new();
    for name in names {
        let branch = (name == "app").then_some("trunk");
        sources.push(repo(&cc, name, branch.or(Some("main"))));
    }
    let mut options = GitHubOptions::new(WRITER.1);
    options.max_page_size = 3;
    let gh = GitHubFake::start(servers(), options).expect("start the fake GitHub");
    gh.add_org("acme-mirror").expect("destination org");
    let destination = format!(
        "{{ provider = \"github\", owner = \"acme-mirror\", token_env = \"GH_TOKEN\", api_url = \"{}\", username = \"{}\", create = true, visibility = \"public\" }}",
        gh.base_url(),
        WRITER.0
    );
    let mut setup = Setup::new(&cc, &destination, "");
    setup.ferry = setup.ferry.env("GH_TOKEN", WRITER.1);

    let listed = setup.list();
    for name in names {
        assert_eq!(action(&listed, &format!("cc/{name}"))["action"], "create");
    }
    assert_eq!(
        cc.requests_to("ListRepositories"),
        2,
        "4 repositories in pages of 3 take 2 pages"
    );
    assert_eq!(cc.requests_to("BatchGetRepositories"), 1);
    assert!(gh.created_repos().is_empty(), "list created something");

    let run = setup.sync();
    run.assert_code(0);
    let mut created = gh.created_repos();
    created.sort_by(|a, b| a.name.cmp(&b.name));
    for (c, name) in created.iter().zip(names) {
        assert_eq!(c.name, name);
        assert_eq!(
            c.visibility, "private",
            "{name}: more public than its CodeCommit source"
        );
        assert_eq!(
            c.description.as_deref(),
            Some(&*format!("the {name} service"))
        );
    }
    assert_eq!(created.len(), names.len());
    for (name, src) in names.iter().zip(&sources) {
        let dst = gh.repo("acme-mirror", name).expect("destination");
        assert_eq!(
            branches_and_tags(&dst.path),
            branches_and_tags(&src.path),
            "{name}"
        );
    }
    assert!(
        gh.patches()
            .iter()
            .any(|p| p.repo == "app" && p.body["default_branch"] == "trunk"),
        "app's default branch was not set: {:?}",
        gh.patches()
    );
    assert_honest(&cc);
    assert!(gh.violations().is_empty(), "{:#?}", gh.violations());
}

#[test]
fn a_renamed_codecommit_repository_stays_its_member_and_a_deletion_counts_only_when_confirmed() {
    let cc = fake();
    for name in ["a", "b", "gone"] {
        repo(&cc, name, Some("main"));
    }
    let setup = Setup::new(
        &cc,
        "{ provider = \"directory\", path = \"backup\", create = true }",
        "on_source_deleted = \"delete\"",
    );
    setup.sync().assert_code(0);
    for name in ["a", "b", "gone"] {
        assert!(setup.backup().join(name).is_dir(), "{name} not backed up");
    }

    // Renamed on CodeCommit: the same repositoryId, so the same member under its new name.
    cc.rename_repo("b", "b2").expect("rename");
    let listed = setup.list();
    assert_eq!(action(&listed, "cc/b2")["action"], "renamed", "{listed:#}");
    assert_eq!(action(&listed, "cc/b2")["from"], "b", "{listed:#}");

    // Deleted on CodeCommit, but the listing fails every attempt the SDK makes (3: its
    // standard retry mode): an incomplete listing deletes nothing.
    cc.delete_repo("gone").expect("delete");
    cc.fail_next("ListRepositories", SDK_ATTEMPTS);
    let run = setup.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("incomplete"), "{}", run.stderr);
    assert!(
        setup.backup().join("gone").is_dir(),
        "deleted on a failed listing"
    );

    // The listing is complete but the lookup that would confirm the deletion fails.
    cc.fail_next("GetRepository", SDK_ATTEMPTS);
    let run = setup.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        setup.backup().join("gone").is_dir(),
        "deleted on a failed lookup"
    );

    // Throttled listing calls are retried by the SDK; the lookup says the repository does
    // not exist: now the backup goes, and only it.
    cc.throttle_next("ListRepositories", 2);
    let run = setup.sync();
    run.assert_code(0);
    assert!(!setup.backup().join("gone").exists(), "{}", run.stderr);
    assert!(setup.backup().join("a").is_dir());
    assert!(cc.counters().by_operation["GetRepository"] >= 2);
    assert_honest(&cc);
}

#[test]
fn a_codecommit_fleet_in_serve_routes_events_by_repository_id_even_under_an_old_name() {
    let cc = fake();
    let app = repo(&cc, "app", Some("main"));
    repo(&cc, "lib", Some("main"));
    let backup = tempfile::tempdir().expect("backup dir");
    let fleet = format!(
        "[[fleet]]\nname = \"cc\"\nsource = {}\ndestination = {{ provider = \"directory\", path = \"{}\", create = true }}\n\
         webhook_secret_file = \"hook-secret\"\ndiscover_interval = \"0\"\n",
        source(&cc),
        backup.path().display()
    );
    let env = env(&cc);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let serve = Serve::start_with_env("", &fleet, &env);
    let converged = |serve: &Serve| {
        serve.wait("cc/app to converge", Duration::from_secs(60), || {
            let dst = backup.path().join("app");
            // `git init` writes `objects/` last: before that the directory is no repository
            // yet (a poll that lands while ferry creates it must not read it).
            dst.join("objects").is_dir()
                && branches_and_tags(&dst) == branches_and_tags(&app.path)
                && serve.mirror("cc%2Fapp")["state"] == "idle"
        });
    };
    converged(&serve);

    // An event with the repository's id and a name that is no longer (or never was) its
    // name: the id decides.
    push_commit(&app.path, "main", "second");
    let mut event: Value =
        serde_json::from_slice(&codecommit_event("referenceUpdated", "main")).expect("event");
    event["detail"]["repositoryId"] = json!(app.id);
    event["detail"]["repositoryName"] = json!("app-before-the-rename");
    let (code, answer) = serve.post(
        "/hooks/cc",
        &[("authorization", format!("Bearer {SECRET}"))],
        event.to_string().as_bytes(),
    );
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["mirror"], "cc/app", "{answer}");
    converged(&serve);
    let runs = serve.runs("cc%2Fapp");
    assert_eq!(runs[0]["trigger"], "webhook", "{:?}", runs[0]);
    assert_honest(&cc);
}

#[test]
fn a_codecommit_source_without_git_credentials_or_with_a_bad_region_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "{ provider = \"codecommit\", region = \"eu-west-1\" }",
            "HTTPS Git credentials",
        ),
        (
            "{ provider = \"codecommit\", region = \"eu west 1\", username = \"u\", password_env = \"HOME\" }",
            "is not an AWS region name",
        ),
        (
            "{ provider = \"codecommit\", owner = \"acme\", username = \"u\", password_env = \"HOME\" }",
            "owner",
        ),
    ];
    for (source, expected) in cases {
        let config = dir.path().join("ferry.toml");
        std::fs::write(
            &config,
            format!(
                "[[fleet]]\nname = \"cc\"\nsource = {source}\ndestination = {{ provider = \"directory\", path = \"backup\" }}\n"
            ),
        )
        .expect("config");
        let run = Ferry::new().run(
            "fleet",
            &["list", "--config", &config.display().to_string()],
        );
        assert_eq!(run.code, 2, "{source}: {}", run.stderr);
        assert!(
            run.stderr.contains(expected) && run.stderr.contains("ferry.toml:3"),
            "{source}: {}",
            run.stderr
        );
    }
}
