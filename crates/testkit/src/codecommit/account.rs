//! The fake account's repositories and the CodeCommit operations on them,
//! with CodeCommit's semantics.

use std::fs;

use base64::Engine;
use serde_json::{json, Map, Value};

use super::{FakeRepo, RepoSpec};
use crate::Servers;

/// Timestamps start at 2024-01-01T00:00:00Z and advance a minute per change.
const EPOCH_SECS: u64 = 1_704_067_200;

/// BatchGetRepositories takes at most this many names (CodeCommit's quota;
/// the model does not say it, the service answers
/// MaximumRepositoryNamesExceededException).
const MAX_BATCH_NAMES: usize = 25;

/// Marks the fake's continuation tokens (real ones are opaque too).
const TOKEN_PREFIX: &str = "ferry-testkit-codecommit:";

/// An error answer: the AWS error type and its message.
pub type Failure = (&'static str, String);

struct Repo {
    id: String,
    name: String,
    description: Option<String>,
    default_branch: Option<String>,
    created: u64,
    modified: u64,
    tags: Map<String, Value>,
}

/// Where the account lives and how it answers.
pub struct Setting {
    pub servers: &'static Servers,
    pub region: String,
    pub account_id: String,
    /// Tells this fake's repositories and ids from other fakes' ones:
    /// bare repositories live under `repos/codecommit<serial>/v1/repos/<name>.git`.
    pub serial: u64,
    pub page_size: usize,
    /// `cloneUrlHttp` is the HTTPS URL (else plain HTTP).
    pub https: bool,
}

/// The account's repositories.
#[derive(Default)]
pub struct Account {
    repos: Vec<Repo>,
    next_id: u64,
    clock: u64,
}

fn failure(kind: &'static str, message: impl Into<String>) -> Failure {
    (kind, message.into())
}

fn text<'a>(input: &'a Value, key: &str) -> Option<&'a str> {
    input.get(key).and_then(Value::as_str)
}

/// The repository name under `key`, which CodeCommit requires.
fn required_name<'a>(input: &'a Value, key: &str) -> Result<&'a str, Failure> {
    match text(input, key) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(failure(
            "RepositoryNameRequiredException",
            "A repository name is required, but was not specified.",
        )),
    }
}

/// CodeCommit's rule for a repository name (beyond the model's pattern):
/// no `.git` suffix.
fn check_name(name: &str) -> Result<(), Failure> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && !name.ends_with(".git")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(failure(
            "InvalidRepositoryNameException",
            format!(
                "{name:?} is not a valid repository name: use up to 100 letters, digits, '.', \
                 '_' and '-', not ending in .git"
            ),
        ))
    }
}

impl Setting {
    fn backing(&self, name: &str) -> String {
        format!("codecommit{}/v1/repos/{name}", self.serial)
    }

    fn fake_repo(&self, repo: &Repo) -> FakeRepo {
        let backing = self.backing(&repo.name);
        FakeRepo {
            id: repo.id.clone(),
            name: repo.name.clone(),
            arn: self.arn(&repo.name),
            path: self.servers.repo_path(&backing),
            clone_url_http: self.clone_url_http(&repo.name),
        }
    }

    /// The bare repository `<name>.git` answers as `<name>` too (git
    /// http-backend tries the `.git` suffix), so the URL keeps
    /// CodeCommit's `/v1/repos/<name>` shape.
    fn clone_url_http(&self, name: &str) -> String {
        let backing = self.backing(name);
        let url = if self.https {
            self.servers.https_url(&backing)
        } else {
            self.servers.http_url(&backing)
        };
        url.strip_suffix(".git").unwrap_or(&url).to_string()
    }

    fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:codecommit:{}:{}:{name}",
            self.region, self.account_id
        )
    }

    fn metadata(&self, repo: &Repo) -> Value {
        let mut m = json!({
            "accountId": self.account_id,
            "repositoryId": repo.id,
            "repositoryName": repo.name,
            "lastModifiedDate": EPOCH_SECS + repo.modified * 60,
            "creationDate": EPOCH_SECS + repo.created * 60,
            "cloneUrlHttp": self.clone_url_http(&repo.name),
            "cloneUrlSsh": self.servers.ssh_url(&self.backing(&repo.name)),
            "Arn": self.arn(&repo.name),
        });
        if let Some(description) = &repo.description {
            m["repositoryDescription"] = json!(description);
        }
        if let Some(branch) = &repo.default_branch {
            m["defaultBranch"] = json!(branch);
        }
        m
    }
}

