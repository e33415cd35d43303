//! One request through the fake: contract check, injected faults, auth,
//! primary rate limit, the operation, conditional GET, answer check and the
//! rate-limit headers GitHub sends on every answer.

use std::io::Read;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::contract::Matched;
use super::endpoints::{self, Call, Reply};
use super::model::State;
use super::Shared;

/// Larger request bodies are refused (GitHub's repository requests are tiny).
const MAX_BODY: u64 = 1024 * 1024;

const RATE_LIMIT_DOCS: &str = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api";

pub(super) fn answer(shared: &Shared, mut request: tiny_http::Request) {
    let header = |name: &'static str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_string())
    };
    let authorization = header("Authorization");
    let if_none_match = header("If-None-Match");
    let method = request.method().as_str().to_ascii_uppercase();
    let url = request.url().to_string();
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body);
    let incoming = Incoming {
        method: &method,
        url: &url,
        authorization: authorization.as_deref(),
        if_none_match: if_none_match.as_deref(),
        body: read.map(|_| body).map_err(|e| e.to_string()),
    };
    let reply = {
        let mut state = shared.state();
        let mut reply = handle(shared, &mut state, &incoming);
        let quota = &state.quota;
        let remaining = quota.limit.saturating_sub(quota.used);
        for (name, value) in [
            ("x-ratelimit-limit", quota.limit.to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-used", quota.used.to_string()),
            ("x-ratelimit-reset", quota.reset_epoch().to_string()),
            ("x-ratelimit-resource", "core".to_string()),
        ] {
            reply.headers.push((name.to_string(), value));
        }
        reply
    };
    let bytes = reply
        .body
        .as_ref()
        .map(|b| b.to_string().into_bytes())
        .unwrap_or_default();
    let mut response = tiny_http::Response::from_data(bytes).with_status_code(reply.status);
    let content_type = reply
        .body
        .is_some()
        .then_some(("Content-Type", "application/json; charset=utf-8"));
    let headers = reply.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    for (name, value) in content_type.into_iter().chain(headers) {
        // Every header is ASCII (names are sanitized like GitHub's), so none is dropped.
        if let Ok(header) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(header);
        }
    }
    // A client that hung up needs no answer.
    let _ = request.respond(response);
}

struct Incoming<'a> {
    method: &'a str,
    url: &'a str,
    authorization: Option<&'a str>,
    if_none_match: Option<&'a str>,
    body: Result<Vec<u8>, String>,
}

