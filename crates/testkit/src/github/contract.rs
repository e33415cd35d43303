//! GitHub's published OpenAPI description as a contract: finds the operation a
//! request is for and checks requests and answers against it. The fake GitLab
//! and Gitea use it too, on their Swagger 2.0 descriptions converted to
//! OpenAPI 3.0 (`crate::fakehost::swagger`), with their own [`Unsaid`] rules.
//!
//! The description is OpenAPI 3.0.3, whose schemas are a dialect of JSON
//! Schema draft 4. Two differences matter for validation and are bridged
//! here: `nullable: true` (turned into `anyOf: [{type: null}, schema]`) and
//! `$ref`s to `#/components/schemas/...` (each compiled schema carries the
//! components it reaches, so those pointers resolve inside it).
//!
//! Not checked: request and response headers (`Link`, rate-limit headers,
//! `Location`), content types other than `application/json`, parameter
//! styles other than OpenAPI's default (`form`, exploded), and the
//! `discriminator` hints (its `oneOf` still decides).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{bail, Context, Result};
use jsonschema::{Draft, Validator};
use serde_json::{json, Map, Value};

/// What a host sends although its description leaves it unsaid.
#[derive(Debug, Clone, Copy)]
pub struct Unsaid {
    /// Statuses the host sends from any operation, although most operations
    /// do not list them.
    pub statuses: &'static [u16],
    /// The component schema of their bodies (all but 304's); `None`: not checked.
    pub error_schema: Option<&'static str>,
    /// Whether an answer documented without a body may carry one anyway
    /// (Swagger 2.0 hosts describe their error answers in words only).
    pub undescribed_bodies: bool,
}

/// GitHub's REST documentation describes these once for the whole API
/// (conditional requests, authentication, rate limits, hidden resources,
/// server errors); their bodies are `basic-error`.
const GITHUB_UNSAID: Unsaid = Unsaid {
    statuses: &[304, 401, 403, 404, 429, 500, 502, 503],
    error_schema: Some("basic-error"),
    undescribed_bodies: false,
};

const SCHEMA_REF_PREFIX: &str = "#/components/schemas/";

/// Where a description is loaded once (see [`Contract::load`]).
type Slot = Arc<OnceLock<Arc<Contract>>>;

/// One loaded description; cheap to share (see [`Contract::load`]).
pub struct Contract {
    path: PathBuf,
    unsaid: Unsaid,
    operations: Vec<Operation>,
    /// `components.schemas`, as published (converted when compiled).
    schemas: Map<String, Value>,
    validators: Mutex<HashMap<String, Arc<Validator>>>,
}

/// An operation of the description that a request matched.
#[derive(Debug, Clone)]
pub struct Matched {
    index: usize,
    /// Path template, e.g. `/repos/{owner}/{repo}`.
    pub template: String,
    /// Upper-case HTTP method.
    pub method: String,
    /// Percent-decoded path parameters by name.
    pub path_params: BTreeMap<String, String>,
}

struct Operation {
    method: String,
    template: String,
    /// `None` for a `{param}` segment.
    segments: Vec<Option<String>>,
    parameters: Vec<Parameter>,
    body: Option<RequestBody>,
    /// Status (or `default`) -> the `application/json` schema, if any.
    responses: BTreeMap<String, Option<Value>>,
}

struct Parameter {
    name: String,
    location: String,
    required: bool,
    schema: Value,
}

struct RequestBody {
    required: bool,
    schema: Option<Value>,
}

impl Contract {
    /// Loads the description at `path`, once per path per process: later
    /// calls return the same contract (parsing 13 MB takes about a second).
    pub fn load(path: &Path) -> Result<Arc<Contract>> {
        static LOADED: OnceLock<Mutex<HashMap<PathBuf, Slot>>> = OnceLock::new();
        let slot = {
            let mut loaded = LOADED
                .get_or_init(Default::default)
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            loaded.entry(path.to_path_buf()).or_default().clone()
        };
        if let Some(contract) = slot.get() {
            return Ok(contract.clone());
        }
        // Parsed outside the map's lock; a race parses twice and keeps one.
        let contract = Arc::new(Contract::parse(path)?);
        Ok(slot.get_or_init(|| contract).clone())
    }

