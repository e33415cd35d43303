//! The fake Gitea's world (organisations, users, repositories) and the
//! operations it implements, with Gitea's semantics.

use std::fs;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{CreatedRepo, FakeRepo, RepoSpec, SeenPatch};
use crate::fakehost::{Call, Ctx, Host, Reply};

/// Timestamps start at 2024-01-01T00:00:00Z and advance a minute per change.
const EPOCH_SECS: u64 = 1_704_067_200;

struct Owner {
    name: String,
    org: bool,
}

struct Repo {
    id: u64,
    owner: String,
    name: String,
    private: bool,
    archived: bool,
    fork: bool,
    description: String,
    default_branch: String,
    created: u64,
    backing: String,
}

/// The fake's owners and repositories, and what it was asked to do.
#[derive(Default)]
pub struct Gitea {
    owners: Vec<Owner>,
    repos: Vec<Repo>,
    next_id: u64,
    clock: u64,
    pub(super) created: Vec<CreatedRepo>,
    pub(super) patches: Vec<SeenPatch>,
}

/// Gitea's `APIError` body.
fn error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({ "message": message, "url": "https://docs.gitea.com/api" }),
    )
}

fn timestamp(tick: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS + tick * 60))
        .to_string()
}

impl Host for Gitea {
    const NAME: &'static str = "Gitea";
    const NOT_MODIFIED_IS_FREE: bool = false;

    fn presented_token(headers: &[(String, String)]) -> Option<String> {
        let auth = headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v.trim())?;
        let (scheme, token) = auth.split_once(' ')?;
        (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
            .then(|| token.trim().to_string())
    }

    fn error(status: u16, message: &str) -> Reply {
        error(status, message)
    }

    fn throttled(retry_after: u64, _reset_epoch: u64) -> Reply {
        error(429, "Too Many Requests").header("Retry-After", retry_after.to_string())
    }

    fn rate_headers(_limit: u32, _remaining: u32, _reset_epoch: u64) -> Vec<(String, String)> {
        // Gitea sends no rate-limit headers.
        Vec::new()
    }

    fn dispatch(&mut self, ctx: &Ctx, call: &Call) -> Option<Reply> {
        let reply = match (call.method, call.template) {
            ("GET", "/orgs/{org}/repos") => self.list(ctx, call, call.param("org"), true),
            ("GET", "/users/{username}/repos") => {
                self.list(ctx, call, call.param("username"), false)
            }
            ("POST", "/orgs/{org}/repos") => self.post_repo(ctx, call),
            ("GET", "/repos/{owner}/{repo}") => {
                match self.find(call.param("owner"), call.param("repo")) {
                    Some(id) => self.get(ctx, call, id),
                    None => error(404, "The target couldn't be found."),
                }
            }
            ("GET", "/repositories/{id}") => match call.param("id").parse::<u64>() {
                Ok(id) => self.get(ctx, call, id),
                Err(_) => error(422, "id must be a number"),
            },
            ("PATCH", "/repos/{owner}/{repo}") => self.patch_repo(ctx, call),
            ("DELETE", "/repos/{owner}/{repo}") => self.delete_repo(ctx, call),
            _ => return None,
        };
        Some(reply)
    }
}

impl Gitea {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub fn add_owner(&mut self, name: &str, org: bool) -> Result<(), String> {
        if self.owner(name).is_some() {
            return Err("it exists".into());
        }
        self.owners.push(Owner {
            name: name.to_string(),
            org,
        });
        Ok(())
    }

    fn owner(&self, name: &str) -> Option<&Owner> {
        self.owners
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
    }

    pub fn find(&self, owner: &str, name: &str) -> Option<u64> {
        self.repos
            .iter()
            .find(|r| r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(name))
            .map(|r| r.id)
    }

    fn index(&self, id: u64) -> Option<usize> {
        self.repos.iter().position(|r| r.id == id)
    }

    pub fn archived(&self, id: u64) -> Option<bool> {
        self.index(id).map(|i| self.repos[i].archived)
    }

    pub fn fake_repo(&self, ctx: &Ctx, id: u64) -> Option<FakeRepo> {
        let r = &self.repos[self.index(id)?];
        Some(FakeRepo {
            id,
            path: ctx.servers.repo_path(&r.backing),
            clone_url: ctx.servers.http_url(&r.backing),
        })
    }

    pub fn create(
        &mut self,
        ctx: &Ctx,
        owner: &str,
        name: &str,
        spec: RepoSpec,
    ) -> Result<u64, String> {
        let owner = self.owner(owner).ok_or("no such owner")?.name.clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || name == "."
            || name == ".."
        {
            return Err("name is invalid".into());
        }
        if self.find(&owner, name).is_some() {
            return Err("The repository with the same name already exists.".into());
        }
        self.next_id += 1;
        let id = self.next_id;
        let branch = spec.default_branch.unwrap_or_else(|| "main".into());
        let backing = ctx
            .create_bare(&format!("r{id}"), &branch)
            .map_err(|e| format!("the fake could not create the bare repository: {e:#}"))?;
        let created = self.tick();
        self.repos.push(Repo {
            id,
            owner,
            name: name.to_string(),
            private: spec.private,
            archived: spec.archived,
            fork: spec.fork,
            description: spec.description.unwrap_or_default(),
            default_branch: branch,
            created,
            backing,
        });
        Ok(id)
    }

    pub fn delete(&mut self, ctx: &Ctx, id: u64) -> Result<(), String> {
        let index = self.index(id).ok_or("no such repository")?;
        let path = ctx.servers.repo_path(&self.repos[index].backing);
        fs::remove_dir_all(&path).map_err(|e| format!("cannot delete {}: {e}", path.display()))?;
        self.repos.remove(index);
        Ok(())
    }

