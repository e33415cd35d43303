//! Gitea and Forgejo (the same REST API, v1) as a fleet's source and destination: the
//! repositories of an organisation or user, lookups by repository id, and creating
//! destination repositories in an organisation. Editing (default branch, archive) and deleting
//! a repository are the same requests as GitHub's (`PATCH`/`DELETE /repos/{owner}/{repo}`),
//! so `crate::fleet::github` makes them for both.

use crate::fleet::api::{listing, segment, Api, ApiError};
use crate::fleet::{destination_name, Existing};
use crate::model::fleet::{Listing, Lookup, Repository, Visibility};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Repositories per page: Gitea's default maximum (`MAX_RESPONSE_ITEMS`).
const LIMIT: u32 = 50;

/// Every repository of `owner`: an organisation's, or else (the organisation listing says
/// 404) a user's, private ones included where the token may see them. Any failure makes the
/// listing incomplete rather than short.
pub async fn list(api: &Api, owner: &str) -> Listing {
    let items = match api.get_all(&org_listing(owner)).await {
        Err(ApiError::NotFound) => {
            api.get_all(&format!("/users/{}/repos?limit={LIMIT}", segment(owner)))
                .await
        }
        other => other,
    };
    listing(items, repository, &format!("{owner} on Gitea"))
}

fn org_listing(org: &str) -> String {
    format!("/orgs/{}/repos?limit={LIMIT}", segment(org))
}

/// A repository from Gitea's JSON.
fn repository(v: &Value) -> Option<Repository> {
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    Some(Repository {
        id: v.get("id")?.as_u64()?.to_string(),
        path: text("name")?,
        archived: flag("archived"),
        fork: flag("fork"),
        // `internal`: visible to every signed-in user of the instance, so not public.
        private: flag("private") || flag("internal"),
        description: text("description").filter(|d| !d.is_empty()),
        default_branch: text("default_branch").filter(|b| !b.is_empty()),
        clone_url: text("clone_url"),
    })
}

/// Looks a repository up by its id (which survives renames and transfers): gone only when
/// Gitea answers 404.
pub async fn lookup(api: &Api, id: &str) -> Lookup {
    api.lookup(&format!("/repositories/{}", segment(id))).await
}

/// A destination organisation, as discovery sees it.
pub struct Destination {
    /// Its repositories now, by name.
    pub existing: HashMap<String, Existing>,
}

/// Lists the destination organisation's repositories (one paginated, conditional listing).
pub async fn destination(api: &Api, org: &str) -> Result<Destination, ApiError> {
    let items = api.get_all(&org_listing(org)).await.map_err(|e| match e {
        ApiError::NotFound => ApiError::Failed(format!(
            "{org} is not an organisation on Gitea (fleets create repositories in organisations)"
        )),
        other => other,
    })?;
    let existing = items
        .iter()
        .filter_map(existing)
        .map(|e| (e.name.clone(), e))
        .collect();
    Ok(Destination { existing })
}

fn existing(v: &Value) -> Option<Existing> {
    let r = repository(v)?;
    Some(Existing {
        id: r.id,
        name: r.path,
        clone_url: r.clone_url?,
    })
}

impl Destination {
    /// Creates the destination of `repo` in the organisation: the source's description,
    /// private unless `visibility` and the source are both public (Gitea has no internal
    /// repositories), empty (the first push fills it).
    pub async fn create(
        &self,
        api: &Api,
        org: &str,
        repo: &Repository,
        visibility: Visibility,
    ) -> Result<Existing, ApiError> {
        let body = json!({
            "name": destination_name(repo),
            "description": repo.description.clone().unwrap_or_default(),
            "private": visibility.for_source(repo.private) != Visibility::Public,
        });
        let created = api
            .send(
                Method::POST,
                &format!("/orgs/{}/repos", segment(org)),
                Some(&body),
            )
            .await?;
        existing(&created).ok_or_else(|| {
            ApiError::Failed(
                "Gitea answered the creation without an id, a name or a clone URL".into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_read_from_gitea_json_with_internal_as_private() {
        let v = json!({
            "id": 5, "name": "app", "private": false, "internal": true, "archived": true,
            "fork": true, "description": "", "default_branch": "trunk",
            "clone_url": "https://git.example.com/acme/app.git"
        });
        let r = repository(&v).unwrap();
        assert_eq!((r.id.as_str(), r.path.as_str()), ("5", "app"));
        assert!(r.private && r.archived && r.fork);
        assert_eq!(r.description, None);
        assert_eq!(r.default_branch.as_deref(), Some("trunk"));
        assert!(repository(&json!({ "name": "x" })).is_none());
    }
}
