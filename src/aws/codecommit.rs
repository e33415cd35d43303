//! CodeCommit for fleets: every repository of the account in a region, with what a member
//! needs (id, description, default branch, HTTPS clone URL), and whether a known one still
//! exists. The SDK retries throttled calls with backoff on its own (its standard retry mode).

use super::{describe, Aws};
use crate::model::fleet::{Listing, Lookup, Repository};
use aws_sdk_codecommit::config::Region;
use aws_sdk_codecommit::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_codecommit::Client;

/// BatchGetRepositories takes at most this many names per call.
const BATCH: usize = 25;

/// CodeCommit clients over the shared SDK configuration, one per region asked for.
pub struct CodeCommit {
    config: aws_config::SdkConfig,
}

impl CodeCommit {
    pub fn new(aws: &Aws) -> CodeCommit {
        CodeCommit {
            config: aws.config.clone(),
        }
    }

    fn client(&self, region: Option<&str>) -> Client {
        let mut conf = aws_sdk_codecommit::config::Builder::from(&self.config);
        if let Some(region) = region {
            conf = conf.region(Region::new(region.to_owned()));
        }
        Client::from_conf(conf.build())
    }

    /// Every repository in `region` and the number of API requests made. A failed call
    /// leaves the listing incomplete, saying which call and why.
    pub async fn list(&self, region: Option<&str>) -> (Listing, u32) {
        let client = self.client(region);
        let mut requests = 0;
        let mut names = Vec::new();
        let mut incomplete = None;
        let mut pages = client.list_repositories().into_paginator().send();
        while let Some(page) = pages.next().await {
            requests += 1;
            match page {
                Ok(page) => names.extend(
                    page.repositories()
                        .iter()
                        .filter_map(|r| r.repository_name().map(str::to_owned)),
                ),
                Err(e) => {
                    incomplete = Some(format!("ListRepositories failed: {}", explain(&e)));
                    break;
                }
            }
        }
        let mut repositories = Vec::with_capacity(names.len());
        for chunk in names.chunks(BATCH) {
            requests += 1;
            let answer = client
                .batch_get_repositories()
                .set_repository_names(Some(chunk.to_vec()))
                .send()
                .await;
            match answer {
                // A repository deleted since the listing is in `repositoriesNotFound`: gone.
                Ok(out) => repositories.extend(out.repositories().iter().filter_map(|m| {
                    Some(Repository {
                        id: m.repository_id()?.to_owned(),
                        path: m.repository_name()?.to_owned(),
                        private: true,
                        description: m
                            .repository_description()
                            .filter(|d| !d.is_empty())
                            .map(str::to_owned),
                        default_branch: m.default_branch().map(str::to_owned),
                        clone_url: m.clone_url_http().map(str::to_owned),
                        ..Repository::default()
                    })
                })),
                Err(e) => {
                    incomplete
                        .get_or_insert(format!("BatchGetRepositories failed: {}", describe(&e)));
                }
            }
        }
        let listing = Listing {
            repositories,
            incomplete,
        };
        (listing, requests)
    }

    /// Whether the repository `name` still exists with the id `id`.
    pub async fn lookup(&self, region: Option<&str>, name: &str, id: &str) -> Lookup {
        match self
            .client(region)
            .get_repository()
            .repository_name(name)
            .send()
            .await
        {
            Ok(out) => match out.repository_metadata().and_then(|m| m.repository_id()) {
                Some(found) if found == id => Lookup::Exists,
                Some(_) => Lookup::Gone,
                None => Lookup::Failed("GetRepository answered without a repository id".into()),
            },
            Err(e) => {
                if e.as_service_error()
                    .is_some_and(|s| s.is_repository_does_not_exist_exception())
                {
                    Lookup::Gone
                } else {
                    Lookup::Failed(format!("GetRepository failed: {}", explain(&e)))
                }
            }
        }
    }
}

/// A failed call in one line: the service's error code and message (AccessDenied,
/// throttling after the SDK's retries, ...), or the connection's failure in full.
fn explain<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("an error with no code"),
            s.message().unwrap_or("no message")
        ),
        None => describe(e),
    }
}
