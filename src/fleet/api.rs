//! A host's REST API, the way a well-behaved client uses it: every listing followed to its
//! last page (`Link: <...>; rel="next"`: GitHub, and GitLab's offset pagination), every GET
//! conditional on the ETag of the last answer (an unchanged page costs no quota on GitHub,
//! which does not count a 304; GitLab answers 304 too but counts the request), rate limits
//! waited out (`Retry-After`, `X-RateLimit-Remaining: 0` + `X-RateLimit-Reset`, GitLab's
//! `RateLimit-Remaining: 0` + `RateLimit-Reset`, on 403 and 429) up to a bound, and the token
//! sent only to the API's own origin in the host's own header, never logged.

use crate::config::{HostAccount, HostKind};
use crate::model::fleet::{Listing, Lookup, Repository};
use reqwest::header::{HeaderMap, HeaderValue, ETAG, IF_NONE_MATCH, LINK};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest a call waits for a rate limit to reset before it gives up and says so.
const MAX_RATE_WAIT: Duration = Duration::from_secs(60);
/// Rate-limited answers a call waits out before it gives up.
const MAX_RATE_RETRIES: u32 = 3;
/// A request that takes longer than this fails (a discovery must not hang).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pages a listing may have; more means something is wrong (a loop of `next` links).
const MAX_PAGES: usize = 1000;

/// Why an API call failed, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("not found (HTTP 404)")]
    NotFound,
    #[error("{0}")]
    Failed(String),
}

/// One remembered answer: the ETag and what came with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Remembered {
    etag: String,
    body: Value,
    next: Option<String>,
}

/// Counts of one API's use, for reports and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Requests sent.
    pub requests: u32,
    /// Answers that were 304 Not Modified (no quota used on GitHub).
    pub not_modified: u32,
}

/// A client of one host account's API.
pub struct Api {
    client: reqwest::Client,
    kind: HostKind,
    base: url::Url,
    /// The header that carries the token, and its value.
    token: (&'static str, HeaderValue),
    /// Where the ETag cache lives between runs (`None`: in memory only).
    etag_file: Option<PathBuf>,
    etags: Mutex<HashMap<String, Remembered>>,
    usage: Mutex<Usage>,
}

impl Api {
    /// A client for `account` on a `kind` host; `etag_file` keeps conditional-request state
    /// between runs.
    pub fn new(
        kind: HostKind,
        account: &HostAccount,
        etag_file: Option<PathBuf>,
    ) -> Result<Api, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            // The token must never follow a redirect to another host.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &account.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("ca_file {} is not a PEM certificate: {e}", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        // GitLab's description names `PRIVATE-TOKEN` (it also takes `Bearer`, but only for
        // some token kinds); GitHub takes `Bearer`.
        let (header, value) = match kind {
            HostKind::GitHub => (
                "authorization",
                format!("Bearer {}", account.token.expose()),
            ),
            HostKind::GitLab => ("private-token", account.token.expose().to_owned()),
            // Gitea's description names `Authorization: token ...`.
            HostKind::Gitea => ("authorization", format!("token {}", account.token.expose())),
            // Bitbucket takes an app password with its user name in Basic auth.
            HostKind::Bitbucket => {
                use base64::Engine;
                let pair = format!("{}:{}", account.git_username, account.token.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                ("authorization", format!("Basic {encoded}"))
            }
        };
        let mut token = HeaderValue::from_str(&value)
            .map_err(|_| "the token has characters an HTTP header cannot carry".to_owned())?;
        token.set_sensitive(true);
        let etags = etag_file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Api {
            client,
            kind,
            base: account.api.clone(),
            token: (header, token),
            etag_file,
            etags: Mutex::new(etags),
            usage: Mutex::new(Usage::default()),
        })
    }

