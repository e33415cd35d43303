//! A Swagger 2.0 description (GitLab's `openapi_v2.yaml`, Gitea's
//! `swagger.v1.json`) turned into the OpenAPI 3.0 form the contract checker
//! reads ([`crate::github::Contract`], which the fake GitHub uses on GitHub's
//! own description), so one checker holds every fake to its host's word.
//!
//! The conversion is the standard one (Swagger 2.0 is OpenAPI 2.0):
//! `#/definitions/...` become `#/components/schemas/...`; a parameter's
//! `type`/`format`/`enum`/`items` become its `schema`; an `in: body`
//! parameter becomes the `requestBody`; `#/parameters/` and `#/responses/`
//! references are resolved; a response's `schema` becomes its
//! `application/json` content; `formData` parameters (uploads) are left out.
//! Two adjustments make the result say what the hosts do:
//! - `type: file` (an upload) is not a JSON type: it accepts anything;
//! - Swagger 2.0 cannot say that a property may be `null` (only the
//!   `x-nullable` extension can, and neither GitLab's nor Gitea's generator
//!   writes it), yet both hosts send `null` for unset properties
//!   (`"description": null`). A property that is not `required` is therefore
//!   `nullable`; a required one is not.
//!
//! A description may carry `x-ferry-errata`: corrections of places where the
//! published description contradicts what the host sends, each with a JSON
//! pointer, the replacement schema and why. They are applied when loading,
//! so every gap is written down next to the text it corrects.
//!
//! An OpenAPI 3.0 description (Gitea's, as the APIs.guru collection publishes
//! it on npm) is taken as it is. The base path (Swagger's `basePath`, or the
//! path of OpenAPI's first server: Gitea's `/api/v1`) is returned beside the
//! contract: request paths are matched without it.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::github::{Contract, Unsaid};

const DEFINITION_REF_PREFIX: &str = "#/definitions/";
const SCHEMA_REF_PREFIX: &str = "#/components/schemas/";

/// Loads the description at `path` (Swagger 2.0 or OpenAPI 3.0), amended by
/// `amend`, as a contract with `unsaid`'s rules; also returns its base path.
pub fn load(
    path: &Path,
    unsaid: Unsaid,
    amend: fn(&mut Value) -> Result<()>,
) -> Result<(Arc<Contract>, String)> {
    let text = std::fs::read(path)
        .with_context(|| format!("failed to read the API description {}", path.display()))?;
    let mut doc: Value =
        serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    apply_errata(&mut doc).with_context(|| format!("{}: x-ferry-errata", path.display()))?;
    amend(&mut doc).with_context(|| format!("{}: amending", path.display()))?;
    let (base, converted) = if doc.get("swagger").and_then(Value::as_str) == Some("2.0") {
        let base = doc.get("basePath").and_then(Value::as_str).unwrap_or("");
        let converted = to_openapi3(&doc).with_context(|| path.display().to_string())?;
        (base.to_string(), converted)
    } else {
        let server = doc
            .pointer("/servers/0/url")
            .and_then(Value::as_str)
            .unwrap_or("");
        // A server URL may be absolute; only its path prefixes requests.
        let base = match server.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("", |at| &rest[at..]),
            None => server,
        };
        (base.to_string(), doc.clone())
    };
    let contract = Contract::from_document(path, &converted, unsaid)?;
    Ok((Arc::new(contract), base.trim_end_matches('/').to_string()))
}

/// Swagger 2.0 -> OpenAPI 3.0 (see the module documentation).
fn to_openapi3(doc: &Value) -> Result<Value> {
    let shared_params = doc.get("parameters").cloned().unwrap_or(Value::Null);
    let shared_responses = doc.get("responses").cloned().unwrap_or(Value::Null);
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        bail!("no `paths`");
    };
    let mut out = Map::new();
    for (template, item) in paths {
        let shared = item.get("parameters").and_then(Value::as_array);
        let mut converted = Map::new();
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            let Some(op) = item.get(method) else {
                continue;
            };
            let mut parameters = Vec::new();
            let mut operation = Map::new();
            let own = op.get("parameters").and_then(Value::as_array);
            for raw in shared
                .into_iter()
                .flatten()
                .chain(own.into_iter().flatten())
            {
                let param = resolve(raw, "#/parameters/", &shared_params)?;
                let required = param.get("required").and_then(Value::as_bool) == Some(true);
                match param.get("in").and_then(Value::as_str) {
                    Some("body") => {
                        let body = param.get("schema").map(schema).unwrap_or_else(|| json!({}));
                        operation.insert(
                            "requestBody".into(),
                            json!({ "required": required,
                                    "content": { "application/json": { "schema": body } } }),
                        );
                    }
                    Some("formData") => {}
                    Some(location) => {
                        let kept: Map<String, Value> = param
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(k, _)| {
                                [
                                    "type", "format", "enum", "items", "minimum", "maximum",
                                    "pattern",
                                ]
                                .contains(&k.as_str())
                            })
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        parameters.push(json!({
                            "name": param.get("name").cloned().unwrap_or(Value::Null),
                            "in": location,
                            "required": required,
                            "schema": schema(&Value::Object(kept)),
                        }));
                    }
                    None => bail!("parameter without `in`: {param}"),
                }
            }
            let mut responses = Map::new();
            for (status, raw) in op
                .get("responses")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let response = resolve(raw, "#/responses/", &shared_responses)?;
                let mut converted = json!({ "description": response.get("description").cloned().unwrap_or_default() });
                if let Some(body) = response.get("schema") {
                    converted["content"] =
                        json!({ "application/json": { "schema": schema(body) } });
                }
                responses.insert(status.clone(), converted);
            }
            operation.insert("parameters".into(), Value::Array(parameters));
            operation.insert("responses".into(), Value::Object(responses));
            converted.insert(method.to_string(), Value::Object(operation));
        }
        out.insert(template.clone(), Value::Object(converted));
    }
    let schemas: Map<String, Value> = doc
        .get("definitions")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, s)| (name.clone(), schema(s)))
        .collect();
    Ok(json!({
        "openapi": "3.0.3",
        "paths": out,
        "components": { "schemas": schemas },
    }))
}

