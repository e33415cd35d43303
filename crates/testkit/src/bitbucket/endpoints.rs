//! The fake Bitbucket's world (workspaces, repositories) and the operations
//! it implements, with Bitbucket's semantics.

use std::fs;

use anyhow::{bail, Result};
use base64::Engine;
use serde_json::{json, Value};

use super::{FakeRepo, RepoSpec};
use crate::fakehost::{Call, Ctx, Host, Reply};

struct Repo {
    uuid: String,
    workspace: String,
    slug: String,
    private: bool,
    fork: bool,
    description: String,
    mainbranch: String,
    backing: String,
}

/// The fake's workspaces and repositories.
#[derive(Default)]
pub struct Bitbucket {
    workspaces: Vec<String>,
    repos: Vec<Repo>,
    next_id: u64,
}

/// Bitbucket's `error` object.
fn error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({ "type": "error", "error": { "message": message } }),
    )
}

impl Host for Bitbucket {
    const NAME: &'static str = "Bitbucket";
    const NOT_MODIFIED_IS_FREE: bool = false;

    /// `user:app-password` from Basic auth.
    fn presented_token(headers: &[(String, String)]) -> Option<String> {
        let auth = headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v.trim())?;
        let (scheme, encoded) = auth.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Some(auth.to_string());
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        String::from_utf8(decoded).ok()
    }

    fn error(status: u16, message: &str) -> Reply {
        error(status, message)
    }

    fn throttled(retry_after: u64, _reset_epoch: u64) -> Reply {
        error(429, "Rate limit for this resource has been exceeded")
            .header("Retry-After", retry_after.to_string())
    }

    fn rate_headers(_limit: u32, _remaining: u32, _reset_epoch: u64) -> Vec<(String, String)> {
        Vec::new()
    }

    fn dispatch(&mut self, ctx: &Ctx, call: &Call) -> Option<Reply> {
        let reply = match (call.method, call.template) {
            ("GET", "/repositories/{workspace}") => self.list(ctx, call),
            ("GET", "/repositories/{workspace}/{repo_slug}") => {
                match self.index(call.param("workspace"), call.param("repo_slug")) {
                    Some(i) if call.authenticated || !self.repos[i].private => {
                        Reply::json(200, self.repo_json(ctx, &self.repos[i]))
                    }
                    _ => error(404, "Repository not found"),
                }
            }
            _ => return None,
        };
        Some(reply)
    }

    /// The description documents `pagelen` on the page object ("the default
    /// value is 10 with 100 being the maximum allowed value") and the `page`
    /// that `next` links carry, but not as parameters of the listing; they
    /// are added to it as query parameters.
    fn amend_description(description: &mut Value) -> Result<()> {
        let Some(Value::Array(parameters)) =
            description.pointer_mut("/paths/~1repositories~1{workspace}/get/parameters")
        else {
            bail!("the workspace listing has no parameters to amend");
        };
        for name in ["page", "pagelen"] {
            parameters.push(json!({
                "in": "query", "name": name, "required": false,
                "schema": { "type": "integer", "minimum": 1 },
            }));
        }
        Ok(())
    }
}

impl Bitbucket {
    pub fn add_workspace(&mut self, slug: &str) -> Result<(), String> {
        if self.workspaces.iter().any(|w| w == slug) {
            return Err("it exists".into());
        }
        self.workspaces.push(slug.to_string());
        Ok(())
    }

    /// A repository by slug or `{UUID}`, as `repo_slug` takes it.
    fn index(&self, workspace: &str, slug: &str) -> Option<usize> {
        self.repos.iter().position(|r| {
            r.workspace == workspace && (r.slug.eq_ignore_ascii_case(slug) || r.uuid == slug)
        })
    }

