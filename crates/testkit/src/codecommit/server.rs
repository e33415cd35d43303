//! One request to the fake: the `json` 1.1 protocol's envelope, SigV4,
//! injected faults, the model's checks both ways, and the account's answer.

use std::io::Read;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::sigv4::{Signed, Verifier};
use super::{FaultKind, Shared, State};

/// Larger request bodies are refused (CodeCommit requests are tiny).
const MAX_BODY: u64 = 1024 * 1024;

const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// An answer: status, body, and whether to cut the body short.
struct Reply {
    status: u16,
    body: Value,
    truncated: bool,
}

fn error(status: u16, kind: &str, message: &str) -> Reply {
    Reply {
        status,
        body: json!({ "__type": kind, "message": message }),
        truncated: false,
    }
}

struct Incoming {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) fn answer(shared: &Shared, mut request: tiny_http::Request) {
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.to_string(),
            )
        })
        .collect();
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body);
    let incoming = Incoming {
        method: request.method().as_str().to_ascii_uppercase(),
        url: request.url().to_string(),
        headers,
        body,
    };
    let reply = {
        let mut state = shared.state();
        match read {
            Ok(_) => handle(shared, &mut state, &incoming),
            Err(e) => error(
                400,
                "SerializationException",
                &format!("failed to read the request body: {e}"),
            ),
        }
    };
    let mut bytes = reply.body.to_string().into_bytes();
    if reply.truncated {
        bytes.truncate(bytes.len() / 2);
    }
    let mut response = tiny_http::Response::from_data(bytes).with_status_code(reply.status);
    let request_id = format!("{:032x}", request_id_of(&incoming));
    for (name, value) in [
        ("Content-Type", CONTENT_TYPE),
        ("x-amzn-RequestId", &request_id),
    ] {
        if let Ok(header) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(header);
        }
    }
    // A client that hung up needs no answer.
    let _ = request.respond(response);
}

/// A request id (AWS sends one with every answer): a hash of the request.
fn request_id_of(incoming: &Incoming) -> u128 {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(&incoming.body);
    for (name, value) in &incoming.headers {
        hasher.update(name.as_bytes());
        hasher.update(value.as_bytes());
    }
    let digest = hasher.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(id)
}

fn handle(shared: &Shared, state: &mut State, incoming: &Incoming) -> Reply {
    state.counters.requests += 1;
    let target = incoming.header("x-amz-target").unwrap_or("");
    let operation = target
        .strip_prefix(&shared.model.target_prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or("");
    let reply = envelope_and_answer(shared, state, incoming, operation);
    let problems = if reply.status == 200 {
        shared.model.check_output(operation, &reply.body)
    } else {
        shared
            .model
            .check_error(operation, reply.status, &reply.body)
    };
    for problem in problems {
        state
            .violations
            .push(format!("{target}: answer {}: {problem}", reply.status));
    }
    reply
}

fn envelope_and_answer(
    shared: &Shared,
    state: &mut State,
    incoming: &Incoming,
    operation: &str,
) -> Reply {
    let (path, query) = incoming
        .url
        .split_once('?')
        .unwrap_or((incoming.url.as_str(), ""));
    let mut problems = Vec::new();
    if incoming.method != "POST" || path != "/" || !query.is_empty() {
        problems.push(format!(
            "{} {}: the json protocol sends POST /",
            incoming.method, incoming.url
        ));
    }
    let content_type = incoming.header("content-type").unwrap_or("");
    if content_type.split(';').next().map(str::trim) != Some(CONTENT_TYPE) {
        problems.push(format!(
            "Content-Type {content_type:?}: the json 1.1 protocol sends {CONTENT_TYPE}"
        ));
    }
    if shared.model.operation(operation).is_none() {
        problems.push(format!(
            "X-Amz-Target {:?} names no operation of {} in the model",
            incoming.header("x-amz-target").unwrap_or(""),
            shared.model.target_prefix
        ));
    }
    if !problems.is_empty() {
        return refuse(state, operation, "UnknownOperationException", problems);
    }
    *state
        .counters
        .by_operation
        .entry(operation.to_string())
        .or_default() += 1;

    let verifier = Verifier {
        access_key_id: &shared.access_key_id,
        secret_access_key: &shared.secret_access_key,
        region: &shared.setting.region,
        service: &shared.model.signing_name,
    };
    let signed = Signed {
        method: &incoming.method,
        path,
        query,
        headers: &incoming.headers,
        body: &incoming.body,
    };
    if let Err(refusal) = verifier.verify(&signed, SystemTime::now()) {
        state.counters.auth_failures += 1;
        let status = super::model::COMMON_ERRORS
            .iter()
            .find(|(kind, _)| *kind == refusal.kind)
            .map_or(400, |(_, status)| *status);
        return error(status, refusal.kind, &refusal.message);
    }

    if incoming.body.len() as u64 > MAX_BODY {
        let problem = format!("request body larger than {MAX_BODY} bytes");
        return refuse(state, operation, "SerializationException", vec![problem]);
    }
    let input: Value = match serde_json::from_slice(&incoming.body) {
        Ok(input) => input,
        Err(e) => {
            let problem = format!("the request body is not JSON: {e}");
            return refuse(state, operation, "SerializationException", vec![problem]);
        }
    };
    let problems = shared.model.check_input(operation, &input);
    if !problems.is_empty() {
        return refuse(state, operation, "ValidationException", problems);
    }

    let fault = state
        .faults
        .iter_mut()
        .find(|f| f.operation == operation && f.remaining > 0);
    let mut truncated = false;
    if let Some(fault) = fault {
        fault.remaining -= 1;
        match fault.kind {
            FaultKind::Fail => {
                return error(
                    500,
                    "InternalFailure",
                    "injected failure (ferry-testkit fail_next)",
                )
            }
            FaultKind::Throttle => return error(400, "ThrottlingException", "Rate exceeded"),
            FaultKind::Truncate => truncated = true,
        }
    }
    let answered = state.account.dispatch(&shared.setting, operation, &input);
    let mut reply = match answered {
        Some(Ok(body)) => Reply {
            status: 200,
            body,
            truncated: false,
        },
        Some(Err((kind, message))) => {
            let status = if kind == "InternalFailure" { 500 } else { 400 };
            error(status, kind, &message)
        }
        None => {
            let problem = "the fake does not implement this operation".to_string();
            return refuse(state, operation, "UnknownOperationException", vec![problem]);
        }
    };
    reply.truncated = truncated;
    reply
}

/// Records a request's violations and answers 400 `kind` with them.
fn refuse(state: &mut State, operation: &str, kind: &str, problems: Vec<String>) -> Reply {
    let text = format!("{operation}: {}", problems.join("; "));
    state.violations.push(text.clone());
    error(
        400,
        kind,
        &format!("the request violates CodeCommit's model: {text}"),
    )
}