    /// The absolute URL of an API path such as `/orgs/acme/repos?per_page=100`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    pub fn usage(&self) -> Usage {
        self.usage.lock().map(|u| *u).unwrap_or_default()
    }

    /// Every item of a paginated listing, following `next` links to the end: the `Link`
    /// header's, or (Bitbucket) the page object's own `next` beside its `values`. Any page that
    /// fails fails the whole listing: a partial listing must never pass for a complete one.
    pub async fn get_all(&self, path: &str) -> Result<Vec<Value>, ApiError> {
        let mut items = Vec::new();
        let mut next = Some(self.url(path));
        let mut count = 0;
        while let Some(url) = next.take() {
            count += 1;
            if count > MAX_PAGES {
                return Err(ApiError::Failed(format!(
                    "the listing has more than {MAX_PAGES} pages; stopped"
                )));
            }
            let (body, link) = self.get_remembered(&url).await?;
            match body {
                Value::Array(page) => items.extend(page),
                Value::Object(mut page) if page.get("values").is_some_and(Value::is_array) => {
                    if let Some(Value::Array(values)) = page.remove("values") {
                        items.extend(values);
                    }
                    next = page
                        .get("next")
                        .and_then(Value::as_str)
                        .map(|after| self.same_origin(&url, after))
                        .transpose()?;
                    continue;
                }
                other => {
                    return Err(ApiError::Failed(format!(
                        "{}: expected a list, got {}",
                        self.shown(&url),
                        kind_of(&other)
                    )))
                }
            }
            next = link;
        }
        Ok(items)
    }

    /// One JSON document (conditional on its last ETag).
    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.get_remembered(&self.url(path)).await.map(|(v, _)| v)
    }

    /// A direct lookup of one repository: gone only when the host answers 404; any other
    /// failure concludes nothing.
    pub async fn lookup(&self, path: &str) -> Lookup {
        match self.get(path).await {
            Ok(_) => Lookup::Exists,
            Err(ApiError::NotFound) => Lookup::Gone,
            Err(ApiError::Failed(e)) => Lookup::Failed(e),
        }
    }

    /// A write (POST, PATCH, DELETE) with an optional JSON body; the answer's JSON (or null).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let url = self.url(path);
        let answer = self.call(method, &url, body, None).await?;
        let status = answer.status();
        let text = answer
            .text()
            .await
            .map_err(|e| ApiError::Failed(format!("{}: {e}", self.shown(&url))))?;
        if !status.is_success() {
            return Err(self.failure(&url, status, &text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| ApiError::Failed(format!("{}: not JSON: {e}", self.shown(&url))))
    }

    /// Saves the ETag cache for the next run (best effort: losing it costs quota, not data).
    pub fn save(&self) {
        let Some(file) = &self.etag_file else { return };
        let Ok(etags) = self.etags.lock() else { return };
        let Ok(bytes) = serde_json::to_vec(&*etags) else {
            return;
        };
        let Some(dir) = file.parent() else { return };
        let _ = std::fs::create_dir_all(dir);
        // A failed write removes its temporary file (dropped unpersisted).
        if let Ok(mut tmp) = crate::fleet::inventory::file_beside(dir) {
            if std::io::Write::write_all(&mut tmp, &bytes).is_ok() {
                let _ = tmp.persist(file);
            }
        }
    }

    async fn get_remembered(&self, url: &str) -> Result<(Value, Option<String>), ApiError> {
        let remembered = self.etags.lock().ok().and_then(|e| e.get(url).cloned());
        let answer = self
            .call(
                Method::GET,
                url,
                None,
                remembered.as_ref().map(|r| r.etag.as_str()),
            )
            .await?;
        let status = answer.status();
        if status == StatusCode::NOT_MODIFIED {
            if let Ok(mut usage) = self.usage.lock() {
                usage.not_modified += 1;
            }
            if let Some(r) = remembered {
                return Ok((r.body, r.next));
            }
        }
        let headers = answer.headers().clone();
        let text = answer
            .text()
            .await
            .map_err(|e| ApiError::Failed(format!("{}: {e}", self.shown(url))))?;
        if !status.is_success() {
            return Err(self.failure(url, status, &text));
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| ApiError::Failed(format!("{}: not JSON: {e}", self.shown(url))))?;
        let next = next_link(&headers)
            .map(|next| self.same_origin(url, &next))
            .transpose()?;
        if let Some(etag) = headers.get(ETAG).and_then(|v| v.to_str().ok()) {
            if let Ok(mut etags) = self.etags.lock() {
                etags.insert(
                    url.to_owned(),
                    Remembered {
                        etag: etag.to_owned(),
                        body: body.clone(),
                        next: next.clone(),
                    },
                );
            }
        }
        Ok((body, next))
    }

    /// `next`, the page after `url`, if it is on the API's own origin: a next page elsewhere
    /// would get the token, so it is refused.
    fn same_origin(&self, url: &str, next: &str) -> Result<String, ApiError> {
        if next.starts_with(self.base.as_str().trim_end_matches('/')) {
            Ok(next.to_owned())
        } else {
            Err(ApiError::Failed(format!(
                "{}: the next page is on another host; refusing to follow it",
                self.shown(url)
            )))
        }
    }

    /// Sends one request, waiting out rate limits (bounded).
    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        etag: Option<&str>,
    ) -> Result<reqwest::Response, ApiError> {
        let mut waited = 0;
        loop {
            let mut request = self
                .client
                .request(method.clone(), url)
                .header(self.token.0, self.token.1.clone());
            request = match self.kind {
                HostKind::GitHub => request
                    .header("accept", "application/vnd.github+json")
                    .header("x-github-api-version", "2022-11-28"),
                HostKind::GitLab | HostKind::Gitea | HostKind::Bitbucket => {
                    request.header("accept", "application/json")
                }
            };
            if let Some(etag) = etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Ok(mut usage) = self.usage.lock() {
                usage.requests += 1;
            }
            let answer = request.send().await.map_err(|e| {
                ApiError::Failed(format!("{}: {}", self.shown(url), e.without_url()))
            })?;
            let status = answer.status();
            if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
                return Ok(answer);
            }
            let Some(wait) = rate_limit_wait(answer.headers(), SystemTime::now()) else {
                return Ok(answer);
            };
            if waited >= MAX_RATE_RETRIES || wait > MAX_RATE_WAIT {
                return Err(ApiError::Failed(format!(
                    "{}: rate limited (HTTP {}); the limit resets in {}s; try again later",
                    self.shown(url),
                    status.as_u16(),
                    wait.as_secs()
                )));
            }
            tracing::warn!(url = %self.shown(url), wait_ms = wait.as_millis() as u64, "rate limited; waiting");
            waited += 1;
            tokio::time::sleep(wait).await;
        }
    }

    fn failure(&self, url: &str, status: StatusCode, body: &str) -> ApiError {
        if status == StatusCode::NOT_FOUND {
            return ApiError::NotFound;
        }
        let message = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| error_message(&v))
            .unwrap_or_default();
        let hint = match (status.as_u16(), self.kind) {
            (401 | 403, HostKind::Bitbucket) => "; check the user name and the app password (Bitbucket: repository read permission)",
            (401, _) => "; check the token (expired or revoked?)",
            (403, HostKind::GitHub) => "; the token lacks a permission (GitHub: repository administration for creating, metadata to list)",
            (403, HostKind::GitLab) => "; the token lacks a scope or role (GitLab: the api scope, and Maintainer or Owner of the group to create, archive or delete projects)",
            (403, HostKind::Gitea) => "; the token lacks a scope or permission (Gitea: read:repository to list, write:repository and write:organization to create, and repository admin to archive or delete)",
            _ => "",
        };
        ApiError::Failed(format!(
            "{}: HTTP {}{}{hint}",
            self.shown(url),
            status.as_u16(),
            if message.is_empty() {
                String::new()
            } else {
                format!(" ({message})")
            }
        ))
    }

    /// A URL for messages: the path and query on the API, no credentials (there are none in
    /// API URLs; the token travels in a header).
    fn shown(&self, url: &str) -> String {
        crate::model::remote::redact_text(url)
    }
}