    fn parse(path: &Path) -> Result<Contract> {
        let text = std::fs::read(path).with_context(|| {
            format!(
                "failed to read GitHub's OpenAPI description {}",
                path.display()
            )
        })?;
        let doc: Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        Contract::from_document(path, &doc, GITHUB_UNSAID)
    }

    /// The contract of an OpenAPI 3.0 document read from `path` (named in
    /// messages), with `unsaid`'s rules for what it does not describe.
    pub fn from_document(path: &Path, doc: &Value, unsaid: Unsaid) -> Result<Contract> {
        match doc.get("openapi").and_then(Value::as_str) {
            Some(v) if v.starts_with("3.0.") => {}
            other => bail!(
                "{} is not an OpenAPI 3.0 description (openapi: {other:?})",
                path.display()
            ),
        }
        let components = doc.get("components").cloned().unwrap_or(Value::Null);
        let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
            bail!("{} has no `paths`", path.display());
        };
        let mut operations = Vec::new();
        for (template, item) in paths {
            let shared = item.get("parameters").and_then(Value::as_array);
            for method in ["get", "put", "post", "delete", "options", "head", "patch"] {
                if let Some(op) = item.get(method) {
                    operations.push(
                        Operation::parse(method, template, shared, op, &components).with_context(
                            || format!("{}: {} {template}", path.display(), method),
                        )?,
                    );
                }
            }
        }
        let schemas = components
            .get("schemas")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Ok(Contract {
            path: path.to_path_buf(),
            unsaid,
            operations,
            schemas,
            validators: Mutex::new(HashMap::new()),
        })
    }

    /// The operation for `method` and a (still percent-encoded) request
    /// path; when several templates match, the one with most literal
    /// segments wins, as `/user/repos` over a `/user/{x}`.
    pub fn find(&self, method: &str, path: &str) -> Option<Matched> {
        let parts: Vec<&str> = path.split('/').collect();
        let method = method.to_ascii_uppercase();
        let mut best: Option<(usize, usize)> = None;
        for (index, op) in self.operations.iter().enumerate() {
            if op.method != method || op.segments.len() != parts.len() {
                continue;
            }
            let mut literals = 0;
            let fits = op.segments.iter().zip(&parts).all(|(seg, part)| match seg {
                Some(lit) => {
                    literals += 1;
                    lit == part
                }
                None => !part.is_empty(),
            });
            if fits && best.is_none_or(|(_, most)| literals > most) {
                best = Some((index, literals));
            }
        }
        let (index, _) = best?;
        let op = &self.operations[index];
        let path_params = op
            .segments
            .iter()
            .zip(&parts)
            .zip(op.template.split('/'))
            .filter(|((seg, _), _)| seg.is_none())
            .map(|((_, part), name)| {
                let name = name.trim_start_matches('{').trim_end_matches('}');
                let value = percent_encoding::percent_decode_str(part)
                    .decode_utf8_lossy()
                    .into_owned();
                (name.to_string(), value)
            })
            .collect();
        Some(Matched {
            index,
            template: op.template.clone(),
            method,
            path_params,
        })
    }

    /// Problems with a request for `op`: path and query parameters (names,
    /// types, enums, required) and the JSON body against its schema.
    pub fn check_request(&self, op: &Matched, query: &str, body: Option<&Value>) -> Vec<String> {
        let operation = &self.operations[op.index];
        let mut problems = Vec::new();
        for param in operation.parameters.iter().filter(|p| p.location == "path") {
            match op.path_params.get(&param.name) {
                Some(raw) => self.check_param(op, param, std::slice::from_ref(raw), &mut problems),
                None => problems.push(format!("path parameter `{}` is missing", param.name)),
            }
        }
        let mut given: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            given
                .entry(name.into_owned())
                .or_default()
                .push(value.into_owned());
        }
        for (name, values) in &given {
            match operation
                .parameters
                .iter()
                .find(|p| p.location == "query" && &p.name == name)
            {
                Some(param) => self.check_param(op, param, values, &mut problems),
                None => problems.push(format!(
                    "query parameter `{name}` is not documented for this operation"
                )),
            }
        }
        for param in &operation.parameters {
            if param.location == "query" && param.required && !given.contains_key(&param.name) {
                problems.push(format!(
                    "required query parameter `{}` is missing",
                    param.name
                ));
            }
        }
        match (&operation.body, body) {
            (None, Some(_)) => {
                problems.push("the operation takes no request body, but one was sent".into())
            }
            (Some(spec), None) if spec.required => {
                problems.push("the operation requires a JSON request body".into())
            }
            (
                Some(RequestBody {
                    schema: Some(schema),
                    ..
                }),
                Some(body),
            ) => {
                let key = format!("{} {} request body", op.method, op.template);
                self.check_schema(&key, schema, body, "request body", &mut problems);
            }
            _ => {}
        }
        problems
    }

    /// Problems with an answer for `op`: the status must be documented for
    /// the operation (or be one the host sends from everywhere, see
    /// [`Unsaid`]) and the JSON body must match its schema.
    pub fn check_response(&self, op: &Matched, status: u16, body: Option<&Value>) -> Vec<String> {
        let operation = &self.operations[op.index];
        let code = status.to_string();
        let error = self
            .unsaid
            .error_schema
            .map(|name| json!({ "$ref": format!("{SCHEMA_REF_PREFIX}{name}") }));
        let (key, schema) = match operation
            .responses
            .get(&code)
            .or_else(|| operation.responses.get("default"))
        {
            Some(schema) => (
                format!("{} {} response {code}", op.method, op.template),
                schema.as_ref(),
            ),
            None if self.unsaid.statuses.contains(&status) => match &error {
                Some(error) => (
                    "cross-cutting error".to_string(),
                    (status != 304).then_some(error),
                ),
                None => return Vec::new(),
            },
            None => {
                let documented: Vec<&str> =
                    operation.responses.keys().map(String::as_str).collect();
                return vec![format!(
                    "status {status} is not documented for this operation (documented: {})",
                    documented.join(", ")
                )];
            }
        };
        let mut problems = Vec::new();
        match (schema, body) {
            (Some(schema), Some(body)) => {
                self.check_schema(&key, schema, body, "response body", &mut problems)
            }
            (Some(_), None) => problems.push(format!(
                "status {status} must have a JSON body, none was sent"
            )),
            (None, Some(_)) if !self.unsaid.undescribed_bodies => problems.push(format!(
                "status {status} has no documented body, but one was sent"
            )),
            (None, _) => {}
        }
        problems
    }

    fn check_param(
        &self,
        op: &Matched,
        param: &Parameter,
        raw: &[String],
        problems: &mut Vec<String>,
    ) {
        let what = format!("{} parameter `{}`", param.location, param.name);
        let value = match typed_param_value(&param.schema, raw) {
            Ok(value) => value,
            Err(problem) => {
                problems.push(format!("{what}: {problem}"));
                return;
            }
        };
        let key = format!("{} {} {what}", op.method, op.template);
        self.check_schema(&key, &param.schema, &value, &what, problems);
    }

    fn check_schema(
        &self,
        key: &str,
        schema: &Value,
        instance: &Value,
        what: &str,
        problems: &mut Vec<String>,
    ) {
        let validator = match self.validator(key, schema) {
            Ok(validator) => validator,
            Err(e) => {
                problems.push(format!(
                    "{what}: cannot check, the schema does not compile: {e:#}"
                ));
                return;
            }
        };
        for error in validator.iter_errors(instance) {
            let at = error.instance_path().to_string();
            let at = if at.is_empty() { "/".to_string() } else { at };
            problems.push(format!("{what} at {at}: {error}"));
        }
    }

    /// The compiled validator for `schema`, cached under `key`.
    fn validator(&self, key: &str, schema: &Value) -> Result<Arc<Validator>> {
        let mut cache = self
            .validators
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(validator) = cache.get(key) {
            return Ok(validator.clone());
        }
        let validator = Arc::new(
            self.compile(schema)
                .with_context(|| format!("{key} in {}", self.path.display()))?,
        );
        cache.insert(key.to_string(), validator.clone());
        Ok(validator)
    }

    /// Compiles an OpenAPI 3.0 schema as JSON Schema draft 4, carrying the
    /// component schemas it reaches so its `$ref`s resolve.
    pub fn compile(&self, schema: &Value) -> Result<Validator> {
        let mut reached = BTreeSet::new();
        let mut pending = vec![schema];
        while let Some(next) = pending.pop() {
            let mut refs = Vec::new();
            collect_schema_refs(next, &mut refs);
            for name in refs {
                if reached.insert(name.clone()) {
                    let Some(target) = self.schemas.get(&name) else {
                        bail!("$ref to missing schema {SCHEMA_REF_PREFIX}{name}");
                    };
                    pending.push(target);
                }
            }
        }
        let components: Map<String, Value> = reached
            .into_iter()
            .filter_map(|name| {
                let converted = openapi_to_json_schema(self.schemas.get(&name)?);
                Some((name, converted))
            })
            .collect();
        let mut root = match openapi_to_json_schema(schema) {
            Value::Object(map) => map,
            other => bail!("schema is not an object: {other}"),
        };
        // Draft 4 ignores a `$ref`'s siblings when validating, so the root
        // can hold the components its pointers resolve into.
        let wrapped = if root.contains_key("$ref") {
            json!({ "allOf": [Value::Object(root)], "components": { "schemas": components } })
        } else {
            root.insert("components".into(), json!({ "schemas": components }));
            Value::Object(root)
        };
        jsonschema::options()
            .with_draft(Draft::Draft4)
            .should_validate_formats(true)
            .build(&wrapped)
            .map_err(|e| anyhow::anyhow!("invalid schema: {e}"))
    }
}

