//! A botocore service model (the JSON that botocore ships gzipped under
//! `botocore/data/<service>/<version>/service-2.json.gz`) and a validator of
//! JSON-protocol payloads against its shapes.
//!
//! What is checked: a payload's type for every shape type botocore uses
//! (structure, list, map, string, integer, long, float, double, boolean,
//! timestamp as epoch seconds, blob as base64), a structure's required
//! members (present and not null) and unknown members, the `min`/`max` of
//! strings (characters), lists and maps (entries) and numbers (value), a
//! string's `enum` and `pattern` (a regex search, not anchored, as Smithy's
//! pattern trait means), and an error's `__type` against the operation's
//! listed errors (or [`COMMON_ERRORS`]) and its status class. Not checked:
//! `timestampFormat` overrides (the models this fake reads have none; the
//! loader refuses one), `idempotencyToken` (a client may leave it out), and
//! anything about HTTP bindings (the `json` protocol has none).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine;
use regex::Regex;
use serde_json::{Map, Value};

/// Errors any AWS JSON service may send although no operation lists them:
/// the front end's answers about authentication, throttling, malformed
/// requests and its own failures (AWS's "common errors" page), with the
/// status each comes with. An error answer whose `__type` is neither one of
/// the operation's errors nor one of these is a violation.
pub const COMMON_ERRORS: &[(&str, u16)] = &[
    // Signing: unknown access key, bad or expired signature, no signature.
    ("UnrecognizedClientException", 400),
    ("InvalidSignatureException", 400),
    ("IncompleteSignature", 400),
    ("MissingAuthenticationTokenException", 403),
    ("AccessDeniedException", 400),
    ("RequestExpired", 400),
    // Throttling (the SDKs retry it with backoff).
    ("ThrottlingException", 400),
    // A request that does not parse or does not fit the model.
    ("SerializationException", 400),
    ("ValidationException", 400),
    ("UnknownOperationException", 400),
    // The service's own failures (the SDKs retry them).
    ("InternalFailure", 500),
    ("ServiceUnavailable", 503),
];

/// One operation of the model.
#[derive(Debug, Clone)]
pub struct Operation {
    pub input: Option<String>,
    pub output: Option<String>,
    pub errors: Vec<String>,
}

/// A loaded service model.
pub struct Model {
    /// `metadata.targetPrefix`, e.g. `CodeCommit_20150413`.
    pub target_prefix: String,
    /// `metadata.endpointPrefix`, e.g. `codecommit` (the SigV4 service name).
    pub signing_name: String,
    operations: BTreeMap<String, Operation>,
    shapes: Map<String, Value>,
    patterns: BTreeMap<String, Regex>,
}