/// A listing of `what` ("acme on GitHub") from a host's items, each read by `read`. A failed
/// listing, or an item that cannot be read, makes it incomplete rather than short.
pub fn listing(
    items: Result<Vec<Value>, ApiError>,
    read: impl Fn(&Value) -> Option<Repository>,
    what: &str,
) -> Listing {
    let items = match items {
        Ok(items) => items,
        Err(e) => {
            return Listing {
                repositories: Vec::new(),
                incomplete: Some(format!("listing {what}: {e}")),
            }
        }
    };
    let mut listing = Listing::default();
    for item in &items {
        match read(item) {
            Some(r) => listing.repositories.push(r),
            None => {
                listing.incomplete = Some(format!(
                    "listing {what}: an entry without an id or name, or not of this owner"
                ))
            }
        }
    }
    listing
}

/// The message of a host's error body: GitHub's and GitLab's `message` (GitLab's may be an
/// object of field errors: `{"path": ["has already been taken"]}`), GitLab's `error`, or
/// Bitbucket's `error.message`.
fn error_message(v: &Value) -> Option<String> {
    if let Some(m) = v.pointer("/error/message").and_then(Value::as_str) {
        return Some(m.to_owned());
    }
    match v.get("message").or_else(|| v.get("error"))? {
        Value::String(s) => Some(s.clone()),
        Value::Object(fields) => Some(
            fields
                .iter()
                .map(|(field, problems)| {
                    let problems = match problems {
                        Value::Array(items) => items
                            .iter()
                            .map(|i| {
                                i.as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| i.to_string())
                            })
                            .collect::<Vec<_>>()
                            .join(", "),
                        other => other.to_string(),
                    };
                    format!("{field} {problems}")
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        other => Some(other.to_string()),
    }
}

/// One path segment, percent-encoded: an owner, a repository name, or a GitLab group's full
/// path (`acme/platform` becomes `acme%2Fplatform`, as GitLab's `:id` takes it). A name from a
/// listing must never change the path's shape.
pub fn segment(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(s, SEGMENT).to_string()
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The `rel="next"` target of a `Link` header.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_owned())
    })
}

