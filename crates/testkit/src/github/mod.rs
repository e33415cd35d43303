//! A fake of GitHub's REST API for the repositories ferry mirrors, held to
//! GitHub's own published OpenAPI description.
//!
//! [`GitHubFake`] listens on a free loopback port and answers the repository
//! endpoints (list, get, create, update, delete; users and organizations)
//! with GitHub's semantics: token auth, pagination with `Link` headers,
//! `ETag`/`If-None-Match`, primary and secondary rate limits. Every
//! repository it lists is a real bare repository served by the test nginx
//! ([`Servers::http_url`]), so `clone_url` really clones and pushes.
//!
//! Every request and every answer is checked against the operation in the
//! description (see [`Contract`]); anything off-contract is recorded in
//! [`GitHubFake::violations`], and a request that breaks the contract is
//! answered 500 with the problem, so a client bug cannot pass unnoticed.

mod contract;
mod endpoints;
mod model;
mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub use contract::{Contract, Matched, Unsaid};

use crate::Servers;
use model::{Fault, OwnerKind, State};

/// Environment variable naming GitHub's OpenAPI description file, overriding
/// [`default_description_path`].
pub const DESCRIPTION_VAR: &str = "FERRY_GITHUB_OPENAPI";

/// `<workspace>/target/test-tools/npm/node_modules/@octokit/openapi/generated/api.github.com.json`
/// (installed by scripts/test.sh), or `$FERRY_GITHUB_OPENAPI` when set;
/// fails when the file is missing.
pub fn default_description_path() -> Result<PathBuf> {
    let path = match std::env::var_os(DESCRIPTION_VAR) {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/test-tools/npm/node_modules/@octokit/openapi/generated")
            .join("api.github.com.json"),
    };
    if !path.is_file() {
        bail!(
            "GitHub's OpenAPI description is missing at {}: run scripts/test.sh once to install \
             it (npm package @octokit/openapi), or set {DESCRIPTION_VAR} to the file",
            path.display()
        );
    }
    Ok(path)
}

/// How a [`GitHubFake`] behaves; [`FakeOptions::new`] gives GitHub's
/// defaults.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The one token accepted (`Authorization: Bearer <token>` or `token <token>`).
    pub token: String,
    /// Login of the token's user (`GET /user`); created as a user.
    pub user: String,
    /// Most items on one page, whatever `per_page` asks (GitHub: 100).
    pub max_page_size: usize,
    /// Primary rate limit: requests per window (GitHub: 5000 an hour).
    pub rate_limit: u32,
    /// Length of the primary rate-limit window.
    pub rate_window: Duration,
    /// The OpenAPI description; `None` means [`default_description_path`].
    pub description: Option<PathBuf>,
}

impl FakeOptions {
    /// GitHub's defaults, accepting `token` for the user `ferry-bot`.
    pub fn new(token: &str) -> FakeOptions {
        FakeOptions {
            token: token.to_string(),
            user: "ferry-bot".to_string(),
            max_page_size: 100,
            rate_limit: 5000,
            rate_window: Duration::from_secs(3600),
            description: None,
        }
    }
}

/// A repository to add with [`GitHubFake::add_repo`].
#[derive(Debug, Clone, Default)]
pub struct RepoSpec {
    pub private: bool,
    pub archived: bool,
    pub fork: bool,
    pub description: Option<String>,
    /// `main` when not given.
    pub default_branch: Option<String>,
}

/// A repository the fake serves: its GitHub id and its bare repository.
#[derive(Debug, Clone)]
pub struct FakeRepo {
    pub id: u64,
    /// The bare repository on disk (push commits into it to fill it).
    pub path: PathBuf,
    /// The `clone_url` the API reports (test nginx, Basic auth).
    pub clone_url: String,
}

/// A repository created through the API (`POST /orgs/{org}/repos` or `POST /user/repos`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedRepo {
    pub owner: String,
    pub name: String,
    pub private: bool,
    /// `public` or `private`.
    pub visibility: String,
    pub description: Option<String>,
}

/// A `PATCH /repos/{owner}/{repo}` the fake accepted, with its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenPatch {
    pub owner: String,
    pub repo: String,
    pub body: serde_json::Value,
}

/// What the fake has seen so far (see [`GitHubFake::counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every request received.
    pub requests: u64,
    /// Requests per operation, keyed `"GET /orgs/{org}/repos"`.
    pub by_operation: BTreeMap<String, u64>,
    /// Requests answered 304 Not Modified.
    pub not_modified: u64,
    /// Requests that counted against the primary rate limit.
    pub counted: u64,
}

