//! GitHub (and GitHub Enterprise Server) as a fleet's source and destination, through its REST
//! API: the repositories of an organisation or user, lookups, and creating, archiving and
//! deleting destination repositories. Gitea and Forgejo take the same requests to edit and
//! delete a repository, so those serve them too.

use crate::fleet::api::{listing, segment, Api, ApiError};
use crate::fleet::{destination_name, Existing};
use crate::model::fleet::{Listing, Lookup, Repository, Visibility};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Repositories per page: GitHub's maximum, so a listing costs as few requests as it can.
const PER_PAGE: u32 = 100;

/// Whose repositories an owner name means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Organisation,
    /// The token's own user: its private repositories are listed too.
    TokenUser,
    /// Another user: only what the token may see.
    OtherUser,
}

async fn owner_kind(api: &Api, owner: &str) -> Result<Owner, ApiError> {
    let user = api.get(&format!("/users/{}", segment(owner))).await?;
    if user.get("type").and_then(Value::as_str) == Some("Organization") {
        return Ok(Owner::Organisation);
    }
    let me = api.get("/user").await?;
    let login = me.get("login").and_then(Value::as_str).unwrap_or_default();
    Ok(if login.eq_ignore_ascii_case(owner) {
        Owner::TokenUser
    } else {
        Owner::OtherUser
    })
}

/// The listing path of an owner's repositories, private ones included where the token may
/// see them.
fn listing_path(kind: Owner, owner: &str) -> String {
    match kind {
        Owner::Organisation => format!(
            "/orgs/{}/repos?type=all&per_page={PER_PAGE}",
            segment(owner)
        ),
        Owner::TokenUser => format!("/user/repos?affiliation=owner&per_page={PER_PAGE}"),
        Owner::OtherUser => format!(
            "/users/{}/repos?type=owner&per_page={PER_PAGE}",
            segment(owner)
        ),
    }
}

/// Every repository of `owner`. Any failure (a page, the owner lookup) makes the listing
/// incomplete rather than short.
pub async fn list(api: &Api, owner: &str) -> Listing {
    let items = match owner_kind(api, owner).await {
        Ok(kind) => api.get_all(&listing_path(kind, owner)).await,
        Err(e) => Err(e),
    };
    listing(items, repository, &format!("{owner} on GitHub"))
}

/// A repository from GitHub's JSON (minimal or full).
fn repository(v: &Value) -> Option<Repository> {
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let id = v.get("id")?.as_u64()?.to_string();
    let private = flag("private") || text("visibility").is_some_and(|s| s != "public");
    Some(Repository {
        id,
        path: text("name")?,
        archived: flag("archived"),
        fork: flag("fork"),
        private,
        description: text("description"),
        default_branch: text("default_branch"),
        clone_url: text("clone_url"),
    })
}

/// Looks a repository up by name: gone only when GitHub answers 404.
pub async fn lookup(api: &Api, owner: &str, name: &str) -> Lookup {
    api.lookup(&format!("/repos/{}/{}", segment(owner), segment(name)))
        .await
}

/// A destination account, as discovery sees it.
pub struct Destination {
    kind: Owner,
    /// The repositories there now, by name.
    pub existing: HashMap<String, Existing>,
}

/// Lists the destination owner's repositories (one paginated, conditional listing).
pub async fn destination(api: &Api, owner: &str) -> Result<Destination, ApiError> {
    let kind = owner_kind(api, owner).await?;
    let items = api.get_all(&listing_path(kind, owner)).await?;
    let existing = items
        .iter()
        .filter_map(|v| {
            let r = repository(v)?;
            Some((
                r.path.clone(),
                Existing {
                    id: r.id,
                    name: r.path,
                    clone_url: r.clone_url?,
                },
            ))
        })
        .collect();
    Ok(Destination { kind, existing })
}

impl Destination {
    /// Creates the destination of `repo`: the source's description, `visibility` but never more
    /// public than the source, and nothing else (no README: the first push fills it).
    pub async fn create(
        &self,
        api: &Api,
        owner: &str,
        repo: &Repository,
        visibility: Visibility,
    ) -> Result<Existing, ApiError> {
        let visibility = visibility.for_source(repo.private);
        let mut body = json!({
            "name": destination_name(repo),
            "description": repo.description.clone().unwrap_or_default(),
            "private": visibility != Visibility::Public,
            "has_issues": false,
            "has_projects": false,
            "has_wiki": false,
            "auto_init": false,
        });
        let path = match self.kind {
            Owner::Organisation => {
                body["visibility"] = json!(visibility.as_str());
                format!("/orgs/{}/repos", segment(owner))
            }
            // Users have no `internal`; `private` says it.
            Owner::TokenUser => "/user/repos".to_owned(),
            Owner::OtherUser => {
                return Err(ApiError::Failed(format!(
                    "cannot create repositories for the user {owner}: the token belongs to another user"
                )))
            }
        };
        let created = api.send(Method::POST, &path, Some(&body)).await?;
        let r = repository(&created).ok_or_else(|| {
            ApiError::Failed("GitHub answered the creation without an id or name".into())
        })?;
        let clone_url = r.clone_url.ok_or_else(|| {
            ApiError::Failed("GitHub answered the creation without a clone URL".into())
        })?;
        Ok(Existing {
            id: r.id,
            name: r.path,
            clone_url,
        })
    }
}

/// Sets a destination repository's default branch (after the first push, when it exists).
pub async fn set_default_branch(
    api: &Api,
    owner: &str,
    name: &str,
    branch: &str,
) -> Result<(), ApiError> {
    api.send(
        Method::PATCH,
        &format!("/repos/{}/{}", segment(owner), segment(name)),
        Some(&json!({ "default_branch": branch })),
    )
    .await
    .map(|_| ())
}

/// Archives a destination repository (read-only on GitHub; nothing is lost).
pub async fn archive(api: &Api, owner: &str, name: &str) -> Result<(), ApiError> {
    api.send(
        Method::PATCH,
        &format!("/repos/{}/{}", segment(owner), segment(name)),
        Some(&json!({ "archived": true })),
    )
    .await
    .map(|_| ())
}

/// Deletes a destination repository.
pub async fn delete(api: &Api, owner: &str, name: &str) -> Result<(), ApiError> {
    api.send(
        Method::DELETE,
        &format!("/repos/{}/{}", segment(owner), segment(name)),
        None,
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_read_from_github_json() {
        let v = json!({
            "id": 42, "name": "app", "private": false, "visibility": "internal",
            "archived": true, "fork": false, "description": "d", "default_branch": "trunk",
            "clone_url": "https://github.com/acme/app.git"
        });
        let r = repository(&v).unwrap();
        assert_eq!(r.id, "42");
        assert_eq!(r.path, "app");
        assert!(r.private, "internal is not public");
        assert!(r.archived);
        assert_eq!(r.default_branch.as_deref(), Some("trunk"));
        assert!(repository(&json!({ "name": "x" })).is_none());
    }

    #[test]
    fn nested_source_paths_become_flat_destination_names() {
        let r = Repository {
            id: "1".into(),
            path: "team/app.git".into(),
            ..Repository::default()
        };
        assert_eq!(destination_name(&r), "team-app");
        assert_eq!(segment("a b/c.d-e"), "a%20b%2Fc.d-e");
    }
}