/// How long a rate-limited answer asks to wait: `Retry-After` (seconds), else the reset time
/// when no requests remain (GitHub's `X-RateLimit-*`, GitLab's `RateLimit-*`). `None`: not a
/// rate limit (a plain 403 is a permission problem).
pub fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(secs) = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    let prefix = ["x-ratelimit-", "ratelimit-"]
        .into_iter()
        .find(|p| header(&format!("{p}remaining")).map(str::trim) == Some("0"));
    if let Some(prefix) = prefix {
        let reset = header(&format!("{prefix}reset"))?
            .trim()
            .parse::<u64>()
            .ok()?;
        let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
        // The reset is a whole second; wait past it.
        return Some(Duration::from_secs(reset.saturating_sub(now) + 1));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_next_link_is_found_among_the_others() {
        let h = headers(&[(
            "link",
            "<https://api.github.com/orgs/a/repos?page=1>; rel=\"prev\", <https://api.github.com/orgs/a/repos?page=3>; rel=\"next\", <https://api.github.com/orgs/a/repos?page=9>; rel=\"last\"",
        )]);
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/orgs/a/repos?page=3")
        );
        let last = headers(&[(
            "link",
            "<https://api.github.com/orgs/a/repos?page=1>; rel=\"first\"",
        )]);
        assert_eq!(next_link(&last), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn rate_limits_say_how_long_to_wait_and_a_plain_403_does_not() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_wait(
                &headers(&[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1010")
                ]),
                now
            ),
            Some(Duration::from_secs(11))
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("x-ratelimit-remaining", "12")]), now),
            None
        );
        assert_eq!(rate_limit_wait(&HeaderMap::new(), now), None);
        assert_eq!(
            rate_limit_wait(
                &headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "1004")]),
                now
            ),
            Some(Duration::from_secs(5)),
            "GitLab's headers"
        );
    }

    #[test]
    fn error_messages_are_read_from_github_and_gitlab_bodies() {
        let m = |v: Value| error_message(&v);
        assert_eq!(
            m(serde_json::json!({ "message": "Bad credentials" })).as_deref(),
            Some("Bad credentials")
        );
        assert_eq!(
            m(serde_json::json!({ "message": { "path": ["has already been taken"] } })).as_deref(),
            Some("path has already been taken")
        );
        assert_eq!(
            m(serde_json::json!({ "error": "name is missing" })).as_deref(),
            Some("name is missing")
        );
        assert_eq!(m(serde_json::json!({ "x": 1 })), None);
    }
}
