//! The Git LFS batch API over HTTP(S) (reqwest, rustls): where a remote's LFS server is, the
//! batch request, and the `basic` transfers it hands out (download, upload, verify). Every
//! request is retried on 429 and 5xx (honouring `Retry-After`) and on connection failures,
//! with backoff, a few times. Credentials go as HTTP Basic auth to the LFS endpoint, and to an
//! action's URL only when it is on the endpoint's own origin and the server gave it no
//! authorization of its own; redirects are not followed. Errors name URLs without their query
//! (servers put tokens there) and never a credential.

use crate::engine::lfs::pointer::Pointer;
use crate::engine::lfs::store::ObjectStore;
use crate::model::kind::ErrorKind;
use crate::model::remote::{redact_text, Remote, Secret, Transport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// Objects per batch request (git-lfs's own default).
pub const BATCH_SIZE: usize = 100;
/// Tries per request: the first and up to three retries.
const ATTEMPTS: u32 = 4;
/// The first retry's delay; it doubles per retry.
const BACKOFF: Duration = Duration::from_millis(500);
/// The longest `Retry-After` honoured; a server asking for more gets the failure reported.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// How long a transfer may go without a byte moving.
const STALL: Duration = Duration::from_secs(60);

const LFS_JSON: &str = "application/vnd.git-lfs+json";

/// A failed LFS request, classified, in words that carry no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfsError {
    pub kind: ErrorKind,
    pub message: String,
}

impl LfsError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> LfsError {
        LfsError {
            kind,
            message: message.into(),
        }
    }
}

/// Where a remote's LFS server is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The batch API's base (`.../info/lfs`), without a trailing slash.
    url: url::Url,
    username: Option<String>,
    password: Option<Secret>,
}

impl Endpoint {
    /// The endpoint of `remote`: its `lfs_url`, or the one git-lfs derives from an HTTP(S) URL
    /// (`<url>.git/info/lfs`, adding `.git` when it is not there). Other transports need
    /// `lfs_url`. LFS uses the remote's credentials unless `lfs_url`'s own are given.
    pub fn of(remote: &Remote) -> Result<Endpoint, String> {
        let text = match (&remote.lfs.url, remote.transport) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Transport::Http) => {
                let base = remote.git_url().trim_end_matches('/');
                if base.ends_with(".git") {
                    format!("{base}/info/lfs")
                } else {
                    format!("{base}.git/info/lfs")
                }
            }
            (None, transport) => {
                let how = match transport {
                    Transport::Ssh => "over SSH git-lfs asks the server for it (git-lfs-authenticate), which ferry does not do",
                    Transport::GitDaemon => "git:// has no LFS",
                    _ => "a local repository has no LFS server",
                };
                return Err(format!(
                    "the LFS endpoint of {} cannot be derived from its URL ({how}): set lfs_url on it (for example https://HOST/OWNER/REPO.git/info/lfs), or lfs = false to mirror refs only",
                    remote.display()
                ));
            }
        };
        let url = url::Url::parse(&text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.password().is_none())
            .ok_or_else(|| {
                format!(
                    "the LFS endpoint '{}' of {} is not an http(s) URL without a password",
                    redact_text(&text),
                    remote.display()
                )
            })?;
        let (username, password) = if remote.lfs.username.is_some() || remote.lfs.password.is_some()
        {
            (remote.lfs.username.clone(), remote.lfs.password.clone())
        } else {
            (
                remote.credentials.username.clone(),
                remote.credentials.password.clone(),
            )
        };
        Ok(Endpoint {
            url,
            username,
            password,
        })
    }

    /// The endpoint's URL, to show.
    pub fn display(&self) -> String {
        self.url.to_string()
    }

    fn batch_url(&self) -> String {
        format!("{}/objects/batch", self.url.as_str().trim_end_matches('/'))
    }

    fn same_origin(&self, href: &url::Url) -> bool {
        href.origin() == self.url.origin()
    }
}

/// What to ask the batch API for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Download,
    Upload,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Download => "download",
            Operation::Upload => "upload",
        }
    }
}

#[derive(Serialize)]
struct BatchRequest<'a> {
    operation: &'a str,
    transfers: [&'a str; 1],
    objects: Vec<ObjectSpec<'a>>,
    hash_algo: &'a str,
}

#[derive(Serialize)]
struct ObjectSpec<'a> {
    oid: &'a str,
    size: u64,
}

/// The batch API's answer.
#[derive(Debug, Deserialize)]
pub struct BatchResponse {
    #[serde(default)]
    pub transfer: Option<String>,
    #[serde(default)]
    pub objects: Vec<ObjectAnswer>,
}

