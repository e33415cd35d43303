//! AWS CodeCommit events, as EventBridge delivers them: to a Lambda function directly, or to
//! `ferry serve` through an API destination (then authenticated as a webhook first).

use super::webhook::{ignored, present_id, qualify, Event, Provider, Rejection};
use crate::model::refs::{Oid, RefMap};
use crate::model::remote::Remote;
use serde_json::{Map, Value};

pub const STATE_CHANGE: &str = "CodeCommit Repository State Change";

/// An EventBridge event from CodeCommit. Only "Repository State Change" events can move refs,
/// and among them `unreferencedMergeCommitCreated` does not. Pull requests and comments come
/// with other detail-types ("CodeCommit Pull Request State Change", "CodeCommit Comment on
/// Pull Request", ...).
pub fn classify(body: &Map<String, Value>) -> Result<Event, Rejection> {
    let provider = Provider::CodeCommit;
    let detail = body.get("detail");
    let event = detail.and_then(|d| d.get("event")).and_then(Value::as_str);
    let detail_type = body.get("detail-type").and_then(Value::as_str);
    if detail_type != Some(STATE_CHANGE) {
        let detail_type = detail_type.unwrap_or("(no detail-type)");
        let reason = match event {
            Some(event) => {
                format!("CodeCommit event '{event}' ({detail_type}) is not a reference change")
            }
            None => format!("CodeCommit '{detail_type}' event is not a reference change"),
        };
        return Ok(ignored(provider, reason));
    }
    let Some(event) = event else {
        return Err(Rejection::Malformed(format!(
            "{STATE_CHANGE} event without a string detail.event"
        )));
    };
    match event {
        "referenceCreated" | "referenceUpdated" | "referenceDeleted" => {
            let refs: Vec<String> = reference(body).into_iter().collect();
            // `commitId` is the ref's new commit (a deletion's is its old one: not taken).
            let new = detail.and_then(|d| d.get("commitId"));
            let ids = match (refs.as_slice(), event, present_id(new)) {
                ([name], "referenceCreated" | "referenceUpdated", Some(oid)) => {
                    RefMap::from([(name.clone(), oid)])
                }
                _ => RefMap::new(),
            };
            let olds = previous_value(body).into_iter().collect();
            Ok(Event::Push {
                provider,
                refs,
                ids,
                olds,
            })
        }
        _ => Ok(ignored(
            provider,
            format!("CodeCommit event '{event}' is not a reference change"),
        )),
    }
}

/// The full name of the ref a reference event is about.
fn reference(body: &Map<String, Value>) -> Option<String> {
    let detail = body.get("detail");
    let field = |name: &str| detail.and_then(|d| d.get(name)).and_then(Value::as_str);
    let full = field("referenceFullName").filter(|r| r.starts_with("refs/"));
    let name = full.or_else(|| field("referenceName"));
    name.and_then(|n| qualify(n, field("referenceType")))
}

/// The ref a reference event is about and the commit it pointed at before the change
/// (`detail.oldCommitId`), when the event carries one: what a destination kept in sync with
/// this repository held until now.
pub fn previous_value(body: &Map<String, Value>) -> Option<(String, Oid)> {
    let old = body.get("detail")?.get("oldCommitId")?.as_str()?;
    let oid = Oid::parse(old).filter(|o| o.as_str().bytes().any(|b| b != b'0'))?;
    Some((reference(body)?, oid))
}

/// The CodeCommit repository an event is about (`detail.repositoryName`).
pub fn repository(body: &Map<String, Value>) -> Option<&str> {
    body.get("detail")?.get("repositoryName")?.as_str()
}

/// The CodeCommit repository name of a source URL:
/// `https://git-codecommit.eu-west-1.amazonaws.com/v1/repos/app` -> `app`.
pub fn repository_name(source: &Remote) -> &str {
    let url = source.git_url().trim_end_matches('/');
    let last = url.rsplit(['/', ':']).next().unwrap_or(url);
    last.strip_suffix(".git").unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn the_previous_value_is_the_old_commit_of_the_named_ref() {
        let event = |detail: Value| {
            json!({ "detail-type": STATE_CHANGE, "source": "aws.codecommit", "detail": detail })
                .as_object()
                .cloned()
                .unwrap()
        };
        let old = "a".repeat(40);
        let updated = event(json!({
            "event": "referenceUpdated", "referenceType": "branch", "referenceName": "main",
            "referenceFullName": "refs/heads/main", "oldCommitId": old, "commitId": "b".repeat(40)
        }));
        assert_eq!(
            previous_value(&updated),
            Some(("refs/heads/main".to_owned(), Oid::parse(&old).unwrap()))
        );
        let tag = event(
            json!({ "event": "referenceDeleted", "referenceType": "tag", "referenceName": "v1", "oldCommitId": old }),
        );
        assert_eq!(
            previous_value(&tag).map(|(r, _)| r),
            Some("refs/tags/v1".to_owned())
        );
        for detail in [
            json!({ "event": "referenceCreated", "referenceType": "branch", "referenceName": "new", "commitId": old }),
            json!({ "event": "referenceUpdated", "referenceType": "branch", "referenceName": "main", "oldCommitId": "0".repeat(40) }),
            json!({ "event": "referenceUpdated", "referenceType": "branch", "referenceName": "main", "oldCommitId": "not an id" }),
        ] {
            assert_eq!(previous_value(&event(detail.clone())), None, "{detail}");
        }
    }

    #[test]
    fn codecommit_repository_names_come_from_the_clone_url() {
        let r = |u: &str| Remote::parse(u, Path::new("/")).unwrap();
        assert_eq!(
            repository_name(&r(
                "https://git-codecommit.eu-west-1.amazonaws.com/v1/repos/app"
            )),
            "app"
        );
        assert_eq!(
            repository_name(&r(
                "ssh://git-codecommit.eu-west-1.amazonaws.com/v1/repos/app.git"
            )),
            "app"
        );
    }
}
