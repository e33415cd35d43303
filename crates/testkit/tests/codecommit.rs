//! The fake CodeCommit, driven by the real AWS SDK for Rust: it pages,
//! answers metadata and modelled errors, throttles so that the SDK retries,
//! refuses bad signatures as AWS does, serves real git behind
//! `cloneUrlHttp`, and breaks botocore's model in none of it.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_codecommit::config::retry::RetryConfig;
use aws_sdk_codecommit::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_codecommit::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use ferry_testkit::codecommit::{CodeCommitFake, FakeOptions, RepoSpec};
use ferry_testkit::{git, git_with_env, Servers, WorkRepo};

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| match Servers::start() {
        Ok(servers) => servers,
        Err(e) => panic!("failed to start the test servers: {e:#}"),
    })
}

fn start() -> Result<CodeCommitFake> {
    CodeCommitFake::start(servers(), FakeOptions::default())
}

/// An SDK client for the fake's endpoint with these credentials and region;
/// three attempts with a short backoff.
fn client_as(fake: &CodeCommitFake, key: &str, secret: &str, region: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_codecommit::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(key, secret, None, None, "ferry-testkit"))
        .endpoint_url(fake.endpoint())
        .http_client(http)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .build();
    Client::from_conf(config)
}

fn client(fake: &CodeCommitFake) -> Client {
    client_as(
        fake,
        fake.access_key_id(),
        fake.secret_access_key(),
        fake.region(),
    )
}

fn assert_no_violations(fake: &CodeCommitFake) -> Result<()> {
    let violations = fake.violations();
    ensure!(violations.is_empty(), "model violations: {violations:#?}");
    Ok(())
}

fn add(fake: &CodeCommitFake, names: &[&str]) -> Result<()> {
    for name in names {
        fake.add_repo(name, RepoSpec::default())?;
    }
    Ok(())
}

fn service_error_code<E>(e: &aws_sdk_codecommit::error::SdkError<E>) -> Option<&str>
where
    E: aws_sdk_codecommit::error::ProvideErrorMetadata,
{
    e.as_service_error().and_then(|e| e.code())
}

#[tokio::test]
async fn codecommit_sdk_paginator_lists_every_repository_across_pages() -> Result<()> {
    let fake = start()?;
    add(
        &fake,
        &[
            "delta", "alpha", "echo", "charlie", "bravo", "golf", "foxtrot",
        ],
    )?;
    let listed: Vec<_> = client(&fake)
        .list_repositories()
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await?;
    let names: Vec<&str> = listed.iter().filter_map(|r| r.repository_name()).collect();
    assert_eq!(
        names,
        ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]
    );
    let alpha = fake.repo("alpha").context("alpha is gone")?;
    assert_eq!(listed[0].repository_id(), Some(alpha.id.as_str()));
    assert_eq!(fake.requests_to("ListRepositories"), 3, "pages of 3");

    // By last change, newest first: the order they were added, reversed.
    let page = client(&fake)
        .list_repositories()
        .sort_by(aws_sdk_codecommit::types::SortByEnum::ModifiedDate)
        .order(aws_sdk_codecommit::types::OrderEnum::Descending)
        .send()
        .await?;
    let names: Vec<&str> = page
        .repositories()
        .iter()
        .filter_map(|r| r.repository_name())
        .collect();
    assert_eq!(names, ["foxtrot", "golf", "bravo"]);
    assert!(page.next_token().is_some());
    assert_no_violations(&fake)
}

#[tokio::test]
async fn codecommit_invalid_next_token_is_refused_with_the_modelled_error() -> Result<()> {
    let fake = start()?;
    add(&fake, &["one"])?;
    let e = client(&fake)
        .list_repositories()
        .next_token("not-a-token")
        .send()
        .await
        .err()
        .context("a bogus token was accepted")?;
    ensure!(
        e.as_service_error()
            .is_some_and(|e| e.is_invalid_continuation_token_exception()),
        "{e:?}"
    );
    assert_no_violations(&fake)
}

