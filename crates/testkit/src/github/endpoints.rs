//! The operations the fake implements, with GitHub's semantics.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;

use serde_json::{json, Value};

use super::model::{self, OwnerKind, Repo, RepoView, State};
use super::{CreatedRepo, RepoSpec, SeenPatch, Shared};

const DOCS: &str = "https://docs.github.com/rest";

/// A request that passed the contract, auth and rate-limit checks.
pub(super) struct Call<'a> {
    pub method: &'a str,
    pub template: &'a str,
    pub path: &'a str,
    pub params: &'a BTreeMap<String, String>,
    pub query: &'a [(String, String)],
    pub body: Option<&'a Value>,
    pub authenticated: bool,
}

impl Call<'_> {
    fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn body_str(&self, name: &str) -> Option<&str> {
        self.body?.get(name)?.as_str()
    }

    fn body_bool(&self, name: &str) -> Option<bool> {
        self.body?.get(name)?.as_bool()
    }
}

/// An answer: status, JSON body (none for 204/304) and extra headers.
pub(super) struct Reply {
    pub status: u16,
    pub body: Option<Value>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    /// GitHub's `basic-error` body.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::json(
            status,
            json!({ "message": message, "documentation_url": DOCS, "status": status.to_string() }),
        )
    }

    fn not_found() -> Reply {
        Reply::error(404, "Not Found")
    }

    /// GitHub's `validation-error` body (422).
    fn invalid(message: &str, field: &str, code: &str, detail: &str) -> Reply {
        Reply::json(
            422,
            json!({
                "message": message,
                "errors": [{ "resource": "Repository", "code": code, "field": field, "message": detail }],
                "documentation_url": DOCS,
                "status": "422",
            }),
        )
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = self.body.as_ref().map(Value::to_string).unwrap_or_default();
        write!(f, "GitHub answers {}: {body}", self.status)
    }
}

/// Answers an operation of the description; `None` when the fake does not
/// implement it.
pub(super) fn dispatch(shared: &Shared, state: &mut State, call: &Call) -> Option<Reply> {
    let reply = match (call.method, call.template) {
        ("GET", "/user") => get_user(shared, state, call),
        ("GET", "/users/{username}") => get_owner(shared, state, call),
        ("GET", "/orgs/{org}") => get_org(shared, state, call),
        ("GET", "/orgs/{org}/repos") => list_org_repos(shared, state, call),
        ("GET", "/users/{username}/repos") => list_user_repos(shared, state, call),
        ("GET", "/user/repos") => list_own_repos(shared, state, call),
        ("GET", "/repos/{owner}/{repo}") => get_repo(shared, state, call),
        ("POST", "/orgs/{org}/repos") => post_repo(shared, state, call, call.param("org")),
        ("POST", "/user/repos") => post_repo(shared, state, call, &shared.options.user),
        ("PATCH", "/repos/{owner}/{repo}") => patch_repo(shared, state, call),
        ("DELETE", "/repos/{owner}/{repo}") => {
            if !call.authenticated {
                return Some(requires_authentication());
            }
            match delete_repo(shared, state, call.param("owner"), call.param("repo")) {
                Ok(()) => Reply {
                    status: 204,
                    body: None,
                    headers: Vec::new(),
                },
                Err(reply) => reply,
            }
        }
        _ => return None,
    };
    Some(reply)
}

fn requires_authentication() -> Reply {
    Reply::error(401, "Requires authentication")
}

fn get_user(shared: &Shared, state: &State, call: &Call) -> Reply {
    if !call.authenticated {
        return requires_authentication();
    }
    match state.owner(&shared.options.user) {
        Some(me) => Reply::json(200, model::user(shared, state, me, true)),
        None => Reply::not_found(),
    }
}

fn get_owner(shared: &Shared, state: &State, call: &Call) -> Reply {
    match state.owner(call.param("username")) {
        Some(owner) => Reply::json(200, model::user(shared, state, owner, false)),
        None => Reply::not_found(),
    }
}

fn get_org(shared: &Shared, state: &State, call: &Call) -> Reply {
    match state.owner(call.param("org")) {
        Some(org) if org.kind == OwnerKind::Organization => {
            Reply::json(200, model::organization(shared, state, org))
        }
        _ => Reply::not_found(),
    }
}

fn list_org_repos(shared: &Shared, state: &State, call: &Call) -> Reply {
    let Some(org) = state
        .owner(call.param("org"))
        .filter(|o| o.kind == OwnerKind::Organization)
    else {
        return Reply::not_found();
    };
    let kind = call.query("type").unwrap_or("all");
    let repos = state.repos.iter().filter(|r| {
        r.owner == org.login
            && (call.authenticated || !r.private)
            && match kind {
                "public" => !r.private,
                "private" => r.private,
                "forks" => r.fork,
                "sources" => !r.fork,
                _ => true,
            }
    });
    list(
        shared,
        state,
        call,
        repos.collect(),
        "created",
        RepoView::Minimal,
    )
}

