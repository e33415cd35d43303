//! Bitbucket Cloud as a fleet's source, through its REST API 2.0: every repository of a
//! workspace (pages followed through the `next` of each page), and lookups by repository
//! UUID. Bitbucket has no archived repositories; a fork is one with a `parent`.

use crate::fleet::api::{listing, segment, Api};
use crate::model::fleet::{Listing, Lookup, Repository};
use serde_json::Value;

/// Every repository of `workspace`. Any failure makes the listing incomplete rather than
/// short.
pub async fn list(api: &Api, workspace: &str) -> Listing {
    // `pagelen` is Bitbucket's page size (its maximum is 100); the description documents it
    // on the page object, not on this operation.
    let path = format!("/repositories/{}?pagelen=100", segment(workspace));
    listing(
        api.get_all(&path).await,
        repository,
        &format!("the workspace {workspace} on Bitbucket"),
    )
}

/// A repository from Bitbucket's JSON.
fn repository(v: &Value) -> Option<Repository> {
    let text = |pointer: &str| {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let clone_url = v
        .pointer("/links/clone")
        .and_then(Value::as_array)
        .and_then(|links| {
            links
                .iter()
                .find(|l| l.get("name").and_then(Value::as_str) == Some("https"))
        })
        .and_then(|l| l.get("href").and_then(Value::as_str))
        .map(without_user);
    Some(Repository {
        id: text("/uuid")?,
        path: text("/slug")?,
        archived: false,
        fork: v.get("parent").is_some_and(|p| !p.is_null()),
        private: v.get("is_private").and_then(Value::as_bool).unwrap_or(true),
        description: text("/description").filter(|d| !d.is_empty()),
        default_branch: text("/mainbranch/name"),
        clone_url,
    })
}

/// Bitbucket's clone links carry the caller's user name (`https://user@bitbucket.org/...`);
/// the fleet's own credentials go with the URL instead.
fn without_user(href: &str) -> String {
    match url::Url::parse(href) {
        Ok(mut u) if !u.username().is_empty() => {
            // Clearing the user name of an http(s) URL cannot fail.
            let _ = u.set_username("");
            u.to_string()
        }
        _ => href.to_owned(),
    }
}

/// Looks a repository up by its UUID (Bitbucket takes `{uuid}` where a slug goes, and the
/// UUID survives renames): gone only when Bitbucket answers 404.
pub async fn lookup(api: &Api, workspace: &str, uuid: &str) -> Lookup {
    api.lookup(&format!(
        "/repositories/{}/{}",
        segment(workspace),
        segment(uuid)
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_repository_is_read_from_bitbucket_json_without_the_user_in_its_clone_url() {
        let v = json!({
            "uuid": "{1b2c}", "slug": "app", "name": "App", "is_private": false,
            "description": "", "mainbranch": { "name": "trunk" },
            "parent": { "uuid": "{9}" },
            "links": { "clone": [
                { "name": "ssh", "href": "git@bitbucket.org:acme/app.git" },
                { "name": "https", "href": "https://someone@bitbucket.org/acme/app.git" }
            ] }
        });
        let r = repository(&v).unwrap();
        assert_eq!((r.id.as_str(), r.path.as_str()), ("{1b2c}", "app"));
        assert!(r.fork && !r.private && !r.archived);
        assert_eq!(r.default_branch.as_deref(), Some("trunk"));
        assert_eq!(
            r.clone_url.as_deref(),
            Some("https://bitbucket.org/acme/app.git")
        );
        assert!(repository(&json!({ "slug": "x" })).is_none(), "no uuid");
    }
}
