//! A Swagger 2.0 description (GitLab's `openapi_v2.yaml`, Gitea's
//! `swagger.v1.json`) as a contract: finds the operation a request is for
//! and checks requests and answers against it.
//!
//! Swagger 2.0 schemas are a subset of JSON Schema draft 4, so they are
//! compiled as draft 4 after three adjustments:
//! - `$ref`s to `#/definitions/...` resolve inside each compiled schema (it
//!   carries the definitions it reaches);
//! - `type: file` (an upload) is not a JSON type: it accepts anything;
//! - Swagger 2.0 cannot say that a property may be `null` (only the
//!   `x-nullable` extension can, and neither GitLab's nor Gitea's generator
//!   writes it), yet both hosts send `null` for unset properties
//!   (`"description": null`). A property that is not `required` therefore
//!   also admits `null`; a required one does not.
//!
//! A description may carry `x-ferry-errata`: corrections of places where the
//! published description contradicts what the host sends, each with a JSON
//! pointer, the replacement schema and why. They are applied when loading,
//! so every gap is written down next to the text it corrects.
//!
//! Not checked: headers (`Link`, rate limits, `ETag`), `formData`
//! parameters, and content types other than JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{bail, Context, Result};
use jsonschema::{Draft, Validator};
use serde_json::{json, Map, Value};

const DEFINITION_REF_PREFIX: &str = "#/definitions/";

/// Where a description is loaded once (see [`Contract::load`]).
type Slot = Arc<OnceLock<Arc<Contract>>>;

/// One loaded Swagger 2.0 description.
pub struct Contract {
    path: PathBuf,
    /// `basePath` (`/api/v1` for Gitea; GitLab's paths carry `/api/v4` themselves).
    base_path: String,
    operations: Vec<Operation>,
    definitions: Map<String, Value>,
    /// Statuses the host may send from any operation without the operation
    /// documenting them (errors, 304); their bodies are not checked.
    cross_cutting: Vec<u16>,
    validators: Mutex<HashMap<String, Arc<Validator>>>,
}

/// The operation a request matched.
#[derive(Debug, Clone)]
pub struct Matched {
    index: usize,
    /// Path template without the base path, e.g. `/api/v4/projects/{id}`.
    pub template: String,
    /// Upper-case method.
    pub method: String,
    /// Percent-decoded path parameters by name.
    pub path_params: BTreeMap<String, String>,
}

struct Operation {
    method: String,
    template: String,
    segments: Vec<Option<String>>,
    parameters: Vec<Parameter>,
    body: Option<(bool, Value)>,
    /// Status (or `default`) -> its schema, if it has one.
    responses: BTreeMap<String, Option<Value>>,
}

struct Parameter {
    name: String,
    location: String,
    required: bool,
    schema: Value,
}

impl Contract {
    /// Loads the description at `path` once per process; `cross_cutting`
    /// lists the statuses any operation may answer.
    pub fn load(path: &Path, cross_cutting: &[u16]) -> Result<Arc<Contract>> {
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
        let contract = Arc::new(Contract::parse(path, cross_cutting)?);
        Ok(slot.get_or_init(|| contract).clone())
    }

