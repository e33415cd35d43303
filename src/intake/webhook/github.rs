//! GitHub: which deliveries ask for a sync. Authentication (`x-hub-signature-256`) is done
//! before this, in the parent module.

use super::{ignored, not_a_push, ref_push, required_header, Event, Provider, Rejection, Request};
use serde_json::{Map, Value};

/// GitHub names the event in `x-github-event`: `push` syncs the ref in the body, `ping` and
/// every other event are ignored.
pub(super) fn classify(req: &Request<'_>, body: &Map<String, Value>) -> Result<Event, Rejection> {
    let provider = Provider::GitHub;
    let event = required_header(req, &["x-github-event"])?;
    match event {
        "push" => Ok(ref_push(provider, body)),
        "ping" => Ok(ignored(provider, "ping".to_string())),
        _ => Ok(not_a_push(provider, event)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{Event, Provider, Rejection};
    use crate::model::refs::{Oid, RefMap};

    const GITHUB_TAG_DELETED: &str = r#"{
  "ref": "refs/tags/v1.0.0",
  "before": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
  "after": "0000000000000000000000000000000000000000",
  "repository": {"id": 1296269, "full_name": "acme/app"},
  "created": false, "deleted": true, "forced": false,
  "commits": [], "head_commit": null
}"#;

    const GITHUB_PING: &str = r#"{
  "zen": "Design for failure.",
  "hook_id": 109948940,
  "hook": {"type": "Repository", "id": 109948940, "name": "web", "active": true,
           "events": ["push"], "config": {"content_type": "json", "insecure_ssl": "0",
           "url": "https://ferry.example.com/hooks/app"}},
  "repository": {"id": 1296269, "full_name": "acme/app"}
}"#;

    const GITHUB_PULL_REQUEST: &str = r#"{
  "action": "opened", "number": 2,
  "pull_request": {"number": 2, "state": "open", "head": {"ref": "feature"}, "base": {"ref": "main"}},
  "repository": {"id": 1296269, "full_name": "acme/app"}
}"#;

    fn github(event: &str, body: &str) -> Result<Event, Rejection> {
        let sig = format!("sha256={}", sign(SECRET, body));
        run(
            &[
                ("x-github-event", event),
                ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
                (
                    "x-hub-signature",
                    "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6",
                ),
                ("x-hub-signature-256", &sig),
            ],
            body,
        )
    }

    #[test]
    fn github_signed_push_is_a_push_of_its_ref() {
        assert_eq!(
            github("push", GITHUB_PUSH),
            pushed_moved(
                Provider::GitHub,
                &[(
                    "refs/heads/main",
                    "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                    "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
                )]
            )
        );
        // A deletion: no new id, the old one from `before`.
        let tag = "refs/tags/v1.0.0".to_string();
        assert_eq!(
            github("push", GITHUB_TAG_DELETED),
            Ok(Event::Push {
                provider: Provider::GitHub,
                refs: vec![tag.clone()],
                ids: RefMap::new(),
                olds: RefMap::from([(
                    tag,
                    Oid::parse("0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c").unwrap()
                )]),
            })
        );
    }

    #[test]
    fn github_ping_and_other_events_are_ignored() {
        assert_eq!(
            github("ping", GITHUB_PING),
            Ok(Event::Ignored {
                provider: Provider::GitHub,
                reason: "ping".to_string()
            })
        );
        assert_ignored(
            github("pull_request", GITHUB_PULL_REQUEST),
            Provider::GitHub,
            "GitHub event 'pull_request' is not a push",
        );
    }

    #[test]
    fn github_wrong_signature_is_unauthorized() {
        let sig = format!("sha256={}", sign("another secret", GITHUB_PUSH));
        let result = run(
            &[("x-github-event", "push"), ("x-hub-signature-256", &sig)],
            GITHUB_PUSH,
        );
        assert_unauthorized(result, "signature does not match");
        // A signature over other bytes (the JSON re-serialized, say) does not match either.
        let sig = format!("sha256={}", sign(SECRET, &format!("{GITHUB_PUSH}\n")));
        let result = run(
            &[("x-github-event", "push"), ("x-hub-signature-256", &sig)],
            GITHUB_PUSH,
        );
        assert_unauthorized(result, "signature does not match");
        let result = run(
            &[
                ("x-github-event", "push"),
                ("x-hub-signature-256", "sha256=not-hex"),
            ],
            GITHUB_PUSH,
        );
        assert_unauthorized(result, "not hexadecimal");
        let result = run(
            &[
                ("x-github-event", "push"),
                ("x-hub-signature-256", "0d1a26e6"),
            ],
            GITHUB_PUSH,
        );
        assert_unauthorized(result, "sha256=");
    }

    #[test]
    fn github_missing_signature_is_unauthorized() {
        assert_unauthorized(
            run(&[("x-github-event", "push")], GITHUB_PUSH),
            "missing x-hub-signature-256",
        );
        let sha1_only = run(
            &[
                ("x-github-event", "push"),
                (
                    "x-hub-signature",
                    "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6",
                ),
            ],
            GITHUB_PUSH,
        );
        assert_unauthorized(sha1_only, "SHA-1");
    }

    #[test]
    fn github_invalid_json_with_a_valid_signature_is_malformed() {
        assert_malformed(github("push", NOT_JSON), "not valid JSON");
        assert_malformed(github("push", "[1, 2]"), "not an object");
        assert_malformed(
            github(
                "push",
                "payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D",
            ),
            "application/json",
        );
    }
}