/// The answer for one object: what to do with it, or why not. No actions and no error: the
/// server has it (upload) or there is nothing to do.
#[derive(Debug, Clone, Deserialize)]
pub struct ObjectAnswer {
    pub oid: String,
    #[serde(default)]
    pub actions: Option<Actions>,
    #[serde(default)]
    pub error: Option<ObjectError>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Actions {
    #[serde(default)]
    pub download: Option<Action>,
    #[serde(default)]
    pub upload: Option<Action>,
    #[serde(default)]
    pub verify: Option<Action>,
}

/// A URL to call and the headers to call it with (which may hold a token: never shown).
#[derive(Clone, Deserialize)]
pub struct Action {
    pub href: String,
    #[serde(default)]
    pub header: BTreeMap<String, String>,
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Action({})", shown_url(&self.href))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ObjectError {
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

/// Reads a batch API answer. Public for the fuzz targets: it is what a remote server says.
pub fn parse_batch_response(body: &[u8]) -> Result<BatchResponse, String> {
    serde_json::from_slice::<BatchResponse>(body)
        .map_err(|e| format!("the LFS server's batch answer is not what the API describes ({e})"))
}

/// A URL as errors show it: no query (tokens live there), no credentials.
fn shown_url(href: &str) -> String {
    match url::Url::parse(href) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.to_string()
        }
        Err(_) => "(an unreadable URL)".to_owned(),
    }
}

/// An LFS client for one remote.
pub struct Client {
    http: reqwest::Client,
    endpoint: Endpoint,
    /// Whose endpoint, for messages: "source" or "destination".
    role: &'static str,
}

