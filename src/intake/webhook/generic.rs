//! ferry's generic webhook format, for scripts and CI. Authentication (`authorization: Bearer`
//! or `x-ferry-token`) is done before this, in the parent module.

use super::{dedup, push, Event, Provider, Rejection};
use crate::model::refs::RefMap;
use serde_json::{Map, Value};

/// ferry's own format, for scripts and CI: any JSON object is a push; `ref` (a string) or `refs`
/// (an array of strings) narrow it to full ref names.
pub(super) fn classify(body: &Map<String, Value>) -> Result<Event, Rejection> {
    let bad = |what: &str| Rejection::Malformed(format!("generic webhook: {what}"));
    let mut refs = Vec::new();
    match body.get("ref") {
        None | Some(Value::Null) => {}
        Some(Value::String(r)) => refs.push(r.clone()),
        Some(_) => return Err(bad("'ref' must be a string")),
    }
    match body.get("refs") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(r) => refs.push(r.clone()),
                    _ => return Err(bad("'refs' must be an array of strings")),
                }
            }
        }
        Some(_) => return Err(bad("'refs' must be an array of strings")),
    }
    if let Some(short) = refs.iter().find(|r| !r.starts_with("refs/")) {
        let short: String = short.chars().take(200).collect();
        return Err(bad(&format!(
            "'{short}' is not a full ref name (e.g. refs/heads/main, refs/tags/v1.0)"
        )));
    }
    Ok(push(
        Provider::Generic,
        dedup(refs.into_iter()),
        RefMap::new(),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::Provider;

    #[test]
    fn generic_object_is_a_push_with_the_refs_it_names() {
        assert_eq!(
            generic(r#"{"ref": "refs/heads/main"}"#),
            pushed(Provider::Generic, &["refs/heads/main"])
        );
        assert_eq!(
            generic(r#"{"refs": ["refs/heads/main", "refs/tags/v1", "refs/heads/main"]}"#),
            pushed(Provider::Generic, &["refs/heads/main", "refs/tags/v1"])
        );
        assert_eq!(generic("{}"), pushed(Provider::Generic, &[]));
        assert_eq!(
            generic(r#"{"source": "ci", "pipeline": 42}"#),
            pushed(Provider::Generic, &[])
        );
    }

    #[test]
    fn generic_bad_shapes_are_malformed() {
        assert_malformed(generic(NOT_JSON), "not valid JSON");
        assert_malformed(generic(r#""refs/heads/main""#), "not an object");
        assert_malformed(generic(r#"{"ref": 1}"#), "'ref' must be a string");
        assert_malformed(
            generic(r#"{"refs": "refs/heads/main"}"#),
            "'refs' must be an array",
        );
        assert_malformed(generic(r#"{"ref": "main"}"#), "not a full ref name");
    }

    #[test]
    fn generic_wrong_or_missing_token_is_unauthorized() {
        assert_unauthorized(
            run(&[("authorization", "Bearer It's a Secret")], "{}"),
            "signature does not match",
        );
        assert_unauthorized(
            run(&[("authorization", "Basic dXNlcjpwYXNz")], "{}"),
            "not a bearer token",
        );
        assert_unauthorized(
            run(&[("authorization", "Bearer")], "{}"),
            "not a bearer token",
        );
        // An empty bearer token never matches (the secret is never empty here).
        assert_unauthorized(run(&[("authorization", "Bearer  ")], "{}"), "");
    }
}
