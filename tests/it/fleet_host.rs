//! What the tests of host fleets share: a config with one fleet between two accounts of a
//! fake host, the commands run on it (asserting the token never shows), and a commit pushed
//! straight into a fake's bare repository.

use crate::harness::{Ferry, Run};
use ferry_testkit::fakehost::{Host, Server};
use ferry_testkit::{WorkRepo, WRITER};
use serde_json::Value;
use std::path::Path;

/// The environment variable the configs name for the token.
const TOKEN_ENV: &str = "FLEET_TOKEN";

/// One fleet named `name` between two accounts of a fake host, in a temp dir.
pub struct Setup {
    dir: tempfile::TempDir,
    ferry: Ferry,
}

/// One end of a host fleet.
pub struct End<'a> {
    pub provider: &'a str,
    /// The instance or API URL (`api_url`).
    pub api_url: &'a str,
    pub owner: &'a str,
}

/// The two ends of a host fleet.
pub struct Ends<'a> {
    pub source: End<'a>,
    pub destination: End<'a>,
}

impl Setup {
    /// A config with one fleet `name` from `ends.source` to `ends.destination` (created as
    /// needed); `extra` goes into the fleet's table and `destination_extra` into its
    /// destination. The token is the test nginx's writer password, and git sends it as
    /// `writer`, so the same secret works for the fake's API and git over HTTP.
    pub fn new(name: &str, ends: &Ends, extra: &str, destination_extra: &str) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let account = |end: &End| {
            format!(
                "provider = \"{}\", owner = \"{}\", token_env = \"{TOKEN_ENV}\", api_url = \"{}\", username = \"{}\"",
                end.provider, end.owner, end.api_url, WRITER.0
            )
        };
        let text = format!(
            "[[fleet]]\nname = \"{name}\"\nsource = {{ {} }}\ndestination = {{ {}, create = true{destination_extra} }}\n{extra}\n",
            account(&ends.source),
            account(&ends.destination)
        );
        std::fs::write(dir.path().join("ferry.toml"), text).expect("config");
        Setup {
            dir,
            ferry: Ferry::new().env(TOKEN_ENV, WRITER.1),
        }
    }

    fn config(&self) -> String {
        self.dir.path().join("ferry.toml").display().to_string()
    }

    pub fn sync(&self) -> Run {
        let run = self.ferry.sync(&["--config", &self.config()]);
        assert!(
            !run.stdout.contains(WRITER.1) && !run.stderr.contains(WRITER.1),
            "the token leaked: {run:?}"
        );
        run
    }

    /// `ferry fleet list --json`: the fleet's entry.
    pub fn list(&self) -> Value {
        let run = self
            .ferry
            .run("fleet", &["list", "--config", &self.config(), "--json"]);
        assert!(!run.stdout.contains(WRITER.1) && !run.stderr.contains(WRITER.1));
        run.json[0].clone()
    }
}

/// The listed entry of member `name`.
pub fn action<'a>(fleet: &'a Value, name: &str) -> &'a Value {
    fleet["repositories"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("{name} not listed: {fleet:#}"))
}

/// Pushes one commit with `content` to `branch` of the bare repository `bare`.
pub fn push_commit(bare: &Path, branch: &str, content: &str) {
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

/// Pushes a commit on top of `bare`'s main (a fast-forward of what a mirror has).
pub fn push_on_top(bare: &Path) {
    let work = WorkRepo::new().expect("work repo");
    let bare = bare.display().to_string();
    work.git(&["fetch", "-q", &bare, "main"]).expect("fetch");
    work.git(&["checkout", "-q", "-B", "next", "FETCH_HEAD"])
        .expect("checkout");
    work.commit("g.txt", "after", "after the rename")
        .expect("commit");
    work.git(&["push", "-q", &bare, "HEAD:refs/heads/main"])
        .expect("push");
}

/// The deletion-safety story of a host fleet with `on_source_deleted = "delete"` whose source
/// lost `gone` since the last sync: a failed second page, a first page cut short and a failed
/// lookup (`lookup`, the prefix of the request that would confirm the deletion) each fail the
/// run and leave the destination alone; then a complete listing and a lookup that says 404
/// delete it, and only it. `listing` is the source listing's path on `source`; `gone` must be
/// on its first page, so that the deletion changes that page and a cut-short one cannot be
/// answered from the ETag cache.
pub fn deletes_only_on_a_complete_listing_and_a_lookup<H: Host>(
    setup: &Setup,
    source: &Server<H>,
    (listing, lookup): (&str, &str),
    destination_has: impl Fn(&str) -> bool,
    (gone, kept): (&str, &[&str]),
) {
    source.fail_next("GET", &format!("{listing}?page=2"), 500, 1);
    let run = setup.sync();
    run.assert_code(1);
    assert!(run.stderr.contains("incomplete"), "{}", run.stderr);
    assert!(destination_has(gone), "deleted on a failed page");

    source.truncate_next(listing, 1);
    let run = setup.sync();
    run.assert_code(1);
    assert!(run.stderr.contains("not JSON"), "{}", run.stderr);
    assert!(destination_has(gone), "deleted on a page cut short");

    source.fail_next("GET", lookup, 502, 1);
    let run = setup.sync();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(destination_has(gone), "deleted on a failed lookup");

    setup.sync().assert_code(0);
    assert!(!destination_has(gone), "not deleted when it was confirmed");
    for name in kept {
        assert!(destination_has(name), "{name} was deleted too");
    }
}

/// After a sync, a listing that finds nothing new is answered 304 throughout: every request
/// `ferry fleet list` reports is one the fake (`not_modified` reads its counter) answered
/// "not modified". The first listing after the sync sees the destinations it created.
pub fn an_unchanged_listing_is_answered_not_modified(
    setup: &Setup,
    not_modified: impl Fn() -> u64,
) {
    setup.sync().assert_code(0);
    setup.list();
    let before = not_modified();
    let listed = setup.list();
    let requests = listed["api_requests"].as_u64().unwrap_or(0);
    assert!(requests > 0, "{listed:#}");
    assert_eq!(
        listed["api_not_modified"], listed["api_requests"],
        "every request of an unchanged listing is answered 304"
    );
    assert_eq!(not_modified() - before, requests);
}