impl Operation {
    fn parse(
        method: &str,
        template: &str,
        shared: Option<&Vec<Value>>,
        op: &Value,
        components: &Value,
    ) -> Result<Operation> {
        let mut parameters: Vec<Parameter> = Vec::new();
        let own = op.get("parameters").and_then(Value::as_array);
        for raw in shared
            .into_iter()
            .flatten()
            .chain(own.into_iter().flatten())
        {
            let param = resolve(raw, components)?;
            let (Some(name), Some(location)) = (
                param.get("name").and_then(Value::as_str),
                param.get("in").and_then(Value::as_str),
            ) else {
                bail!("parameter without `name`/`in`: {param}");
            };
            // An operation's own parameter overrides a path-level one.
            parameters.retain(|p| !(p.name == name && p.location == location));
            parameters.push(Parameter {
                name: name.to_string(),
                location: location.to_string(),
                required: param.get("required").and_then(Value::as_bool) == Some(true),
                schema: param.get("schema").cloned().unwrap_or_else(|| json!({})),
            });
        }
        let body = match op.get("requestBody") {
            Some(raw) => {
                let body = resolve(raw, components)?;
                Some(RequestBody {
                    required: body.get("required").and_then(Value::as_bool) == Some(true),
                    schema: json_schema_of(body),
                })
            }
            None => None,
        };
        let mut responses = BTreeMap::new();
        for (status, raw) in op
            .get("responses")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let response = resolve(raw, components)?;
            responses.insert(status.clone(), json_schema_of(response));
        }
        let segments = template
            .split('/')
            .map(|seg| {
                let is_param = seg.starts_with('{') && seg.ends_with('}');
                (!is_param).then(|| seg.to_string())
            })
            .collect();
        Ok(Operation {
            method: method.to_ascii_uppercase(),
            template: template.to_string(),
            segments,
            parameters,
            body,
            responses,
        })
    }
}