#[tokio::test]
async fn codecommit_batch_get_answers_metadata_and_names_not_found() -> Result<()> {
    let fake = start()?;
    let app = fake.add_repo(
        "app",
        RepoSpec {
            description: Some("the app".into()),
            default_branch: Some("trunk".into()),
            ..RepoSpec::default()
        },
    )?;
    add(&fake, &["lib"])?;
    let out = client(&fake)
        .batch_get_repositories()
        .repository_names("app")
        .repository_names("nope")
        .repository_names("lib")
        .send()
        .await?;
    let found = out.repositories();
    assert_eq!(found.len(), 2);
    let meta = &found[0];
    assert_eq!(meta.repository_name(), Some("app"));
    assert_eq!(meta.repository_id(), Some(app.id.as_str()));
    assert_eq!(meta.account_id(), Some(fake.account_id()));
    assert_eq!(meta.repository_description(), Some("the app"));
    assert_eq!(meta.default_branch(), Some("trunk"));
    assert_eq!(meta.clone_url_http(), Some(app.clone_url_http.as_str()));
    assert_eq!(
        meta.arn(),
        Some(
            format!(
                "arn:aws:codecommit:{}:{}:app",
                fake.region(),
                fake.account_id()
            )
            .as_str()
        )
    );
    ensure!(meta.creation_date().is_some() && meta.last_modified_date().is_some());
    ensure!(
        app.clone_url_http.ends_with("/v1/repos/app"),
        "{}",
        app.clone_url_http
    );
    assert_eq!(found[1].repository_name(), Some("lib"));
    assert_eq!(found[1].default_branch(), None, "never pushed to");
    assert_eq!(out.repositories_not_found(), ["nope".to_string()]);

    let too_many: Vec<String> = (0..26).map(|i| format!("r{i}")).collect();
    let e = client(&fake)
        .batch_get_repositories()
        .set_repository_names(Some(too_many))
        .send()
        .await
        .err()
        .context("26 names were accepted")?;
    ensure!(
        e.as_service_error()
            .is_some_and(|e| e.is_maximum_repository_names_exceeded_exception()),
        "{e:?}"
    );
    assert_no_violations(&fake)
}

#[tokio::test]
async fn codecommit_get_repository_of_a_missing_one_is_repository_does_not_exist() -> Result<()> {
    let fake = start()?;
    add(&fake, &["here"])?;
    let got = client(&fake)
        .get_repository()
        .repository_name("here")
        .send()
        .await?;
    let meta = got.repository_metadata().context("no metadata")?;
    assert_eq!(meta.repository_name(), Some("here"));

    let e = client(&fake)
        .get_repository()
        .repository_name("gone")
        .send()
        .await
        .err()
        .context("a missing repository was found")?;
    ensure!(
        e.as_service_error()
            .is_some_and(|e| e.is_repository_does_not_exist_exception()),
        "{e:?}"
    );
    assert_no_violations(&fake)
}

#[tokio::test]
async fn codecommit_throttled_and_failed_calls_are_retried_by_the_sdk() -> Result<()> {
    let fake = start()?;
    add(&fake, &["busy"])?;
    fake.throttle_next("GetRepository", 2);
    client(&fake)
        .get_repository()
        .repository_name("busy")
        .send()
        .await?;
    assert_eq!(
        fake.requests_to("GetRepository"),
        3,
        "two throttled, then answered"
    );

    fake.fail_next("ListRepositories", 3);
    let e = client(&fake)
        .list_repositories()
        .send()
        .await
        .err()
        .context("three failures were not enough")?;
    assert_eq!(service_error_code(&e), Some("InternalFailure"), "{e:?}");
    assert_eq!(fake.requests_to("ListRepositories"), 3, "three attempts");
    client(&fake).list_repositories().send().await?;

    fake.truncate_next("ListRepositories", 1);
    let cut = client(&fake).list_repositories().send().await;
    ensure!(cut.is_err(), "a truncated answer parsed: {cut:?}");
    assert_no_violations(&fake)
}

#[tokio::test]
async fn codecommit_wrong_key_secret_or_region_is_refused_as_aws_does() -> Result<()> {
    let fake = start()?;
    let (key, secret, region) = (
        fake.access_key_id().to_string(),
        fake.secret_access_key().to_string(),
        fake.region().to_string(),
    );
    for (key, secret, region, expected) in [
        (
            "AKIAOTHERKEY00000000",
            secret.as_str(),
            region.as_str(),
            "UnrecognizedClientException",
        ),
        (
            key.as_str(),
            "not-the-secret",
            region.as_str(),
            "InvalidSignatureException",
        ),
        (
            key.as_str(),
            secret.as_str(),
            "us-west-2",
            "InvalidSignatureException",
        ),
    ] {
        let e = client_as(&fake, key, secret, region)
            .list_repositories()
            .send()
            .await
            .err()
            .with_context(|| format!("{expected} expected"))?;
        assert_eq!(service_error_code(&e), Some(expected), "{e:?}");
    }
    assert_eq!(fake.counters().auth_failures, 3);
    assert_no_violations(&fake)
}

