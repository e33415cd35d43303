//! A fake of AWS CodeCommit's API for the repositories ferry mirrors, held
//! to botocore's service model of CodeCommit.
//!
//! moto's server has no CodeCommit `ListRepositories`, so [`CodeCommitFake`]
//! serves the operations a fleet uses (`ListRepositories`,
//! `BatchGetRepositories`, `GetRepository`; also `CreateRepository`,
//! `DeleteRepository`, `UpdateRepositoryName`) with CodeCommit's semantics
//! over its `json` 1.1 protocol: `POST /` with
//! `X-Amz-Target: CodeCommit_20150413.<Operation>`, SigV4-signed requests
//! (the signature is verified with the fake's secret key), `nextToken`
//! paging (at a small page size, so paging is exercised), `__type` errors.
//! Every repository is a real bare repository served by the test nginx at
//! `/git/codecommit<N>/v1/repos/<name>` (CodeCommit's `/v1/repos/<name>`
//! shape; Basic auth, see [`CodeCommitFake::git_credentials`]).
//!
//! Every request and every answer (errors too) is checked against the
//! operation in botocore's model (see [`model`]); anything off-model is
//! recorded in [`CodeCommitFake::violations`], and a request that breaks
//! the model is answered 400 `ValidationException`.
//!
//! The model is botocore's `codecommit/2015-04-13/service-2.json.gz`, from
//! PyPI's botocore pinned in scripts/test.sh (next to moto, which needs it).

mod account;
pub mod model;
mod server;
mod sigv4;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};

use crate::{Servers, WRITER};
use account::{Account, Setting};
use model::Model;

/// Environment variable naming botocore's CodeCommit model, overriding
/// [`model_path`]'s default.
pub const MODEL_VAR: &str = "FERRY_CODECOMMIT_MODEL";

/// Where botocore keeps CodeCommit's model, under its package directory.
const MODEL_IN_BOTOCORE: &str = "botocore/data/codecommit/2015-04-13/service-2.json.gz";

/// `<workspace>/target/test-tools/lib/python3.*/site-packages/botocore/data/
/// codecommit/2015-04-13/service-2.json.gz` (installed by scripts/test.sh),
/// or `$FERRY_CODECOMMIT_MODEL` when set; fails when the file is missing.
pub fn model_path() -> Result<PathBuf> {
    let path = match std::env::var_os(MODEL_VAR) {
        Some(path) => PathBuf::from(path),
        None => {
            let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools/lib");
            let pythons = std::fs::read_dir(&lib)
                .into_iter()
                .flatten()
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("python3"))
                });
            pythons
                .map(|p| p.join("site-packages").join(MODEL_IN_BOTOCORE))
                .find(|p| p.is_file())
                .unwrap_or_else(|| lib.join("python3.*/site-packages").join(MODEL_IN_BOTOCORE))
        }
    };
    if !path.is_file() {
        bail!(
            "botocore's CodeCommit model is missing at {}: run scripts/test.sh once to install \
             it (PyPI package botocore), or set {MODEL_VAR} to the file",
            path.display()
        );
    }
    Ok(path)
}

/// How a [`CodeCommitFake`] behaves; [`FakeOptions::default`] gives a test
/// account.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    pub region: String,
    pub account_id: String,
    /// The one access key accepted.
    pub access_key_id: String,
    /// Its secret: signatures are verified with it.
    pub secret_access_key: String,
    /// Repositories on one `ListRepositories` page (CodeCommit: 1000).
    pub page_size: usize,
    /// `cloneUrlHttp` over HTTPS, as CodeCommit's are (git must then trust
    /// [`Servers::ca_file`]); plain HTTP otherwise.
    pub https: bool,
    /// botocore's model; `None` means [`model_path`].
    pub model: Option<PathBuf>,
}

impl Default for FakeOptions {
    fn default() -> FakeOptions {
        FakeOptions {
            region: "eu-central-1".to_string(),
            account_id: "123456789012".to_string(),
            access_key_id: "AKIAFERRYTESTKIT0001".to_string(),
            secret_access_key: "ferry+testkit/codecommit/secret/key/0001".to_string(),
            page_size: 3,
            https: false,
            model: None,
        }
    }
}

