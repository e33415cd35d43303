//! Which repository a delivery is about, for a fleet's own hook (`POST /hooks/{fleet}`): an
//! organisation's (GitHub, Gitea, Forgejo), group's (GitLab) or workspace's (Bitbucket Cloud)
//! webhook, or a CodeCommit event, sends pushes of many repositories to one URL. Read only
//! from a delivery [`receive`](super::receive) has authenticated.

use super::Provider;
use crate::intake::codecommit;
use serde_json::{Map, Value};
use std::fmt;

/// A repository as the sender names it: the host's id for it (survives renames) and its
/// path with the owner (`acme/app`, `group/sub/app`; a CodeCommit repository's name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub id: Option<String>,
    pub path: Option<String>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, &self.id) {
            (Some(path), Some(id)) => write!(f, "{path} (id {id})"),
            (Some(path), None) => write!(f, "{path}"),
            (None, Some(id)) => write!(f, "id {id}"),
            (None, None) => write!(f, "an unnamed repository"),
        }
    }
}

/// The repository a push delivery names; `None` when the payload names none.
pub(super) fn of(provider: Provider, body: &Map<String, Value>) -> Option<Origin> {
    let origin = match provider {
        Provider::GitHub | Provider::Gitea | Provider::Forgejo => {
            let repo = body.get("repository")?;
            Origin {
                id: id(repo.get("id")),
                path: text(repo.get("full_name")),
            }
        }
        Provider::GitLab => {
            let project = body.get("project");
            Origin {
                id: id(project.and_then(|p| p.get("id")).or(body.get("project_id"))),
                path: text(project.and_then(|p| p.get("path_with_namespace"))),
            }
        }
        Provider::BitbucketCloud => {
            let repo = body.get("repository")?;
            Origin {
                id: text(repo.get("uuid")),
                path: text(repo.get("full_name")),
            }
        }
        Provider::CodeCommit => Origin {
            id: text(body.get("detail").and_then(|d| d.get("repositoryId"))),
            path: codecommit::repository(body).map(str::to_owned),
        },
        Provider::BitbucketServer | Provider::Generic => return None,
    };
    (origin.id.is_some() || origin.path.is_some()).then_some(origin)
}

/// A JSON id, number or string.
fn id(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    value?.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{receive_for_fleet, Event, Expect, Rejection, Request};
    use super::*;

    fn origin(provider: Provider, body: &str) -> Option<Origin> {
        let body: Map<String, Value> = serde_json::from_str(body).unwrap();
        of(provider, &body)
    }

    fn named(id: &str, path: &str) -> Option<Origin> {
        Some(Origin {
            id: Some(id.into()),
            path: Some(path.into()),
        })
    }

    #[test]
    fn each_host_names_the_repository_by_id_and_full_path() {
        assert_eq!(
            origin(Provider::GitHub, GITHUB_PUSH),
            named("1296269", "acme/app")
        );
        assert_eq!(
            origin(Provider::Gitea, GITEA_PUSH),
            named("140", "gitea/webhooks")
        );
        assert_eq!(
            origin(
                Provider::GitLab,
                r#"{"object_kind": "push", "project_id": 15,
                    "project": {"id": 15, "path_with_namespace": "acme/platform/app"}}"#
            ),
            named("15", "acme/platform/app")
        );
        assert_eq!(
            origin(
                Provider::BitbucketCloud,
                r#"{"repository": {"uuid": "{7ef5}", "full_name": "acme/app"}}"#
            ),
            named("{7ef5}", "acme/app")
        );
        assert_eq!(
            origin(
                Provider::CodeCommit,
                r#"{"source": "aws.codecommit", "detail": {"repositoryName": "app",
                    "repositoryId": "12345678-abcd"}}"#
            ),
            named("12345678-abcd", "app")
        );
    }

    #[test]
    fn a_payload_without_a_repository_names_none() {
        assert_eq!(
            origin(Provider::GitHub, r#"{"ref": "refs/heads/main"}"#),
            None
        );
        assert_eq!(
            origin(Provider::GitHub, r#"{"repository": {"id": null}}"#),
            None
        );
        assert_eq!(origin(Provider::Generic, r#"{"refs": []}"#), None);
    }

    fn deliver(sig_secret: &str) -> Result<(Event, Option<Origin>), Rejection> {
        let headers = vec![
            ("x-github-event".to_owned(), "push".to_owned()),
            (
                "x-hub-signature-256".to_owned(),
                format!("sha256={}", sign(sig_secret, GITHUB_PUSH)),
            ),
        ];
        receive_for_fleet(
            &Request {
                headers: &headers,
                body: GITHUB_PUSH.as_bytes(),
            },
            Expect {
                secret: SECRET,
                provider: None,
            },
        )
    }

    #[test]
    fn a_fleet_delivery_is_authenticated_before_its_repository_is_read() {
        let (event, origin) = deliver(SECRET).unwrap();
        assert!(matches!(event, Event::Push { .. }));
        assert_eq!(origin, named("1296269", "acme/app"));
        assert!(matches!(deliver("wrong"), Err(Rejection::Unauthorized(_))));
    }
}