impl Account {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.repos.iter().position(|r| r.name == name)
    }

    fn named(&self, input: &Value, key: &str) -> Result<usize, Failure> {
        let name = required_name(input, key)?;
        check_name(name)?;
        self.find(name).ok_or_else(|| {
            failure(
                "RepositoryDoesNotExistException",
                format!("{name} does not exist"),
            )
        })
    }

    pub fn repo(&self, setting: &Setting, name: &str) -> Option<FakeRepo> {
        self.find(name).map(|i| setting.fake_repo(&self.repos[i]))
    }

    /// Adds a repository with a bare repository behind it.
    pub fn create(
        &mut self,
        setting: &Setting,
        name: &str,
        spec: RepoSpec,
    ) -> Result<FakeRepo, Failure> {
        check_name(name)?;
        if spec
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1000)
        {
            return Err(failure(
                "InvalidRepositoryDescriptionException",
                "The description is longer than 1000 characters.",
            ));
        }
        if self.find(name).is_some() {
            return Err(failure(
                "RepositoryNameExistsException",
                format!("Repository named {name} already exists"),
            ));
        }
        // An empty repository's HEAD: CodeCommit names no default branch
        // until the first push; git's is main.
        let head = spec.default_branch.as_deref().unwrap_or("main");
        let backing = setting.backing(name);
        let made = setting.servers.create_bare(&backing).and_then(|path| {
            crate::git(
                &path,
                &["symbolic-ref", "HEAD", &format!("refs/heads/{head}")],
            )
        });
        if let Err(e) = made {
            return Err(failure(
                "InternalFailure",
                format!("the fake could not create the bare repository: {e:#}"),
            ));
        }
        self.next_id += 1;
        let tick = self.tick();
        // A UUID, as CodeCommit's ids are, unique across fakes.
        let id = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            setting.serial, self.next_id
        );
        self.repos.push(Repo {
            id,
            name: name.to_string(),
            description: spec.description,
            default_branch: spec.default_branch,
            created: tick,
            modified: tick,
            tags: spec.tags,
        });
        Ok(setting.fake_repo(&self.repos[self.repos.len() - 1]))
    }

    /// Renames a repository (same id), moving its bare repository.
    pub fn rename(&mut self, setting: &Setting, old: &str, new: &str) -> Result<(), Failure> {
        check_name(new)?;
        let index = self.find(old).ok_or_else(|| {
            failure(
                "RepositoryDoesNotExistException",
                format!("{old} does not exist"),
            )
        })?;
        if old == new {
            return Ok(());
        }
        if self.find(new).is_some() {
            return Err(failure(
                "RepositoryNameExistsException",
                format!("Repository named {new} already exists"),
            ));
        }
        let from = setting.servers.repo_path(&setting.backing(old));
        let to = setting.servers.repo_path(&setting.backing(new));
        if let Err(e) = fs::rename(&from, &to) {
            return Err(failure(
                "InternalFailure",
                format!("the fake could not move {}: {e}", from.display()),
            ));
        }
        let tick = self.tick();
        let repo = &mut self.repos[index];
        repo.name = new.to_string();
        repo.modified = tick;
        Ok(())
    }

    /// Deletes a repository and its bare repository; its id, if it existed.
    pub fn delete(&mut self, setting: &Setting, name: &str) -> Result<Option<String>, Failure> {
        let Some(index) = self.find(name) else {
            return Ok(None);
        };
        let path = setting.servers.repo_path(&setting.backing(name));
        if let Err(e) = fs::remove_dir_all(&path) {
            return Err(failure(
                "InternalFailure",
                format!("the fake could not delete {}: {e}", path.display()),
            ));
        }
        Ok(Some(self.repos.remove(index).id))
    }

    /// Answers one operation; `None` when the fake does not implement it.
    pub fn dispatch(
        &mut self,
        setting: &Setting,
        operation: &str,
        input: &Value,
    ) -> Option<Result<Value, Failure>> {
        Some(match operation {
            "ListRepositories" => self.list(setting, input),
            "BatchGetRepositories" => self.batch_get(setting, input),
            "GetRepository" => self
                .named(input, "repositoryName")
                .map(|i| json!({ "repositoryMetadata": setting.metadata(&self.repos[i]) })),
            "CreateRepository" => self.create_from(setting, input),
            "DeleteRepository" => self.delete_from(setting, input),
            "UpdateRepositoryName" => {
                let old = text(input, "oldName").unwrap_or("");
                let new = text(input, "newName").unwrap_or("");
                self.named(input, "oldName")
                    .and_then(|_| self.rename(setting, old, new))
                    .map(|()| json!({}))
            }
            _ => return None,
        })
    }

    fn list(&self, setting: &Setting, input: &Value) -> Result<Value, Failure> {
        let mut order: Vec<&Repo> = self.repos.iter().collect();
        match text(input, "sortBy") {
            Some("lastModifiedDate") => {
                order.sort_by(|a, b| (a.modified, &a.name).cmp(&(b.modified, &b.name)))
            }
            _ => order.sort_by(|a, b| a.name.cmp(&b.name)),
        }
        if text(input, "order") == Some("descending") {
            order.reverse();
        }
        let start = match text(input, "nextToken") {
            None => 0,
            Some(token) => decode_token(token)
                .filter(|start| *start < order.len())
                .ok_or_else(|| {
                    failure(
                        "InvalidContinuationTokenException",
                        "The specified continuation token is not valid.",
                    )
                })?,
        };
        let end = (start + setting.page_size).min(order.len());
        let page: Vec<Value> = order[start..end]
            .iter()
            .map(|r| json!({ "repositoryName": r.name, "repositoryId": r.id }))
            .collect();
        let mut out = json!({ "repositories": page });
        if end < order.len() {
            out["nextToken"] = json!(encode_token(end));
        }
        Ok(out)
    }

    fn batch_get(&self, setting: &Setting, input: &Value) -> Result<Value, Failure> {
        let names: Vec<&str> = input
            .get("repositoryNames")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if names.is_empty() {
            return Err(failure(
                "RepositoryNamesRequiredException",
                "At least one repository name is required.",
            ));
        }
        if names.len() > MAX_BATCH_NAMES {
            return Err(failure(
                "MaximumRepositoryNamesExceededException",
                format!("At most {MAX_BATCH_NAMES} repository names are allowed."),
            ));
        }
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            check_name(name)?;
            match self.find(name) {
                Some(i) => found.push(setting.metadata(&self.repos[i])),
                None => missing.push(json!(name)),
            }
        }
        Ok(json!({ "repositories": found, "repositoriesNotFound": missing }))
    }

    fn create_from(&mut self, setting: &Setting, input: &Value) -> Result<Value, Failure> {
        let name = required_name(input, "repositoryName")?;
        let spec = RepoSpec {
            description: text(input, "repositoryDescription").map(str::to_string),
            default_branch: None,
            tags: input
                .get("tags")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        };
        self.create(setting, name, spec)?;
        let index = self.repos.len() - 1;
        Ok(json!({ "repositoryMetadata": setting.metadata(&self.repos[index]) }))
    }

    fn delete_from(&mut self, setting: &Setting, input: &Value) -> Result<Value, Failure> {
        let name = required_name(input, "repositoryName")?;
        check_name(name)?;
        Ok(match self.delete(setting, name)? {
            Some(id) => json!({ "repositoryId": id }),
            // CodeCommit answers a repository already gone with no id.
            None => json!({}),
        })
    }

    /// The tags a repository was created with.
    pub fn tags(&self, name: &str) -> Option<Map<String, Value>> {
        self.find(name).map(|i| self.repos[i].tags.clone())
    }
}

fn encode_token(start: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN_PREFIX}{start}"))
}

fn decode_token(token: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix(TOKEN_PREFIX)?
        .parse()
        .ok()
}