fn list_user_repos(shared: &Shared, state: &State, call: &Call) -> Reply {
    let Some(owner) = state.owner(call.param("username")) else {
        return Reply::not_found();
    };
    // Public repositories only (`GET /user/repos` lists private ones); the
    // fake has no collaborators, so `type=member` lists nothing.
    let member_only = call.query("type") == Some("member");
    let repos = state
        .repos
        .iter()
        .filter(|r| r.owner == owner.login && !r.private && !member_only);
    list(
        shared,
        state,
        call,
        repos.collect(),
        "full_name",
        RepoView::Minimal,
    )
}

fn list_own_repos(shared: &Shared, state: &State, call: &Call) -> Reply {
    if !call.authenticated {
        return requires_authentication();
    }
    let me = &shared.options.user;
    if call.query("type").is_some()
        && (call.query("visibility").is_some() || call.query("affiliation").is_some())
    {
        return Reply::json(
            422,
            json!({
                "message": "If you specify visibility or affiliation, you cannot specify type.",
                "documentation_url": DOCS,
                "status": "422",
            }),
        );
    }
    let (visibility, affiliations): (&str, Vec<&str>) = match call.query("type") {
        Some("owner") => ("all", vec!["owner"]),
        Some("public") => ("public", vec!["owner", "organization_member"]),
        Some("private") => ("private", vec!["owner", "organization_member"]),
        Some("member") => ("all", vec!["organization_member", "collaborator"]),
        _ => (
            call.query("visibility").unwrap_or("all"),
            call.query("affiliation")
                .unwrap_or("owner,collaborator,organization_member")
                .split(',')
                .map(str::trim)
                .collect(),
        ),
    };
    if let Some(bad) = affiliations
        .iter()
        .find(|a| !["owner", "collaborator", "organization_member"].contains(a))
    {
        return Reply::json(
            422,
            json!({
                "message": format!("Invalid affiliation: {bad}"),
                "documentation_url": DOCS,
                "status": "422",
            }),
        );
    }
    // The token's user belongs to every organization of the fake.
    let repos = state.repos.iter().filter(|r| {
        let mine = r.owner.eq_ignore_ascii_case(me);
        let org = state
            .owner(&r.owner)
            .is_some_and(|o| o.kind == OwnerKind::Organization);
        let affiliated = (mine && affiliations.contains(&"owner"))
            || (org && affiliations.contains(&"organization_member"));
        affiliated
            && match visibility {
                "public" => !r.private,
                "private" => r.private,
                _ => true,
            }
    });
    list(
        shared,
        state,
        call,
        repos.collect(),
        "full_name",
        RepoView::Listed,
    )
}

/// Sorts by `sort` (default `default_sort`) and `direction` (GitHub's
/// default: ascending for `full_name`, else descending) and answers one page.
fn list(
    shared: &Shared,
    state: &State,
    call: &Call,
    mut repos: Vec<&Repo>,
    default_sort: &str,
    view: RepoView,
) -> Reply {
    let sort = call.query("sort").unwrap_or(default_sort);
    match sort {
        "full_name" => repos.sort_by_key(|r| format!("{}/{}", r.owner, r.name).to_lowercase()),
        "updated" => repos.sort_by_key(|r| (r.updated, r.id)),
        _ => repos.sort_by_key(|r| (r.created, r.id)),
    }
    let ascending = match call.query("direction") {
        Some(direction) => direction == "asc",
        None => sort == "full_name",
    };
    if !ascending {
        repos.reverse();
    }
    let items: Vec<Value> = repos
        .into_iter()
        .map(|r| model::repository(shared, state, r, view))
        .collect();
    paginate(shared, call, items)
}

