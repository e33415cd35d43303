//! Gitea and Forgejo (a fork of Gitea, read the same way): which deliveries ask for a sync.
//! Authentication (`x-gitea-signature`, `x-forgejo-signature`) is done before this, in the
//! parent module.

use super::{
    not_a_push, push, qualify, ref_push, required_header, Event, Provider, Rejection, Request,
};
use crate::model::refs::RefMap;
use serde_json::{Map, Value};

/// Gitea names the event in `x-gitea-event`, or else in the Gogs- or GitHub-style header it also
/// sends.
pub(super) fn gitea(req: &Request<'_>, body: &Map<String, Value>) -> Result<Event, Rejection> {
    let event = required_header(req, &["x-gitea-event", "x-gogs-event", "x-github-event"])?;
    classify(Provider::Gitea, event, body)
}

/// Forgejo names the event in `x-forgejo-event`, or else in the Gitea- or GitHub-style header it
/// also sends.
pub(super) fn forgejo(req: &Request<'_>, body: &Map<String, Value>) -> Result<Event, Rejection> {
    let event = required_header(req, &["x-forgejo-event", "x-gitea-event", "x-github-event"])?;
    classify(Provider::Forgejo, event, body)
}

/// Gitea and Forgejo: `push` covers branch and tag pushes (and deletions); `create`/`delete`
/// carry a short name in `ref` with `ref_type` saying branch or tag.
fn classify(
    provider: Provider,
    event: &str,
    body: &Map<String, Value>,
) -> Result<Event, Rejection> {
    match event {
        "push" => Ok(ref_push(provider, body)),
        "create" | "delete" => {
            let name = body.get("ref").and_then(Value::as_str);
            let kind = body.get("ref_type").and_then(Value::as_str);
            Ok(push(
                provider,
                name.and_then(|n| qualify(n, kind)).into_iter().collect(),
                RefMap::new(),
            ))
        }
        _ => Ok(not_a_push(provider, event)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{Event, Provider};

    const GITEA_CREATE_TAG: &str = r#"{
  "sha": "bffeb74224043ba2feb48d137756c8a9331c449a",
  "ref": "v1.2.0", "ref_type": "tag",
  "repository": {"id": 140, "full_name": "gitea/webhooks"},
  "sender": {"id": 1, "login": "gitea"}
}"#;

    const GITEA_DELETE_BRANCH: &str = r#"{
  "ref": "feature/old", "ref_type": "branch", "pusher_type": "user",
  "repository": {"id": 140, "full_name": "gitea/webhooks"},
  "sender": {"id": 1, "login": "gitea"}
}"#;

    const GITEA_PULL_REQUEST: &str = r#"{
  "action": "opened", "number": 1,
  "pull_request": {"id": 1, "number": 1, "title": "Update README", "state": "open",
                   "head": {"ref": "feature"}, "base": {"ref": "main"}},
  "repository": {"id": 140, "full_name": "gitea/webhooks"}
}"#;

    fn without(headers: &[(String, String)], name: &str) -> Vec<(String, String)> {
        headers.iter().filter(|(n, _)| n != name).cloned().collect()
    }

    fn replace(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
        let mut out = without(headers, name);
        out.push((name.to_string(), value.to_string()));
        out
    }

    #[test]
    fn gitea_signed_push_create_and_delete_are_pushes() {
        assert_eq!(
            gitea("push", GITEA_PUSH, SECRET),
            pushed_moved(
                Provider::Gitea,
                &[(
                    "refs/heads/develop",
                    "28e1879d029cb852e4844d9c718537df08844e03",
                    "bffeb74224043ba2feb48d137756c8a9331c449a"
                )]
            )
        );
        assert_eq!(
            gitea("create", GITEA_CREATE_TAG, SECRET),
            pushed(Provider::Gitea, &["refs/tags/v1.2.0"])
        );
        assert_eq!(
            gitea("delete", GITEA_DELETE_BRANCH, SECRET),
            pushed(Provider::Gitea, &["refs/heads/feature/old"])
        );
    }

    #[test]
    fn gitea_other_events_are_ignored() {
        assert_ignored(
            gitea("pull_request", GITEA_PULL_REQUEST, SECRET),
            Provider::Gitea,
            "Gitea event 'pull_request' is not a push",
        );
    }

    #[test]
    fn gitea_wrong_or_missing_signature_is_unauthorized() {
        assert_unauthorized(
            gitea("push", GITEA_PUSH, "wrong"),
            "signature does not match",
        );
        let sig = sign(SECRET, GITEA_PUSH);
        // Gitea's GitHub-style header alone does not identify it as Gitea ...
        let result = run(
            &[
                ("x-gitea-event", "push"),
                ("x-hub-signature-256", &format!("sha256={sig}")),
            ],
            GITEA_PUSH,
        );
        assert_unauthorized(result, "missing x-gitea-signature");
        assert_unauthorized(
            run(&[("x-gitea-event", "push")], GITEA_PUSH),
            "missing x-gitea-signature",
        );
    }

    #[test]
    fn gitea_invalid_json_with_a_valid_signature_is_malformed() {
        assert_malformed(gitea("push", NOT_JSON, SECRET), "not valid JSON");
    }

    #[test]
    fn gitea_request_that_also_carries_github_headers_is_gitea() {
        // Detection precedence: x-github-event and x-hub-signature-256 are present too.
        match gitea("push", GITEA_PUSH, SECRET) {
            Ok(Event::Push { provider, .. }) => assert_eq!(provider, Provider::Gitea),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forgejo_signed_push_is_a_forgejo_push() {
        let headers = forgejo_headers("push", GITEA_PUSH);
        assert_eq!(
            forgejo(&headers, GITEA_PUSH),
            pushed_moved(
                Provider::Forgejo,
                &[(
                    "refs/heads/develop",
                    "28e1879d029cb852e4844d9c718537df08844e03",
                    "bffeb74224043ba2feb48d137756c8a9331c449a"
                )]
            )
        );
        let headers = forgejo_headers("create", GITEA_CREATE_TAG);
        assert_eq!(
            forgejo(&headers, GITEA_CREATE_TAG),
            pushed(Provider::Forgejo, &["refs/tags/v1.2.0"])
        );
    }

    #[test]
    fn forgejo_accepts_the_gitea_signature_alone() {
        let headers = without(&forgejo_headers("push", GITEA_PUSH), "x-forgejo-signature");
        assert_eq!(
            forgejo(&headers, GITEA_PUSH),
            pushed_moved(
                Provider::Forgejo,
                &[(
                    "refs/heads/develop",
                    "28e1879d029cb852e4844d9c718537df08844e03",
                    "bffeb74224043ba2feb48d137756c8a9331c449a"
                )]
            )
        );
    }

    #[test]
    fn forgejo_wrong_signature_is_not_rescued_by_a_good_gitea_one() {
        let headers = replace(
            &forgejo_headers("push", GITEA_PUSH),
            "x-forgejo-signature",
            &sign("wrong", GITEA_PUSH),
        );
        assert_unauthorized(forgejo(&headers, GITEA_PUSH), "signature does not match");
    }

    #[test]
    fn forgejo_missing_signature_is_unauthorized() {
        let headers = without(
            &without(&forgejo_headers("push", GITEA_PUSH), "x-forgejo-signature"),
            "x-gitea-signature",
        );
        assert_unauthorized(forgejo(&headers, GITEA_PUSH), "missing x-forgejo-signature");
    }

    #[test]
    fn forgejo_other_events_are_ignored_and_bad_json_is_malformed() {
        let headers = forgejo_headers("pull_request", GITEA_PULL_REQUEST);
        assert_ignored(
            forgejo(&headers, GITEA_PULL_REQUEST),
            Provider::Forgejo,
            "Forgejo event 'pull_request' is not a push",
        );
        let headers = forgejo_headers("push", NOT_JSON);
        assert_malformed(forgejo(&headers, NOT_JSON), "not valid JSON");
    }
}