fn handle(shared: &Shared, state: &mut State, incoming: &Incoming) -> Reply {
    let (method, url) = (incoming.method, incoming.url);
    state.counters.requests += 1;
    let (path, raw_query) = url.split_once('?').unwrap_or((url, ""));
    let query: Vec<(String, String)> = form_urlencoded::parse(raw_query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();

    let Some(op) = shared.contract.find(method, path) else {
        state.record_violation(format!(
            "{method} {url}: no operation in GitHub's OpenAPI description has this method and path"
        ));
        return Reply::error(404, "Not Found");
    };
    *state
        .counters
        .by_operation
        .entry(format!("{} {}", op.method, op.template))
        .or_default() += 1;
    let body = match parse_body(&incoming.body) {
        Ok(body) => body,
        Err(problem) => return refuse(state, method, url, &op, &[problem]),
    };
    let problems = shared.contract.check_request(&op, raw_query, body.as_ref());
    if !problems.is_empty() {
        return refuse(state, method, url, &op, &problems);
    }

    let reply = respond(shared, state, incoming, &op, path, &query, body.as_ref());
    for problem in shared
        .contract
        .check_response(&op, reply.status, reply.body.as_ref())
    {
        state.record_violation(format!(
            "{method} {url} ({} {}): answer {}: {problem}",
            op.method, op.template, reply.status
        ));
    }
    reply
}

/// Records a request's contract violations and answers 500 with them.
fn refuse(state: &mut State, method: &str, url: &str, op: &Matched, problems: &[String]) -> Reply {
    let text = format!(
        "{method} {url} ({} {}): {}",
        op.method,
        op.template,
        problems.join("; ")
    );
    state.record_violation(text.clone());
    Reply::error(
        500,
        &format!("the request violates GitHub's OpenAPI description: {text}"),
    )
}

fn parse_body(body: &Result<Vec<u8>, String>) -> Result<Option<Value>, String> {
    let bytes = body
        .as_ref()
        .map_err(|e| format!("failed to read the request body: {e}"))?;
    if bytes.len() as u64 > MAX_BODY {
        return Err(format!("request body larger than {MAX_BODY} bytes"));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| format!("request body is not JSON: {e}"))
}

/// The answer to a request that meets the contract.
fn respond(
    shared: &Shared,
    state: &mut State,
    incoming: &Incoming,
    op: &Matched,
    path: &str,
    query: &[(String, String)],
    body: Option<&Value>,
) -> Reply {
    if let Some((status, secondary)) = state.take_fault(&op.method, path, query) {
        if !secondary {
            return Reply::error(status, "injected failure (ferry-testkit fail_next)");
        }
        let mut reply = Reply::error(
            status,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        );
        if let Some(Value::Object(fields)) = &mut reply.body {
            fields.insert("documentation_url".into(), RATE_LIMIT_DOCS.into());
        }
        reply.headers.push(("retry-after".into(), "1".into()));
        return reply;
    }

    let authenticated = match incoming.authorization {
        None => false,
        Some(value) if presented_token(value) == Some(shared.options.token.as_str()) => true,
        Some(_) => return Reply::error(401, "Bad credentials"),
    };

    state.quota.roll();
    if state.quota.used >= state.quota.limit {
        let who = state
            .owner(&shared.options.user)
            .filter(|_| authenticated)
            .map(|me| format!("user ID {}", me.id))
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let mut reply = Reply::error(403, &format!("API rate limit exceeded for {who}."));
        if let Some(Value::Object(fields)) = &mut reply.body {
            fields.insert("documentation_url".into(), RATE_LIMIT_DOCS.into());
        }
        return reply;
    }

    let call = Call {
        method: &op.method,
        template: &op.template,
        path,
        params: &op.path_params,
        query,
        body,
        authenticated,
    };
    let mut reply = match endpoints::dispatch(shared, state, &call) {
        Some(reply) => reply,
        None => {
            state.record_violation(format!(
                "{} {} ({} {}): the fake does not implement this operation",
                op.method, incoming.url, op.method, op.template
            ));
            Reply::error(404, "Not Found")
        }
    };

    if op.method == "GET" && reply.status == 200 {
        let etag = etag_of(reply.body.as_ref());
        let matches = incoming
            .if_none_match
            .is_some_and(|given| if_none_match_matches(given, &etag));
        reply.headers.push(("ETag".into(), etag));
        if matches {
            // GitHub does not count a 304 against the rate limit.
            state.counters.not_modified += 1;
            reply.status = 304;
            reply.body = None;
            reply.headers.retain(|(name, _)| name == "ETag");
            return reply;
        }
    }
    state.quota.used += 1;
    state.counters.counted += 1;
    reply
}

/// The token of `Bearer <token>` or `token <token>` (scheme case-insensitive).
fn presented_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| token.trim())
}

/// A strong ETag: the quoted SHA-256 of the JSON body.
fn etag_of(body: Option<&Value>) -> String {
    let text = body.map(Value::to_string).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// `If-None-Match` uses weak comparison: `W/` prefixes are ignored, `*` matches.
fn if_none_match_matches(given: &str, etag: &str) -> bool {
    given.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_from_bearer_and_token_schemes() {
        assert_eq!(presented_token("Bearer abc"), Some("abc"));
        assert_eq!(presented_token("token abc"), Some("abc"));
        assert_eq!(presented_token("Basic abc"), None);
        assert_eq!(presented_token("abc"), None);
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let tag = "\"abc\"";
        assert!(if_none_match_matches("W/\"abc\"", tag));
        assert!(if_none_match_matches("\"x\", \"abc\"", tag));
        assert!(if_none_match_matches("*", tag));
        assert!(!if_none_match_matches("\"abd\"", tag));
    }
}