    pub fn create(
        &mut self,
        ctx: &Ctx,
        workspace: &str,
        slug: &str,
        spec: RepoSpec,
    ) -> Result<FakeRepo, String> {
        if !self.workspaces.iter().any(|w| w == workspace) {
            return Err("no such workspace".into());
        }
        if self.index(workspace, slug).is_some() {
            return Err("exists".into());
        }
        self.next_id += 1;
        let uuid = format!("{{00000000-0000-4000-8000-{:012x}}}", self.next_id);
        let branch = spec.mainbranch.unwrap_or_else(|| "main".into());
        let backing = ctx
            .create_bare(&format!("b{}", self.next_id), &branch)
            .map_err(|e| format!("the fake could not create the bare repository: {e:#}"))?;
        let path = ctx.servers.repo_path(&backing);
        self.repos.push(Repo {
            uuid: uuid.clone(),
            workspace: workspace.to_string(),
            slug: slug.to_string(),
            private: spec.private,
            fork: spec.fork,
            description: spec.description.unwrap_or_default(),
            mainbranch: branch,
            backing,
        });
        Ok(FakeRepo { uuid, path })
    }

    pub fn delete(&mut self, ctx: &Ctx, workspace: &str, slug: &str) -> Result<(), String> {
        let i = self.index(workspace, slug).ok_or("no such repository")?;
        let path = ctx.servers.repo_path(&self.repos[i].backing);
        fs::remove_dir_all(&path).map_err(|e| format!("cannot delete {}: {e}", path.display()))?;
        self.repos.remove(i);
        Ok(())
    }

    pub fn rename(&mut self, workspace: &str, slug: &str, new_slug: &str) -> Result<(), String> {
        let i = self.index(workspace, slug).ok_or("no such repository")?;
        self.repos[i].slug = new_slug.to_string();
        Ok(())
    }

    /// Bitbucket's `repository`.
    fn repo_json(&self, ctx: &Ctx, r: &Repo) -> Value {
        let full = format!("{}/{}", r.workspace, r.slug);
        let api = format!("{}/2.0/repositories/{full}", ctx.base_url);
        let mut v = json!({
            "type": "repository",
            "uuid": r.uuid,
            "full_name": full,
            "name": r.slug,
            "slug": r.slug,
            "is_private": r.private,
            "description": r.description,
            "scm": "git",
            "size": 0,
            "language": "",
            "has_issues": false,
            "has_wiki": false,
            "fork_policy": "allow_forks",
            "created_on": "2024-01-01T00:00:00+00:00",
            "updated_on": "2024-01-01T00:00:00+00:00",
            "mainbranch": { "type": "branch", "name": r.mainbranch },
            "links": {
                "self": { "href": api },
                "html": { "href": format!("{}/{full}", ctx.base_url) },
                "clone": [
                    { "name": "https", "href": ctx.servers.http_url(&r.backing) },
                    { "name": "ssh", "href": format!("ssh://git@127.0.0.1/{full}.git") },
                ],
            },
        });
        if r.fork {
            v["parent"] = json!({
                "type": "repository",
                "uuid": "{00000000-0000-4000-8000-ffffffffffff}",
                "full_name": format!("upstream/{}", r.slug),
                "name": r.slug,
            });
        }
        v
    }

    fn list(&self, ctx: &Ctx, call: &Call) -> Reply {
        let workspace = call.param("workspace");
        if !self.workspaces.iter().any(|w| w == workspace) {
            return error(404, &format!("No workspace with identifier '{workspace}'."));
        }
        let mut repos: Vec<&Repo> = self
            .repos
            .iter()
            .filter(|r| r.workspace == workspace && (call.authenticated || !r.private))
            .collect();
        repos.sort_by(|a, b| a.slug.cmp(&b.slug));
        let number = |name: &str, default: usize| {
            call.query(name)
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        let pagelen = number("pagelen", 10).min(ctx.max_page_size);
        let page = number("page", 1);
        let size = repos.len();
        let values: Vec<Value> = repos
            .iter()
            .skip((page - 1).saturating_mul(pagelen))
            .take(pagelen)
            .map(|r| self.repo_json(ctx, r))
            .collect();
        let mut body = json!({ "pagelen": pagelen, "size": size, "page": page, "values": values });
        if page * pagelen < size {
            let mut pairs: Vec<(String, String)> = call.query.to_vec();
            pairs.retain(|(k, _)| k != "page");
            pairs.push(("page".into(), (page + 1).to_string()));
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            body["next"] = json!(format!("{}{}?{query}", ctx.base_url, call.path));
        }
        Reply::json(200, body)
    }
}
