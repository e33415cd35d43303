//! The fake's world: owners, repositories, injected faults, the rate-limit
//! window and what was observed; and the JSON GitHub shows for each.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::{Counters, CreatedRepo, FakeOptions, SeenPatch, Shared};

/// Timestamps start here (2024-01-01T00:00:00Z) and advance a minute per
/// change, so `created`/`updated` sorting is deterministic.
const EPOCH_SECS: u64 = 1_704_067_200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OwnerKind {
    User,
    Organization,
}

impl OwnerKind {
    fn as_str(self) -> &'static str {
        match self {
            OwnerKind::User => "User",
            OwnerKind::Organization => "Organization",
        }
    }
}

pub(super) struct Owner {
    pub login: String,
    pub id: u64,
    pub kind: OwnerKind,
    pub created: u64,
}

pub(super) struct Repo {
    pub id: u64,
    pub owner: String,
    pub name: String,
    pub private: bool,
    pub archived: bool,
    pub fork: bool,
    pub description: Option<String>,
    pub homepage: Option<String>,
    pub default_branch: String,
    pub has_issues: bool,
    pub has_projects: bool,
    pub has_wiki: bool,
    pub created: u64,
    pub updated: u64,
    /// Name under the test servers' repos dir: `<prefix>/<owner>/<name>`.
    pub backing: String,
}

/// A canned answer for the next matching requests.
pub(super) struct Fault {
    method: Option<String>,
    path: String,
    query: Vec<(String, String)>,
    pub status: u16,
    remaining: u32,
    /// A secondary rate limit (`retry-after: 1`) rather than a failure.
    pub secondary: bool,
}

impl Fault {
    pub fn new(
        method: Option<&str>,
        pattern: &str,
        status: u16,
        count: u32,
        secondary: bool,
    ) -> Fault {
        let (path, query) = pattern.split_once('?').unwrap_or((pattern, ""));
        Fault {
            method: method.map(str::to_ascii_uppercase),
            path: path.to_string(),
            query: form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            status,
            remaining: count,
            secondary,
        }
    }

    fn matches(&self, method: &str, path: &str, query: &[(String, String)]) -> bool {
        self.remaining > 0
            && self.method.as_deref().is_none_or(|m| m == method)
            && path.starts_with(&self.path)
            && self.query.iter().all(|pair| query.contains(pair))
    }
}

/// The primary rate limit's current window.
pub(super) struct Quota {
    pub limit: u32,
    pub used: u32,
    window: Duration,
    started: Instant,
    started_at: SystemTime,
}

impl Quota {
    /// Starts a new window when the current one is over.
    pub fn roll(&mut self) {
        if self.started.elapsed() >= self.window {
            self.used = 0;
            self.started = Instant::now();
            self.started_at = SystemTime::now();
        }
    }

    /// `x-ratelimit-reset`: the window's end in epoch seconds (rounded up).
    pub fn reset_epoch(&self) -> u64 {
        let end = self.started_at + self.window;
        let since = end.duration_since(UNIX_EPOCH).unwrap_or_default();
        since.as_secs() + u64::from(since.subsec_nanos() > 0)
    }
}

pub(super) struct State {
    owners: Vec<Owner>,
    pub repos: Vec<Repo>,
    next_id: u64,
    clock: u64,
    pub faults: Vec<Fault>,
    pub quota: Quota,
    pub counters: Counters,
    pub violations: Vec<String>,
    pub created: Vec<CreatedRepo>,
    pub patches: Vec<SeenPatch>,
}