/// A repository to add with [`CodeCommitFake::add_repo`].
#[derive(Debug, Clone, Default)]
pub struct RepoSpec {
    pub description: Option<String>,
    /// `None`: no `defaultBranch` in the metadata, as CodeCommit answers
    /// for a repository nobody has pushed to (the bare repository's HEAD is
    /// then `main`).
    pub default_branch: Option<String>,
    /// Tags (CodeCommit's `tags` of CreateRepository).
    pub tags: Map<String, Value>,
}

/// A repository the fake serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRepo {
    /// `repositoryId` (kept across renames).
    pub id: String,
    pub name: String,
    /// `Arn`: `arn:aws:codecommit:<region>:<account>:<name>`.
    pub arn: String,
    /// The bare repository on disk.
    pub path: PathBuf,
    /// `cloneUrlHttp`: `http://127.0.0.1:PORT/git/codecommit<N>/v1/repos/<name>`
    /// (`https://` with [`FakeOptions::https`]).
    pub clone_url_http: String,
}

/// What the fake has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every request received.
    pub requests: u64,
    /// Requests per operation (by `X-Amz-Target`), e.g. `"ListRepositories"`.
    pub by_operation: BTreeMap<String, u64>,
    /// Requests refused for their signature or credentials.
    pub auth_failures: u64,
}

/// How an injected fault answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    /// 500 `InternalFailure`.
    Fail,
    /// 400 `ThrottlingException`.
    Throttle,
    /// The real answer, its body cut in half.
    Truncate,
}

struct Fault {
    operation: String,
    kind: FaultKind,
    remaining: u32,
}

struct State {
    account: Account,
    faults: Vec<Fault>,
    counters: Counters,
    violations: Vec<String>,
}