impl Model {
    /// Reads a model file, gzipped (`service-2.json.gz`) or not.
    pub fn load(path: &Path) -> Result<Model> {
        let raw = std::fs::read(path)
            .with_context(|| format!("failed to read the service model {}", path.display()))?;
        let text = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut text = Vec::new();
            flate2::read::GzDecoder::new(raw.as_slice())
                .read_to_end(&mut text)
                .with_context(|| format!("failed to gunzip {}", path.display()))?;
            text
        } else {
            raw
        };
        let json: Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        Model::from_json(json).with_context(|| format!("bad service model {}", path.display()))
    }

    /// A model from its JSON; only the `json` protocol is supported.
    pub fn from_json(json: Value) -> Result<Model> {
        let metadata = json.get("metadata").context("no metadata")?;
        let text = |key: &str| metadata.get(key).and_then(Value::as_str).unwrap_or("");
        if text("protocol") != "json" {
            bail!(
                "protocol {:?}: only the json protocol is supported",
                text("protocol")
            );
        }
        let shapes = json
            .get("shapes")
            .and_then(Value::as_object)
            .context("no shapes")?
            .clone();
        let mut patterns = BTreeMap::new();
        for (name, shape) in &shapes {
            if shape.get("timestampFormat").is_some() {
                bail!("shape {name} has a timestampFormat, which the validator does not support");
            }
            if let Some(pattern) = shape.get("pattern").and_then(Value::as_str) {
                let regex = Regex::new(pattern)
                    .with_context(|| format!("shape {name}: pattern {pattern:?}"))?;
                patterns.insert(name.clone(), regex);
            }
        }
        let shape_ref = |op: &Value, key: &str| -> Option<String> {
            op.get(key)?.get("shape")?.as_str().map(str::to_string)
        };
        let mut operations = BTreeMap::new();
        let ops = json
            .get("operations")
            .and_then(Value::as_object)
            .context("no operations")?;
        for (name, op) in ops {
            let errors = op
                .get("errors")
                .and_then(Value::as_array)
                .map(|errors| {
                    errors
                        .iter()
                        .filter_map(|e| e.get("shape")?.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let operation = Operation {
                input: shape_ref(op, "input"),
                output: shape_ref(op, "output"),
                errors,
            };
            for shape in [&operation.input, &operation.output]
                .into_iter()
                .flatten()
                .chain(&operation.errors)
            {
                if !shapes.contains_key(shape) {
                    bail!("operation {name} names the missing shape {shape}");
                }
            }
            operations.insert(name.clone(), operation);
        }
        Ok(Model {
            target_prefix: text("targetPrefix").to_string(),
            // SigV4's service name: signingName when given, else endpointPrefix.
            signing_name: if text("signingName").is_empty() {
                text("endpointPrefix").to_string()
            } else {
                text("signingName").to_string()
            },
            operations,
            shapes,
            patterns,
        })
    }

    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.get(name)
    }

    /// Problems of a request body (`{}` when the operation has no input).
    pub fn check_input(&self, operation: &str, body: &Value) -> Vec<String> {
        match self.operation(operation) {
            None => vec![format!("no operation {operation} in the model")],
            Some(op) => self.check_payload(op.input.as_deref(), body, "input"),
        }
    }

    /// Problems of a successful answer's body.
    pub fn check_output(&self, operation: &str, body: &Value) -> Vec<String> {
        match self.operation(operation) {
            None => vec![format!("no operation {operation} in the model")],
            Some(op) => self.check_payload(op.output.as_deref(), body, "output"),
        }
    }

    fn check_payload(&self, shape: Option<&str>, body: &Value, what: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match shape {
            Some(shape) => self.check(shape, body, "$", &mut problems),
            None if body.as_object().is_some_and(Map::is_empty) => {}
            None => problems.push(format!("the operation has no {what}, yet $ is {body}")),
        }
        problems
    }

    /// Problems of an error answer: `__type` (optionally `namespace#Name`)
    /// must be one of the operation's errors or a common error, with a
    /// matching status class, and the body must fit the error's shape
    /// (besides `__type` and `message`).
    pub fn check_error(&self, operation: &str, status: u16, body: &Value) -> Vec<String> {
        let Some(object) = body.as_object() else {
            return vec![format!("an error body must be an object, not {body}")];
        };
        let Some(kind) = object.get("__type").and_then(Value::as_str) else {
            return vec!["an error body needs a string __type".to_string()];
        };
        let kind = kind.rsplit('#').next().unwrap_or(kind);
        let mut problems = Vec::new();
        let message = object.get("message").or_else(|| object.get("Message"));
        if message.is_some_and(|m| !m.is_string()) {
            problems.push(format!("error message {message:?} is not a string"));
        }
        let listed = self
            .operation(operation)
            .is_some_and(|op| op.errors.iter().any(|e| e == kind));
        if listed {
            let shape = &self.shapes[kind];
            let fault = shape.get("fault").and_then(Value::as_bool) == Some(true);
            if fault != (status >= 500) {
                problems.push(format!(
                    "{kind} is a {} error, yet the status is {status}",
                    if fault { "server" } else { "client" }
                ));
            }
            let mut rest = object.clone();
            for key in ["__type", "message", "Message"] {
                rest.remove(key);
            }
            self.check(kind, &Value::Object(rest), "$", &mut problems);
        } else {
            match COMMON_ERRORS.iter().find(|(name, _)| *name == kind) {
                Some((_, expected)) if *expected != status => {
                    problems.push(format!("{kind} comes with status {expected}, not {status}"))
                }
                Some(_) => {}
                None => problems.push(format!(
                    "__type {kind} is neither an error of {operation} nor a common AWS error"
                )),
            }
        }
        problems
    }

    fn check(&self, name: &str, value: &Value, at: &str, problems: &mut Vec<String>) {
        let Some(shape) = self.shapes.get(name) else {
            problems.push(format!("{at}: the model has no shape {name}"));
            return;
        };
        let kind = shape.get("type").and_then(Value::as_str).unwrap_or("");
        let bound = |key: &str| shape.get(key).and_then(Value::as_f64);
        let mut length = |len: usize, unit: &str| {
            let len = len as f64;
            if bound("min").is_some_and(|min| len < min)
                || bound("max").is_some_and(|max| len > max)
            {
                problems.push(format!(
                    "{at}: {len} {unit}, outside {}..{} ({name})",
                    bound("min").map(|v| v.to_string()).unwrap_or_default(),
                    bound("max").map(|v| v.to_string()).unwrap_or_default()
                ));
            }
        };
        let wrong = |problems: &mut Vec<String>| {
            problems.push(format!("{at}: expected a {kind} ({name}), got {value}"));
        };
        match (kind, value) {
            ("structure", Value::Object(members)) => {
                self.check_structure(name, shape, members, at, problems)
            }
            ("list", Value::Array(items)) => {
                length(items.len(), "items");
                let member = member_shape(shape, "member");
                for (i, item) in items.iter().enumerate() {
                    self.check(member, item, &format!("{at}[{i}]"), problems);
                }
            }
            ("map", Value::Object(entries)) => {
                length(entries.len(), "entries");
                let (key, val) = (member_shape(shape, "key"), member_shape(shape, "value"));
                for (k, v) in entries {
                    let at = format!("{at}.{k}");
                    self.check(
                        key,
                        &Value::String(k.clone()),
                        &format!("{at} (key)"),
                        problems,
                    );
                    self.check(val, v, &at, problems);
                }
            }
            ("string", Value::String(text)) => {
                length(text.chars().count(), "characters");
                let allowed = shape.get("enum").and_then(Value::as_array);
                if allowed.is_some_and(|allowed| !allowed.iter().any(|a| a == value)) {
                    problems.push(format!("{at}: {value} is not one of the enum {name}"));
                }
                if self.patterns.get(name).is_some_and(|p| !p.is_match(text)) {
                    problems.push(format!(
                        "{at}: {value} does not match the pattern of {name}"
                    ));
                }
            }
            ("integer" | "long", Value::Number(n)) => match n.as_i64() {
                Some(v) if kind == "integer" && i32::try_from(v).is_err() => {
                    problems.push(format!("{at}: {v} does not fit a 32-bit integer ({name})"))
                }
                Some(v) => {
                    let v = v as f64;
                    if bound("min").is_some_and(|min| v < min)
                        || bound("max").is_some_and(|max| v > max)
                    {
                        problems.push(format!("{at}: {v} is out of range ({name})"));
                    }
                }
                None => wrong(problems),
            },
            ("float" | "double", Value::Number(_)) | ("boolean", Value::Bool(_)) => {}
            // The json protocol's default timestamp format: epoch seconds.
            ("timestamp", Value::Number(_)) => {}
            ("blob", Value::String(text)) => {
                if base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .is_err()
                {
                    problems.push(format!("{at}: a blob must be base64 ({name})"));
                }
            }
            (
                "structure" | "list" | "map" | "string" | "integer" | "long" | "float" | "double"
                | "boolean" | "timestamp" | "blob",
                _,
            ) => wrong(problems),
            _ => problems.push(format!("{at}: shape {name} has the unknown type {kind:?}")),
        }
    }

    fn check_structure(
        &self,
        name: &str,
        shape: &Value,
        members: &Map<String, Value>,
        at: &str,
        problems: &mut Vec<String>,
    ) {
        let declared = shape.get("members").and_then(Value::as_object);
        let required = shape.get("required").and_then(Value::as_array);
        for key in required.into_iter().flatten().filter_map(Value::as_str) {
            if members.get(key).is_none_or(Value::is_null) {
                problems.push(format!(
                    "{at}: the required member {key} is missing ({name})"
                ));
            }
        }
        for (key, value) in members {
            let at = format!("{at}.{key}");
            match declared.and_then(|d| d.get(key)) {
                None => problems.push(format!("{at}: {name} has no member {key}")),
                Some(_) if value.is_null() => problems.push(format!("{at}: null")),
                Some(member) => {
                    let shape = member.get("shape").and_then(Value::as_str).unwrap_or("");
                    self.check(shape, value, &at, problems);
                }
            }
        }
    }
}

fn member_shape<'a>(shape: &'a Value, key: &str) -> &'a str {
    shape
        .get(key)
        .and_then(|m| m.get("shape"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A small model with every shape type the validator checks.
    fn model() -> Model {
        Model::from_json(json!({
            "metadata": {"protocol": "json", "targetPrefix": "Test_1", "endpointPrefix": "test"},
            "operations": {
                "Put": {
                    "input": {"shape": "PutInput"},
                    "output": {"shape": "PutOutput"},
                    "errors": [{"shape": "NotFound"}, {"shape": "Broken"}]
                },
                "Ping": {}
            },
            "shapes": {
                "PutInput": {"type": "structure", "required": ["name"], "members": {
                    "name": {"shape": "Name"},
                    "names": {"shape": "Names"},
                    "order": {"shape": "Order"},
                    "count": {"shape": "Count"},
                    "big": {"shape": "Big"},
                    "flag": {"shape": "Flag"},
                    "when": {"shape": "When"},
                    "data": {"shape": "Data"},
                    "tags": {"shape": "Tags"}
                }},
                "PutOutput": {"type": "structure", "members": {"name": {"shape": "Name"}}},
                "Name": {"type": "string", "min": 1, "max": 5, "pattern": "^[a-z]+$"},
                "Names": {"type": "list", "member": {"shape": "Name"}, "max": 2},
                "Order": {"type": "string", "enum": ["ascending", "descending"]},
                "Count": {"type": "integer", "min": 1, "max": 10},
                "Big": {"type": "long"},
                "Flag": {"type": "boolean"},
                "When": {"type": "timestamp"},
                "Data": {"type": "blob"},
                "Tags": {"type": "map", "key": {"shape": "Name"}, "value": {"shape": "Name"}},
                "NotFound": {"type": "structure", "members": {}, "exception": true},
                "Broken": {"type": "structure", "members": {}, "exception": true, "fault": true}
            }
        }))
        .expect("the test model loads")
    }

    fn input(body: Value) -> Vec<String> {
        model().check_input("Put", &body)
    }

    #[test]
    fn a_payload_that_fits_every_shape_passes() {
        let body = json!({
            "name": "abc", "names": ["a", "b"], "order": "ascending", "count": 10,
            "big": 5_000_000_000_i64, "flag": true, "when": 1.7e9, "data": "aGk=",
            "tags": {"k": "v"}
        });
        assert_eq!(input(body), Vec::<String>::new());
        assert!(model().check_input("Ping", &json!({})).is_empty());
    }

    #[test]
    fn a_wrong_type_is_caught() {
        for body in [
            json!({"name": 5}),
            json!({"name": "a", "count": "3"}),
            json!({"name": "a", "count": 1.5}),
            json!({"name": "a", "flag": "true"}),
            json!({"name": "a", "when": "2024-01-01"}),
            json!({"name": "a", "names": "a"}),
            json!({"name": "a", "tags": ["k"]}),
            json!({"name": "a", "data": "not base64!"}),
            json!({"name": "a", "count": 5_000_000_000_i64}),
            json!([]),
        ] {
            assert_eq!(input(body.clone()).len(), 1, "{body}");
        }
    }

    #[test]
    fn a_missing_or_null_required_member_is_caught() {
        let problems = input(json!({"order": "ascending"}));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("required member name"), "{problems:?}");
        assert_eq!(input(json!({"name": null})).len(), 2);
    }

    #[test]
    fn an_unknown_member_is_caught() {
        let problems = input(json!({"name": "a", "Name": "b"}));
        assert_eq!(
            problems,
            vec!["$.Name: PutInput has no member Name".to_string()]
        );
        assert_eq!(model().check_input("Ping", &json!({"x": 1})).len(), 1);
    }

    #[test]
    fn lengths_and_ranges_are_caught() {
        assert_eq!(
            input(json!({"name": "a", "names": ["a", "b", "c"]})).len(),
            1
        );
        assert_eq!(
            input(json!({"name": ""})).len(),
            2,
            "too short, and no pattern match"
        );
        assert_eq!(input(json!({"name": "abcdef"})).len(), 1);
        assert_eq!(input(json!({"name": "a", "count": 0})).len(), 1);
        assert_eq!(input(json!({"name": "a", "count": 11})).len(), 1);
    }

    #[test]
    fn a_bad_enum_or_pattern_is_caught() {
        let problems = input(json!({"name": "a", "order": "up"}));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("enum Order"), "{problems:?}");
        assert_eq!(input(json!({"name": "A"})).len(), 1);
        assert_eq!(input(json!({"name": "a", "tags": {"K": "v"}})).len(), 1);
    }

    #[test]
    fn an_output_is_checked_like_an_input() {
        let m = model();
        assert!(m.check_output("Put", &json!({"name": "ok"})).is_empty());
        assert_eq!(m.check_output("Put", &json!({"nom": "ok"})).len(), 1);
        assert_eq!(m.check_output("Ping", &json!({"x": 1})).len(), 1);
    }

    #[test]
    fn an_error_must_be_listed_or_common_with_its_status() {
        let m = model();
        let error = |kind: &str, status| {
            m.check_error("Put", status, &json!({"__type": kind, "message": "m"}))
        };
        assert!(error("NotFound", 400).is_empty());
        assert!(error("test#NotFound", 400).is_empty());
        assert!(error("Broken", 500).is_empty());
        assert!(error("ThrottlingException", 400).is_empty());
        assert!(error("InternalFailure", 500).is_empty());
        assert_eq!(error("NotFound", 500).len(), 1);
        assert_eq!(error("Broken", 400).len(), 1);
        assert_eq!(error("ThrottlingException", 429).len(), 1);
        assert_eq!(error("NoSuchThing", 400).len(), 1);
        assert_eq!(
            m.check_error("Ping", 400, &json!({"__type": "NotFound"}))
                .len(),
            1
        );
        assert_eq!(m.check_error("Put", 400, &json!({"message": "m"})).len(), 1);
        assert_eq!(
            m.check_error("Put", 400, &json!({"__type": "NotFound", "extra": 1}))
                .len(),
            1
        );
    }

    #[test]
    fn a_model_with_an_unsupported_protocol_is_refused() {
        let json = json!({"metadata": {"protocol": "rest-xml"}, "operations": {}, "shapes": {}});
        assert!(Model::from_json(json).is_err());
    }
}