/// The fake GitHub API server; stops on drop.
pub struct GitHubFake {
    shared: Arc<Shared>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

/// What the server thread and the test share.
struct Shared {
    contract: Arc<Contract>,
    servers: &'static Servers,
    options: FakeOptions,
    base_url: String,
    /// Bare repositories live under `repos/<prefix>/<owner>/<name>.git`.
    prefix: String,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl GitHubFake {
    /// Loads the description (once per process), starts the server on
    /// 127.0.0.1 with a free port and adds the token's user.
    pub fn start(servers: &'static Servers, options: FakeOptions) -> Result<GitHubFake> {
        static NEXT_FAKE: AtomicU64 = AtomicU64::new(1);
        let description = match &options.description {
            Some(path) => path.clone(),
            None => default_description_path()?,
        };
        if options.max_page_size == 0 || options.rate_window.is_zero() {
            bail!("max_page_size and rate_window must be above zero");
        }
        let contract = Contract::load(&description)?;
        let server = tiny_http::Server::http("127.0.0.1:0")
            .map_err(|e| anyhow::anyhow!("failed to listen on 127.0.0.1: {e}"))?;
        let port = server
            .server_addr()
            .to_ip()
            .map(|addr| addr.port())
            .context("the fake GitHub is not listening on an IP address")?;
        let server = Arc::new(server);
        let mut state = State::new(&options);
        state.add_owner(&options.user, OwnerKind::User)?;
        let shared = Arc::new(Shared {
            contract,
            servers,
            base_url: format!("http://127.0.0.1:{port}"),
            prefix: format!("github{}", NEXT_FAKE.fetch_add(1, Ordering::Relaxed)),
            options,
            state: Mutex::new(state),
        });
        let thread = {
            let shared = shared.clone();
            let server = server.clone();
            std::thread::Builder::new()
                .name("github-fake".into())
                .spawn(move || {
                    for request in server.incoming_requests() {
                        server::answer(&shared, request);
                    }
                })
                .context("failed to start the fake GitHub's thread")?
        };
        Ok(GitHubFake {
            shared,
            server,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, the API root (GitHub's `https://api.github.com`).
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// The contract requests and answers are checked against.
    pub fn contract(&self) -> &Contract {
        &self.shared.contract
    }

    /// Adds an organization; returns its id.
    pub fn add_org(&self, login: &str) -> Result<u64> {
        self.shared
            .state()
            .add_owner(login, OwnerKind::Organization)
    }

    /// Adds a user (not the token's); returns its id.
    pub fn add_user(&self, login: &str) -> Result<u64> {
        self.shared.state().add_owner(login, OwnerKind::User)
    }

    /// Adds a repository of `owner` (a user or organization added before),
    /// with an empty bare repository behind it.
    pub fn add_repo(&self, owner: &str, name: &str, spec: RepoSpec) -> Result<FakeRepo> {
        let mut state = self.shared.state();
        let index = endpoints::create_repo(&self.shared, &mut state, owner, name, spec)
            .map_err(|e| anyhow::anyhow!("cannot add {owner}/{name}: {e}"))?;
        let repo = &state.repos[index];
        Ok(FakeRepo {
            id: repo.id,
            path: self.shared.servers.repo_path(&repo.backing),
            clone_url: self.shared.servers.http_url(&repo.backing),
        })
    }

    /// The repository `owner/name`, if the fake has it.
    pub fn repo(&self, owner: &str, name: &str) -> Option<FakeRepo> {
        let state = self.shared.state();
        let repo = state.repo(owner, name)?;
        Some(FakeRepo {
            id: repo.id,
            path: self.shared.servers.repo_path(&repo.backing),
            clone_url: self.shared.servers.http_url(&repo.backing),
        })
    }

    /// Deletes a repository and its bare repository, as `DELETE /repos/{owner}/{repo}`.
    pub fn delete_repo(&self, owner: &str, name: &str) -> Result<()> {
        let mut state = self.shared.state();
        endpoints::delete_repo(&self.shared, &mut state, owner, name)
            .map_err(|e| anyhow::anyhow!("cannot delete {owner}/{name}: {e}"))
    }

    /// Renames a repository (same id, bare repository moved), as a rename on GitHub.
    pub fn rename_repo(&self, owner: &str, name: &str, new_name: &str) -> Result<()> {
        let mut state = self.shared.state();
        endpoints::rename_repo(&self.shared, &mut state, owner, name, new_name)
            .map_err(|e| anyhow::anyhow!("cannot rename {owner}/{name}: {e}"))
    }

    /// The next `count` requests with `method` whose path starts with
    /// `path_prefix` are answered `status` (with a `basic-error` body). A
    /// `?a=b&c=d` in `path_prefix` also requires those query pairs, e.g.
    /// `/orgs/acme/repos?page=2` for the second page only.
    pub fn fail_next(&self, method: &str, path_prefix: &str, status: u16, count: u32) {
        self.shared.state().faults.push(Fault::new(
            Some(method),
            path_prefix,
            status,
            count,
            false,
        ));
    }

    /// A secondary rate limit: the next `count` requests (any method) to
    /// `path_prefix` are answered `status` (403 or 429) with `retry-after: 1`.
    pub fn secondary_limit_next(&self, path_prefix: &str, status: u16, count: u32) {
        self.shared
            .state()
            .faults
            .push(Fault::new(None, path_prefix, status, count, true));
    }

    /// Every contract violation so far: `METHOD path: problem`.
    pub fn violations(&self) -> Vec<String> {
        self.shared.state().violations.clone()
    }

    /// Request counters (see [`Counters`]).
    pub fn counters(&self) -> Counters {
        self.shared.state().counters.clone()
    }

    /// Requests received for one operation, e.g. `("GET", "/orgs/{org}/repos")`.
    pub fn requests_to(&self, method: &str, template: &str) -> u64 {
        let key = format!("{} {template}", method.to_ascii_uppercase());
        self.counters().by_operation.get(&key).copied().unwrap_or(0)
    }

    /// Repositories created through the API, oldest first.
    pub fn created_repos(&self) -> Vec<CreatedRepo> {
        self.shared.state().created.clone()
    }

    /// `PATCH /repos/{owner}/{repo}` requests accepted, oldest first.
    pub fn patches(&self) -> Vec<SeenPatch> {
        self.shared.state().patches.clone()
    }
}

impl Drop for GitHubFake {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
