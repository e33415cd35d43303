//! Bitbucket Cloud and Bitbucket Server/Data Center: which deliveries ask for a sync, and which
//! refs they moved. Telling the two apart (`bitbucket_flavour`) and authentication
//! (`x-hub-signature`) are done before this, in the parent module.

use super::{
    dedup, ignored, not_a_push, present_id, qualify, required_header, Event, Provider, Rejection,
    Request,
};
use crate::model::refs::RefMap;
use serde_json::{Map, Value};

/// Bitbucket Cloud names the event in `x-event-key`; only `repo:push` moves refs.
pub(super) fn cloud(req: &Request<'_>, body: &Map<String, Value>) -> Result<Event, Rejection> {
    let provider = Provider::BitbucketCloud;
    let key = required_header(req, &["x-event-key"])?;
    match key {
        "repo:push" => {
            let (refs, ids, olds) = cloud_refs(body);
            Ok(Event::Push {
                provider,
                refs,
                ids,
                olds,
            })
        }
        _ => Ok(not_a_push(provider, key)),
    }
}

/// Bitbucket Server/DC names the event in `x-event-key`; `repo:refs_changed` moves refs and
/// `diagnostics:ping` is a ping.
pub(super) fn server(req: &Request<'_>, body: &Map<String, Value>) -> Result<Event, Rejection> {
    let provider = Provider::BitbucketServer;
    let key = required_header(req, &["x-event-key"])?;
    match key {
        "repo:refs_changed" => {
            let (refs, ids, olds) = server_refs(body);
            Ok(Event::Push {
                provider,
                refs,
                ids,
                olds,
            })
        }
        "diagnostics:ping" => Ok(ignored(provider, "ping".to_string())),
        _ => Ok(not_a_push(provider, key)),
    }
}

/// Bitbucket Cloud `repo:push`: one change per ref; `new` is null for a deletion and `old` for
/// a creation. Mercurial-era types (`named_branch`, `bookmark`) have no git ref and are skipped.
/// `new.target.hash` is the ref's new commit, `old.target.hash` its old one.
fn cloud_refs(body: &Map<String, Value>) -> (Vec<String>, RefMap, RefMap) {
    let changes = body
        .get("push")
        .and_then(|p| p.get("changes"))
        .and_then(Value::as_array);
    let mut ids = RefMap::new();
    let mut olds = RefMap::new();
    let refs = changes.into_iter().flatten().filter_map(|change| {
        let side = ["new", "old"]
            .iter()
            .find_map(|k| change.get(*k).filter(|v| v.is_object()))?;
        let name = side.get("name").and_then(Value::as_str)?;
        let kind = side.get("type").and_then(Value::as_str)?;
        let full = matches!(kind, "branch" | "tag")
            .then(|| qualify(name, Some(kind)))
            .flatten()?;
        let hash = |side: &str| {
            present_id(
                change
                    .get(side)
                    .and_then(|s| s.get("target"))
                    .and_then(|t| t.get("hash")),
            )
        };
        if let Some(oid) = hash("new") {
            ids.insert(full.clone(), oid);
        }
        if let Some(oid) = hash("old") {
            olds.insert(full.clone(), oid);
        }
        Some(full)
    });
    let refs = dedup(refs);
    (refs, ids, olds)
}