    fn parse(path: &Path, cross_cutting: &[u16]) -> Result<Contract> {
        let text = std::fs::read(path)
            .with_context(|| format!("failed to read the API description {}", path.display()))?;
        let mut doc: Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        if doc.get("swagger").and_then(Value::as_str) != Some("2.0") {
            bail!("{} is not a Swagger 2.0 description", path.display());
        }
        apply_errata(&mut doc).with_context(|| format!("{}: x-ferry-errata", path.display()))?;
        let base_path = doc
            .get("basePath")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim_end_matches('/')
            .to_string();
        let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
            bail!("{} has no `paths`", path.display());
        };
        let shared_params = doc.get("parameters").cloned().unwrap_or(Value::Null);
        let shared_responses = doc.get("responses").cloned().unwrap_or(Value::Null);
        let mut operations = Vec::new();
        for (template, item) in paths {
            let shared = item.get("parameters").and_then(Value::as_array);
            for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
                if let Some(op) = item.get(method) {
                    operations.push(
                        Operation::parse(
                            method,
                            template,
                            shared,
                            op,
                            (&shared_params, &shared_responses),
                        )
                        .with_context(|| format!("{}: {method} {template}", path.display()))?,
                    );
                }
            }
        }
        let definitions = doc
            .get("definitions")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Ok(Contract {
            path: path.to_path_buf(),
            base_path,
            operations,
            definitions,
            cross_cutting: cross_cutting.to_vec(),
            validators: Mutex::new(HashMap::new()),
        })
    }

    /// The operation for `method` and a (percent-encoded) request path; the
    /// template with most literal segments wins.
    pub fn find(&self, method: &str, path: &str) -> Option<Matched> {
        let path = path.strip_prefix(&self.base_path)?;
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

    /// Problems with a request: path and query parameters (documented,
    /// typed, required) and the JSON body against its schema.
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
            (Some((true, _)), None) => {
                problems.push("the operation requires a JSON request body".into())
            }
            (Some((_, schema)), Some(body)) => {
                let key = format!("{} {} body", op.method, op.template);
                self.check_schema(&key, schema, body, "request body", &mut problems);
            }
            _ => {}
        }
        problems
    }

    /// Problems with an answer: a documented status (or a cross-cutting one)
    /// and a body matching its schema.
    pub fn check_response(&self, op: &Matched, status: u16, body: Option<&Value>) -> Vec<String> {
        let operation = &self.operations[op.index];
        let code = status.to_string();
        let schema = match operation
            .responses
            .get(&code)
            .or_else(|| operation.responses.get("default"))
        {
            Some(schema) => schema.as_ref(),
            None if self.cross_cutting.contains(&status) => return Vec::new(),
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
                let key = format!("{} {} {code}", op.method, op.template);
                self.check_schema(&key, schema, body, "response body", &mut problems);
            }
            (Some(_), None) => problems.push(format!(
                "status {status} must have a JSON body, none was sent"
            )),
            // A response documented without a schema may still carry one
            // (GitLab documents `202 Delete a project` without saying what
            // it sends); nothing can be checked.
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

    fn compile(&self, schema: &Value) -> Result<Validator> {
        let mut reached = BTreeSet::new();
        let mut pending = vec![schema];
        while let Some(next) = pending.pop() {
            let mut refs = Vec::new();
            collect_refs(next, &mut refs);
            for name in refs {
                if reached.insert(name.clone()) {
                    let Some(target) = self.definitions.get(&name) else {
                        bail!("$ref to missing definition {DEFINITION_REF_PREFIX}{name}");
                    };
                    pending.push(target);
                }
            }
        }
        let definitions: Map<String, Value> = reached
            .into_iter()
            .filter_map(|name| {
                let converted = to_json_schema(self.definitions.get(&name)?);
                Some((name, converted))
            })
            .collect();
        // Draft 4 ignores a `$ref`'s siblings, so the definitions ride beside
        // the schema inside an `allOf`.
        let wrapped = json!({ "allOf": [to_json_schema(schema)], "definitions": definitions });
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
        (shared_params, shared_responses): (&Value, &Value),
    ) -> Result<Operation> {
        let mut parameters: Vec<Parameter> = Vec::new();
        let mut body = None;
        let own = op.get("parameters").and_then(Value::as_array);
        for raw in shared
            .into_iter()
            .flatten()
            .chain(own.into_iter().flatten())
        {
            let param = match raw.get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    let name = reference
                        .strip_prefix("#/parameters/")
                        .with_context(|| format!("unsupported $ref {reference}"))?;
                    shared_params
                        .get(name)
                        .with_context(|| format!("$ref {reference} names nothing"))?
                }
                None => raw,
            };
            let (Some(name), Some(location)) = (
                param.get("name").and_then(Value::as_str),
                param.get("in").and_then(Value::as_str),
            ) else {
                bail!("parameter without `name`/`in`: {param}");
            };
            let required = param.get("required").and_then(Value::as_bool) == Some(true);
            if location == "body" {
                let schema = param.get("schema").cloned().unwrap_or_else(|| json!({}));
                body = Some((required, schema));
                continue;
            }
            // A Swagger 2.0 parameter is its own schema (type, format, enum, items...).
            let schema: Map<String, Value> = param
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| {
                    [
                        "type", "format", "enum", "items", "minimum", "maximum", "pattern",
                    ]
                    .contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            parameters.retain(|p| !(p.name == name && p.location == location));
            parameters.push(Parameter {
                name: name.to_string(),
                location: location.to_string(),
                required,
                schema: Value::Object(schema),
            });
        }
        let mut responses = BTreeMap::new();
        for (status, response) in op
            .get("responses")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            // Gitea names shared answers: `{"$ref": "#/responses/Repository"}`.
            let response = match response.get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    let name = reference
                        .strip_prefix("#/responses/")
                        .with_context(|| format!("unsupported $ref {reference}"))?;
                    shared_responses
                        .get(name)
                        .with_context(|| format!("$ref {reference} names nothing"))?
                }
                None => response,
            };
            responses.insert(status.clone(), response.get("schema").cloned());
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