impl Client {
    pub fn new(remote: &Remote, role: &'static str, timeout: Duration) -> Result<Client, LfsError> {
        let endpoint = Endpoint::of(remote).map_err(|e| LfsError::new(ErrorKind::Config, e))?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(STALL.min(timeout))
            .timeout(timeout)
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &remote.credentials.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                LfsError::new(
                    ErrorKind::Config,
                    format!("cannot read ca_file {}: {e}", ca.display()),
                )
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                LfsError::new(
                    ErrorKind::Config,
                    format!("ca_file {} holds no PEM certificates ({e})", ca.display()),
                )
            })? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| {
            LfsError::new(
                ErrorKind::Config,
                format!("cannot set up an HTTP client ({})", e.without_url()),
            )
        })?;
        Ok(Client {
            http,
            endpoint,
            role,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Asks the batch API about `objects` (at most [`BATCH_SIZE`]): one answer per object.
    pub async fn batch(
        &self,
        operation: Operation,
        objects: &[&Pointer],
    ) -> Result<Vec<ObjectAnswer>, LfsError> {
        let body = serde_json::to_vec(&BatchRequest {
            operation: operation.as_str(),
            transfers: ["basic"],
            objects: objects
                .iter()
                .map(|p| ObjectSpec {
                    oid: &p.oid,
                    size: p.size,
                })
                .collect(),
            hash_algo: "sha256",
        })
        .map_err(|e| {
            LfsError::new(
                ErrorKind::Other,
                format!("cannot encode a batch request: {e}"),
            )
        })?;
        let url = self.endpoint.batch_url();
        let what = format!(
            "the {} LFS batch API ({operation}) at {}",
            self.role,
            shown_url(&url),
            operation = operation.as_str()
        );
        let response = self
            .send(&what, || {
                let request = self
                    .authorized(self.http.post(&url), true)
                    .header("Accept", LFS_JSON)
                    .header("Content-Type", LFS_JSON)
                    .body(body.clone());
                async move { Ok(request) }
            })
            .await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(&what, &e))?;
        let answer = parse_batch_response(&bytes)
            .map_err(|e| LfsError::new(ErrorKind::Other, format!("{what}: {e}")))?;
        if answer.transfer.as_deref().is_some_and(|t| t != "basic") {
            return Err(LfsError::new(
                ErrorKind::Other,
                format!(
                    "{what} chose the transfer '{}', but ferry speaks only 'basic'",
                    answer.transfer.unwrap_or_default()
                ),
            ));
        }
        Ok(answer.objects)
    }

    /// Downloads `p` through its download action into `store`, checking its size and sha256.
    pub async fn download(
        &self,
        store: &ObjectStore,
        p: &Pointer,
        action: &Action,
    ) -> Result<(), LfsError> {
        let what = format!(
            "downloading LFS object {} from {}",
            p.oid,
            shown_url(&action.href)
        );
        let href = self.href(action, &what)?;
        let mut response = self
            .send(&what, || {
                let request = self.action(self.http.get(href.clone()), action, &href);
                async move { Ok(request) }
            })
            .await?;
        let mut incoming = store
            .incoming(p)
            .await
            .map_err(|e| LfsError::new(ErrorKind::Other, format!("{what}: {e}")))?;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => incoming
                    .write(&chunk)
                    .await
                    .map_err(|e| LfsError::new(ErrorKind::Other, format!("{what}: {e}")))?,
                Ok(None) => break,
                Err(e) => return Err(transport_error(&what, &e)),
            }
        }
        incoming
            .finish(p)
            .await
            .map_err(|e| LfsError::new(ErrorKind::Network, format!("{what}: {e}")))
    }

    /// Uploads `p` from `store` through its upload action (streamed from the file), then calls
    /// its verify action when the server gave one.
    pub async fn upload(
        &self,
        store: &ObjectStore,
        p: &Pointer,
        upload: &Action,
        verify: Option<&Action>,
    ) -> Result<(), LfsError> {
        let what = format!(
            "uploading LFS object {} to {}",
            p.oid,
            shown_url(&upload.href)
        );
        let href = self.href(upload, &what)?;
        let path = store.path(&p.oid);
        self.send(&what, || {
            let request = self.action(self.http.put(href.clone()), upload, &href);
            let path = path.clone();
            let size = p.size;
            async move {
                let file = tokio::fs::File::open(&path).await.map_err(|e| {
                    LfsError::new(
                        ErrorKind::Other,
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Ok(request
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Length", size)
                    .body(reqwest::Body::from(file)))
            }
        })
        .await?;
        if let Some(verify) = verify {
            let what = format!(
                "verifying LFS object {} at {}",
                p.oid,
                shown_url(&verify.href)
            );
            let href = self.href(verify, &what)?;
            let body = serde_json::json!({ "oid": p.oid, "size": p.size }).to_string();
            self.send(&what, || {
                let request = self
                    .action(self.http.post(href.clone()), verify, &href)
                    .header("Accept", LFS_JSON)
                    .header("Content-Type", LFS_JSON)
                    .body(body.clone());
                async move { Ok(request) }
            })
            .await?;
        }
        Ok(())
    }

    fn href(&self, action: &Action, what: &str) -> Result<url::Url, LfsError> {
        url::Url::parse(&action.href)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                LfsError::new(
                    ErrorKind::Other,
                    format!("{what}: the server gave no http(s) URL"),
                )
            })
    }

    /// A request to an action's URL with the action's headers, and the endpoint's credentials
    /// when the URL is on the endpoint's origin and the action brings no authorization.
    fn action(
        &self,
        request: reqwest::RequestBuilder,
        action: &Action,
        href: &url::Url,
    ) -> reqwest::RequestBuilder {
        let has_auth = action
            .header
            .keys()
            .any(|k| k.eq_ignore_ascii_case("authorization"));
        let mut request = self.authorized(request, !has_auth && self.endpoint.same_origin(href));
        for (name, value) in &action.header {
            request = request.header(name, value);
        }
        request
    }

    fn authorized(&self, request: reqwest::RequestBuilder, send: bool) -> reqwest::RequestBuilder {
        let e = &self.endpoint;
        if send && (e.username.is_some() || e.password.is_some()) {
            request.basic_auth(
                e.username.as_deref().unwrap_or("git"),
                e.password.as_ref().map(Secret::expose),
            )
        } else {
            request
        }
    }

    /// Sends the request `make` builds (again for each try), retrying on 429, 5xx and failed
    /// connections with backoff; any other non-2xx answer is the error.
    async fn send<F, Fut>(&self, what: &str, make: F) -> Result<reqwest::Response, LfsError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<reqwest::RequestBuilder, LfsError>>,
    {
        let mut delay = BACKOFF;
        let mut attempt = 1;
        loop {
            let outcome = make().await?.send().await;
            let (error, wait) = match outcome {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(&response);
                    let detail = server_message(response).await;
                    let error =
                        status_error(what, status.as_u16(), &detail, self.role, &self.endpoint);
                    if !(status.as_u16() == 429 || status.is_server_error()) {
                        return Err(error);
                    }
                    match retry_after {
                        Some(wait) if wait > MAX_RETRY_AFTER => return Err(error),
                        Some(wait) => (error, wait),
                        None => (error, delay),
                    }
                }
                Err(e) => {
                    if e.is_builder() {
                        return Err(transport_error(what, &e));
                    }
                    (transport_error(what, &e), delay)
                }
            };
            if attempt >= ATTEMPTS {
                return Err(LfsError {
                    kind: error.kind,
                    message: format!("{} (tried {ATTEMPTS} times)", error.message),
                });
            }
            tracing::info!(what, attempt, error = %error.message, "LFS request failed; retrying");
            tokio::time::sleep(wait).await;
            delay *= 2;
            attempt += 1;
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form gets the backoff instead).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The `message` of an LFS error answer (JSON), or the start of the body, redacted and short.
async fn server_message(response: reqwest::Response) -> String {
    let body = response.bytes().await.unwrap_or_default();
    let text = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    let line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    redact_text(&line)
}

/// The error of a non-2xx answer.
fn status_error(
    what: &str,
    status: u16,
    detail: &str,
    role: &str,
    endpoint: &Endpoint,
) -> LfsError {
    let kind = match status {
        401 => ErrorKind::Auth,
        403 => ErrorKind::Permission,
        404 => ErrorKind::NotFound,
        413 => ErrorKind::TooLarge,
        300..=399 => ErrorKind::Redirect,
        429 | 500..=599 => ErrorKind::Network,
        _ => ErrorKind::Other,
    };
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    };
    let advice = match status {
        401 | 403 => format!(
            "; the {role}'s LFS server takes the remote's credentials unless lfs_username / lfs_password_env are set for it"
        ),
        404 => format!(
            "; the {role} may have no LFS at {}: enable LFS on the server, set lfs_url, or lfs = false to mirror refs only",
            endpoint.display()
        ),
        _ => String::new(),
    };
    LfsError::new(kind, format!("{what}: HTTP {status}{detail}{advice}"))
}