#[tokio::test]
async fn codecommit_unsigned_or_off_model_requests_are_refused() -> Result<()> {
    let fake = start()?;
    // The answer's status and error type.
    let post = |target: &str| -> Result<(u16, String)> {
        let answer = ureq::post(fake.endpoint())
            .set("Content-Type", "application/x-amz-json-1.1")
            .set("X-Amz-Target", target)
            .send_string("{}");
        let response = match answer {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(e) => bail!("POST {target}: {e}"),
        };
        let status = response.status();
        let body: serde_json::Value = response.into_json()?;
        Ok((status, body["__type"].as_str().unwrap_or("").to_string()))
    };
    assert_eq!(
        post("CodeCommit_20150413.ListRepositories")?,
        (403, "MissingAuthenticationTokenException".to_string())
    );
    assert_no_violations(&fake)?;
    assert_eq!(
        post("CodeCommit_20150413.ListRepos")?,
        (400, "UnknownOperationException".to_string())
    );
    let violations = fake.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    ensure!(violations[0].contains("ListRepos"), "{violations:?}");
    Ok(())
}

#[tokio::test]
async fn codecommit_clone_url_http_serves_git_and_follows_renames() -> Result<()> {
    let fake = start()?;
    let repo = fake.add_repo("service", RepoSpec::default())?;
    let env = servers().http_auth_env(fake.git_credentials());
    let work = WorkRepo::new()?;
    let oid = work.commit("README", "hello\n", "first")?;
    work.git_with_env(&["push", "-q", &repo.clone_url_http, "main"], &env)?;
    let listed = git_with_env(work.path(), &["ls-remote", &repo.clone_url_http], &env)?;
    ensure!(
        listed.contains(&format!("{oid}\trefs/heads/main")),
        "ls-remote: {listed}"
    );

    let sdk = client(&fake);
    sdk.update_repository_name()
        .old_name("service")
        .new_name("service2")
        .send()
        .await?;
    let moved = fake.repo("service2").context("the renamed repository")?;
    assert_eq!(moved.id, repo.id, "a rename keeps the id");
    ensure!(fake.repo("service").is_none());
    let listed = git_with_env(work.path(), &["ls-remote", &moved.clone_url_http], &env)?;
    ensure!(listed.contains(&oid), "ls-remote after rename: {listed}");
    assert_eq!(git(&moved.path, &["rev-parse", "main"])?, oid);

    let created = sdk
        .create_repository()
        .repository_name("fresh")
        .repository_description("made by the SDK")
        .send()
        .await?;
    let meta = created.repository_metadata().context("no metadata")?;
    assert_eq!(meta.repository_description(), Some("made by the SDK"));
    let e = sdk
        .create_repository()
        .repository_name("fresh")
        .send()
        .await
        .err()
        .context("a name was taken twice")?;
    ensure!(
        e.as_service_error()
            .is_some_and(|e| e.is_repository_name_exists_exception()),
        "{e:?}"
    );

    let deleted = sdk
        .delete_repository()
        .repository_name("service2")
        .send()
        .await?;
    assert_eq!(deleted.repository_id(), Some(moved.id.as_str()));
    let again = sdk
        .delete_repository()
        .repository_name("service2")
        .send()
        .await?;
    assert_eq!(again.repository_id(), None, "already gone: no id");
    if git_with_env(work.path(), &["ls-remote", &moved.clone_url_http], &env).is_ok() {
        bail!("the deleted repository is still served");
    }
    assert_no_violations(&fake)
}

#[tokio::test]
async fn codecommit_clone_url_over_https_serves_git() -> Result<()> {
    let options = FakeOptions {
        https: true,
        ..FakeOptions::default()
    };
    let fake = CodeCommitFake::start(servers(), options)?;
    let repo = fake.add_repo("secure", RepoSpec::default())?;
    let got = client(&fake)
        .get_repository()
        .repository_name("secure")
        .send()
        .await?;
    let url = got
        .repository_metadata()
        .and_then(|m| m.clone_url_http())
        .context("no cloneUrlHttp")?;
    assert_eq!(url, repo.clone_url_http);
    ensure!(
        url.starts_with("https://") && url.ends_with("/v1/repos/secure"),
        "{url}"
    );
    let env = servers().http_auth_env(fake.git_credentials());
    let work = WorkRepo::new()?;
    let oid = work.commit("README", "hello\n", "first")?;
    let ca = format!("http.sslCAInfo={}", servers().ca_file().display());
    work.git_with_env(&["-c", &ca, "push", "-q", url, "main"], &env)?;
    let listed = git_with_env(work.path(), &["-c", &ca, "ls-remote", url], &env)?;
    ensure!(listed.contains(&oid), "ls-remote: {listed}");
    assert_no_violations(&fake)
}
