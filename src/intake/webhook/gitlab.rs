//! GitLab: which deliveries (project and system hooks) ask for a sync. Authentication
//! (`x-gitlab-token`) is done before this, in the parent module.

use super::{header, ignored, not_a_push, ref_push, Event, Provider, Rejection, Request};
use serde_json::{Map, Value};

/// GitLab names events in `x-gitlab-event`; system hooks all say "System Hook" and name the
/// event in `object_kind`. Without the header (some proxies drop it) `object_kind` decides.
pub(super) fn classify(req: &Request<'_>, body: &Map<String, Value>) -> Result<Event, Rejection> {
    let provider = Provider::GitLab;
    let kind = body.get("object_kind").and_then(Value::as_str);
    let is_push = |kind: Option<&str>| matches!(kind, Some("push" | "tag_push"));
    match header(req, "x-gitlab-event") {
        Some("Push Hook" | "Tag Push Hook") => Ok(ref_push(provider, body)),
        Some("System Hook") if is_push(kind) => Ok(ref_push(provider, body)),
        Some("System Hook") => Ok(ignored(
            provider,
            format!(
                "GitLab system hook '{}' is not a push",
                kind.unwrap_or("(no object_kind)")
            ),
        )),
        Some(event) => Ok(not_a_push(provider, event)),
        None if is_push(kind) => Ok(ref_push(provider, body)),
        None => match kind {
            Some(kind) => Ok(not_a_push(provider, kind)),
            None => Err(Rejection::Malformed(
                "missing x-gitlab-event header and no object_kind in the body".to_string(),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{Event, Provider, Rejection};

    const GITLAB_PUSH: &str = r#"{
  "object_kind": "push", "event_name": "push",
  "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
  "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
  "ref": "refs/heads/master", "ref_protected": true,
  "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
  "user_id": 4, "user_name": "John Smith", "user_username": "jsmith",
  "project_id": 15,
  "project": {"id": 15, "name": "Diaspora", "path_with_namespace": "mike/diaspora",
              "default_branch": "master", "git_http_url": "http://example.com/mike/diaspora.git"},
  "commits": [{"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "message": "fixed readme"}],
  "total_commits_count": 1
}"#;

    const GITLAB_TAG_PUSH: &str = r#"{
  "object_kind": "tag_push", "event_name": "tag_push",
  "before": "0000000000000000000000000000000000000000",
  "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
  "ref": "refs/tags/v1.0.0", "ref_protected": true,
  "checkout_sha": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
  "user_id": 1, "user_name": "John Smith", "project_id": 1,
  "project": {"id": 1, "name": "Example", "path_with_namespace": "jsmith/example"},
  "commits": [], "total_commits_count": 0
}"#;

    const GITLAB_MERGE_REQUEST: &str = r#"{
  "object_kind": "merge_request", "event_type": "merge_request",
  "user": {"id": 1, "name": "Administrator", "username": "root"},
  "project": {"id": 1, "name": "Gitlab Test", "path_with_namespace": "gitlabhq/gitlab-test"},
  "object_attributes": {"id": 99, "iid": 1, "source_branch": "ms-viewport",
                        "target_branch": "master", "state": "opened", "action": "open"}
}"#;

    const GITLAB_SYSTEM_REPOSITORY_UPDATE: &str = r#"{
  "event_name": "repository_update", "user_id": 1, "user_name": "John Smith",
  "project_id": 1, "changes": [{"before": "8205ea8d81ce0c6b90fbe8280d118cc9fdad6130",
  "after": "4045ea7a3df38697b3730a20fb73c8bed8a3e69e", "ref": "refs/heads/master"}],
  "refs": ["refs/heads/master"]
}"#;

    fn gitlab(event: &str, body: &str, token: &str) -> Result<Event, Rejection> {
        run(
            &[
                ("x-gitlab-event", event),
                ("x-gitlab-instance", "https://gitlab.example.com"),
                (
                    "x-gitlab-event-uuid",
                    "5c2f8f2c-d8b0-4a8a-9a8a-0a3f7c1e5f11",
                ),
                ("x-gitlab-token", token),
            ],
            body,
        )
    }

    #[test]
    fn gitlab_push_and_tag_push_with_the_token_are_pushes() {
        assert_eq!(
            gitlab("Push Hook", GITLAB_PUSH, SECRET),
            pushed_moved(
                Provider::GitLab,
                &[(
                    "refs/heads/master",
                    "95790bf891e76fee5e1747ab589903a6a1f80f22",
                    "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
                )]
            )
        );
        assert_eq!(
            gitlab("Tag Push Hook", GITLAB_TAG_PUSH, SECRET),
            pushed_at(
                Provider::GitLab,
                &[(
                    "refs/tags/v1.0.0",
                    "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"
                )]
            )
        );
        assert_eq!(
            gitlab("System Hook", GITLAB_PUSH, SECRET),
            pushed_moved(
                Provider::GitLab,
                &[(
                    "refs/heads/master",
                    "95790bf891e76fee5e1747ab589903a6a1f80f22",
                    "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
                )]
            )
        );
        assert_eq!(
            gitlab("System Hook", GITLAB_TAG_PUSH, SECRET),
            pushed_at(
                Provider::GitLab,
                &[(
                    "refs/tags/v1.0.0",
                    "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"
                )]
            )
        );
    }

    #[test]
    fn gitlab_other_events_are_ignored() {
        assert_ignored(
            gitlab("Merge Request Hook", GITLAB_MERGE_REQUEST, SECRET),
            Provider::GitLab,
            "GitLab event 'Merge Request Hook' is not a push",
        );
        assert_ignored(
            gitlab("System Hook", GITLAB_SYSTEM_REPOSITORY_UPDATE, SECRET),
            Provider::GitLab,
            "system hook",
        );
    }

    #[test]
    fn gitlab_wrong_or_missing_token_is_unauthorized() {
        assert_unauthorized(
            gitlab("Push Hook", GITLAB_PUSH, "It's a Secret to Everybod"),
            "signature does not match",
        );
        assert_unauthorized(
            gitlab("Push Hook", GITLAB_PUSH, "It's a Secret to Everybody!"),
            "signature does not match",
        );
        assert_unauthorized(
            run(&[("x-gitlab-event", "Push Hook")], GITLAB_PUSH),
            "missing x-gitlab-token",
        );
    }

    #[test]
    fn gitlab_invalid_json_with_the_token_is_malformed() {
        assert_malformed(gitlab("Push Hook", NOT_JSON, SECRET), "not valid JSON");
    }
}
