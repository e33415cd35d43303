//! What the fake GitLab and the fake Gitea share: a loopback HTTP server
//! that checks every request and answer against the host's Swagger 2.0
//! description (converted by [`swagger`] for [`crate::github::Contract`]), injects failures (an error status, a
//! rate limit, a truncated page), keeps a primary rate limit, answers
//! conditional GETs with `ETag`/`304`, and paginates with `Link` headers.
//! Each host supplies its semantics through [`Host`]; the repositories it
//! lists are real bare repositories served by the test nginx.

pub mod swagger;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::github::{Contract, Matched, Unsaid};
use crate::Servers;

/// Larger request bodies are refused (repository requests are tiny).
const MAX_BODY: u64 = 1024 * 1024;

/// What GitLab and Gitea send although their descriptions leave it unsaid:
/// statuses from any operation (conditional requests, bad input,
/// authentication, permissions, missing things, conflicts, rate limits,
/// server errors; most operations document few of them), with error bodies
/// the descriptions describe in words only.
const UNSAID: Unsaid = Unsaid {
    statuses: &[304, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503],
    error_schema: None,
    undescribed_bodies: true,
};

/// What a fake has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every request received.
    pub requests: u64,
    /// Requests per operation, keyed `"GET /api/v4/projects/{id}"`.
    pub by_operation: BTreeMap<String, u64>,
    /// Requests answered 304 Not Modified.
    pub not_modified: u64,
    /// Requests that counted against the primary rate limit.
    pub counted: u64,
}

/// An answer: status, JSON body and extra headers.
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
    pub headers: Vec<(String, String)>,
    /// Send only the first half of the body (a page cut short).
    truncated: bool,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            headers: Vec::new(),
            truncated: false,
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: None,
            headers: Vec::new(),
            truncated: false,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// A request that passed the contract, auth and rate-limit checks.
pub struct Call<'a> {
    pub method: &'a str,
    pub template: &'a str,
    pub path: &'a str,
    pub params: &'a BTreeMap<String, String>,
    pub query: &'a [(String, String)],
    pub body: Option<&'a Value>,
    pub authenticated: bool,
}

impl Call<'_> {
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query_bool(&self, name: &str) -> Option<bool> {
        self.query(name).map(|v| v == "true")
    }

    pub fn body_str(&self, name: &str) -> Option<&str> {
        self.body?.get(name)?.as_str()
    }

    pub fn body_bool(&self, name: &str) -> Option<bool> {
        self.body?.get(name)?.as_bool()
    }
}

/// What every endpoint may need besides the host's state.
pub struct Ctx {
    pub servers: &'static Servers,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// Bare repositories of this fake live under `repos/<prefix>/`.
    pub prefix: String,
    pub max_page_size: usize,
}