/// Bitbucket Server/DC `repo:refs_changed`: `changes[].ref.id` is the full name (`refId` in
/// older payloads), `toHash` its new value and `fromHash` its old one.
fn server_refs(body: &Map<String, Value>) -> (Vec<String>, RefMap, RefMap) {
    let changes = body.get("changes").and_then(Value::as_array);
    let mut ids = RefMap::new();
    let mut olds = RefMap::new();
    let refs = changes.into_iter().flatten().filter_map(|change| {
        let name = change
            .get("ref")
            .and_then(|r| r.get("id"))
            .or_else(|| change.get("refId"))
            .and_then(Value::as_str)?;
        if let Some(oid) = present_id(change.get("toHash")) {
            ids.insert(name.to_owned(), oid);
        }
        if let Some(oid) = present_id(change.get("fromHash")) {
            olds.insert(name.to_owned(), oid);
        }
        Some(name.to_owned())
    });
    let refs = dedup(refs);
    (refs, ids, olds)
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{Event, Provider, Rejection};

    // ---------------------------------------------------------------- Bitbucket Cloud

    const BITBUCKET_CLOUD_PUSH: &str = r#"{
  "push": {"changes": [
    {"new": {"type": "branch", "name": "main",
             "target": {"type": "commit", "hash": "709d658dc5b6d6afcd46049c2f332ee3f515a67d"}},
     "old": {"type": "branch", "name": "main",
             "target": {"type": "commit", "hash": "1e65c05c1d5171631d92438a13901ca7dae9618c"}},
     "created": false, "forced": false, "closed": false, "truncated": false,
     "commits": [{"type": "commit", "hash": "709d658dc5b6d6afcd46049c2f332ee3f515a67d"}]},
    {"new": {"type": "tag", "name": "v2.0",
             "target": {"type": "commit", "hash": "709d658dc5b6d6afcd46049c2f332ee3f515a67d"}},
     "old": null, "created": true, "forced": false, "closed": false},
    {"new": null,
     "old": {"type": "branch", "name": "feature/gone",
             "target": {"type": "commit", "hash": "1e65c05c1d5171631d92438a13901ca7dae9618c"}},
     "created": false, "forced": false, "closed": true}
  ]},
  "actor": {"type": "user", "display_name": "Emma", "uuid": "{a54f16da-24e9-4d7f-a3a7-b1ba2cd98aa3}"},
  "repository": {"type": "repository", "full_name": "acme/app", "name": "app",
                 "uuid": "{673a6070-3421-46c9-9d48-90745f7bfe8e}", "is_private": true}
}"#;

    const BITBUCKET_CLOUD_PR: &str = r#"{
  "pullrequest": {"id": 1, "title": "Title", "state": "OPEN",
                  "source": {"branch": {"name": "feature"}}, "destination": {"branch": {"name": "main"}}},
  "actor": {"type": "user", "display_name": "Emma"},
  "repository": {"type": "repository", "full_name": "acme/app"}
}"#;

    fn bitbucket_cloud(key: &str, body: &str, secret: &str) -> Result<Event, Rejection> {
        let sig = format!("sha256={}", sign(secret, body));
        run(
            &[
                ("x-event-key", key),
                ("x-hook-uuid", "cfb8d5dc-5a8b-4a4e-9f4e-5f3b0a1c2d3e"),
                ("x-request-uuid", "afe4d8a5-2c71-4bd5-a27c-0f0f0f0f0f0f"),
                ("x-attempt-number", "1"),
                ("x-hub-signature", &sig),
            ],
            body,
        )
    }

    #[test]
    fn bitbucket_cloud_signed_push_lists_every_changed_ref() {
        assert_eq!(
            bitbucket_cloud("repo:push", BITBUCKET_CLOUD_PUSH, SECRET),
            // The deleted branch has no new id.
            pushed(
                Provider::BitbucketCloud,
                &[
                    "refs/heads/main",
                    "refs/tags/v2.0",
                    "refs/heads/feature/gone"
                ]
            )
            .map(|e| with_ids(
                e,
                &[
                    (
                        "refs/heads/main",
                        "709d658dc5b6d6afcd46049c2f332ee3f515a67d"
                    ),
                    ("refs/tags/v2.0", "709d658dc5b6d6afcd46049c2f332ee3f515a67d")
                ]
            ))
            // The created tag has no old id.
            .map(|e| with_olds(
                e,
                &[
                    (
                        "refs/heads/main",
                        "1e65c05c1d5171631d92438a13901ca7dae9618c"
                    ),
                    (
                        "refs/heads/feature/gone",
                        "1e65c05c1d5171631d92438a13901ca7dae9618c"
                    )
                ]
            ))
        );
    }

    #[test]
    fn bitbucket_cloud_other_events_are_ignored() {
        assert_ignored(
            bitbucket_cloud("pullrequest:created", BITBUCKET_CLOUD_PR, SECRET),
            Provider::BitbucketCloud,
            "Bitbucket Cloud event 'pullrequest:created' is not a push",
        );
    }

    #[test]
    fn bitbucket_cloud_wrong_or_missing_signature_is_unauthorized() {
        assert_unauthorized(
            bitbucket_cloud("repo:push", BITBUCKET_CLOUD_PUSH, "wrong"),
            "signature does not match",
        );
        assert_unauthorized(
            run(&[("x-event-key", "repo:push")], BITBUCKET_CLOUD_PUSH),
            "missing x-hub-signature",
        );
        let sha1 = run(
            &[
                ("x-event-key", "repo:push"),
                ("x-hub-signature", "sha1=7d38cdd689735b008b3c"),
            ],
            BITBUCKET_CLOUD_PUSH,
        );
        assert_unauthorized(sha1, "only sha256");
    }

    #[test]
    fn bitbucket_cloud_invalid_json_with_a_valid_signature_is_malformed() {
        assert_malformed(
            bitbucket_cloud("repo:push", NOT_JSON, SECRET),
            "not valid JSON",
        );
    }

    // ---------------------------------------------------------------- Bitbucket Server / DC

    const BITBUCKET_SERVER_REFS_CHANGED: &str = r#"{
  "eventKey": "repo:refs_changed",
  "date": "2017-09-19T09:45:32+1000",
  "actor": {"name": "admin", "emailAddress": "admin@example.com", "id": 1,
            "displayName": "Administrator", "active": true, "slug": "admin", "type": "NORMAL"},
  "repository": {"slug": "repository", "id": 84, "name": "repository", "scmId": "git",
                 "state": "AVAILABLE", "forkable": true,
                 "project": {"key": "PROJ", "id": 84, "name": "project", "type": "NORMAL"}},
  "changes": [
    {"ref": {"id": "refs/heads/master", "displayId": "master", "type": "BRANCH"},
     "refId": "refs/heads/master",
     "fromHash": "ecddabb624f6f5ba43816f5926e580a5f680a932",
     "toHash": "178864a7d521b6f5e720b386b2c2b0ef8563e0dc", "type": "UPDATE"},
    {"ref": {"id": "refs/tags/release-1", "displayId": "release-1", "type": "TAG"},
     "refId": "refs/tags/release-1",
     "fromHash": "0000000000000000000000000000000000000000",
     "toHash": "178864a7d521b6f5e720b386b2c2b0ef8563e0dc", "type": "ADD"}
  ]
}"#;

    const BITBUCKET_SERVER_PING: &str = r#"{"test": true}"#;

    const BITBUCKET_SERVER_PR_OPENED: &str = r#"{
  "eventKey": "pr:opened", "date": "2017-09-19T09:58:11+1000",
  "actor": {"name": "admin", "id": 1},
  "pullRequest": {"id": 1, "version": 0, "title": "a new file added", "state": "OPEN",
                  "fromRef": {"id": "refs/heads/a-branch"}, "toRef": {"id": "refs/heads/master"}}
}"#;

    fn bitbucket_server(key: &str, body: &str, secret: &str) -> Result<Event, Rejection> {
        let sig = format!("sha256={}", sign(secret, body));
        run(
            &[
                ("x-event-key", key),
                ("x-request-id", "a2d5d2e8-1b2c-4b1a-9d0e-3f4a5b6c7d8e"),
                ("x-hub-signature", &sig),
            ],
            body,
        )
    }

    #[test]
    fn bitbucket_server_signed_refs_changed_is_a_push_of_the_ref_ids() {
        assert_eq!(
            bitbucket_server("repo:refs_changed", BITBUCKET_SERVER_REFS_CHANGED, SECRET),
            pushed_at(
                Provider::BitbucketServer,
                &[
                    (
                        "refs/heads/master",
                        "178864a7d521b6f5e720b386b2c2b0ef8563e0dc"
                    ),
                    (
                        "refs/tags/release-1",
                        "178864a7d521b6f5e720b386b2c2b0ef8563e0dc"
                    )
                ]
            )
            // The created tag's `fromHash` is the zero id: no old id.
            .map(|e| with_olds(
                e,
                &[(
                    "refs/heads/master",
                    "ecddabb624f6f5ba43816f5926e580a5f680a932"
                )]
            ))
        );
    }

    #[test]
    fn bitbucket_server_ping_and_other_events_are_ignored() {
        assert_eq!(
            bitbucket_server("diagnostics:ping", BITBUCKET_SERVER_PING, SECRET),
            Ok(Event::Ignored {
                provider: Provider::BitbucketServer,
                reason: "ping".to_string()
            })
        );
        assert_ignored(
            bitbucket_server("pr:opened", BITBUCKET_SERVER_PR_OPENED, SECRET),
            Provider::BitbucketServer,
            "Bitbucket Server event 'pr:opened' is not a push",
        );
    }

    #[test]
    fn bitbucket_server_wrong_or_missing_signature_is_unauthorized() {
        assert_unauthorized(
            bitbucket_server("repo:refs_changed", BITBUCKET_SERVER_REFS_CHANGED, "wrong"),
            "signature does not match",
        );
        assert_unauthorized(
            run(
                &[
                    ("x-event-key", "repo:refs_changed"),
                    ("x-request-id", "a2d5d2e8"),
                ],
                BITBUCKET_SERVER_REFS_CHANGED,
            ),
            "missing x-hub-signature",
        );
    }

    #[test]
    fn bitbucket_server_invalid_json_with_a_valid_signature_is_malformed() {
        assert_malformed(
            bitbucket_server("repo:refs_changed", NOT_JSON, SECRET),
            "not valid JSON",
        );
    }
}
