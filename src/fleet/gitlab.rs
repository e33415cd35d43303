//! GitLab (GitLab.com and self-managed) as a fleet's source and destination, through its REST
//! API v4: every project of a group, subgroups included; lookups by project id; and creating,
//! archiving and deleting destination projects in a group.

use crate::fleet::api::{listing, segment, Api, ApiError};
use crate::fleet::{destination_name, Existing};
use crate::model::fleet::{Listing, Lookup, Repository, Visibility};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Projects per page: GitLab's maximum.
const PER_PAGE: u32 = 100;

/// Every project of `group` and its subgroups, with paths relative to the group
/// (`sub/app`). Projects shared into the group from elsewhere are not its own and are left
/// out. Any failure makes the listing incomplete rather than short.
pub async fn list(api: &Api, group: &str) -> Listing {
    // Offset pagination followed to the end through `Link: rel="next"`; ordered by id so a
    // project created while the pages are read cannot shift another one out of them.
    let path = format!(
        "/groups/{}/projects?include_subgroups=true&with_shared=false&order_by=id&sort=asc&per_page={PER_PAGE}",
        segment(group)
    );
    listing(
        api.get_all(&path).await,
        |v| repository(v, group),
        &format!("the group {group} on GitLab"),
    )
}

/// A project from GitLab's JSON, its path relative to `group`.
fn repository(v: &Value, group: &str) -> Option<Repository> {
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let id = v.get("id")?.as_u64()?.to_string();
    let full = text("path_with_namespace")?;
    let prefix = format!("{}/", group.trim_matches('/'));
    // GitLab matches paths without regard to case; so does this.
    let relative = full
        .get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(&prefix))
        .map(|_| full[prefix.len()..].to_owned())?;
    Some(Repository {
        id,
        path: relative,
        archived: v.get("archived").and_then(Value::as_bool).unwrap_or(false),
        fork: v.get("forked_from_project").is_some_and(|f| !f.is_null()),
        private: text("visibility").is_none_or(|s| s != "public"),
        description: text("description").filter(|d| !d.is_empty()),
        default_branch: text("default_branch"),
        clone_url: text("http_url_to_repo"),
    })
}

/// Looks a project up by its id (which survives renames and transfers): gone only when
/// GitLab answers 404.
pub async fn lookup(api: &Api, id: &str) -> Lookup {
    api.lookup(&format!("/projects/{}", segment(id))).await
}

/// A destination group, as discovery sees it.
pub struct Destination {
    /// The group's id: the `namespace_id` new projects are created in.
    namespace_id: u64,
    /// The group's own projects now, by path.
    pub existing: HashMap<String, Existing>,
}

/// Looks the destination group up and lists its own projects (not its subgroups': fleet
/// destinations are flat, like GitHub's).
pub async fn destination(api: &Api, group: &str) -> Result<Destination, ApiError> {
    let detail = api
        .get(&format!("/groups/{}?with_projects=false", segment(group)))
        .await?;
    let namespace_id = detail.get("id").and_then(Value::as_u64).ok_or_else(|| {
        ApiError::Failed(format!("GitLab answered the group {group} without an id"))
    })?;
    let items = api
        .get_all(&format!(
            "/groups/{}/projects?with_shared=false&order_by=id&sort=asc&per_page={PER_PAGE}",
            segment(group)
        ))
        .await?;
    let existing = items
        .iter()
        .filter_map(|v| existing(v, group))
        .map(|e| (e.name.clone(), e))
        .collect();
    Ok(Destination {
        namespace_id,
        existing,
    })
}

fn existing(v: &Value, group: &str) -> Option<Existing> {
    let r = repository(v, group)?;
    Some(Existing {
        id: r.id,
        name: r.path,
        clone_url: r.clone_url?,
    })
}

impl Destination {
    /// Creates the destination project of `repo` in the group: the source's description,
    /// `visibility` but never more public than the source, empty (the first push fills it).
    pub async fn create(
        &self,
        api: &Api,
        group: &str,
        repo: &Repository,
        visibility: Visibility,
    ) -> Result<Existing, ApiError> {
        let name = destination_name(repo);
        let body = json!({
            "name": name,
            "path": name,
            "namespace_id": self.namespace_id,
            "description": repo.description.clone().unwrap_or_default(),
            "visibility": visibility.for_source(repo.private).as_str(),
            "initialize_with_readme": false,
            "issues_enabled": false,
            "wiki_enabled": false,
        });
        let created = api.send(Method::POST, "/projects", Some(&body)).await?;
        existing(&created, group).ok_or_else(|| {
            ApiError::Failed(
                "GitLab answered the creation without an id, a path in the group or a clone URL"
                    .into(),
            )
        })
    }
}

/// Sets a destination project's default branch (after the first push, when it exists).
pub async fn set_default_branch(api: &Api, id: &str, branch: &str) -> Result<(), ApiError> {
    api.send(
        Method::PUT,
        &format!("/projects/{}", segment(id)),
        Some(&json!({ "default_branch": branch })),
    )
    .await
    .map(|_| ())
}

/// Archives a destination project (read-only; nothing is lost).
pub async fn archive(api: &Api, id: &str) -> Result<(), ApiError> {
    api.send(
        Method::POST,
        &format!("/projects/{}/archive", segment(id)),
        None,
    )
    .await
    .map(|_| ())
}

/// Deletes a destination project (GitLab may keep it for its deletion delay first).
pub async fn delete(api: &Api, id: &str) -> Result<(), ApiError> {
    api.send(Method::DELETE, &format!("/projects/{}", segment(id)), None)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_is_read_relative_to_its_group_with_forks_and_visibility() {
        let v = json!({
            "id": 7, "path_with_namespace": "Acme/platform/sub/app", "archived": true,
            "forked_from_project": { "id": 1 }, "visibility": "internal",
            "description": "", "default_branch": "trunk",
            "http_url_to_repo": "https://gitlab.example.com/acme/platform/sub/app.git"
        });
        let r = repository(&v, "acme/platform").unwrap();
        assert_eq!(r.id, "7");
        assert_eq!(r.path, "sub/app");
        assert!(r.archived && r.fork && r.private, "internal is not public");
        assert_eq!(r.description, None, "an empty description is none");
        assert_eq!(r.default_branch.as_deref(), Some("trunk"));
        let plain = json!({ "id": 8, "path_with_namespace": "acme/platform/x",
                            "forked_from_project": null, "visibility": "public" });
        let r = repository(&plain, "acme/platform").unwrap();
        assert!(!r.fork && !r.private);
        assert!(
            repository(
                &json!({ "id": 9, "path_with_namespace": "other/x" }),
                "acme"
            )
            .is_none(),
            "a project outside the group"
        );
    }
}