/// Applies `x-ferry-errata` (`[{pointer, schema, why}]`) in place.
fn apply_errata(doc: &mut Value) -> Result<()> {
    let errata = doc
        .get("x-ferry-errata")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for erratum in errata {
        let (Some(pointer), Some(schema), Some(_why)) = (
            erratum.get("pointer").and_then(Value::as_str),
            erratum.get("schema"),
            erratum.get("why").and_then(Value::as_str),
        ) else {
            bail!("an erratum needs pointer, schema and why: {erratum}");
        };
        let Some(target) = doc.pointer_mut(pointer) else {
            bail!("erratum {pointer} names nothing");
        };
        *target = schema.clone();
    }
    Ok(())
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(DEFINITION_REF_PREFIX))
            {
                out.push(name.to_string());
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Swagger 2.0 schema -> JSON Schema draft 4 (see the module documentation).
pub fn to_json_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    if map.get("type").and_then(Value::as_str) == Some("file") {
        return json!({});
    }
    let required: Vec<&str> = map
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut converted = Map::new();
    for (key, value) in map {
        let value = match key.as_str() {
            "items" | "additionalProperties" | "not" => to_json_schema(value),
            "allOf" | "anyOf" | "oneOf" => match value {
                Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
                other => other.clone(),
            },
            "properties" => match value {
                Value::Object(props) => Value::Object(
                    props
                        .iter()
                        .map(|(name, s)| {
                            let s = to_json_schema(s);
                            let s = if required.contains(&name.as_str()) {
                                s
                            } else {
                                json!({ "anyOf": [{ "type": "null" }, s] })
                            };
                            (name.clone(), s)
                        })
                        .collect(),
                ),
                other => other.clone(),
            },
            // Data, not schemas (`example` may even contradict the type).
            "example" | "x-go-name" | "x-go-package" => continue,
            _ => value.clone(),
        };
        converted.insert(key.clone(), value);
    }
    Value::Object(converted)
}

/// A query or path parameter's text as the JSON value its schema describes
/// (arrays: repeated keys, or `name[]` as Grape takes them).
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
    fn optional_properties_admit_null_and_required_ones_do_not() {
        let schema = to_json_schema(&json!({
            "type": "object",
            "required": ["id"],
            "properties": { "id": { "type": "integer" }, "d": { "type": "string" },
                            "f": { "type": "file" } }
        }));
        let v = jsonschema::options()
            .with_draft(Draft::Draft4)
            .build(&schema)
            .unwrap();
        assert!(v.is_valid(&json!({ "id": 1, "d": null, "f": "anything" })));
        assert!(!v.is_valid(&json!({ "id": null })));
        assert!(!v.is_valid(&json!({ "id": 1, "d": 3 })));
    }

    #[test]
    fn errata_replace_what_they_point_at_and_need_a_reason() {
        let mut doc = json!({
            "definitions": { "G": { "properties": { "id": { "type": "string" } } } },
            "x-ferry-errata": [{ "pointer": "/definitions/G/properties/id",
                                 "schema": { "type": "integer" }, "why": "sent as a number" }]
        });
        apply_errata(&mut doc).unwrap();
        assert_eq!(
            doc["definitions"]["G"]["properties"]["id"]["type"],
            "integer"
        );
        let mut bad = json!({ "x-ferry-errata": [{ "pointer": "/x", "schema": {} }] });
        assert!(apply_errata(&mut bad).is_err());
    }
}