impl Ctx {
    /// One page of `items` (`page`/`per_page_name` from the query, 1-based),
    /// with a `Link` header (prev, next, first, last) built from the
    /// request's own query; also returns the page number and the total.
    pub fn page(
        &self,
        call: &Call,
        items: Vec<Value>,
        per_page_name: &str,
        default_per_page: usize,
    ) -> (Reply, usize, usize) {
        let number = |name: &str, default: usize| {
            call.query(name)
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        let per_page = number(per_page_name, default_per_page).min(self.max_page_size);
        let page = number("page", 1);
        let total = items.len();
        let last = total.div_ceil(per_page).max(1);
        let body: Vec<Value> = items
            .into_iter()
            .skip((page - 1).saturating_mul(per_page))
            .take(per_page)
            .collect();
        let url = |n: usize| {
            let mut pairs: Vec<(String, String)> = call.query.to_vec();
            match pairs.iter_mut().find(|(k, _)| k == "page") {
                Some(pair) => pair.1 = n.to_string(),
                None => pairs.push(("page".into(), n.to_string())),
            }
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            format!("{}{}?{query}", self.base_url, call.path)
        };
        let mut links = Vec::new();
        if page > 1 {
            links.push(format!("<{}>; rel=\"prev\"", url((page - 1).min(last))));
        }
        if page < last {
            links.push(format!("<{}>; rel=\"next\"", url(page + 1)));
        }
        links.push(format!("<{}>; rel=\"first\"", url(1)));
        links.push(format!("<{}>; rel=\"last\"", url(last)));
        let reply = Reply::json(200, Value::Array(body)).header("Link", links.join(", "));
        (reply, page, total)
    }

    /// The bare repository `repos/<prefix>/<name>.git`, created with HEAD on
    /// `default_branch`; returns its backing name.
    pub fn create_bare(&self, name: &str, default_branch: &str) -> Result<String> {
        let backing = format!("{}/{name}", self.prefix);
        let path = self.servers.create_bare(&backing)?;
        crate::git(
            &path,
            &[
                "symbolic-ref",
                "HEAD",
                &format!("refs/heads/{default_branch}"),
            ],
        )?;
        Ok(backing)
    }
}

/// One host's semantics.
pub trait Host: Send + 'static {
    /// For messages: "GitLab", "Gitea".
    const NAME: &'static str;
    /// Whether a 304 answer is free (GitHub's rule); otherwise it counts
    /// against the rate limit like any request.
    const NOT_MODIFIED_IS_FREE: bool;

    /// The token a request presents (`None`: anonymous).
    fn presented_token(headers: &[(String, String)]) -> Option<String>;
    /// The host's error answer.
    fn error(status: u16, message: &str) -> Reply;
    /// The answer to a rate-limited request: wait `retry_after` seconds; the
    /// window resets at `reset_epoch`.
    fn throttled(retry_after: u64, reset_epoch: u64) -> Reply;
    /// Headers the host sends on every answer about its rate limit.
    fn rate_headers(limit: u32, remaining: u32, reset_epoch: u64) -> Vec<(String, String)>;
    /// Answers an operation; `None` when the fake does not implement it.
    fn dispatch(&mut self, ctx: &Ctx, call: &Call) -> Option<Reply>;

    /// Corrects the host's published description where it is incomplete for
    /// what the fake serves, each change with its reason in a comment (the
    /// description is checked as published otherwise).
    fn amend_description(_description: &mut Value) -> Result<()> {
        Ok(())
    }
}

/// Options every fake host takes.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The one token accepted.
    pub token: String,
    /// Most items on one page, whatever the request asks.
    pub max_page_size: usize,
    /// Primary rate limit: requests per window.
    pub rate_limit: u32,
    pub rate_window: Duration,
    /// The API description (Swagger 2.0 JSON).
    pub description: PathBuf,
}

/// How an injected fault answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// This status with the host's error body.
    Status(u16),
    /// A rate limit (429, `Retry-After: 1`).
    RateLimit,
    /// The real answer, its body cut in half.
    Truncated,
}

struct Fault {
    method: Option<String>,
    path: String,
    query: Vec<(String, String)>,
    kind: FaultKind,
    remaining: u32,
}

impl Fault {
    fn matches(&self, method: &str, path: &str, query: &[(String, String)]) -> bool {
        self.remaining > 0
            && self.method.as_deref().is_none_or(|m| m == method)
            && path.starts_with(&self.path)
            && self.query.iter().all(|pair| query.contains(pair))
    }
}

struct Quota {
    limit: u32,
    used: u32,
    window: Duration,
    started: Instant,
    started_at: SystemTime,
}

impl Quota {
    fn roll(&mut self) {
        if self.started.elapsed() >= self.window {
            self.used = 0;
            self.started = Instant::now();
            self.started_at = SystemTime::now();
        }
    }

    fn reset_epoch(&self) -> u64 {
        let end = self.started_at + self.window;
        let since = end.duration_since(UNIX_EPOCH).unwrap_or_default();
        since.as_secs() + u64::from(since.subsec_nanos() > 0)
    }

