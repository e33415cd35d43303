//! The fake GitLab's world (groups, projects) and the operations it
//! implements, with GitLab's semantics.

use std::fs;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{CreatedProject, FakeProject, ProjectSpec, SeenUpdate};
use crate::fakehost::{Call, Ctx, Host, Reply};

/// Timestamps start at 2024-01-01T00:00:00Z and advance a minute per change.
const EPOCH_SECS: u64 = 1_704_067_200;

struct Group {
    id: u64,
    full_path: String,
    parent: Option<u64>,
}

struct Project {
    id: u64,
    group: u64,
    path: String,
    visibility: String,
    archived: bool,
    fork: bool,
    description: Option<String>,
    default_branch: String,
    created: u64,
    /// Name under the test servers' repos dir.
    backing: String,
}

/// The fake's groups and projects, and what it was asked to do.
#[derive(Default)]
pub struct GitLab {
    groups: Vec<Group>,
    projects: Vec<Project>,
    next_id: u64,
    clock: u64,
    pub(super) created: Vec<CreatedProject>,
    pub(super) updates: Vec<SeenUpdate>,
}

fn error(status: u16, message: &str) -> Reply {
    Reply::json(status, json!({ "message": message }))
}

fn timestamp(tick: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS + tick * 60))
        .to_string()
}

impl Host for GitLab {
    const NAME: &'static str = "GitLab";
    const NOT_MODIFIED_IS_FREE: bool = false;

    fn presented_token(headers: &[(String, String)]) -> Option<String> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.trim().to_string())
        };
        header("private-token").or_else(|| {
            let auth = header("authorization")?;
            let (scheme, token) = auth.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        })
    }

    fn error(status: u16, message: &str) -> Reply {
        error(status, message)
    }

    fn throttled(retry_after: u64, reset_epoch: u64) -> Reply {
        // Rack::Attack's throttled answer is plain text; its headers say when.
        Reply::empty(429)
            .header("Retry-After", retry_after.to_string())
            .header("RateLimit-Name", "throttle_authenticated_api")
            .header("RateLimit-Remaining", "0")
            .header("RateLimit-Reset", reset_epoch.to_string())
    }

    fn rate_headers(limit: u32, remaining: u32, reset_epoch: u64) -> Vec<(String, String)> {
        vec![
            ("RateLimit-Limit".into(), limit.to_string()),
            ("RateLimit-Remaining".into(), remaining.to_string()),
            ("RateLimit-Reset".into(), reset_epoch.to_string()),
        ]
    }

    fn dispatch(&mut self, ctx: &Ctx, call: &Call) -> Option<Reply> {
        let reply = match (call.method, call.template) {
            ("GET", "/api/v4/groups/{id}") => self.get_group(ctx, call),
            ("GET", "/api/v4/groups/{id}/projects") => self.list_projects(ctx, call),
            ("GET", "/api/v4/projects/{id}") => self.get_project(ctx, call),
            ("POST", "/api/v4/projects") => self.post_project(ctx, call),
            ("PUT", "/api/v4/projects/{id}") => self.put_project(ctx, call),
            ("DELETE", "/api/v4/projects/{id}") => self.delete_project(ctx, call),
            ("POST", "/api/v4/projects/{id}/archive") => self.archive_project(ctx, call),
            _ => return None,
        };
        Some(reply)
    }
}

impl GitLab {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn add_group(&mut self, full_path: &str) -> Result<u64, String> {
        if self.group_by_path(full_path).is_some() {
            return Err("it exists".into());
        }
        let parent = match full_path.rsplit_once('/') {
            Some((parent, _)) => Some(
                self.group_by_path(parent)
                    .ok_or("its parent group does not exist")?
                    .id,
            ),
            None => None,
        };
        let id = self.next_id();
        self.groups.push(Group {
            id,
            full_path: full_path.to_string(),
            parent,
        });
        Ok(id)
    }

    fn group_by_path(&self, path: &str) -> Option<&Group> {
        self.groups
            .iter()
            .find(|g| g.full_path.eq_ignore_ascii_case(path))
    }

    /// A group by id or full path, as `:id` takes it.
    fn group(&self, id: &str) -> Option<&Group> {
        match id.parse::<u64>() {
            Ok(n) => self.groups.iter().find(|g| g.id == n),
            Err(_) => self.group_by_path(id),
        }
    }

    fn group_path(&self, id: u64) -> &str {
        self.groups
            .iter()
            .find(|g| g.id == id)
            .map(|g| g.full_path.as_str())
            .unwrap_or("")
    }

    /// Whether group `id` is `ancestor` or below it.
    fn within(&self, id: u64, ancestor: u64) -> bool {
        let mut at = Some(id);
        while let Some(current) = at {
            if current == ancestor {
                return true;
            }
            at = self
                .groups
                .iter()
                .find(|g| g.id == current)
                .and_then(|g| g.parent);
        }
        false
    }

