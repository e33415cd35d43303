//! The fake GitHub: its contract checks catch what they must, and the fake
//! itself behaves like GitHub (paging, conditional requests, rate limits,
//! real git behind `clone_url`) without breaking the contract.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use ferry_testkit::github::{
    default_description_path, Contract, CreatedRepo, FakeOptions, GitHubFake, Matched, RepoSpec,
};
use ferry_testkit::{git, git_with_env, Servers, WorkRepo, WRITER};
use serde_json::{json, Value};

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| match Servers::start() {
        Ok(servers) => servers,
        Err(e) => panic!("failed to start the test servers: {e:#}"),
    })
}

fn contract() -> Result<std::sync::Arc<Contract>> {
    Contract::load(&default_description_path()?)
}

fn operation(contract: &Contract, method: &str, path: &str) -> Result<Matched> {
    contract
        .find(method, path)
        .with_context(|| format!("no operation for {method} {path} in the description"))
}

/// A fake accepting the writer's password as token, so the same secret
/// works for git over HTTP.
fn start(configure: impl FnOnce(&mut FakeOptions)) -> Result<GitHubFake> {
    let mut options = FakeOptions::new(WRITER.1);
    configure(&mut options);
    GitHubFake::start(servers(), options)
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Option<Value>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Result<&Value> {
        self.body.as_ref().context("the answer has no JSON body")
    }
}

fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Result<Answer> {
    let mut req = ureq::request(method, url).set("Accept", "application/vnd.github+json");
    if let Some(token) = token {
        req = req.set("Authorization", &format!("Bearer {token}"));
    }
    for (name, value) in headers {
        req = req.set(name, value);
    }
    let result = match body {
        Some(body) => req.send_json(body),
        None => req.call(),
    };
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => return Err(e).with_context(|| format!("{method} {url}")),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .filter_map(|name| {
            let value = response.header(&name)?.to_string();
            Some((name, value))
        })
        .collect();
    let text = response
        .into_string()
        .with_context(|| format!("{method} {url}: reading the body"))?;
    let body = if text.is_empty() {
        None
    } else {
        Some(serde_json::from_str(&text).with_context(|| format!("{method} {url}: {text}"))?)
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn get(fake: &GitHubFake, path: &str) -> Result<Answer> {
    request(
        "GET",
        &format!("{}{path}", fake.base_url()),
        Some(WRITER.1),
        &[],
        None,
    )
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(", ").find_map(|part| {
        let (url, rel) = part.split_once("; ")?;
        (rel == "rel=\"next\"").then(|| url.trim_matches(['<', '>']).to_string())
    })
}

/// Fails unless one of `problems` mentions `needle`.
fn expect_problem(problems: &[String], needle: &str) -> Result<()> {
    ensure!(
        problems.iter().any(|p| p.contains(needle)),
        "no problem mentions {needle:?}: {problems:#?}"
    );
    Ok(())
}

fn assert_no_violations(fake: &GitHubFake) -> Result<()> {
    let violations = fake.violations();
    ensure!(
        violations.is_empty(),
        "contract violations: {violations:#?}"
    );
    Ok(())
}

/// GitHub's own example of an organization listing, from the description.
fn example_minimal_repository() -> Result<Value> {
    let text = std::fs::read(default_description_path()?)?;
    let doc: Value = serde_json::from_slice(&text)?;
    doc.pointer("/components/examples/minimal-repository-items/value/0")
        .cloned()
        .context("the description has no minimal-repository-items example")
}

#[test]
fn contract_accepts_githubs_example_and_rejects_it_without_id() -> Result<()> {
    let contract = contract()?;
    let op = operation(&contract, "GET", "/orgs/acme/repos")?;
    assert_eq!(op.template, "/orgs/{org}/repos");
    let mut example = example_minimal_repository()?;
    let valid = contract.check_response(&op, 200, Some(&json!([example.clone()])));
    ensure!(
        valid.is_empty(),
        "GitHub's example was rejected: {valid:#?}"
    );

    if let Some(fields) = example.as_object_mut() {
        fields.remove("id");
    }
    let problems = contract.check_response(&op, 200, Some(&json!([example])));
    expect_problem(&problems, "\"id\" is a required property")?;
    Ok(())
}

#[test]
fn contract_rejects_unknown_enum_value_in_query() -> Result<()> {
    let contract = contract()?;
    let op = operation(&contract, "GET", "/orgs/acme/repos")?;
    let problems = contract.check_request(&op, "type=bogus&per_page=3", None);
    ensure!(
        problems.len() == 1 && problems[0].contains("query parameter `type`"),
        "type=bogus was not caught exactly once: {problems:#?}"
    );
    ensure!(contract
        .check_request(&op, "type=sources&per_page=3", None)
        .is_empty());
    let problems = contract.check_request(&op, "per_page=lots", None);
    expect_problem(&problems, "not an integer")?;
    let problems = contract.check_request(&op, "color=red", None);
    expect_problem(&problems, "not documented")?;
    Ok(())
}

#[test]
fn contract_rejects_undocumented_status_and_bad_request_body() -> Result<()> {
    let contract = contract()?;
    let list = operation(&contract, "GET", "/orgs/acme/repos")?;
    let problems = contract.check_response(&list, 201, Some(&json!([])));
    expect_problem(&problems, "status 201 is not documented")?;
    // GitHub's cross-cutting statuses are allowed with a basic-error body.
    let not_found =
        json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" });
    ensure!(contract
        .check_response(&list, 404, Some(&not_found))
        .is_empty());
    ensure!(!contract
        .check_response(&list, 404, Some(&json!([])))
        .is_empty());

    let create = operation(&contract, "POST", "/orgs/acme/repos")?;
    let problems = contract.check_request(&create, "", Some(&json!({ "private": "yes" })));
    expect_problem(&problems, "\"name\" is a required property")?;
    expect_problem(&problems, "request body at /private")?;
    ensure!(contract
        .check_request(&create, "", Some(&json!({ "name": "x", "private": true })))
        .is_empty());
    Ok(())
}

#[test]
fn org_listing_of_seven_repos_pages_by_three_following_links() -> Result<()> {
    let fake = start(|o| o.max_page_size = 3)?;
    fake.add_org("acme")?;
    let mut ids = Vec::new();
    for i in 0..7 {
        let spec = RepoSpec {
            private: i == 3,
            fork: i == 5,
            description: (i % 2 == 0).then(|| format!("repo {i}")),
            ..RepoSpec::default()
        };
        ids.push(fake.add_repo("acme", &format!("r{i}"), spec)?.id);
    }
    let mut url = format!(
        "{}/orgs/acme/repos?per_page=100&sort=created&direction=asc",
        fake.base_url()
    );
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let answer = request("GET", &url, Some(WRITER.1), &[], None)?;
        ensure!(answer.status == 200, "{url}: {}", answer.status);
        pages += 1;
        let items = answer.json()?.as_array().context("not an array")?;
        ensure!(items.len() <= 3, "page {pages} has {} items", items.len());
        seen.extend(items.iter().filter_map(|r| r["id"].as_u64()));
        match answer.header("Link").and_then(next_link) {
            Some(next) => url = next,
            None => break,
        }
        ensure!(pages < 10, "Link headers never end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);

    let second = get(&fake, "/orgs/acme/repos?per_page=3&page=2")?;
    let base = fake.base_url();
    assert_eq!(
        second.header("Link"),
        Some(
            format!(
                "<{base}/orgs/acme/repos?per_page=3&page=1>; rel=\"prev\", \
                 <{base}/orgs/acme/repos?per_page=3&page=3>; rel=\"next\", \
                 <{base}/orgs/acme/repos?per_page=3&page=3>; rel=\"last\", \
                 <{base}/orgs/acme/repos?per_page=3&page=1>; rel=\"first\""
            )
            .as_str()
        )
    );
    // Anonymous callers do not see the private repository.
    let anonymous = request(
        "GET",
        &format!("{base}/orgs/acme/repos?type=private"),
        None,
        &[],
        None,
    )?;
    assert_eq!(anonymous.json()?, &json!([]));
    // Six sources (no fork), three a page at most whatever per_page asks.
    let sources = get(&fake, "/orgs/acme/repos?type=sources&per_page=10")?;
    assert_eq!(sources.json()?.as_array().map(Vec::len), Some(3));
    let last = sources.header("Link").unwrap_or_default();
    ensure!(
        last.ends_with("type=sources&per_page=10&page=2>; rel=\"last\""),
        "{last}"
    );
    assert_eq!(fake.requests_to("GET", "/orgs/{org}/repos"), 6);
    assert_no_violations(&fake)
}

#[test]
fn if_none_match_answers_304_without_using_quota() -> Result<()> {
    let fake = start(|_| {})?;
    fake.add_repo("ferry-bot", "tool", RepoSpec::default())?;
    let first = get(&fake, "/repos/ferry-bot/tool")?;
    assert_eq!(first.status, 200);
    let etag = first.header("ETag").context("no ETag")?.to_string();
    ensure!(
        etag.starts_with('"') && etag.ends_with('"'),
        "not a strong ETag: {etag}"
    );
    assert_eq!(first.header("x-ratelimit-used"), Some("1"));

    let url = format!("{}/repos/ferry-bot/tool", fake.base_url());
    let again = request(
        "GET",
        &url,
        Some(WRITER.1),
        &[("If-None-Match", &etag)],
        None,
    )?;
    assert_eq!(again.status, 304);
    assert!(again.body.is_none());
    assert_eq!(again.header("x-ratelimit-used"), Some("1"));
    assert_eq!(again.header("x-ratelimit-remaining"), Some("4999"));

    // A change makes the old ETag stale.
    let patch = request(
        "PATCH",
        &url,
        Some(WRITER.1),
        &[],
        Some(json!({ "description": "now described" })),
    )?;
    assert_eq!(patch.status, 200);
    let changed = request(
        "GET",
        &url,
        Some(WRITER.1),
        &[("If-None-Match", &etag)],
        None,
    )?;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()?["description"], "now described");

    let counters = fake.counters();
    assert_eq!(
        (counters.requests, counters.not_modified, counters.counted),
        (4, 1, 3)
    );
    assert_no_violations(&fake)
}

#[test]
fn rate_limit_answers_403_then_recovers_after_the_window() -> Result<()> {
    let fake = start(|o| {
        o.rate_limit = 2;
        o.rate_window = Duration::from_secs(1);
    })?;
    assert_eq!(get(&fake, "/user")?.status, 200);
    let second = get(&fake, "/user")?;
    assert_eq!(second.header("x-ratelimit-remaining"), Some("0"));
    let limited = get(&fake, "/user")?;
    assert_eq!(limited.status, 403);
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(limited.header("x-ratelimit-resource"), Some("core"));
    let message = limited.json()?["message"].as_str().unwrap_or_default();
    ensure!(message.starts_with("API rate limit exceeded"), "{message}");
    let reset: u64 = limited
        .header("x-ratelimit-reset")
        .context("no x-ratelimit-reset")?
        .parse()?;

    // Poll until the window is over (bounded by the reset time plus slack).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let recovered = loop {
        let answer = get(&fake, "/user")?;
        if answer.status == 200 {
            break answer;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "still limited after 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(recovered.json()?["login"], "ferry-bot");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    ensure!(
        now.as_secs() + 1 >= reset,
        "recovered before the announced reset {reset}"
    );
    assert_no_violations(&fake)
}

#[test]
fn injected_failures_and_secondary_limits_hit_only_their_target() -> Result<()> {
    let fake = start(|o| o.max_page_size = 2)?;
    fake.add_org("acme")?;
    for name in ["a", "b", "c"] {
        fake.add_repo("acme", name, RepoSpec::default())?;
    }
    fake.fail_next("GET", "/orgs/acme/repos?page=2", 500, 1);
    assert_eq!(get(&fake, "/orgs/acme/repos")?.status, 200);
    assert_eq!(get(&fake, "/orgs/acme/repos?page=2")?.status, 500);
    assert_eq!(get(&fake, "/orgs/acme/repos?page=2")?.status, 200);

    fake.secondary_limit_next("/repos/acme/", 429, 2);
    for _ in 0..2 {
        let limited = get(&fake, "/repos/acme/a")?;
        assert_eq!(limited.status, 429);
        assert_eq!(limited.header("retry-after"), Some("1"));
    }
    assert_eq!(get(&fake, "/repos/acme/a")?.status, 200);
    // Injected answers do not count against the primary rate limit.
    assert_eq!(fake.counters().counted, 3);
    assert_no_violations(&fake)
}

#[test]
fn wrong_token_gets_401_and_bad_requests_are_recorded() -> Result<()> {
    let fake = start(|_| {})?;
    let url = format!("{}/user", fake.base_url());
    let wrong = request("GET", &url, Some("not-the-token"), &[], None)?;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()?["message"], "Bad credentials");
    assert_eq!(request("GET", &url, None, &[], None)?.status, 401);
    assert_no_violations(&fake)?;

    let bogus = get(&fake, "/orgs/ferry-bot/repos?type=bogus")?;
    assert_eq!(bogus.status, 500);
    let violations = fake.violations();
    ensure!(
        violations.len() == 1 && violations[0].contains("query parameter `type`"),
        "{violations:#?}"
    );
    let unknown = get(&fake, "/no/such/endpoint")?;
    assert_eq!(unknown.status, 404);
    assert_eq!(fake.violations().len(), 2);
    Ok(())
}

#[test]
fn created_repo_clones_and_pushes_over_its_clone_url() -> Result<()> {
    let fake = start(|_| {})?;
    fake.add_org("acme")?;
    let base = fake.base_url().to_string();
    let body = json!({ "name": "tool", "description": "mirrored", "visibility": "private", "has_wiki": false });
    let created = request(
        "POST",
        &format!("{base}/orgs/acme/repos"),
        Some(WRITER.1),
        &[],
        Some(body.clone()),
    )?;
    assert_eq!(created.status, 201);
    let repo = created.json()?;
    assert_eq!(repo["full_name"], "acme/tool");
    assert_eq!(repo["private"], true);
    assert_eq!(
        created.header("Location"),
        Some(format!("{base}/repos/acme/tool").as_str())
    );
    let again = request(
        "POST",
        &format!("{base}/orgs/acme/repos"),
        Some(WRITER.1),
        &[],
        Some(body),
    )?;
    assert_eq!(again.status, 422);
    assert_eq!(
        again.json()?["errors"][0]["message"],
        "name already exists on this account"
    );
    assert_eq!(
        fake.created_repos(),
        vec![CreatedRepo {
            owner: "acme".into(),
            name: "tool".into(),
            private: true,
            visibility: "private".into(),
            description: Some("mirrored".into()),
        }]
    );

    let clone_url = repo["clone_url"]
        .as_str()
        .context("no clone_url")?
        .to_string();
    let env = servers().http_auth_env((WRITER.0, WRITER.1));
    let work = WorkRepo::new()?;
    let oid = work.commit("README", "hello\n", "first")?;
    work.git_with_env(&["push", "-q", &clone_url, "main"], &env)?;
    let clone_dir = tempfile::tempdir()?;
    git_with_env(
        clone_dir.path(),
        &["clone", "-q", &clone_url, "clone"],
        &env,
    )?;
    assert_eq!(
        git(&clone_dir.path().join("clone"), &["rev-parse", "HEAD"])?,
        oid
    );

    // Rename keeps the id and moves the bare repository; git follows the new clone_url.
    let id = repo["id"].clone();
    let url = format!("{base}/repos/acme/tool");
    let renamed = request(
        "PATCH",
        &url,
        Some(WRITER.1),
        &[],
        Some(json!({ "name": "tool2" })),
    )?;
    assert_eq!(renamed.status, 200);
    assert_eq!(renamed.json()?["id"], id);
    let new_url = renamed.json()?["clone_url"]
        .as_str()
        .context("no clone_url")?
        .to_string();
    let listed = git_with_env(
        clone_dir.path(),
        &["ls-remote", &new_url, "refs/heads/main"],
        &env,
    )?;
    ensure!(listed.starts_with(&oid), "ls-remote after rename: {listed}");
    assert_eq!(get(&fake, "/repos/acme/tool")?.status, 404);
    assert_eq!(fake.patches().len(), 1);

    let deleted = request(
        "DELETE",
        &format!("{base}/repos/acme/tool2"),
        Some(WRITER.1),
        &[],
        None,
    )?;
    assert_eq!(deleted.status, 204);
    assert_eq!(get(&fake, "/repos/acme/tool2")?.status, 404);
    if git_with_env(clone_dir.path(), &["ls-remote", &new_url], &env).is_ok() {
        bail!("the deleted repository is still served");
    }
    assert_no_violations(&fake)
}

#[test]
fn users_orgs_and_own_repos_meet_the_contract() -> Result<()> {
    let fake = start(|_| {})?;
    fake.add_org("acme")?;
    fake.add_user("alice")?;
    fake.add_repo("alice", "public", RepoSpec::default())?;
    fake.add_repo(
        "alice",
        "secret",
        RepoSpec {
            private: true,
            ..RepoSpec::default()
        },
    )?;
    fake.add_repo(
        "acme",
        "org-repo",
        RepoSpec {
            archived: true,
            ..RepoSpec::default()
        },
    )?;
    fake.add_repo(
        "ferry-bot",
        "mine",
        RepoSpec {
            private: true,
            ..RepoSpec::default()
        },
    )?;

    assert_eq!(get(&fake, "/user")?.json()?["login"], "ferry-bot");
    assert_eq!(get(&fake, "/users/alice")?.json()?["type"], "User");
    assert_eq!(get(&fake, "/users/acme")?.json()?["type"], "Organization");
    assert_eq!(get(&fake, "/orgs/acme")?.json()?["login"], "acme");
    assert_eq!(get(&fake, "/orgs/alice")?.status, 404);
    let alice = get(&fake, "/users/alice/repos")?;
    let names: Vec<&str> = alice
        .json()?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["public"]);
    let mine = get(
        &fake,
        "/user/repos?affiliation=owner,organization_member&visibility=all",
    )?;
    let names: Vec<&str> = mine
        .json()?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["full_name"].as_str())
        .collect();
    assert_eq!(names, ["acme/org-repo", "ferry-bot/mine"]);
    let private = get(&fake, "/user/repos?visibility=private")?;
    assert_eq!(private.json()?.as_array().map(Vec::len), Some(1));
    let created = request(
        "POST",
        &format!("{}/user/repos", fake.base_url()),
        Some(WRITER.1),
        &[],
        Some(json!({ "name": "fresh repo", "private": false })),
    )?;
    assert_eq!(created.json()?["name"], "fresh-repo");
    assert_eq!(get(&fake, "/repos/alice/secret")?.status, 200);
    let anonymous = request(
        "GET",
        &format!("{}/repos/alice/secret", fake.base_url()),
        None,
        &[],
        None,
    )?;
    assert_eq!(anonymous.status, 404);
    assert_no_violations(&fake)
}

#[test]
fn malformed_requests_are_answered_and_recorded_without_stopping_the_fake() -> Result<()> {
    let fake = start(|_| {})?;
    let base = fake.base_url().to_string();
    let not_json = ureq::post(&format!("{base}/user/repos"))
        .set("Authorization", &format!("token {}", WRITER.1))
        .send_string("{name: tool");
    let status = match not_json {
        Err(ureq::Error::Status(status, _)) => status,
        other => bail!("a body that is not JSON got {other:?}"),
    };
    assert_eq!(status, 500);
    expect_problem(&fake.violations(), "request body is not JSON")?;

    assert_eq!(get(&fake, "/repos/%ff%fe/x%00")?.status, 404);
    let huge = get(&fake, "/orgs/ferry-bot/repos?page=99999999999999999999999")?;
    assert_eq!(huge.status, 500);
    expect_problem(&fake.violations(), "is not an integer")?;
    let far = get(&fake, "/users/ferry-bot/repos?page=4000000000&per_page=-5")?;
    assert_eq!((far.status, far.json()?), (200, &json!([])));
    assert_eq!(get(&fake, "/user")?.status, 200);
    assert_eq!(fake.violations().len(), 2, "{:#?}", fake.violations());
    Ok(())
}