    fn retry_after(&self) -> u64 {
        let left = self.window.saturating_sub(self.started.elapsed());
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }
}

/// The host's state and what the harness keeps beside it.
pub struct Inner<H> {
    pub host: H,
    faults: Vec<Fault>,
    quota: Quota,
    pub counters: Counters,
    pub violations: Vec<String>,
}

struct Shared<H> {
    contract: Arc<Contract>,
    /// The description's `basePath`: request paths are matched without it.
    base_path: String,
    ctx: Ctx,
    token: String,
    inner: Mutex<Inner<H>>,
}

impl<H> Shared<H> {
    fn inner(&self) -> MutexGuard<'_, Inner<H>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running fake host; stops on drop.
pub struct Server<H: Host> {
    shared: Arc<Shared<H>>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl<H: Host> Server<H> {
    /// Loads the description, listens on 127.0.0.1 with a free port and
    /// serves `host`.
    pub fn start(servers: &'static Servers, options: &HostOptions, host: H) -> Result<Server<H>> {
        static NEXT_FAKE: AtomicU64 = AtomicU64::new(1);
        if options.max_page_size == 0 || options.rate_window.is_zero() {
            bail!("max_page_size and rate_window must be above zero");
        }
        let (contract, base_path) =
            swagger::load(&options.description, UNSAID, H::amend_description)?;
        let server = tiny_http::Server::http("127.0.0.1:0")
            .map_err(|e| anyhow::anyhow!("failed to listen on 127.0.0.1: {e}"))?;
        let port = server
            .server_addr()
            .to_ip()
            .map(|addr| addr.port())
            .context("the fake is not listening on an IP address")?;
        let server = Arc::new(server);
        let shared = Arc::new(Shared {
            contract,
            base_path,
            ctx: Ctx {
                servers,
                base_url: format!("http://127.0.0.1:{port}"),
                prefix: format!(
                    "{}{}",
                    H::NAME.to_ascii_lowercase(),
                    NEXT_FAKE.fetch_add(1, Ordering::Relaxed)
                ),
                max_page_size: options.max_page_size,
            },
            token: options.token.clone(),
            inner: Mutex::new(Inner {
                host,
                faults: Vec::new(),
                quota: Quota {
                    limit: options.rate_limit,
                    used: 0,
                    window: options.rate_window,
                    started: Instant::now(),
                    started_at: SystemTime::now(),
                },
                counters: Counters::default(),
                violations: Vec::new(),
            }),
        });
        let thread = {
            let shared = shared.clone();
            let server = server.clone();
            std::thread::Builder::new()
                .name(format!("{}-fake", H::NAME.to_ascii_lowercase()))
                .spawn(move || {
                    for request in server.incoming_requests() {
                        answer(&shared, request);
                    }
                })
                .context("failed to start the fake's thread")?
        };
        Ok(Server {
            shared,
            server,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.shared.ctx.base_url
    }

    /// Runs `f` on the host's state (under its lock).
    pub fn with<R>(&self, f: impl FnOnce(&mut H, &Ctx) -> R) -> R {
        let mut inner = self.shared.inner();
        f(&mut inner.host, &self.shared.ctx)
    }

    /// The next `count` requests with `method` (any when `None`) whose path
    /// starts with `path_prefix` answer as `kind`. A `?a=b` in the prefix also
    /// requires that query pair.
    fn inject(&self, method: Option<&str>, path_prefix: &str, kind: FaultKind, count: u32) {
        let (path, query) = path_prefix.split_once('?').unwrap_or((path_prefix, ""));
        self.shared.inner().faults.push(Fault {
            method: method.map(str::to_ascii_uppercase),
            path: path.to_string(),
            query: form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            kind,
            remaining: count,
        });
    }

    /// The next `count` requests with `method` whose path starts with
    /// `path_prefix` (a `?a=b` also requires that query pair) answer `status`.
    pub fn fail_next(&self, method: &str, path_prefix: &str, status: u16, count: u32) {
        self.inject(Some(method), path_prefix, FaultKind::Status(status), count);
    }

    /// The next `count` requests (any method) to `path_prefix` are throttled:
    /// 429 with `Retry-After: 1`.
    pub fn rate_limit_next(&self, path_prefix: &str, count: u32) {
        self.inject(None, path_prefix, FaultKind::RateLimit, count);
    }

    /// The next `count` GETs of `path_prefix` get their body cut in half.
    pub fn truncate_next(&self, path_prefix: &str, count: u32) {
        self.inject(Some("GET"), path_prefix, FaultKind::Truncated, count);
    }

    /// Every contract violation so far.
    pub fn violations(&self) -> Vec<String> {
        self.shared.inner().violations.clone()
    }

    pub fn counters(&self) -> Counters {
        self.shared.inner().counters.clone()
    }

    /// Requests received for one operation, e.g. `("GET", "/api/v4/projects/{id}")`.
    pub fn requests_to(&self, method: &str, template: &str) -> u64 {
        let key = format!("{} {template}", method.to_ascii_uppercase());
        self.counters().by_operation.get(&key).copied().unwrap_or(0)
    }
}

impl<H: Host> Drop for Server<H> {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Incoming {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Result<Vec<u8>, String>,
}

fn answer<H: Host>(shared: &Shared<H>, mut request: tiny_http::Request) {
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
        body: read.map(|_| body).map_err(|e| e.to_string()),
    };
    let reply = {
        let mut inner = shared.inner();
        let mut reply = handle(shared, &mut inner, &incoming);
        let quota = &inner.quota;
        reply.headers.extend(H::rate_headers(
            quota.limit,
            quota.limit.saturating_sub(quota.used),
            quota.reset_epoch(),
        ));
        reply
    };
    let mut bytes = reply
        .body
        .as_ref()
        .map(|b| b.to_string().into_bytes())
        .unwrap_or_default();
    if reply.truncated {
        bytes.truncate(bytes.len() / 2);
    }
    let mut response = tiny_http::Response::from_data(bytes).with_status_code(reply.status);
    let content_type = reply
        .body
        .is_some()
        .then_some(("Content-Type", "application/json"));
    let extra = reply.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    for (name, value) in content_type.into_iter().chain(extra) {
        if let Ok(header) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(header);
        }
    }
    // A client that hung up needs no answer.
    let _ = request.respond(response);
}

fn handle<H: Host>(shared: &Shared<H>, inner: &mut Inner<H>, incoming: &Incoming) -> Reply {
    let (method, url) = (incoming.method.as_str(), incoming.url.as_str());
    inner.counters.requests += 1;
    let (path, raw_query) = url.split_once('?').unwrap_or((url, ""));
    let query: Vec<(String, String)> = form_urlencoded::parse(raw_query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let found = path
        .strip_prefix(shared.base_path.as_str())
        .and_then(|p| shared.contract.find(method, p));
    let Some(op) = found else {
        inner.violations.push(format!(
            "{method} {url}: no operation in {}'s description has this method and path",
            H::NAME
        ));
        return H::error(404, "404 Not Found");
    };
    *inner
        .counters
        .by_operation
        .entry(format!("{} {}", op.method, op.template))
        .or_default() += 1;
    let body = match parse_body(&incoming.body) {
        Ok(body) => body,
        Err(problem) => return refuse::<H>(inner, method, url, &op, &[problem]),
    };
    let problems = shared.contract.check_request(&op, raw_query, body.as_ref());
    if !problems.is_empty() {
        return refuse::<H>(inner, method, url, &op, &problems);
    }
    let mut reply = respond(shared, inner, incoming, &op, path, &query, body.as_ref());
    let problems = shared
        .contract
        .check_response(&op, reply.status, reply.body.as_ref());
    for problem in problems {
        inner.violations.push(format!(
            "{method} {url} ({} {}): answer {}: {problem}",
            op.method, op.template, reply.status
        ));
    }
    // Only an answer with a body can be cut short (a 304 has none).
    let fault = inner
        .faults
        .iter()
        .position(|f| f.kind == FaultKind::Truncated && f.matches(&op.method, path, &query));
    if let Some(pos) = fault.filter(|_| reply.body.is_some()) {
        inner.faults[pos].remaining -= 1;
        reply.truncated = true;
    }
    reply
}

fn refuse<H: Host>(
    inner: &mut Inner<H>,
    method: &str,
    url: &str,
    op: &Matched,
    problems: &[String],
) -> Reply {
    let text = format!(
        "{method} {url} ({} {}): {}",
        op.method,
        op.template,
        problems.join("; ")
    );
    inner.violations.push(text.clone());
    H::error(
        500,
        &format!("the request violates {}'s API description: {text}", H::NAME),
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

fn respond<H: Host>(
    shared: &Shared<H>,
    inner: &mut Inner<H>,
    incoming: &Incoming,
    op: &Matched,
    path: &str,
    query: &[(String, String)],
    body: Option<&Value>,
) -> Reply {
    let fault = inner
        .faults
        .iter_mut()
        .find(|f| f.kind != FaultKind::Truncated && f.matches(&op.method, path, query));
    if let Some(fault) = fault {
        fault.remaining -= 1;
        return match fault.kind {
            FaultKind::Status(status) => {
                H::error(status, "injected failure (ferry-testkit inject)")
            }
            _ => {
                let reset = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
                    + 1;
                H::throttled(1, reset)
            }
        };
    }
    let authenticated = match H::presented_token(&incoming.headers) {
        None => false,
        Some(token) if token == shared.token => true,
        Some(_) => return H::error(401, "401 Unauthorized"),
    };
    inner.quota.roll();
    if inner.quota.used >= inner.quota.limit {
        return H::throttled(inner.quota.retry_after(), inner.quota.reset_epoch());
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
    let mut reply = match inner.host.dispatch(&shared.ctx, &call) {
        Some(reply) => reply,
        None => {
            inner.violations.push(format!(
                "{} {} ({}): the fake does not implement this operation",
                op.method, incoming.url, op.template
            ));
            H::error(404, "404 Not Found")
        }
    };
    if op.method == "GET" && reply.status == 200 {
        let etag = etag_of(reply.body.as_ref());
        let given = incoming
            .headers
            .iter()
            .find(|(n, _)| n == "if-none-match")
            .map(|(_, v)| v.as_str());
        let matches = given.is_some_and(|given| if_none_match_matches(given, &etag));
        reply.headers.push(("ETag".into(), etag));
        if matches {
            inner.counters.not_modified += 1;
            reply.status = 304;
            reply.body = None;
            reply.headers.retain(|(name, _)| name == "ETag");
            if H::NOT_MODIFIED_IS_FREE {
                return reply;
            }
        }
    }
    inner.quota.used += 1;
    inner.counters.counted += 1;
    reply
}

/// A weak ETag over the JSON body, as Rails' `Rack::ETag` sends.
fn etag_of(body: Option<&Value>) -> String {
    let text = body.map(Value::to_string).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("W/\"{hex}\"")
}

/// `If-None-Match` compares weakly: `W/` prefixes are ignored, `*` matches.
fn if_none_match_matches(given: &str, etag: &str) -> bool {
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    given.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly() {
        let tag = "W/\"abc\"";
        assert!(if_none_match_matches("\"abc\"", tag));
        assert!(if_none_match_matches("\"x\", W/\"abc\"", tag));
        assert!(if_none_match_matches("*", tag));
        assert!(!if_none_match_matches("\"abd\"", tag));
    }
}