/// Follows a `#/components/<kind>/<name>` reference (parameters, responses,
/// request bodies) to the object it names.
fn resolve<'a>(value: &'a Value, components: &'a Value) -> Result<&'a Value> {
    let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
        return Ok(value);
    };
    let Some(pointer) = reference.strip_prefix("#/components") else {
        bail!("unsupported $ref {reference}");
    };
    components
        .pointer(pointer)
        .with_context(|| format!("$ref {reference} names nothing"))
}

/// The `application/json` schema of a response or request body.
fn json_schema_of(body: &Value) -> Option<Value> {
    body.get("content")?
        .get("application/json")?
        .get("schema")
        .cloned()
}

fn collect_schema_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(SCHEMA_REF_PREFIX))
            {
                out.push(name.to_string());
            }
            map.values().for_each(|v| collect_schema_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_schema_refs(v, out)),
        _ => {}
    }
}

/// OpenAPI 3.0 schema -> JSON Schema draft 4: a `nullable: true` schema
/// becomes `anyOf: [{type: null}, schema]` (which also admits null where the
/// schema has an `enum` or is only a `$ref`).
pub fn openapi_to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut converted: Map<String, Value> = map
                .iter()
                .filter(|(k, _)| k.as_str() != "nullable")
                .map(|(k, v)| (k.clone(), convert_child(k, v)))
                .collect();
            if map.get("nullable").and_then(Value::as_bool) == Some(true) {
                // Keep the `$ref` out of the converted schema's top level:
                // draft 4 would ignore the `anyOf` beside it.
                let inner = Value::Object(std::mem::take(&mut converted));
                json!({ "anyOf": [{ "type": "null" }, inner] })
            } else {
                Value::Object(converted)
            }
        }
        other => other.clone(),
    }
}