impl State {
    pub fn new(options: &FakeOptions) -> State {
        State {
            owners: Vec::new(),
            repos: Vec::new(),
            next_id: 1000,
            clock: 0,
            faults: Vec::new(),
            quota: Quota {
                limit: options.rate_limit,
                used: 0,
                window: options.rate_window,
                started: Instant::now(),
                started_at: SystemTime::now(),
            },
            counters: Counters::default(),
            violations: Vec::new(),
            created: Vec::new(),
            patches: Vec::new(),
        }
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A new, later timestamp (seconds after [`EPOCH_SECS`]).
    pub fn tick(&mut self) -> u64 {
        self.clock += 60;
        self.clock
    }

    pub fn add_owner(&mut self, login: &str, kind: OwnerKind) -> Result<u64> {
        let valid = !login.is_empty()
            && !login.starts_with('-')
            && login.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid {
            bail!("invalid GitHub login {login:?}: use letters, digits and '-'");
        }
        if self.owner(login).is_some() {
            bail!("{login} already exists");
        }
        let id = self.next_id();
        let created = self.tick();
        self.owners.push(Owner {
            login: login.to_string(),
            id,
            kind,
            created,
        });
        Ok(id)
    }

    /// Logins and repository names are case-insensitive on GitHub.
    pub fn owner(&self, login: &str) -> Option<&Owner> {
        self.owners
            .iter()
            .find(|o| o.login.eq_ignore_ascii_case(login))
    }

    pub fn repo(&self, owner: &str, name: &str) -> Option<&Repo> {
        self.repos
            .iter()
            .find(|r| r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(name))
    }

    pub fn repo_index(&self, owner: &str, name: &str) -> Option<usize> {
        self.repos
            .iter()
            .position(|r| r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(name))
    }

    /// Takes one use of the first fault matching a request.
    pub fn take_fault(
        &mut self,
        method: &str,
        path: &str,
        query: &[(String, String)],
    ) -> Option<(u16, bool)> {
        let fault = self
            .faults
            .iter_mut()
            .find(|f| f.matches(method, path, query))?;
        fault.remaining -= 1;
        Some((fault.status, fault.secondary))
    }

    pub fn record_violation(&mut self, violation: String) {
        self.violations.push(violation);
    }
}

fn timestamp(offset: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(EPOCH_SECS + offset);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `simple-user` of `owner`.
pub(super) fn simple_user(shared: &Shared, owner: &Owner) -> Value {
    let base = &shared.base_url;
    let login = &owner.login;
    let users = format!("{base}/users/{login}");
    json!({
        "login": login,
        "id": owner.id,
        "node_id": format!("MDQ6VXNlcj{}", owner.id),
        "avatar_url": format!("{base}/avatars/{login}"),
        "gravatar_id": "",
        "url": users,
        "html_url": format!("{base}/{login}"),
        "followers_url": format!("{users}/followers"),
        "following_url": format!("{users}/following{{/other_user}}"),
        "gists_url": format!("{users}/gists{{/gist_id}}"),
        "starred_url": format!("{users}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{users}/subscriptions"),
        "organizations_url": format!("{users}/orgs"),
        "repos_url": format!("{users}/repos"),
        "events_url": format!("{users}/events{{/privacy}}"),
        "received_events_url": format!("{users}/received_events"),
        "type": owner.kind.as_str(),
        "site_admin": false,
        "user_view_type": "public",
    })
}

/// `public-user` of `owner` (`GET /users/{username}`), or `private-user`
/// when `private` (`GET /user`, the token's own user).
pub(super) fn user(shared: &Shared, state: &State, owner: &Owner, private: bool) -> Value {
    let mut user = simple_user(shared, owner);
    let owned = |private_repo: bool| {
        state
            .repos
            .iter()
            .filter(|r| r.owner == owner.login && r.private == private_repo)
            .count()
    };
    let fields = json!({
        "name": owner.login,
        "company": null,
        "blog": "",
        "location": null,
        "email": null,
        "hireable": null,
        "bio": null,
        "public_repos": owned(false),
        "public_gists": 0,
        "followers": 0,
        "following": 0,
        "created_at": timestamp(owner.created),
        "updated_at": timestamp(owner.created),
    });
    extend(&mut user, fields);
    if private {
        extend(
            &mut user,
            json!({
                "user_view_type": "private",
                "private_gists": 0,
                "total_private_repos": owned(true),
                "owned_private_repos": owned(true),
                "disk_usage": 0,
                "collaborators": 0,
                "two_factor_authentication": true,
            }),
        );
    }
    user
}

/// `organization-full` (`GET /orgs/{org}`).
pub(super) fn organization(shared: &Shared, state: &State, org: &Owner) -> Value {
    let base = &shared.base_url;
    let login = &org.login;
    let orgs = format!("{base}/orgs/{login}");
    let public_repos = state
        .repos
        .iter()
        .filter(|r| r.owner == org.login && !r.private)
        .count();
    json!({
        "login": login,
        "id": org.id,
        "node_id": format!("MDEyOk9yZ2FuaXphdGlvbj{}", org.id),
        "url": orgs,
        "repos_url": format!("{orgs}/repos"),
        "events_url": format!("{orgs}/events"),
        "hooks_url": format!("{orgs}/hooks"),
        "issues_url": format!("{orgs}/issues"),
        "members_url": format!("{orgs}/members{{/member}}"),
        "public_members_url": format!("{orgs}/public_members{{/member}}"),
        "avatar_url": format!("{base}/avatars/{login}"),
        "description": null,
        "html_url": format!("{base}/{login}"),
        "has_organization_projects": true,
        "has_repository_projects": true,
        "public_repos": public_repos,
        "public_gists": 0,
        "followers": 0,
        "following": 0,
        "type": "Organization",
        "created_at": timestamp(org.created),
        "updated_at": timestamp(org.created),
        "archived_at": null,
    })
}

/// How much of a repository to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RepoView {
    /// `minimal-repository` (organization and user listings).
    Minimal,
    /// `repository` (`GET /user/repos`).
    Listed,
    /// `full-repository` (get, create, update).
    Full,
}

/// GitHub's URL (templates) of a repository's resources, after its API URL.
const REPO_URLS: &[(&str, &str)] = &[
    ("archive_url", "/{archive_format}{/ref}"),
    ("assignees_url", "/assignees{/user}"),
    ("blobs_url", "/git/blobs{/sha}"),
    ("branches_url", "/branches{/branch}"),
    ("collaborators_url", "/collaborators{/collaborator}"),
    ("comments_url", "/comments{/number}"),
    ("commits_url", "/commits{/sha}"),
    ("compare_url", "/compare/{base}...{head}"),
    ("contents_url", "/contents/{+path}"),
    ("contributors_url", "/contributors"),
    ("deployments_url", "/deployments"),
    ("downloads_url", "/downloads"),
    ("events_url", "/events"),
    ("forks_url", "/forks"),
    ("git_commits_url", "/git/commits{/sha}"),
    ("git_refs_url", "/git/refs{/sha}"),
    ("git_tags_url", "/git/tags{/sha}"),
    ("issue_comment_url", "/issues/comments{/number}"),
    ("issue_events_url", "/issues/events{/number}"),
    ("issues_url", "/issues{/number}"),
    ("keys_url", "/keys{/key_id}"),
    ("labels_url", "/labels{/name}"),
    ("languages_url", "/languages"),
    ("merges_url", "/merges"),
    ("milestones_url", "/milestones{/number}"),
    (
        "notifications_url",
        "/notifications{?since,all,participating}",
    ),
    ("pulls_url", "/pulls{/number}"),
    ("releases_url", "/releases{/id}"),
    ("stargazers_url", "/stargazers"),
    ("statuses_url", "/statuses/{sha}"),
    ("subscribers_url", "/subscribers"),
    ("subscription_url", "/subscription"),
    ("tags_url", "/tags"),
    ("teams_url", "/teams"),
    ("trees_url", "/git/trees{/sha}"),
];

pub(super) fn repository(shared: &Shared, state: &State, repo: &Repo, view: RepoView) -> Value {
    let base = &shared.base_url;
    let full_name = format!("{}/{}", repo.owner, repo.name);
    let api = format!("{base}/repos/{full_name}");
    let html = format!("{base}/{full_name}");
    let owner = state
        .owner(&repo.owner)
        .map(|o| simple_user(shared, o))
        .unwrap_or(Value::Null);
    let servers = shared.servers;
    let mut value = json!({
        "id": repo.id,
        "node_id": format!("R_kgDO{}", repo.id),
        "name": repo.name,
        "full_name": full_name,
        "owner": owner,
        "private": repo.private,
        "html_url": html,
        "description": repo.description,
        "fork": repo.fork,
        "url": api,
        "git_url": servers.git_daemon_url(&repo.backing),
        "ssh_url": servers.ssh_url(&repo.backing),
        "clone_url": servers.http_url(&repo.backing),
        "mirror_url": null,
        "hooks_url": format!("{api}/hooks"),
        "svn_url": html,
    });
    extend(
        &mut value,
        json!({
        "homepage": repo.homepage,
        "language": null,
        "forks_count": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "size": 0,
        "default_branch": repo.default_branch,
        "open_issues_count": 0,
        "is_template": false,
        "topics": [],
        "has_issues": repo.has_issues,
        "has_projects": repo.has_projects,
        "has_wiki": repo.has_wiki,
        "has_pages": false,
        "has_downloads": true,
        "has_discussions": false,
        "archived": repo.archived,
        "disabled": false,
        "visibility": if repo.private { "private" } else { "public" },
        "pushed_at": timestamp(repo.created),
        "created_at": timestamp(repo.created),
        "updated_at": timestamp(repo.updated),
        "allow_forking": true,
        "web_commit_signoff_required": false,
        "license": null,
        "forks": 0,
        "open_issues": 0,
        "watchers": 0,
        }),
    );
    if let Value::Object(fields) = &mut value {
        for (field, suffix) in REPO_URLS {
            fields.insert(field.to_string(), format!("{api}{suffix}").into());
        }
    }
    if view != RepoView::Minimal {
        extend(
            &mut value,
            json!({
                "allow_rebase_merge": true,
                "allow_squash_merge": true,
                "allow_merge_commit": true,
                "allow_auto_merge": false,
                "delete_branch_on_merge": false,
            }),
        );
    }
    if view == RepoView::Full {
        let organization = state
            .owner(&repo.owner)
            .filter(|o| o.kind == OwnerKind::Organization)
            .map(|o| simple_user(shared, o))
            .unwrap_or(Value::Null);
        extend(
            &mut value,
            json!({
                "organization": organization,
                "network_count": 0,
                "subscribers_count": 0,
            }),
        );
    }
    value
}

fn extend(target: &mut Value, fields: Value) {
    if let (Value::Object(target), Value::Object(fields)) = (target, fields) {
        target.extend(fields);
    }
}