/// One page of `items` with GitHub's `Link` header (prev, next, last, first).
fn paginate(shared: &Shared, call: &Call, items: Vec<Value>) -> Reply {
    let number = |name: &str, default: usize| {
        call.query(name)
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(default)
    };
    let per_page = number("per_page", 30).min(shared.options.max_page_size);
    let page = number("page", 1);
    let last = items.len().div_ceil(per_page).max(1);
    let body: Vec<Value> = items
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    let url = |n: usize| {
        let mut pairs: Vec<(String, String)> = call.query.to_vec();
        match pairs.iter_mut().find(|(k, _)| k == "page") {
            Some(pair) => pair.1 = n.to_string(),
            None => pairs.push(("page".into(), n.to_string())),
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        format!("{}{}?{query}", shared.base_url, call.path)
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", url((page - 1).min(last))));
    }
    if page < last {
        links.push(format!("<{}>; rel=\"next\"", url(page + 1)));
        links.push(format!("<{}>; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("<{}>; rel=\"first\"", url(1)));
    }
    let mut reply = Reply::json(200, Value::Array(body));
    if !links.is_empty() {
        reply.headers.push(("Link".into(), links.join(", ")));
    }
    reply
}

/// The repository if the caller may see it (private ones need the token).
fn visible<'s>(state: &'s State, call: &Call) -> Option<&'s Repo> {
    state
        .repo(call.param("owner"), call.param("repo"))
        .filter(|r| call.authenticated || !r.private)
}

fn get_repo(shared: &Shared, state: &State, call: &Call) -> Reply {
    match visible(state, call) {
        Some(repo) => Reply::json(200, model::repository(shared, state, repo, RepoView::Full)),
        None => Reply::not_found(),
    }
}

fn post_repo(shared: &Shared, state: &mut State, call: &Call, owner: &str) -> Reply {
    if !call.authenticated {
        return requires_authentication();
    }
    let Some(name) = call.body_str("name") else {
        return Reply::invalid(
            "Validation Failed",
            "name",
            "missing_field",
            "name is missing",
        );
    };
    let private = match call.body_str("visibility") {
        Some(visibility) => visibility != "public",
        None => call.body_bool("private").unwrap_or(false),
    };
    let spec = RepoSpec {
        private,
        archived: false,
        fork: false,
        description: call.body_str("description").map(str::to_string),
        default_branch: None,
    };
    let index = match create_repo(shared, state, owner, name, spec) {
        Ok(index) => index,
        Err(reply) => return reply,
    };
    let created = {
        let repo = &mut state.repos[index];
        repo.homepage = call.body_str("homepage").map(str::to_string);
        repo.has_issues = call.body_bool("has_issues").unwrap_or(true);
        repo.has_projects = call.body_bool("has_projects").unwrap_or(true);
        repo.has_wiki = call.body_bool("has_wiki").unwrap_or(true);
        CreatedRepo {
            owner: repo.owner.clone(),
            name: repo.name.clone(),
            private: repo.private,
            visibility: if repo.private { "private" } else { "public" }.to_string(),
            description: repo.description.clone(),
        }
    };
    state.created.push(created);
    let repo = &state.repos[index];
    let mut reply = Reply::json(201, model::repository(shared, state, repo, RepoView::Full));
    reply.headers.push((
        "Location".into(),
        format!("{}/repos/{}/{}", shared.base_url, repo.owner, repo.name),
    ));
    reply
}

fn patch_repo(shared: &Shared, state: &mut State, call: &Call) -> Reply {
    if !call.authenticated {
        return requires_authentication();
    }
    let (owner, name) = (call.param("owner"), call.param("repo"));
    let Some(mut index) = state.repo_index(owner, name) else {
        return Reply::not_found();
    };
    if let Some(new_name) = call.body_str("name") {
        if !new_name.eq_ignore_ascii_case(name) {
            if let Err(reply) = rename_repo(shared, state, owner, name, new_name) {
                return reply;
            }
            let renamed = state.repo_index(owner, &sanitize_name(new_name));
            let Some(renamed) = renamed else {
                return Reply::not_found();
            };
            index = renamed;
        }
    }
    if let Some(branch) = call.body_str("default_branch") {
        let path = shared.servers.repo_path(&state.repos[index].backing);
        let head = format!("refs/heads/{branch}");
        if let Err(e) = crate::git(&path, &["symbolic-ref", "HEAD", &head]) {
            return Reply::invalid(
                "Validation Failed",
                "default_branch",
                "invalid",
                &format!("cannot set HEAD: {e:#}"),
            );
        }
    }
    let updated = state.tick();
    let repo = &mut state.repos[index];
    if let Some(branch) = call.body_str("default_branch") {
        repo.default_branch = branch.to_string();
    }
    if let Some(description) = call.body.and_then(|b| b.get("description")) {
        repo.description = description.as_str().map(str::to_string);
    }
    if let Some(homepage) = call.body.and_then(|b| b.get("homepage")) {
        repo.homepage = homepage.as_str().map(str::to_string);
    }
    match call.body_str("visibility") {
        Some(visibility) => repo.private = visibility != "public",
        None => repo.private = call.body_bool("private").unwrap_or(repo.private),
    }
    repo.archived = call.body_bool("archived").unwrap_or(repo.archived);
    repo.has_issues = call.body_bool("has_issues").unwrap_or(repo.has_issues);
    repo.has_projects = call.body_bool("has_projects").unwrap_or(repo.has_projects);
    repo.has_wiki = call.body_bool("has_wiki").unwrap_or(repo.has_wiki);
    repo.updated = updated;
    let seen = SeenPatch {
        owner: repo.owner.clone(),
        repo: repo.name.clone(),
        body: call.body.cloned().unwrap_or(Value::Null),
    };
    state.patches.push(seen);
    let repo = &state.repos[index];
    Reply::json(200, model::repository(shared, state, repo, RepoView::Full))
}