/// Converts the schemas below keyword `key`, leaving data (`enum`,
/// `example`, `default`, ...) as it is.
fn convert_child(key: &str, value: &Value) -> Value {
    match key {
        "items" | "not" | "additionalProperties" => openapi_to_json_schema(value),
        "allOf" | "anyOf" | "oneOf" => match value {
            Value::Array(items) => Value::Array(items.iter().map(openapi_to_json_schema).collect()),
            other => other.clone(),
        },
        "properties" => match value {
            Value::Object(props) => Value::Object(
                props
                    .iter()
                    .map(|(name, s)| (name.clone(), openapi_to_json_schema(s)))
                    .collect(),
            ),
            other => other.clone(),
        },
        _ => value.clone(),
    }
}

/// A query or path parameter's text as the JSON value its schema describes
/// (`form` style with `explode`, OpenAPI's default: repeated keys for arrays).
fn typed_param_value(schema: &Value, raw: &[String]) -> std::result::Result<Value, String> {
    let kind = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string");
    if kind == "array" {
        let items = schema.get("items").unwrap_or(&Value::Null);
        let values: std::result::Result<Vec<Value>, String> =
            raw.iter().map(|r| typed_scalar(items, r)).collect();
        return values.map(Value::Array);
    }
    match raw {
        [one] => typed_scalar(schema, one),
        _ => Err(format!("given {} times, but it is not an array", raw.len())),
    }
}

fn typed_scalar(schema: &Value, raw: &str) -> std::result::Result<Value, String> {
    match schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string")
    {
        "integer" => raw
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{raw:?} is not an integer")),
        "number" => raw
            .parse::<f64>()
            .ok()
            .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
            .ok_or_else(|| format!("{raw:?} is not a number")),
        "boolean" => match raw {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("{raw:?} is not `true` or `false`")),
        },
        _ => Ok(Value::String(raw.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_becomes_any_of_null() {
        let converted = openapi_to_json_schema(&json!({
            "type": "object",
            "properties": {
                "d": { "type": "string", "enum": ["a"], "nullable": true },
                "r": { "$ref": "#/components/schemas/x", "nullable": true },
            }
        }));
        assert_eq!(
            converted["properties"]["d"],
            json!({ "anyOf": [{ "type": "null" }, { "type": "string", "enum": ["a"] }] })
        );
        assert_eq!(
            converted["properties"]["r"],
            json!({ "anyOf": [{ "type": "null" }, { "$ref": "#/components/schemas/x" }] })
        );
    }

    #[test]
    fn query_values_are_typed_by_their_schema() {
        let int = json!({ "type": "integer" });
        assert_eq!(typed_param_value(&int, &["3".into()]), Ok(json!(3)));
        assert!(typed_param_value(&int, &["three".into()]).is_err());
        assert!(typed_param_value(&int, &["1".into(), "2".into()]).is_err());
        let list = json!({ "type": "array", "items": { "type": "integer" } });
        assert_eq!(
            typed_param_value(&list, &["1".into(), "2".into()]),
            Ok(json!([1, 2]))
        );
    }
}
