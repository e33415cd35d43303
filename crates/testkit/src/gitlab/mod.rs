//! A fake of GitLab's REST API (v4) for the projects ferry mirrors, held to
//! GitLab's own published API description.
//!
//! [`GitLabFake`] answers the group and project endpoints a fleet uses
//! (a group, its projects with or without subgroups, one project, create,
//! update, archive, delete) with GitLab's semantics: `PRIVATE-TOKEN` or
//! `Authorization: Bearer` auth, offset pagination with `Link` and `X-Page`
//! headers, weak ETags and `304`, and a primary rate limit that answers 429
//! with `Retry-After` and `RateLimit-Reset` (GitLab counts a 304 like any
//! request). Every project it lists is a real bare repository served by the
//! test nginx, so `http_url_to_repo` really clones and pushes.
//!
//! The contract is GitLab's `doc/api/openapi/openapi_v2.yaml`. No package
//! registry reachable from ferry's build machines ships it (npm, PyPI,
//! crates.io and Debian were searched; the APIs.guru collection on npm has
//! only an old third-party description of API v3), so the operations the fake
//! serves are vendored as an excerpt, converted to JSON, with their source
//! commit and license: `openapi_v2.excerpt.json` beside this file. Where GitLab's
//! description contradicts what GitLab sends, the excerpt carries an erratum
//! saying so (see [`crate::fakehost::swagger`]).

mod endpoints;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::fakehost::{HostOptions, Server};
use crate::Servers;
use endpoints::GitLab;

/// The vendored excerpt of GitLab's API description.
pub fn description_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gitlab/openapi_v2.excerpt.json")
}

/// How a [`GitLabFake`] behaves; [`FakeOptions::new`] gives GitLab's defaults.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The one token accepted.
    pub token: String,
    /// Most items on one page, whatever `per_page` asks (GitLab: 100).
    pub max_page_size: usize,
    /// Requests per window for the token (GitLab.com: 2000 a minute).
    pub rate_limit: u32,
    pub rate_window: Duration,
}

impl FakeOptions {
    pub fn new(token: &str) -> FakeOptions {
        FakeOptions {
            token: token.to_string(),
            max_page_size: 100,
            rate_limit: 2000,
            rate_window: Duration::from_secs(60),
        }
    }
}

/// A project to add with [`GitLabFake::add_project`].
#[derive(Debug, Clone, Default)]
pub struct ProjectSpec {
    pub private: bool,
    pub archived: bool,
    /// Forked from another project (`forked_from_project` is set).
    pub fork: bool,
    pub description: Option<String>,
    /// `main` when not given.
    pub default_branch: Option<String>,
}

/// A project the fake serves.
#[derive(Debug, Clone)]
pub struct FakeProject {
    pub id: u64,
    /// The bare repository on disk.
    pub path: PathBuf,
    /// `http_url_to_repo` (test nginx, Basic auth).
    pub clone_url: String,
}

/// A project created through `POST /projects`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedProject {
    /// The group's full path.
    pub namespace: String,
    pub path: String,
    /// `private`, `internal` or `public`.
    pub visibility: String,
    pub description: Option<String>,
}

/// A `PUT /projects/:id` the fake accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenUpdate {
    pub project: String,
    pub body: serde_json::Value,
}

/// The fake GitLab API server; stops on drop. Faults, counters and
/// contract violations are the shared server's (through `Deref`).
pub struct GitLabFake {
    server: Server<GitLab>,
}

impl std::ops::Deref for GitLabFake {
    type Target = Server<GitLab>;

    fn deref(&self) -> &Server<GitLab> {
        &self.server
    }
}

impl GitLabFake {
    /// Starts the fake on a free loopback port.
    pub fn start(servers: &'static Servers, options: FakeOptions) -> Result<GitLabFake> {
        let host = HostOptions {
            token: options.token,
            max_page_size: options.max_page_size,
            rate_limit: options.rate_limit,
            rate_window: options.rate_window,
            description: description_path(),
        };
        Ok(GitLabFake {
            server: Server::start(servers, &host, GitLab::default())?,
        })
    }

    /// `http://127.0.0.1:PORT`; the API is under `/api/v4`.
    pub fn base_url(&self) -> &str {
        self.server.base_url()
    }

    /// `http://127.0.0.1:PORT/api/v4`, what ferry's `api_url` names.
    pub fn api_url(&self) -> String {
        format!("{}/api/v4", self.server.base_url())
    }

    /// Adds a group by its full path (`acme` or `acme/platform`; the parent
    /// must exist); returns its id.
    pub fn add_group(&self, full_path: &str) -> Result<u64> {
        self.server
            .with(|gl, _| gl.add_group(full_path))
            .map_err(|e| anyhow!("cannot add the group {full_path}: {e}"))
    }

    /// Adds a project to a group, with an empty bare repository behind it.
    pub fn add_project(&self, group: &str, path: &str, spec: ProjectSpec) -> Result<FakeProject> {
        self.server
            .with(|gl, ctx| {
                let id = gl.create(ctx, group, path, spec)?;
                gl.fake_project(ctx, id)
                    .ok_or_else(|| "created, then lost".to_string())
            })
            .map_err(|e| anyhow!("cannot add {group}/{path}: {e}"))
    }

    /// The project `group/path`, if the fake has it.
    pub fn project(&self, group: &str, path: &str) -> Option<FakeProject> {
        self.server.with(|gl, ctx| {
            let id = gl.find(&format!("{group}/{path}"))?;
            gl.fake_project(ctx, id)
        })
    }

    /// Deletes a project and its bare repository.
    pub fn delete_project(&self, group: &str, path: &str) -> Result<()> {
        self.server
            .with(|gl, ctx| {
                let id = gl
                    .find(&format!("{group}/{path}"))
                    .ok_or("no such project")?;
                gl.delete(ctx, id)
            })
            .map_err(|e| anyhow!("cannot delete {group}/{path}: {e}"))
    }

    /// Renames a project's path (same id; the bare repository moves).
    pub fn rename_project(&self, group: &str, path: &str, new_path: &str) -> Result<()> {
        self.server
            .with(|gl, _| {
                let id = gl
                    .find(&format!("{group}/{path}"))
                    .ok_or("no such project")?;
                gl.rename(id, new_path)
            })
            .map_err(|e| anyhow!("cannot rename {group}/{path}: {e}"))
    }

    /// Projects created through the API, oldest first.
    pub fn created_projects(&self) -> Vec<CreatedProject> {
        self.server.with(|gl, _| gl.created.clone())
    }

    /// `PUT /projects/:id` requests accepted, oldest first.
    pub fn updates(&self) -> Vec<SeenUpdate> {
        self.server.with(|gl, _| gl.updates.clone())
    }

    /// Whether the project `group/path` is archived.
    pub fn is_archived(&self, group: &str, path: &str) -> Option<bool> {
        self.server.with(|gl, _| {
            let id = gl.find(&format!("{group}/{path}"))?;
            gl.archived(id)
        })
    }
}