struct Shared {
    model: Model,
    setting: Setting,
    secret_access_key: String,
    access_key_id: String,
    endpoint: String,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The fake CodeCommit server; stops on drop.
pub struct CodeCommitFake {
    shared: Arc<Shared>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl CodeCommitFake {
    /// Loads the model and starts the fake on a free loopback port.
    pub fn start(servers: &'static Servers, options: FakeOptions) -> Result<CodeCommitFake> {
        static NEXT_FAKE: AtomicU64 = AtomicU64::new(1);
        if options.page_size == 0 {
            bail!("page_size must be above zero");
        }
        let path = match options.model {
            Some(path) => path,
            None => model_path()?,
        };
        let model = Model::load(&path)?;
        if model.target_prefix != "CodeCommit_20150413" || model.signing_name != "codecommit" {
            bail!(
                "{} is not CodeCommit's model (target prefix {:?})",
                path.display(),
                model.target_prefix
            );
        }
        let server = tiny_http::Server::http("127.0.0.1:0")
            .map_err(|e| anyhow!("failed to listen on 127.0.0.1: {e}"))?;
        let port = server
            .server_addr()
            .to_ip()
            .map(|addr| addr.port())
            .context("the fake is not listening on an IP address")?;
        let server = Arc::new(server);
        let shared = Arc::new(Shared {
            model,
            setting: Setting {
                servers,
                region: options.region,
                account_id: options.account_id,
                serial: NEXT_FAKE.fetch_add(1, Ordering::Relaxed),
                page_size: options.page_size,
                https: options.https,
            },
            secret_access_key: options.secret_access_key,
            access_key_id: options.access_key_id,
            endpoint: format!("http://127.0.0.1:{port}"),
            state: Mutex::new(State {
                account: Account::default(),
                faults: Vec::new(),
                counters: Counters::default(),
                violations: Vec::new(),
            }),
        });
        let thread = {
            let shared = shared.clone();
            let server = server.clone();
            std::thread::Builder::new()
                .name("codecommit-fake".to_string())
                .spawn(move || {
                    for request in server.incoming_requests() {
                        server::answer(&shared, request);
                    }
                })
                .context("failed to start the fake's thread")?
        };
        Ok(CodeCommitFake {
            shared,
            server,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`: the endpoint URL (`AWS_ENDPOINT_URL_CODECOMMIT`).
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    pub fn region(&self) -> &str {
        &self.shared.setting.region
    }

    pub fn account_id(&self) -> &str {
        &self.shared.setting.account_id
    }

    pub fn access_key_id(&self) -> &str {
        &self.shared.access_key_id
    }

    pub fn secret_access_key(&self) -> &str {
        &self.shared.secret_access_key
    }

    /// The environment that points an AWS SDK at this fake:
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` and
    /// `AWS_ENDPOINT_URL_CODECOMMIT`.
    pub fn sdk_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key_id()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key()),
            ("AWS_REGION", self.region()),
            ("AWS_ENDPOINT_URL_CODECOMMIT", self.endpoint()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The HTTPS Git credentials (username, password) the `cloneUrlHttp`
    /// URLs take (CodeCommit's are an IAM user's Git credentials; here the
    /// test nginx's [`WRITER`], who may also push).
    pub fn git_credentials(&self) -> (&'static str, &'static str) {
        WRITER
    }

    /// Adds a repository, with an empty bare repository behind it.
    pub fn add_repo(&self, name: &str, spec: RepoSpec) -> Result<FakeRepo> {
        let mut state = self.shared.state();
        state
            .account
            .create(&self.shared.setting, name, spec)
            .map_err(|(kind, message)| {
                anyhow!("cannot add the repository {name}: {kind}: {message}")
            })
    }

    /// The repository `name`, if the fake has it.
    pub fn repo(&self, name: &str) -> Option<FakeRepo> {
        self.shared.state().account.repo(&self.shared.setting, name)
    }

    /// Renames a repository (same `repositoryId`; its URLs follow the name).
    pub fn rename_repo(&self, old: &str, new: &str) -> Result<()> {
        let mut state = self.shared.state();
        state
            .account
            .rename(&self.shared.setting, old, new)
            .map_err(|(kind, message)| anyhow!("cannot rename {old} to {new}: {kind}: {message}"))
    }

    /// Deletes a repository and its bare repository.
    pub fn delete_repo(&self, name: &str) -> Result<()> {
        let mut state = self.shared.state();
        match state.account.delete(&self.shared.setting, name) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => bail!("cannot delete {name}: no such repository"),
            Err((kind, message)) => bail!("cannot delete {name}: {kind}: {message}"),
        }
    }

    /// The tags a repository was created with.
    pub fn tags(&self, name: &str) -> Option<Map<String, Value>> {
        self.shared.state().account.tags(name)
    }

    fn inject(&self, operation: &str, kind: FaultKind, count: u32) {
        let mut state = self.shared.state();
        if self.shared.model.operation(operation).is_none() {
            state.violations.push(format!(
                "a fault was injected for {operation}, which is no operation of CodeCommit"
            ));
        }
        state.faults.push(Fault {
            operation: operation.to_string(),
            kind,
            remaining: count,
        });
    }

    /// The next `count` requests for `operation` (e.g. `"ListRepositories"`)
    /// answer 500 `InternalFailure` (the SDK retries these).
    pub fn fail_next(&self, operation: &str, count: u32) {
        self.inject(operation, FaultKind::Fail, count);
    }

    /// The next `count` requests for `operation` answer 400
    /// `ThrottlingException` "Rate exceeded", as CodeCommit throttles (the
    /// SDK retries these with backoff).
    pub fn throttle_next(&self, operation: &str, count: u32) {
        self.inject(operation, FaultKind::Throttle, count);
    }

    /// The next `count` answers to `operation` have their body cut in half.
    pub fn truncate_next(&self, operation: &str, count: u32) {
        self.inject(operation, FaultKind::Truncate, count);
    }

    /// Every model violation so far (requests and answers).
    pub fn violations(&self) -> Vec<String> {
        self.shared.state().violations.clone()
    }

    pub fn counters(&self) -> Counters {
        self.shared.state().counters.clone()
    }

    /// Requests received for `operation`, e.g. `"ListRepositories"`.
    pub fn requests_to(&self, operation: &str) -> u64 {
        self.shared
            .state()
            .counters
            .by_operation
            .get(operation)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for CodeCommitFake {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