/// The error of a request that got no answer.
fn transport_error(what: &str, e: &reqwest::Error) -> LfsError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Network
    };
    // reqwest names the URL, whose query may hold a token: drop it (`what` names it safely),
    // and add the causes, which say what went wrong.
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "");
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    LfsError::new(kind, format!("{what}: {}", redact_text(&text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn remote(url: &str) -> Remote {
        Remote::parse(url, Path::new("/")).unwrap()
    }

    #[test]
    fn the_endpoint_is_derived_as_git_lfs_does() {
        let e = Endpoint::of(&remote("https://h.example/org/app.git")).unwrap();
        assert_eq!(
            e.batch_url(),
            "https://h.example/org/app.git/info/lfs/objects/batch"
        );
        let e = Endpoint::of(&remote("https://h.example/org/app/")).unwrap();
        assert_eq!(
            e.batch_url(),
            "https://h.example/org/app.git/info/lfs/objects/batch"
        );
        let mut r = remote("ssh://git@h.example/org/app.git");
        let e = Endpoint::of(&r).unwrap_err();
        assert!(e.contains("lfs_url"), "{e}");
        r.lfs.url = Some("https://lfs.example/app/".into());
        let e = Endpoint::of(&r).unwrap();
        assert_eq!(e.batch_url(), "https://lfs.example/app/objects/batch");
        let mut r = remote("https://h.example/app.git");
        r.lfs.url = Some("ftp://x/y".into());
        assert!(Endpoint::of(&r).unwrap_err().contains("http(s)"));
    }

    #[test]
    fn the_endpoint_takes_the_remotes_credentials_unless_it_has_its_own() {
        let r = remote("https://bot:pw1@h.example/app.git");
        let e = Endpoint::of(&r).unwrap();
        assert_eq!(e.username.as_deref(), Some("bot"));
        assert_eq!(e.password.as_ref().map(Secret::expose), Some("pw1"));
        assert!(!e.display().contains("pw1"));
        let mut r = r;
        r.lfs.username = Some("lfs-bot".into());
        r.lfs.password = Some(Secret::new("pw2".into()));
        let e = Endpoint::of(&r).unwrap();
        assert_eq!(e.username.as_deref(), Some("lfs-bot"));
        assert_eq!(e.password.as_ref().map(Secret::expose), Some("pw2"));
    }

    #[test]
    fn batch_answers_are_read_and_urls_are_shown_without_tokens() {
        let body = br#"{"transfer":"basic","objects":[
            {"oid":"aa","size":3,"actions":{"upload":{"href":"https://h/s/aa?jwt=SECRET","header":{"Authorization":"Bearer SECRET"}},"verify":{"href":"https://h/v"}}},
            {"oid":"bb","size":4},
            {"oid":"cc","size":5,"error":{"code":404,"message":"Object does not exist"}}]}"#;
        let answer = parse_batch_response(body).unwrap();
        assert_eq!(answer.objects.len(), 3);
        let upload = answer.objects[0]
            .actions
            .as_ref()
            .unwrap()
            .upload
            .as_ref()
            .unwrap();
        assert!(!format!("{upload:?}").contains("SECRET"));
        assert_eq!(shown_url(&upload.href), "https://h/s/aa");
        assert!(answer.objects[1].actions.is_none() && answer.objects[1].error.is_none());
        assert_eq!(answer.objects[2].error.as_ref().unwrap().code, 404);
        assert!(parse_batch_response(b"<html>").is_err());
    }
}