/// Follows a `{"$ref": "<prefix><name>"}` into `shared`.
fn resolve<'a>(value: &'a Value, prefix: &str, shared: &'a Value) -> Result<&'a Value> {
    let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
        return Ok(value);
    };
    let name = reference
        .strip_prefix(prefix)
        .with_context(|| format!("unsupported $ref {reference}"))?;
    shared
        .get(name)
        .with_context(|| format!("$ref {reference} names nothing"))
}

/// One Swagger 2.0 schema as an OpenAPI 3.0 schema (see the module documentation).
fn schema(v: &Value) -> Value {
    let Value::Object(map) = v else {
        return v.clone();
    };
    if map.get("type").and_then(Value::as_str) == Some("file") {
        return json!({});
    }
    let required: Vec<&str> = map
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Map::new();
    for (key, value) in map {
        let value = match key.as_str() {
            "$ref" => match value
                .as_str()
                .and_then(|r| r.strip_prefix(DEFINITION_REF_PREFIX))
            {
                Some(name) => Value::String(format!("{SCHEMA_REF_PREFIX}{name}")),
                None => value.clone(),
            },
            "items" | "additionalProperties" | "not" => schema(value),
            "allOf" | "anyOf" | "oneOf" => match value {
                Value::Array(items) => Value::Array(items.iter().map(schema).collect()),
                other => other.clone(),
            },
            "properties" => match value {
                Value::Object(props) => Value::Object(
                    props
                        .iter()
                        .map(|(name, s)| {
                            let mut s = schema(s);
                            if !required.contains(&name.as_str()) {
                                if let Value::Object(fields) = &mut s {
                                    fields.insert("nullable".into(), Value::Bool(true));
                                }
                            }
                            (name.clone(), s)
                        })
                        .collect(),
                ),
                other => other.clone(),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    Value::Object(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_properties_become_nullable_refs_move_and_files_accept_anything() {
        let s = schema(&json!({
            "type": "object",
            "required": ["id"],
            "properties": { "id": { "type": "integer" }, "d": { "type": "string" },
                            "f": { "type": "file" }, "r": { "$ref": "#/definitions/R" } }
        }));
        assert_eq!(s["properties"]["id"], json!({ "type": "integer" }));
        assert_eq!(
            s["properties"]["d"],
            json!({ "type": "string", "nullable": true })
        );
        assert_eq!(s["properties"]["f"], json!({ "nullable": true }));
        assert_eq!(
            s["properties"]["r"],
            json!({ "$ref": "#/components/schemas/R", "nullable": true })
        );
    }

    #[test]
    fn bodies_parameters_and_shared_responses_are_converted() {
        let doc = json!({
            "swagger": "2.0",
            "paths": { "/x/{id}": { "post": {
                "parameters": [
                    { "name": "id", "in": "path", "required": true, "type": "integer" },
                    { "name": "body", "in": "body", "schema": { "$ref": "#/definitions/B" } }
                ],
                "responses": { "201": { "$ref": "#/responses/X" }, "404": { "description": "gone" } }
            } } },
            "responses": { "X": { "description": "X", "schema": { "$ref": "#/definitions/B" } } },
            "definitions": { "B": { "type": "object" } }
        });
        let v = to_openapi3(&doc).unwrap();
        let op = &v["paths"]["/x/{id}"]["post"];
        assert_eq!(op["parameters"][0]["schema"], json!({ "type": "integer" }));
        assert_eq!(
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/B"
        );
        assert_eq!(
            op["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/B"
        );
        assert!(op["responses"]["404"].get("content").is_none());
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