    pub fn rename(&mut self, id: u64, new_name: &str) -> Result<(), String> {
        let index = self.index(id).ok_or("no such repository")?;
        let owner = self.repos[index].owner.clone();
        if self.find(&owner, new_name).is_some_and(|other| other != id) {
            return Err("The repository with the same name already exists.".into());
        }
        self.repos[index].name = new_name.to_string();
        Ok(())
    }

    /// Gitea's `Repository`.
    fn repo_json(&self, ctx: &Ctx, r: &Repo) -> Value {
        let full = format!("{}/{}", r.owner, r.name);
        json!({
            "id": r.id,
            "name": r.name,
            "full_name": full,
            "description": r.description,
            "empty": false,
            "private": r.private,
            "internal": false,
            "fork": r.fork,
            "template": false,
            "mirror": false,
            "archived": r.archived,
            "size": 0,
            "html_url": format!("{}/{full}", ctx.base_url),
            "ssh_url": format!("git@127.0.0.1:{full}.git"),
            "clone_url": ctx.servers.http_url(&r.backing),
            "website": "",
            "forks_count": 0,
            "default_branch": r.default_branch,
            "has_issues": true,
            "has_wiki": true,
            "has_pull_requests": true,
            "has_projects": true,
            "avatar_url": "",
            "created_at": timestamp(r.created),
            "updated_at": timestamp(r.created),
        })
    }

    fn visible(&self, call: &Call, r: &Repo) -> bool {
        call.authenticated || !r.private
    }

    fn list(&self, ctx: &Ctx, call: &Call, owner: &str, org: bool) -> Reply {
        let Some(o) = self.owner(owner).filter(|o| o.org == org) else {
            return error(404, "The target couldn't be found.");
        };
        let mut repos: Vec<&Repo> = self
            .repos
            .iter()
            .filter(|r| r.owner == o.name && self.visible(call, r))
            .collect();
        repos.sort_by(|a, b| a.name.cmp(&b.name));
        let items = repos.iter().map(|r| self.repo_json(ctx, r)).collect();
        let (reply, _, total) = ctx.page(call, items, "limit", 30);
        reply.header("X-Total-Count", total.to_string())
    }

    fn get(&self, ctx: &Ctx, call: &Call, id: u64) -> Reply {
        match self.index(id) {
            Some(i) if self.visible(call, &self.repos[i]) => {
                Reply::json(200, self.repo_json(ctx, &self.repos[i]))
            }
            _ => error(404, "The target couldn't be found."),
        }
    }

    fn post_repo(&mut self, ctx: &Ctx, call: &Call) -> Reply {
        if !call.authenticated {
            return error(401, "token is required");
        }
        let org = call.param("org");
        if self.owner(org).is_none_or(|o| !o.org) {
            return error(404, "The target couldn't be found.");
        }
        let Some(name) = call.body_str("name") else {
            return error(422, "[Name]: Required");
        };
        let spec = RepoSpec {
            private: call.body_bool("private").unwrap_or(false),
            description: call.body_str("description").map(str::to_string),
            ..RepoSpec::default()
        };
        let id = match self.create(ctx, org, name, spec) {
            Ok(id) => id,
            Err(e) if e.contains("already exists") => return error(409, &e),
            Err(e) => return error(422, &e),
        };
        let Some(i) = self.index(id) else {
            return error(500, "created, then lost");
        };
        let r = &self.repos[i];
        self.created.push(CreatedRepo {
            owner: r.owner.clone(),
            name: r.name.clone(),
            private: r.private,
            description: call.body_str("description").map(str::to_string),
        });
        Reply::json(201, self.repo_json(ctx, &self.repos[i]))
    }

    fn patch_repo(&mut self, ctx: &Ctx, call: &Call) -> Reply {
        if !call.authenticated {
            return error(401, "token is required");
        }
        let Some(i) = self
            .find(call.param("owner"), call.param("repo"))
            .and_then(|id| self.index(id))
        else {
            return error(404, "The target couldn't be found.");
        };
        if let Some(branch) = call.body_str("default_branch") {
            let path = ctx.servers.repo_path(&self.repos[i].backing);
            let head = format!("refs/heads/{branch}");
            if crate::git(&path, &["rev-parse", "--verify", "--quiet", &head]).is_err() {
                return error(422, "the default branch does not exist");
            }
            if let Err(e) = crate::git(&path, &["symbolic-ref", "HEAD", &head]) {
                return error(500, &format!("cannot set HEAD: {e:#}"));
            }
            self.repos[i].default_branch = branch.to_string();
        }
        if let Some(archived) = call.body_bool("archived") {
            self.repos[i].archived = archived;
        }
        if let Some(private) = call.body_bool("private") {
            self.repos[i].private = private;
        }
        if let Some(description) = call.body_str("description") {
            self.repos[i].description = description.to_string();
        }
        let repo = format!("{}/{}", self.repos[i].owner, self.repos[i].name);
        self.patches.push(SeenPatch {
            repo,
            body: call.body.cloned().unwrap_or(Value::Null),
        });
        Reply::json(200, self.repo_json(ctx, &self.repos[i]))
    }

    fn delete_repo(&mut self, ctx: &Ctx, call: &Call) -> Reply {
        if !call.authenticated {
            return error(401, "token is required");
        }
        let Some(id) = self.find(call.param("owner"), call.param("repo")) else {
            return error(404, "The target couldn't be found.");
        };
        match self.delete(ctx, id) {
            Ok(()) => Reply::empty(204),
            Err(e) => error(500, &e),
        }
    }
}