    pub fn find(&self, full_path: &str) -> Option<u64> {
        self.projects
            .iter()
            .find(|p| {
                format!("{}/{}", self.group_path(p.group), p.path).eq_ignore_ascii_case(full_path)
            })
            .map(|p| p.id)
    }

    /// A project by id or full path, as `:id` takes it.
    fn project_index(&self, id: &str) -> Option<usize> {
        let id = match id.parse::<u64>() {
            Ok(n) => n,
            Err(_) => self.find(id)?,
        };
        self.projects.iter().position(|p| p.id == id)
    }

    pub fn archived(&self, id: u64) -> Option<bool> {
        self.projects
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.archived)
    }

    pub fn fake_project(&self, ctx: &Ctx, id: u64) -> Option<FakeProject> {
        let p = self.projects.iter().find(|p| p.id == id)?;
        Some(FakeProject {
            id,
            path: ctx.servers.repo_path(&p.backing),
            clone_url: ctx.servers.http_url(&p.backing),
        })
    }

    pub fn create(
        &mut self,
        ctx: &Ctx,
        group: &str,
        path: &str,
        spec: ProjectSpec,
    ) -> Result<u64, String> {
        let group = self.group(group).ok_or("no such group")?.id;
        if path.is_empty()
            || !path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || path.starts_with('-')
            || path.ends_with(".git")
        {
            return Err("path can contain only letters, digits, '_', '-' and '.'".into());
        }
        if self
            .projects
            .iter()
            .any(|p| p.group == group && p.path.eq_ignore_ascii_case(path))
        {
            return Err("has already been taken".into());
        }
        let id = self.next_id();
        let branch = spec.default_branch.unwrap_or_else(|| "main".into());
        let backing = ctx
            .create_bare(&format!("p{id}"), &branch)
            .map_err(|e| format!("the fake could not create the bare repository: {e:#}"))?;
        let created = self.tick();
        self.projects.push(Project {
            id,
            group,
            path: path.to_string(),
            visibility: if spec.private { "private" } else { "public" }.into(),
            archived: spec.archived,
            fork: spec.fork,
            description: spec.description,
            default_branch: branch,
            created,
            backing,
        });
        Ok(id)
    }

    pub fn delete(&mut self, ctx: &Ctx, id: u64) -> Result<(), String> {
        let index = self
            .projects
            .iter()
            .position(|p| p.id == id)
            .ok_or("no such project")?;
        let path = ctx.servers.repo_path(&self.projects[index].backing);
        fs::remove_dir_all(&path).map_err(|e| format!("cannot delete {}: {e}", path.display()))?;
        self.projects.remove(index);
        Ok(())
    }

    pub fn rename(&mut self, id: u64, new_path: &str) -> Result<(), String> {
        let group = self
            .projects
            .iter()
            .find(|p| p.id == id)
            .ok_or("no such project")?
            .group;
        if self
            .projects
            .iter()
            .any(|p| p.group == group && p.id != id && p.path.eq_ignore_ascii_case(new_path))
        {
            return Err("has already been taken".into());
        }
        if let Some(p) = self.projects.iter_mut().find(|p| p.id == id) {
            p.path = new_path.to_string();
        }
        Ok(())
    }

    fn namespace(&self, ctx: &Ctx, group: u64) -> Value {
        let g = self.groups.iter().find(|g| g.id == group);
        let full_path = g.map(|g| g.full_path.as_str()).unwrap_or("");
        let name = full_path.rsplit('/').next().unwrap_or(full_path);
        json!({
            "id": group,
            "name": name,
            "path": name,
            "kind": "group",
            "full_path": full_path,
            "parent_id": g.and_then(|g| g.parent),
            "avatar_url": null,
            "web_url": format!("{}/groups/{full_path}", ctx.base_url),
        })
    }

    /// `API_Entities_BasicProjectDetails` and the project-specific part.
    fn basic(&self, ctx: &Ctx, p: &Project) -> Value {
        let namespace = self.group_path(p.group);
        let full = format!("{namespace}/{}", p.path);
        json!({
            "id": p.id,
            "description": p.description,
            "name": p.path,
            "name_with_namespace": full.replace('/', " / "),
            "path": p.path,
            "path_with_namespace": full,
            "created_at": timestamp(p.created),
            "default_branch": p.default_branch,
            "tag_list": [],
            "topics": [],
            "ssh_url_to_repo": format!("git@127.0.0.1:{full}.git"),
            "http_url_to_repo": ctx.servers.http_url(&p.backing),
            "web_url": format!("{}/{full}", ctx.base_url),
            "readme_url": null,
            "forks_count": 0,
            "avatar_url": null,
            "star_count": 0,
            "last_activity_at": timestamp(p.created),
            "visibility": p.visibility,
            "namespace": self.namespace(ctx, p.group),
        })
    }

    /// `API_Entities_Project`.
    fn project_json(&self, ctx: &Ctx, p: &Project) -> Value {
        let mut v = self.basic(ctx, p);
        let forked_from = p.fork.then(|| {
            json!({
                "id": 900_000 + p.id,
                "description": null,
                "name": p.path,
                "name_with_namespace": format!("upstream / {}", p.path),
                "path": p.path,
                "path_with_namespace": format!("upstream/{}", p.path),
                "created_at": timestamp(0),
                "default_branch": p.default_branch,
                "http_url_to_repo": format!("{}/upstream/{}.git", ctx.base_url, p.path),
                "web_url": format!("{}/upstream/{}", ctx.base_url, p.path),
                "visibility": "public",
            })
        });
        if let Value::Object(fields) = &mut v {
            for (key, value) in [
                ("forked_from_project", forked_from.unwrap_or(Value::Null)),
                ("empty_repo", json!(false)),
                ("archived", json!(p.archived)),
                ("issues_enabled", json!(true)),
                ("merge_requests_enabled", json!(true)),
                ("wiki_enabled", json!(true)),
                ("jobs_enabled", json!(true)),
                ("snippets_enabled", json!(true)),
                ("lfs_enabled", json!(true)),
                ("creator_id", json!(1)),
                ("open_issues_count", json!(0)),
                ("updated_at", json!(timestamp(p.created))),
                ("request_access_enabled", json!(true)),
            ] {
                fields.insert(key.to_string(), value);
            }
        }
        v
    }

    fn visible(&self, call: &Call, p: &Project) -> bool {
        call.authenticated || p.visibility == "public"
    }

    fn get_group(&self, ctx: &Ctx, call: &Call) -> Reply {
        let Some(g) = self.group(call.param("id")) else {
            return error(404, "404 Group Not Found");
        };
        let name = g.full_path.rsplit('/').next().unwrap_or(&g.full_path);
        let mut detail = json!({
            "id": g.id,
            "web_url": format!("{}/groups/{}", ctx.base_url, g.full_path),
            "name": name,
            "path": name,
            "description": "",
            "visibility": "private",
            "archived": false,
            "default_branch": null,
            "avatar_url": null,
            "request_access_enabled": "true",
            "full_name": g.full_path.replace('/', " / "),
            "full_path": g.full_path,
            "created_at": timestamp(0),
            "parent_id": g.parent,
        });
        if call.query_bool("with_projects").unwrap_or(true) {
            let projects: Vec<Value> = self
                .projects
                .iter()
                .filter(|p| p.group == g.id && self.visible(call, p))
                .map(|p| self.project_json(ctx, p))
                .collect();
            detail["projects"] = Value::Array(projects);
        }
        Reply::json(200, detail)
    }

    fn list_projects(&self, ctx: &Ctx, call: &Call) -> Reply {
        let Some(g) = self.group(call.param("id")) else {
            return error(404, "404 Group Not Found");
        };
        let subgroups = call.query_bool("include_subgroups").unwrap_or(false);
        let archived = call.query_bool("archived");
        let mut found: Vec<&Project> = self
            .projects
            .iter()
            .filter(|p| {
                (p.group == g.id || (subgroups && self.within(p.group, g.id)))
                    && self.visible(call, p)
                    && archived.is_none_or(|a| a == p.archived)
            })
            .collect();
        match call.query("order_by").unwrap_or("created_at") {
            "id" => found.sort_by_key(|p| p.id),
            "path" | "name" => found.sort_by(|a, b| a.path.cmp(&b.path)),
            _ => found.sort_by_key(|p| (p.created, p.id)),
        }
        if call.query("sort").unwrap_or("desc") == "desc" {
            found.reverse();
        }
        let items = found.iter().map(|p| self.project_json(ctx, p)).collect();
        let (reply, page, total) = ctx.page(call, items, "per_page", 20);
        let per_page = call
            .query("per_page")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(20)
            .min(ctx.max_page_size);
        let pages = total.div_ceil(per_page).max(1);
        let next = if page < pages {
            (page + 1).to_string()
        } else {
            String::new()
        };
        reply
            .header("X-Page", page.to_string())
            .header("X-Per-Page", per_page.to_string())
            .header("X-Total", total.to_string())
            .header("X-Total-Pages", pages.to_string())
            .header("X-Next-Page", next)
    }

    fn get_project(&self, ctx: &Ctx, call: &Call) -> Reply {
        match self.project_index(call.param("id")) {
            Some(i) if self.visible(call, &self.projects[i]) => {
                let mut v = self.project_json(ctx, &self.projects[i]);
                v["permissions"] = json!({
                    "project_access": null,
                    "group_access": { "access_level": "50", "notification_level": "3" },
                });
                Reply::json(200, v)
            }
            _ => error(404, "404 Project Not Found"),
        }
    }

    fn post_project(&mut self, ctx: &Ctx, call: &Call) -> Reply {
        if !call.authenticated {
            return error(401, "401 Unauthorized");
        }
        let path = call.body_str("path").or(call.body_str("name"));
        let Some(path) = path else {
            return Reply::json(
                400,
                json!({ "error": "name, path are missing, at least one parameter must be provided" }),
            );
        };
        let Some(namespace) = call.body.and_then(|b| b.get("namespace_id")?.as_u64()) else {
            return Reply::json(
                400,
                json!({ "message": { "namespace": ["the fake GitLab has no user namespaces; give namespace_id"] } }),
            );
        };
        let visibility = call.body_str("visibility").unwrap_or("private").to_string();
        let spec = ProjectSpec {
            private: visibility != "public",
            description: call.body_str("description").map(str::to_string),
            default_branch: call.body_str("default_branch").map(str::to_string),
            ..ProjectSpec::default()
        };
        let id = match self.create(ctx, &namespace.to_string(), path, spec) {
            Ok(id) => id,
            Err(e) if e.contains("taken") => {
                return Reply::json(
                    400,
                    json!({ "message": { "path": ["has already been taken"], "name": ["has already been taken"] } }),
                )
            }
            Err(e) if e.contains("no such group") => return error(404, "404 Namespace Not Found"),
            Err(e) => return Reply::json(400, json!({ "message": { "path": [e] } })),
        };
        if let Some(p) = self.projects.iter_mut().find(|p| p.id == id) {
            // GitLab keeps `internal`; the fake's `private` flag is only a default.
            p.visibility = visibility.clone();
        }
        self.created.push(CreatedProject {
            namespace: self.group_path(namespace).to_string(),
            path: path.to_string(),
            visibility,
            description: call.body_str("description").map(str::to_string),
        });
        let Some(p) = self.projects.iter().find(|p| p.id == id) else {
            return error(500, "500 Internal Server Error");
        };
        Reply::json(201, self.project_json(ctx, p))
    }

    fn put_project(&mut self, ctx: &Ctx, call: &Call) -> Reply {
        if !call.authenticated {
            return error(401, "401 Unauthorized");
        }
        let Some(index) = self.project_index(call.param("id")) else {
            return error(404, "404 Project Not Found");
        };
        if let Some(branch) = call.body_str("default_branch") {
            let path = ctx.servers.repo_path(&self.projects[index].backing);
            let head = format!("refs/heads/{branch}");
            if crate::git(&path, &["rev-parse", "--verify", "--quiet", &head]).is_err() {
                return Reply::json(
                    400,
                    json!({ "message": { "default_branch": ["branch does not exist"] } }),
                );
            }
            if let Err(e) = crate::git(&path, &["symbolic-ref", "HEAD", &head]) {
                return error(500, &format!("cannot set HEAD: {e:#}"));
            }
            self.projects[index].default_branch = branch.to_string();
        }
        if let Some(description) = call.body.and_then(|b| b.get("description")) {
            self.projects[index].description = description.as_str().map(str::to_string);
        }
        if let Some(visibility) = call.body_str("visibility") {
            self.projects[index].visibility = visibility.to_string();
        }
        let project = format!(
            "{}/{}",
            self.group_path(self.projects[index].group),
            self.projects[index].path
        );
        self.updates.push(SeenUpdate {
            project,
            body: call.body.cloned().unwrap_or(Value::Null),
        });
        Reply::json(200, self.project_json(ctx, &self.projects[index]))
    }

    fn delete_project(&mut self, ctx: &Ctx, call: &Call) -> Reply {
        if !call.authenticated {
            return error(401, "401 Unauthorized");
        }
        let Some(index) = self.project_index(call.param("id")) else {
            return error(404, "404 Project Not Found");
        };
        let id = self.projects[index].id;
        match self.delete(ctx, id) {
            Ok(()) => Reply::json(202, json!({ "message": "202 Accepted" })),
            Err(e) => error(500, &e),
        }
    }

    fn archive_project(&mut self, ctx: &Ctx, call: &Call) -> Reply {
        if !call.authenticated {
            return error(401, "401 Unauthorized");
        }
        let Some(index) = self.project_index(call.param("id")) else {
            return error(404, "404 Project Not Found");
        };
        self.projects[index].archived = true;
        Reply::json(201, self.project_json(ctx, &self.projects[index]))
    }
}