/// GitHub turns every character but letters, digits, `.`, `-` and `_`
/// into `-`.
fn sanitize_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `name` as GitHub would store it, or its 422 when none is left.
fn usable_name(name: &str, failure: &str) -> Result<String, Reply> {
    let name = sanitize_name(name);
    if name.is_empty() || name == "." || name == ".." {
        return Err(Reply::invalid(
            failure,
            "name",
            "invalid",
            "name is invalid",
        ));
    }
    Ok(name)
}

fn name_taken(failure: &str) -> Reply {
    Reply::invalid(
        failure,
        "name",
        "custom",
        "name already exists on this account",
    )
}

/// Creates `owner/name` with its bare repository; returns its index in
/// `state.repos`, or GitHub's answer when it cannot.
pub(super) fn create_repo(
    shared: &Shared,
    state: &mut State,
    owner: &str,
    name: &str,
    spec: RepoSpec,
) -> Result<usize, Reply> {
    let Some(owner) = state.owner(owner).map(|o| o.login.clone()) else {
        return Err(Reply::not_found());
    };
    let failure = "Repository creation failed.";
    let name = usable_name(name, failure)?;
    if state.repo(&owner, &name).is_some() {
        return Err(name_taken(failure));
    }
    let backing = format!("{}/{owner}/{name}", shared.prefix);
    let default_branch = spec.default_branch.unwrap_or_else(|| "main".to_string());
    let made = shared.servers.create_bare(&backing).and_then(|path| {
        let head = format!("refs/heads/{default_branch}");
        crate::git(&path, &["symbolic-ref", "HEAD", &head])
    });
    if let Err(e) = made {
        return Err(Reply::error(
            500,
            &format!("the fake could not create the bare repository: {e:#}"),
        ));
    }
    let id = state.next_id();
    let created = state.tick();
    state.repos.push(Repo {
        id,
        owner,
        name,
        private: spec.private,
        archived: spec.archived,
        fork: spec.fork,
        description: spec.description,
        homepage: None,
        default_branch,
        has_issues: true,
        has_projects: true,
        has_wiki: true,
        created,
        updated: created,
        backing,
    });
    Ok(state.repos.len() - 1)
}

pub(super) fn delete_repo(
    shared: &Shared,
    state: &mut State,
    owner: &str,
    name: &str,
) -> Result<(), Reply> {
    let Some(index) = state.repo_index(owner, name) else {
        return Err(Reply::not_found());
    };
    let path = shared.servers.repo_path(&state.repos[index].backing);
    if let Err(e) = fs::remove_dir_all(&path) {
        return Err(Reply::error(
            500,
            &format!("the fake could not delete {}: {e}", path.display()),
        ));
    }
    state.repos.remove(index);
    Ok(())
}

/// Renames `owner/name` to `new_name`, keeping its id; moves the bare repository.
pub(super) fn rename_repo(
    shared: &Shared,
    state: &mut State,
    owner: &str,
    name: &str,
    new_name: &str,
) -> Result<(), Reply> {
    let Some(index) = state.repo_index(owner, name) else {
        return Err(Reply::not_found());
    };
    let failure = "Validation Failed";
    let new_name = usable_name(new_name, failure)?;
    if state
        .repo(owner, &new_name)
        .is_some_and(|other| other.id != state.repos[index].id)
    {
        return Err(name_taken(failure));
    }
    let repo = &state.repos[index];
    let backing = format!("{}/{}/{new_name}", shared.prefix, repo.owner);
    let (from, to) = (
        shared.servers.repo_path(&repo.backing),
        shared.servers.repo_path(&backing),
    );
    if let Err(e) = fs::rename(&from, &to) {
        return Err(Reply::error(
            500,
            &format!(
                "the fake could not move {} to {}: {e}",
                from.display(),
                to.display()
            ),
        ));
    }
    let updated = state.tick();
    let repo = &mut state.repos[index];
    repo.name = new_name;
    repo.backing = backing;
    repo.updated = updated;
    Ok(())
}
