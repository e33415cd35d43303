//! Push webhooks (pure): who sent a delivery, whether it is authentic, and whether it asks for a
//! sync. `ferry serve` hands every `POST /hooks/{mirror}` here with the mirror's secret and acts
//! on the [`Event`]; the HTTP status comes from the [`Rejection`] variant.
//!
//! Every provider proves knowledge of the mirror's secret differently:
//!
//! | provider | detected by | proof |
//! | --- | --- | --- |
//! | Forgejo | `x-forgejo-event` / `x-forgejo-signature` | `x-forgejo-signature` (or `x-gitea-signature`): hex HMAC-SHA256 of the body |
//! | Gitea | `x-gitea-event` / `x-gitea-signature` | `x-gitea-signature`: hex HMAC-SHA256 of the body |
//! | GitHub | `x-github-event` | `x-hub-signature-256: sha256=<hex HMAC-SHA256>` |
//! | GitLab | `x-gitlab-event` / `x-gitlab-token` | `x-gitlab-token`: the secret itself |
//! | Bitbucket Cloud, Server/DC | `x-event-key` | `x-hub-signature: sha256=<hex HMAC-SHA256>` |
//! | CodeCommit (EventBridge API destination) | body `"source": "aws.codecommit"` | `authorization: Bearer <secret>` or `x-ferry-token: <secret>` |
//! | generic | `authorization: Bearer` | `authorization: Bearer <secret>` (or `x-ferry-token`) |
//!
//! Forgejo and Gitea also send GitHub- and Gogs-style headers (`x-github-event`,
//! `x-hub-signature-256`), so their own headers are looked at first.
//!
//! Authentication always runs over the raw body, before any byte of it is parsed, and every
//! comparison is constant-time: HMACs through [`Mac::verify_slice`], tokens by comparing
//! SHA-256 digests so that neither the content nor the length of the secret leaks through
//! timing. Nothing here protects against replays (no provider signs a timestamp); a replayed
//! push only costs a sync.
//!
//! Bitbucket Cloud and Server/Data Center share `x-event-key` and the signature scheme; they
//! differ in event names and payloads. The rule, from Atlassian's documented headers and keys:
//! the event key decides when it only exists on one of them (`repo:push` is Cloud;
//! `repo:refs_changed` and `diagnostics:ping` are Server/DC); otherwise Cloud's
//! `x-request-uuid`/`x-hook-uuid` mean Cloud, then Server's `x-request-id` means Server/DC, and
//! anything else is taken as Cloud. Cloud's headers are checked before `x-request-id` because
//! reverse proxies commonly add an `x-request-id` of their own.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A request as the HTTP layer hands it over: header names lowercase.
pub struct Request<'a> {
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Who sent a delivery. Decides how it is authenticated and how its payload is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
    Forgejo,
    BitbucketCloud,
    BitbucketServer,
    CodeCommit,
    Generic,
}

impl Provider {
    /// The stable machine name (logs, metrics labels, the status page).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Forgejo => "forgejo",
            Provider::BitbucketCloud => "bitbucket_cloud",
            Provider::BitbucketServer => "bitbucket_server",
            Provider::CodeCommit => "codecommit",
            Provider::Generic => "generic",
        }
    }

    /// The name people know the provider by, for messages.
    fn label(self) -> &'static str {
        match self {
            Provider::GitHub => "GitHub",
            Provider::GitLab => "GitLab",
            Provider::Gitea => "Gitea",
            Provider::Forgejo => "Forgejo",
            Provider::BitbucketCloud => "Bitbucket Cloud",
            Provider::BitbucketServer => "Bitbucket Server",
            Provider::CodeCommit => "CodeCommit",
            Provider::Generic => "generic",
        }
    }
}

/// What an authenticated delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Refs changed on the source: sync. `refs` are full ref names when the payload says (may be empty).
    Push {
        provider: Provider,
        refs: Vec<String>,
    },
    /// A valid, authenticated delivery that needs no sync (ping, pull request, comment, ...).
    Ignored { provider: Provider, reason: String },
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// -> HTTP 401. Message says what was missing or wrong, never echoes secrets or expected signatures.
    #[error("{0}")]
    Unauthorized(String),
    /// -> HTTP 400. Message says what was wrong with the request.
    #[error("{0}")]
    Malformed(String),
}

const NO_SECRET: &str =
    "no webhook secret is configured for this mirror; set webhook_secret_env or webhook_secret_file";

const NO_PROOF: &str = "no signature or token: GitHub sends x-github-event with \
    x-hub-signature-256, GitLab x-gitlab-event with x-gitlab-token, Gitea x-gitea-signature, \
    Forgejo x-forgejo-signature, Bitbucket Cloud and Server x-event-key with x-hub-signature (all \
    only when the webhook has a secret); CodeCommit through an EventBridge API destination and \
    generic senders must send 'authorization: Bearer <secret>' or 'x-ferry-token: <secret>'";

/// Detects the provider, authenticates with the mirror's `secret`, parses and classifies.
pub fn receive(req: &Request<'_>, secret: &str) -> Result<Event, Rejection> {
    // Checked first: with an empty secret an empty bearer token would "match", and whatever the
    // sender does, the fix is on ferry's side.
    if secret.is_empty() {
        return Err(Rejection::Unauthorized(NO_SECRET.to_string()));
    }
    match detect(req) {
        Sender::Provider(provider) => {
            authenticate(provider, req, secret)?;
            let body = parse_body(req.body)?;
            classify(provider, req, &body)
        }
        Sender::Token => {
            // CodeCommit and generic senders authenticate the same way, so the body (which is
            // what tells them apart) is only read once the token holds.
            check_bearer_or_ferry_token(req, secret)?;
            let body = parse_body(req.body)?;
            if body.get("source").and_then(Value::as_str) == Some("aws.codecommit") {
                codecommit(&body)
            } else {
                generic(&body)
            }
        }
        Sender::Unknown => {
            // A substring scan, not a parse: the body is not authenticated yet. It only makes the
            // message point at the EventBridge connection when that is what is missing.
            if contains(req.body, b"aws.codecommit") {
                Err(Rejection::Unauthorized(
                    "no token on what looks like a CodeCommit event: give the EventBridge API \
                     destination a connection that adds 'authorization: Bearer <secret>' or \
                     'x-ferry-token: <secret>'"
                        .to_string(),
                ))
            } else {
                Err(Rejection::Unauthorized(NO_PROOF.to_string()))
            }
        }
    }
}

/// The outcome of looking at the headers alone.
enum Sender {
    Provider(Provider),
    /// `authorization` or `x-ferry-token`: CodeCommit or generic, decided by the body once
    /// authenticated.
    Token,
    Unknown,
}

fn detect(req: &Request<'_>) -> Sender {
    let has = |name: &str| header(req, name).is_some();
    if has("x-forgejo-event") || has("x-forgejo-signature") {
        return Sender::Provider(Provider::Forgejo);
    }
    if has("x-gitea-event") || has("x-gitea-signature") {
        return Sender::Provider(Provider::Gitea);
    }
    if has("x-github-event") {
        return Sender::Provider(Provider::GitHub);
    }
    if has("x-gitlab-event") || has("x-gitlab-token") {
        return Sender::Provider(Provider::GitLab);
    }
    if let Some(key) = header(req, "x-event-key") {
        return Sender::Provider(bitbucket_flavour(req, key));
    }
    if has("authorization") || has("x-ferry-token") {
        return Sender::Token;
    }
    Sender::Unknown
}

/// Bitbucket Cloud or Server/Data Center: see the module documentation for the rule.
fn bitbucket_flavour(req: &Request<'_>, key: &str) -> Provider {
    match key {
        "repo:push" => Provider::BitbucketCloud,
        "repo:refs_changed" | "diagnostics:ping" => Provider::BitbucketServer,
        _ if header(req, "x-request-uuid").is_some() || header(req, "x-hook-uuid").is_some() => {
            Provider::BitbucketCloud
        }
        _ if header(req, "x-request-id").is_some() => Provider::BitbucketServer,
        _ => Provider::BitbucketCloud,
    }
}

fn authenticate(provider: Provider, req: &Request<'_>, secret: &str) -> Result<(), Rejection> {
    match provider {
        Provider::GitHub => match header(req, "x-hub-signature-256") {
            Some(value) => check_prefixed_hmac("x-hub-signature-256", value, req.body, secret),
            None if header(req, "x-hub-signature").is_some() => Err(unauthorized(
                "GitHub sent only the SHA-1 x-hub-signature; ferry accepts only the HMAC-SHA256 \
                 x-hub-signature-256: set the webhook's secret in GitHub to this mirror's webhook \
                 secret so GitHub sends x-hub-signature-256",
            )),
            None => Err(unauthorized(
                "missing x-hub-signature-256: set the webhook's secret in GitHub to this mirror's \
                 webhook secret",
            )),
        },
        // A Forgejo signature that is present is the one checked: a bad one is not rescued by a
        // good Gitea-compatible one.
        Provider::Forgejo => match header(req, "x-forgejo-signature") {
            Some(value) => check_hex_hmac("x-forgejo-signature", value, req.body, secret),
            None => match header(req, "x-gitea-signature") {
                Some(value) => check_hex_hmac("x-gitea-signature", value, req.body, secret),
                None => Err(unauthorized(
                    "missing x-forgejo-signature: set the webhook's secret in Forgejo to this \
                     mirror's webhook secret",
                )),
            },
        },
        Provider::Gitea => match header(req, "x-gitea-signature") {
            Some(value) => check_hex_hmac("x-gitea-signature", value, req.body, secret),
            None => Err(unauthorized(
                "missing x-gitea-signature: set the webhook's secret in Gitea to this mirror's \
                 webhook secret",
            )),
        },
        Provider::GitLab => match header(req, "x-gitlab-token") {
            Some(value) => check_token("x-gitlab-token", value, secret),
            None => Err(unauthorized(
                "missing x-gitlab-token: set the webhook's secret token in GitLab to this \
                 mirror's webhook secret",
            )),
        },
        Provider::BitbucketCloud | Provider::BitbucketServer => {
            match header(req, "x-hub-signature") {
                Some(value) => check_prefixed_hmac("x-hub-signature", value, req.body, secret),
                None => Err(unauthorized(
                    "missing x-hub-signature: set the webhook's secret in Bitbucket to this \
                     mirror's webhook secret",
                )),
            }
        }
        Provider::CodeCommit | Provider::Generic => check_bearer_or_ferry_token(req, secret),
    }
}

/// `authorization: Bearer <secret>` or `x-ferry-token: <secret>`. A present `authorization`
/// header is the one checked, so a wrong one is reported as wrong, not as missing.
fn check_bearer_or_ferry_token(req: &Request<'_>, secret: &str) -> Result<(), Rejection> {
    if let Some(value) = header(req, "authorization") {
        let token = bearer_token(value).ok_or_else(|| {
            unauthorized(
                "the authorization header is not a bearer token: send 'authorization: Bearer \
                 <secret>' (or 'x-ferry-token: <secret>')",
            )
        })?;
        return check_token("the bearer token", token, secret);
    }
    match header(req, "x-ferry-token") {
        Some(value) => check_token("x-ferry-token", value, secret),
        None => Err(unauthorized(
            "missing token: send 'authorization: Bearer <secret>' or 'x-ferry-token: <secret>'",
        )),
    }
}

/// The credentials of `Bearer <token>`; the scheme is case-insensitive (RFC 9110).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Compares a plain token with the secret in constant time. Both sides are hashed first so the
/// comparison always covers 32 bytes: the time taken says nothing about the secret's length.
fn check_token(what: &str, given: &str, secret: &str) -> Result<(), Rejection> {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(secret.as_bytes());
    if bool::from(given.as_slice().ct_eq(expected.as_slice())) {
        Ok(())
    } else {
        Err(Rejection::Unauthorized(format!(
            "signature does not match: {what} is not this mirror's webhook secret"
        )))
    }
}

/// `sha256=<hex>` (GitHub's `x-hub-signature-256`, Bitbucket's `x-hub-signature`).
fn check_prefixed_hmac(
    name: &str,
    value: &str,
    body: &[u8],
    secret: &str,
) -> Result<(), Rejection> {
    let value = value.trim();
    let Some((algorithm, hex_digest)) = value.split_once('=') else {
        return Err(Rejection::Unauthorized(format!(
            "{name} is not of the form 'sha256=<hex HMAC-SHA256 of the body>'"
        )));
    };
    if !algorithm.eq_ignore_ascii_case("sha256") {
        // The algorithm name is not secret and tells the user what to change.
        let algorithm: String = algorithm.chars().take(16).collect();
        return Err(Rejection::Unauthorized(format!(
            "{name} uses '{algorithm}'; ferry accepts only sha256 (HMAC-SHA256)"
        )));
    }
    check_hex_hmac(name, hex_digest, body, secret)
}

/// A bare hex HMAC-SHA256 of the body, verified in constant time.
fn check_hex_hmac(
    name: &str,
    hex_digest: &str,
    body: &[u8],
    secret: &str,
) -> Result<(), Rejection> {
    let Ok(given) = hex::decode(hex_digest.trim()) else {
        return Err(Rejection::Unauthorized(format!(
            "{name} is not hexadecimal: expected the hex HMAC-SHA256 of the body"
        )));
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| unauthorized("the webhook secret cannot be used as an HMAC key"))?;
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| {
        Rejection::Unauthorized(format!(
            "signature does not match: {name} is not the HMAC-SHA256 of the body under this \
             mirror's webhook secret (check that the secret set at the provider is the same, \
             and that nothing between them and ferry rewrites the body)"
        ))
    })
}

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, Rejection> {
    if body.starts_with(b"payload=") {
        return Err(Rejection::Malformed(
            "the body is form-encoded (payload=...): set the webhook's content type to \
             application/json"
                .to_string(),
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Rejection::Malformed(
            "the body is JSON but not an object".to_string(),
        )),
        Err(e) => Err(Rejection::Malformed(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

fn classify(
    provider: Provider,
    req: &Request<'_>,
    body: &Map<String, Value>,
) -> Result<Event, Rejection> {
    match provider {
        Provider::GitHub => {
            let event = required_header(req, &["x-github-event"])?;
            match event {
                "push" => Ok(push(provider, ref_field(body))),
                "ping" => Ok(ignored(provider, "ping".to_string())),
                _ => Ok(not_a_push(provider, event)),
            }
        }
        Provider::GitLab => gitlab(req, body),
        Provider::Gitea => gitea(
            provider,
            required_header(req, &["x-gitea-event", "x-gogs-event", "x-github-event"])?,
            body,
        ),
        Provider::Forgejo => gitea(
            provider,
            required_header(req, &["x-forgejo-event", "x-gitea-event", "x-github-event"])?,
            body,
        ),
        Provider::BitbucketCloud => {
            let key = required_header(req, &["x-event-key"])?;
            match key {
                "repo:push" => Ok(push(provider, bitbucket_cloud_refs(body))),
                _ => Ok(not_a_push(provider, key)),
            }
        }
        Provider::BitbucketServer => {
            let key = required_header(req, &["x-event-key"])?;
            match key {
                "repo:refs_changed" => Ok(push(provider, bitbucket_server_refs(body))),
                "diagnostics:ping" => Ok(ignored(provider, "ping".to_string())),
                _ => Ok(not_a_push(provider, key)),
            }
        }
        Provider::CodeCommit => codecommit(body),
        Provider::Generic => generic(body),
    }
}

/// GitLab names events in `x-gitlab-event`; system hooks all say "System Hook" and name the
/// event in `object_kind`. Without the header (some proxies drop it) `object_kind` decides.
fn gitlab(req: &Request<'_>, body: &Map<String, Value>) -> Result<Event, Rejection> {
    let provider = Provider::GitLab;
    let kind = body.get("object_kind").and_then(Value::as_str);
    let is_push = |kind: Option<&str>| matches!(kind, Some("push" | "tag_push"));
    match header(req, "x-gitlab-event") {
        Some("Push Hook" | "Tag Push Hook") => Ok(push(provider, ref_field(body))),
        Some("System Hook") if is_push(kind) => Ok(push(provider, ref_field(body))),
        Some("System Hook") => Ok(ignored(
            provider,
            format!(
                "GitLab system hook '{}' is not a push",
                kind.unwrap_or("(no object_kind)")
            ),
        )),
        Some(event) => Ok(not_a_push(provider, event)),
        None if is_push(kind) => Ok(push(provider, ref_field(body))),
        None => match kind {
            Some(kind) => Ok(not_a_push(provider, kind)),
            None => Err(Rejection::Malformed(
                "missing x-gitlab-event header and no object_kind in the body".to_string(),
            )),
        },
    }
}

/// Gitea and Forgejo: `push` covers branch and tag pushes (and deletions); `create`/`delete`
/// carry a short name in `ref` with `ref_type` saying branch or tag.
fn gitea(provider: Provider, event: &str, body: &Map<String, Value>) -> Result<Event, Rejection> {
    match event {
        "push" => Ok(push(provider, ref_field(body))),
        "create" | "delete" => {
            let name = body.get("ref").and_then(Value::as_str);
            let kind = body.get("ref_type").and_then(Value::as_str);
            Ok(push(
                provider,
                name.and_then(|n| qualify(n, kind)).into_iter().collect(),
            ))
        }
        _ => Ok(not_a_push(provider, event)),
    }
}

/// Bitbucket Cloud `repo:push`: one change per ref; `new` is null for a deletion and `old` for
/// a creation. Mercurial-era types (`named_branch`, `bookmark`) have no git ref and are skipped.
fn bitbucket_cloud_refs(body: &Map<String, Value>) -> Vec<String> {
    let changes = body
        .get("push")
        .and_then(|p| p.get("changes"))
        .and_then(Value::as_array);
    let refs = changes.into_iter().flatten().filter_map(|change| {
        let side = ["new", "old"]
            .iter()
            .find_map(|k| change.get(*k).filter(|v| v.is_object()))?;
        let name = side.get("name").and_then(Value::as_str)?;
        let kind = side.get("type").and_then(Value::as_str)?;
        matches!(kind, "branch" | "tag")
            .then(|| qualify(name, Some(kind)))
            .flatten()
    });
    dedup(refs)
}

/// Bitbucket Server/DC `repo:refs_changed`: `changes[].ref.id` is the full name (`refId` in
/// older payloads).
fn bitbucket_server_refs(body: &Map<String, Value>) -> Vec<String> {
    let changes = body.get("changes").and_then(Value::as_array);
    let refs = changes.into_iter().flatten().filter_map(|change| {
        change
            .get("ref")
            .and_then(|r| r.get("id"))
            .or_else(|| change.get("refId"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    dedup(refs)
}

const CODECOMMIT_STATE_CHANGE: &str = "CodeCommit Repository State Change";

/// An EventBridge event from CodeCommit. Only "Repository State Change" events can move refs,
/// and among them `unreferencedMergeCommitCreated` does not. Pull requests and comments come
/// with other detail-types ("CodeCommit Pull Request State Change", "CodeCommit Comment on
/// Pull Request", ...).
fn codecommit(body: &Map<String, Value>) -> Result<Event, Rejection> {
    let provider = Provider::CodeCommit;
    let detail = body.get("detail");
    let event = detail.and_then(|d| d.get("event")).and_then(Value::as_str);
    let detail_type = body.get("detail-type").and_then(Value::as_str);
    if detail_type != Some(CODECOMMIT_STATE_CHANGE) {
        let detail_type = detail_type.unwrap_or("(no detail-type)");
        let reason = match event {
            Some(event) => {
                format!("CodeCommit event '{event}' ({detail_type}) is not a reference change")
            }
            None => format!("CodeCommit '{detail_type}' event is not a reference change"),
        };
        return Ok(ignored(provider, reason));
    }
    let Some(event) = event else {
        return Err(Rejection::Malformed(format!(
            "{CODECOMMIT_STATE_CHANGE} event without a string detail.event"
        )));
    };
    match event {
        "referenceCreated" | "referenceUpdated" | "referenceDeleted" => {
            let field = |name: &str| detail.and_then(|d| d.get(name)).and_then(Value::as_str);
            let full = field("referenceFullName").filter(|r| r.starts_with("refs/"));
            let name = full.or_else(|| field("referenceName"));
            let reference = name.and_then(|n| qualify(n, field("referenceType")));
            Ok(push(provider, reference.into_iter().collect()))
        }
        _ => Ok(ignored(
            provider,
            format!("CodeCommit event '{event}' is not a reference change"),
        )),
    }
}

/// ferry's own format, for scripts and CI: any JSON object is a push; `ref` (a string) or `refs`
/// (an array of strings) narrow it to full ref names.
fn generic(body: &Map<String, Value>) -> Result<Event, Rejection> {
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
    Ok(push(Provider::Generic, dedup(refs.into_iter())))
}

/// The full ref name for a name that may be short, given "branch" or "tag". `None` when it
/// cannot be told: the push then carries no refs and syncs everything.
fn qualify(name: &str, kind: Option<&str>) -> Option<String> {
    if name.starts_with("refs/") {
        return Some(name.to_string());
    }
    if name.is_empty() {
        return None;
    }
    match kind {
        Some("branch") => Some(format!("refs/heads/{name}")),
        Some("tag") => Some(format!("refs/tags/{name}")),
        _ => None,
    }
}

/// `body.ref` as a one-element list. A missing `ref` is not an error: an imprecise push only
/// syncs more refs than needed, while refusing it could miss a change.
fn ref_field(body: &Map<String, Value>) -> Vec<String> {
    body.get("ref")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .into_iter()
        .collect()
}

fn dedup(refs: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in refs {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

fn push(provider: Provider, refs: Vec<String>) -> Event {
    Event::Push { provider, refs }
}

fn ignored(provider: Provider, reason: String) -> Event {
    Event::Ignored { provider, reason }
}

fn not_a_push(provider: Provider, event: &str) -> Event {
    // Event names come from the sender; keep them short in what is logged.
    let event: String = event.chars().take(100).collect();
    ignored(
        provider,
        format!("{} event '{event}' is not a push", provider.label()),
    )
}

fn unauthorized(message: &str) -> Rejection {
    Rejection::Unauthorized(message.to_string())
}

/// The first header of that name (names compared case-insensitively, though the HTTP layer
/// already lowercases them), trimmed.
fn header<'r>(req: &Request<'r>, name: &str) -> Option<&'r str> {
    req.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// The first of `names` present; Malformed naming the first when none is.
fn required_header<'r>(req: &Request<'r>, names: &[&str]) -> Result<&'r str, Rejection> {
    names
        .iter()
        .find_map(|name| header(req, name))
        .ok_or_else(|| {
            Rejection::Malformed(format!(
                "missing {} header: cannot tell which event this is",
                names.first().copied().unwrap_or("event")
            ))
        })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "It's a Secret to Everybody";

    /// The hex HMAC-SHA256 a provider computes over the exact bytes it sends.
    fn sign(secret: &str, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn receive_with(
        headers: &[(&str, &str)],
        body: &str,
        secret: &str,
    ) -> Result<Event, Rejection> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        receive(
            &Request {
                headers: &headers,
                body: body.as_bytes(),
            },
            secret,
        )
    }

    fn run(headers: &[(&str, &str)], body: &str) -> Result<Event, Rejection> {
        receive_with(headers, body, SECRET)
    }

    fn pushed(provider: Provider, refs: &[&str]) -> Result<Event, Rejection> {
        Ok(Event::Push {
            provider,
            refs: refs.iter().map(|r| r.to_string()).collect(),
        })
    }

    #[track_caller]
    fn assert_ignored(result: Result<Event, Rejection>, provider: Provider, reason_has: &str) {
        match result {
            Ok(Event::Ignored {
                provider: p,
                reason,
            }) => {
                assert_eq!(p, provider);
                assert!(
                    reason.contains(reason_has),
                    "reason {reason:?} lacks {reason_has:?}"
                );
            }
            other => panic!("expected Ignored, got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_unauthorized(result: Result<Event, Rejection>, message_has: &str) {
        match result {
            Err(Rejection::Unauthorized(message)) => {
                assert!(
                    message.contains(message_has),
                    "message {message:?} lacks {message_has:?}"
                );
                assert!(
                    !message.contains(SECRET),
                    "message leaks the secret: {message:?}"
                );
            }
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_malformed(result: Result<Event, Rejection>, message_has: &str) {
        match result {
            Err(Rejection::Malformed(message)) => {
                assert!(
                    message.contains(message_has),
                    "message {message:?} lacks {message_has:?}"
                )
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    const NOT_JSON: &str = "{\"ref\": \"refs/heads/main\",";

    // ---------------------------------------------------------------- GitHub

    const GITHUB_PUSH: &str = r#"{
  "ref": "refs/heads/main",
  "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
  "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
  "repository": {"id": 1296269, "name": "app", "full_name": "acme/app", "private": true},
  "pusher": {"name": "octocat", "email": "octocat@github.com"},
  "created": false, "deleted": false, "forced": false, "base_ref": null,
  "compare": "https://github.com/acme/app/compare/6113728f27ae...0d1a26e67d8f",
  "commits": [{"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "Fix all the bugs", "distinct": true}],
  "head_commit": {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "Fix all the bugs"}
}"#;

    const GITHUB_TAG_DELETED: &str = r#"{
  "ref": "refs/tags/v1.0.0",
  "before": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
  "after": "0000000000000000000000000000000000000000",
  "repository": {"id": 1296269, "full_name": "acme/app"},
  "created": false, "deleted": true, "forced": false,
  "commits": [], "head_commit": null
}"#;

    const GITHUB_PING: &str = r#"{
  "zen": "Design for failure.",
  "hook_id": 109948940,
  "hook": {"type": "Repository", "id": 109948940, "name": "web", "active": true,
           "events": ["push"], "config": {"content_type": "json", "insecure_ssl": "0",
           "url": "https://ferry.example.com/hooks/app"}},
  "repository": {"id": 1296269, "full_name": "acme/app"}
}"#;

    const GITHUB_PULL_REQUEST: &str = r#"{
  "action": "opened", "number": 2,
  "pull_request": {"number": 2, "state": "open", "head": {"ref": "feature"}, "base": {"ref": "main"}},
  "repository": {"id": 1296269, "full_name": "acme/app"}
}"#;

    fn github(event: &str, body: &str) -> Result<Event, Rejection> {
        let sig = format!("sha256={}", sign(SECRET, body));
        run(
            &[
                ("x-github-event", event),
                ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
                (
                    "x-hub-signature",
                    "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6",
                ),
                ("x-hub-signature-256", &sig),
            ],
            body,
        )
    }

    #[test]
    fn github_signed_push_is_a_push_of_its_ref() {
        assert_eq!(
            github("push", GITHUB_PUSH),
            pushed(Provider::GitHub, &["refs/heads/main"])
        );
        assert_eq!(
            github("push", GITHUB_TAG_DELETED),
            pushed(Provider::GitHub, &["refs/tags/v1.0.0"])
        );
    }

    #[test]
    fn github_ping_and_other_events_are_ignored() {
        assert_eq!(
            github("ping", GITHUB_PING),
            Ok(Event::Ignored {
                provider: Provider::GitHub,
                reason: "ping".to_string()
            })
        );
        assert_ignored(
            github("pull_request", GITHUB_PULL_REQUEST),
            Provider::GitHub,
            "GitHub event 'pull_request' is not a push",
        );
    }

    #[test]
    fn github_wrong_signature_is_unauthorized() {
        let sig = format!("sha256={}", sign("another secret", GITHUB_PUSH));
        let result = run(
            &[("x-github-event", "push"), ("x-hub-signature-256", &sig)],
            GITHUB_PUSH,
        );
        assert_unauthorized(result, "signature does not match");
        // A signature over other bytes (the JSON re-serialized, say) does not match either.
        let sig = format!("sha256={}", sign(SECRET, &format!("{GITHUB_PUSH}\n")));
        let result = run(
            &[("x-github-event", "push"), ("x-hub-signature-256", &sig)],
            GITHUB_PUSH,
        );
        assert_unauthorized(result, "signature does not match");
        let result = run(
            &[
                ("x-github-event", "push"),
                ("x-hub-signature-256", "sha256=not-hex"),
            ],
            GITHUB_PUSH,
        );
        assert_unauthorized(result, "not hexadecimal");
        let result = run(
            &[
                ("x-github-event", "push"),
                ("x-hub-signature-256", "0d1a26e6"),
            ],
            GITHUB_PUSH,
        );
        assert_unauthorized(result, "sha256=");
    }

    #[test]
    fn github_missing_signature_is_unauthorized() {
        assert_unauthorized(
            run(&[("x-github-event", "push")], GITHUB_PUSH),
            "missing x-hub-signature-256",
        );
        let sha1_only = run(
            &[
                ("x-github-event", "push"),
                (
                    "x-hub-signature",
                    "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6",
                ),
            ],
            GITHUB_PUSH,
        );
        assert_unauthorized(sha1_only, "SHA-1");
    }

    #[test]
    fn github_invalid_json_with_a_valid_signature_is_malformed() {
        assert_malformed(github("push", NOT_JSON), "not valid JSON");
        assert_malformed(github("push", "[1, 2]"), "not an object");
        assert_malformed(
            github(
                "push",
                "payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D",
            ),
            "application/json",
        );
    }

    #[test]
    fn signature_is_checked_before_the_body_is_parsed() {
        // Unsigned garbage is a 401, not a 400: nothing about the body is revealed or trusted.
        let result = run(
            &[
                ("x-github-event", "push"),
                ("x-hub-signature-256", "sha256=00"),
            ],
            NOT_JSON,
        );
        assert_unauthorized(result, "signature does not match");
    }

    // ---------------------------------------------------------------- GitLab

    const GITLAB_PUSH: &str = r#"{
  "object_kind": "push", "event_name": "push",
  "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
  "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
  "ref": "refs/heads/master", "ref_protected": true,
  "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
  "user_id": 4, "user_name": "John Smith", "user_username": "jsmith",
  "project_id": 15,
  "project": {"id": 15, "name": "Diaspora", "path_with_namespace": "mike/diaspora",
              "default_branch": "master", "git_http_url": "http://example.com/mike/diaspora.git"},
  "commits": [{"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "message": "fixed readme"}],
  "total_commits_count": 1
}"#;

    const GITLAB_TAG_PUSH: &str = r#"{
  "object_kind": "tag_push", "event_name": "tag_push",
  "before": "0000000000000000000000000000000000000000",
  "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
  "ref": "refs/tags/v1.0.0", "ref_protected": true,
  "checkout_sha": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
  "user_id": 1, "user_name": "John Smith", "project_id": 1,
  "project": {"id": 1, "name": "Example", "path_with_namespace": "jsmith/example"},
  "commits": [], "total_commits_count": 0
}"#;

    const GITLAB_MERGE_REQUEST: &str = r#"{
  "object_kind": "merge_request", "event_type": "merge_request",
  "user": {"id": 1, "name": "Administrator", "username": "root"},
  "project": {"id": 1, "name": "Gitlab Test", "path_with_namespace": "gitlabhq/gitlab-test"},
  "object_attributes": {"id": 99, "iid": 1, "source_branch": "ms-viewport",
                        "target_branch": "master", "state": "opened", "action": "open"}
}"#;

    const GITLAB_SYSTEM_REPOSITORY_UPDATE: &str = r#"{
  "event_name": "repository_update", "user_id": 1, "user_name": "John Smith",
  "project_id": 1, "changes": [{"before": "8205ea8d81ce0c6b90fbe8280d118cc9fdad6130",
  "after": "4045ea7a3df38697b3730a20fb73c8bed8a3e69e", "ref": "refs/heads/master"}],
  "refs": ["refs/heads/master"]
}"#;

    fn gitlab(event: &str, body: &str, token: &str) -> Result<Event, Rejection> {
        run(
            &[
                ("x-gitlab-event", event),
                ("x-gitlab-instance", "https://gitlab.example.com"),
                (
                    "x-gitlab-event-uuid",
                    "5c2f8f2c-d8b0-4a8a-9a8a-0a3f7c1e5f11",
                ),
                ("x-gitlab-token", token),
            ],
            body,
        )
    }

    #[test]
    fn gitlab_push_and_tag_push_with_the_token_are_pushes() {
        assert_eq!(
            gitlab("Push Hook", GITLAB_PUSH, SECRET),
            pushed(Provider::GitLab, &["refs/heads/master"])
        );
        assert_eq!(
            gitlab("Tag Push Hook", GITLAB_TAG_PUSH, SECRET),
            pushed(Provider::GitLab, &["refs/tags/v1.0.0"])
        );
        assert_eq!(
            gitlab("System Hook", GITLAB_PUSH, SECRET),
            pushed(Provider::GitLab, &["refs/heads/master"])
        );
        assert_eq!(
            gitlab("System Hook", GITLAB_TAG_PUSH, SECRET),
            pushed(Provider::GitLab, &["refs/tags/v1.0.0"])
        );
    }

    #[test]
    fn gitlab_other_events_are_ignored() {
        assert_ignored(
            gitlab("Merge Request Hook", GITLAB_MERGE_REQUEST, SECRET),
            Provider::GitLab,
            "GitLab event 'Merge Request Hook' is not a push",
        );
        assert_ignored(
            gitlab("System Hook", GITLAB_SYSTEM_REPOSITORY_UPDATE, SECRET),
            Provider::GitLab,
            "system hook",
        );
    }

    #[test]
    fn gitlab_wrong_or_missing_token_is_unauthorized() {
        assert_unauthorized(
            gitlab("Push Hook", GITLAB_PUSH, "It's a Secret to Everybod"),
            "signature does not match",
        );
        assert_unauthorized(
            gitlab("Push Hook", GITLAB_PUSH, "It's a Secret to Everybody!"),
            "signature does not match",
        );
        assert_unauthorized(
            run(&[("x-gitlab-event", "Push Hook")], GITLAB_PUSH),
            "missing x-gitlab-token",
        );
    }

    #[test]
    fn gitlab_invalid_json_with_the_token_is_malformed() {
        assert_malformed(gitlab("Push Hook", NOT_JSON, SECRET), "not valid JSON");
    }

    // ---------------------------------------------------------------- Gitea and Forgejo

    const GITEA_PUSH: &str = r#"{
  "ref": "refs/heads/develop",
  "before": "28e1879d029cb852e4844d9c718537df08844e03",
  "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
  "compare_url": "http://localhost:3000/gitea/webhooks/compare/28e1879d029c...bffeb7422404",
  "commits": [{"id": "bffeb74224043ba2feb48d137756c8a9331c449a", "message": "Webhooks Yay!"}],
  "repository": {"id": 140, "name": "webhooks", "full_name": "gitea/webhooks", "private": false},
  "pusher": {"id": 1, "login": "gitea", "username": "gitea"},
  "sender": {"id": 1, "login": "gitea", "username": "gitea"}
}"#;

    const GITEA_CREATE_TAG: &str = r#"{
  "sha": "bffeb74224043ba2feb48d137756c8a9331c449a",
  "ref": "v1.2.0", "ref_type": "tag",
  "repository": {"id": 140, "full_name": "gitea/webhooks"},
  "sender": {"id": 1, "login": "gitea"}
}"#;

    const GITEA_DELETE_BRANCH: &str = r#"{
  "ref": "feature/old", "ref_type": "branch", "pusher_type": "user",
  "repository": {"id": 140, "full_name": "gitea/webhooks"},
  "sender": {"id": 1, "login": "gitea"}
}"#;

    const GITEA_PULL_REQUEST: &str = r#"{
  "action": "opened", "number": 1,
  "pull_request": {"id": 1, "number": 1, "title": "Update README", "state": "open",
                   "head": {"ref": "feature"}, "base": {"ref": "main"}},
  "repository": {"id": 140, "full_name": "gitea/webhooks"}
}"#;

    /// Headers as Gitea sends them: its own, plus Gogs- and GitHub-compatible ones.
    fn gitea(event: &str, body: &str, secret: &str) -> Result<Event, Rejection> {
        let sig = sign(secret, body);
        let sig256 = format!("sha256={sig}");
        run(
            &[
                ("x-github-delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
                ("x-github-event", event),
                ("x-gogs-delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
                ("x-gogs-event", event),
                ("x-gogs-signature", &sig),
                ("x-gitea-delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
                ("x-gitea-event", event),
                ("x-gitea-event-type", event),
                ("x-gitea-signature", &sig),
                ("x-hub-signature-256", &sig256),
            ],
            body,
        )
    }

    /// Headers as Forgejo sends them: its own plus Gitea-, Gogs- and GitHub-compatible ones.
    fn forgejo_headers(event: &str, body: &str) -> Vec<(String, String)> {
        let sig = sign(SECRET, body);
        [
            ("x-forgejo-delivery", "0e1d2c3b-4a59-4687-9a8b-7c6d5e4f3a2b"),
            ("x-forgejo-event", event),
            ("x-forgejo-event-type", event),
            ("x-forgejo-signature", &sig),
            ("x-gitea-event", event),
            ("x-gitea-signature", &sig),
            ("x-gogs-event", event),
            ("x-github-event", event),
            ("x-hub-signature-256", &format!("sha256={sig}")),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
    }

    fn forgejo(headers: &[(String, String)], body: &str) -> Result<Event, Rejection> {
        receive(
            &Request {
                headers,
                body: body.as_bytes(),
            },
            SECRET,
        )
    }

    fn without(headers: &[(String, String)], name: &str) -> Vec<(String, String)> {
        headers.iter().filter(|(n, _)| n != name).cloned().collect()
    }

    fn replace(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
        let mut out = without(headers, name);
        out.push((name.to_string(), value.to_string()));
        out
    }

    #[test]
    fn gitea_signed_push_create_and_delete_are_pushes() {
        assert_eq!(
            gitea("push", GITEA_PUSH, SECRET),
            pushed(Provider::Gitea, &["refs/heads/develop"])
        );
        assert_eq!(
            gitea("create", GITEA_CREATE_TAG, SECRET),
            pushed(Provider::Gitea, &["refs/tags/v1.2.0"])
        );
        assert_eq!(
            gitea("delete", GITEA_DELETE_BRANCH, SECRET),
            pushed(Provider::Gitea, &["refs/heads/feature/old"])
        );
    }

    #[test]
    fn gitea_other_events_are_ignored() {
        assert_ignored(
            gitea("pull_request", GITEA_PULL_REQUEST, SECRET),
            Provider::Gitea,
            "Gitea event 'pull_request' is not a push",
        );
    }

    #[test]
    fn gitea_wrong_or_missing_signature_is_unauthorized() {
        assert_unauthorized(
            gitea("push", GITEA_PUSH, "wrong"),
            "signature does not match",
        );
        let sig = sign(SECRET, GITEA_PUSH);
        // Gitea's GitHub-style header alone does not identify it as Gitea ...
        let result = run(
            &[
                ("x-gitea-event", "push"),
                ("x-hub-signature-256", &format!("sha256={sig}")),
            ],
            GITEA_PUSH,
        );
        assert_unauthorized(result, "missing x-gitea-signature");
        assert_unauthorized(
            run(&[("x-gitea-event", "push")], GITEA_PUSH),
            "missing x-gitea-signature",
        );
    }

    #[test]
    fn gitea_invalid_json_with_a_valid_signature_is_malformed() {
        assert_malformed(gitea("push", NOT_JSON, SECRET), "not valid JSON");
    }

    #[test]
    fn gitea_request_that_also_carries_github_headers_is_gitea() {
        // Detection precedence: x-github-event and x-hub-signature-256 are present too.
        match gitea("push", GITEA_PUSH, SECRET) {
            Ok(Event::Push { provider, .. }) => assert_eq!(provider, Provider::Gitea),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forgejo_signed_push_is_a_forgejo_push() {
        let headers = forgejo_headers("push", GITEA_PUSH);
        assert_eq!(
            forgejo(&headers, GITEA_PUSH),
            pushed(Provider::Forgejo, &["refs/heads/develop"])
        );
        let headers = forgejo_headers("create", GITEA_CREATE_TAG);
        assert_eq!(
            forgejo(&headers, GITEA_CREATE_TAG),
            pushed(Provider::Forgejo, &["refs/tags/v1.2.0"])
        );
    }

    #[test]
    fn forgejo_accepts_the_gitea_signature_alone() {
        let headers = without(&forgejo_headers("push", GITEA_PUSH), "x-forgejo-signature");
        assert_eq!(
            forgejo(&headers, GITEA_PUSH),
            pushed(Provider::Forgejo, &["refs/heads/develop"])
        );
    }

    #[test]
    fn forgejo_wrong_signature_is_not_rescued_by_a_good_gitea_one() {
        let headers = replace(
            &forgejo_headers("push", GITEA_PUSH),
            "x-forgejo-signature",
            &sign("wrong", GITEA_PUSH),
        );
        assert_unauthorized(forgejo(&headers, GITEA_PUSH), "signature does not match");
    }

    #[test]
    fn forgejo_missing_signature_is_unauthorized() {
        let headers = without(
            &without(&forgejo_headers("push", GITEA_PUSH), "x-forgejo-signature"),
            "x-gitea-signature",
        );
        assert_unauthorized(forgejo(&headers, GITEA_PUSH), "missing x-forgejo-signature");
    }

    #[test]
    fn forgejo_other_events_are_ignored_and_bad_json_is_malformed() {
        let headers = forgejo_headers("pull_request", GITEA_PULL_REQUEST);
        assert_ignored(
            forgejo(&headers, GITEA_PULL_REQUEST),
            Provider::Forgejo,
            "Forgejo event 'pull_request' is not a push",
        );
        let headers = forgejo_headers("push", NOT_JSON);
        assert_malformed(forgejo(&headers, NOT_JSON), "not valid JSON");
    }

    // ---------------------------------------------------------------- Bitbucket Cloud

    const BITBUCKET_CLOUD_PUSH: &str = r#"{
  "push": {"changes": [
    {"new": {"type": "branch", "name": "main",
             "target": {"type": "commit", "hash": "709d658dc5b6d6afcd46049c2f332ee3f515a67d"}},
     "old": {"type": "branch", "name": "main",
             "target": {"type": "commit", "hash": "1e65c05c1d5171631d92438a13901ca7dae9618c"}},
     "created": false, "forced": false, "closed": false, "truncated": false,
     "commits": [{"type": "commit", "hash": "709d658dc5b6d6afcd46049c2f332ee3f515a67d"}]},
    {"new": {"type": "tag", "name": "v2.0",
             "target": {"type": "commit", "hash": "709d658dc5b6d6afcd46049c2f332ee3f515a67d"}},
     "old": null, "created": true, "forced": false, "closed": false},
    {"new": null,
     "old": {"type": "branch", "name": "feature/gone",
             "target": {"type": "commit", "hash": "1e65c05c1d5171631d92438a13901ca7dae9618c"}},
     "created": false, "forced": false, "closed": true}
  ]},
  "actor": {"type": "user", "display_name": "Emma", "uuid": "{a54f16da-24e9-4d7f-a3a7-b1ba2cd98aa3}"},
  "repository": {"type": "repository", "full_name": "acme/app", "name": "app",
                 "uuid": "{673a6070-3421-46c9-9d48-90745f7bfe8e}", "is_private": true}
}"#;

    const BITBUCKET_CLOUD_PR: &str = r#"{
  "pullrequest": {"id": 1, "title": "Title", "state": "OPEN",
                  "source": {"branch": {"name": "feature"}}, "destination": {"branch": {"name": "main"}}},
  "actor": {"type": "user", "display_name": "Emma"},
  "repository": {"type": "repository", "full_name": "acme/app"}
}"#;

    fn bitbucket_cloud(key: &str, body: &str, secret: &str) -> Result<Event, Rejection> {
        let sig = format!("sha256={}", sign(secret, body));
        run(
            &[
                ("x-event-key", key),
                ("x-hook-uuid", "cfb8d5dc-5a8b-4a4e-9f4e-5f3b0a1c2d3e"),
                ("x-request-uuid", "afe4d8a5-2c71-4bd5-a27c-0f0f0f0f0f0f"),
                ("x-attempt-number", "1"),
                ("x-hub-signature", &sig),
            ],
            body,
        )
    }

    #[test]
    fn bitbucket_cloud_signed_push_lists_every_changed_ref() {
        assert_eq!(
            bitbucket_cloud("repo:push", BITBUCKET_CLOUD_PUSH, SECRET),
            pushed(
                Provider::BitbucketCloud,
                &[
                    "refs/heads/main",
                    "refs/tags/v2.0",
                    "refs/heads/feature/gone"
                ]
            )
        );
    }

    #[test]
    fn bitbucket_cloud_other_events_are_ignored() {
        assert_ignored(
            bitbucket_cloud("pullrequest:created", BITBUCKET_CLOUD_PR, SECRET),
            Provider::BitbucketCloud,
            "Bitbucket Cloud event 'pullrequest:created' is not a push",
        );
    }

    #[test]
    fn bitbucket_cloud_wrong_or_missing_signature_is_unauthorized() {
        assert_unauthorized(
            bitbucket_cloud("repo:push", BITBUCKET_CLOUD_PUSH, "wrong"),
            "signature does not match",
        );
        assert_unauthorized(
            run(&[("x-event-key", "repo:push")], BITBUCKET_CLOUD_PUSH),
            "missing x-hub-signature",
        );
        let sha1 = run(
            &[
                ("x-event-key", "repo:push"),
                ("x-hub-signature", "sha1=7d38cdd689735b008b3c"),
            ],
            BITBUCKET_CLOUD_PUSH,
        );
        assert_unauthorized(sha1, "only sha256");
    }

    #[test]
    fn bitbucket_cloud_invalid_json_with_a_valid_signature_is_malformed() {
        assert_malformed(
            bitbucket_cloud("repo:push", NOT_JSON, SECRET),
            "not valid JSON",
        );
    }

    // ---------------------------------------------------------------- Bitbucket Server / DC

    const BITBUCKET_SERVER_REFS_CHANGED: &str = r#"{
  "eventKey": "repo:refs_changed",
  "date": "2017-09-19T09:45:32+1000",
  "actor": {"name": "admin", "emailAddress": "admin@example.com", "id": 1,
            "displayName": "Administrator", "active": true, "slug": "admin", "type": "NORMAL"},
  "repository": {"slug": "repository", "id": 84, "name": "repository", "scmId": "git",
                 "state": "AVAILABLE", "forkable": true,
                 "project": {"key": "PROJ", "id": 84, "name": "project", "type": "NORMAL"}},
  "changes": [
    {"ref": {"id": "refs/heads/master", "displayId": "master", "type": "BRANCH"},
     "refId": "refs/heads/master",
     "fromHash": "ecddabb624f6f5ba43816f5926e580a5f680a932",
     "toHash": "178864a7d521b6f5e720b386b2c2b0ef8563e0dc", "type": "UPDATE"},
    {"ref": {"id": "refs/tags/release-1", "displayId": "release-1", "type": "TAG"},
     "refId": "refs/tags/release-1",
     "fromHash": "0000000000000000000000000000000000000000",
     "toHash": "178864a7d521b6f5e720b386b2c2b0ef8563e0dc", "type": "ADD"}
  ]
}"#;

    const BITBUCKET_SERVER_PING: &str = r#"{"test": true}"#;

    const BITBUCKET_SERVER_PR_OPENED: &str = r#"{
  "eventKey": "pr:opened", "date": "2017-09-19T09:58:11+1000",
  "actor": {"name": "admin", "id": 1},
  "pullRequest": {"id": 1, "version": 0, "title": "a new file added", "state": "OPEN",
                  "fromRef": {"id": "refs/heads/a-branch"}, "toRef": {"id": "refs/heads/master"}}
}"#;

    fn bitbucket_server(key: &str, body: &str, secret: &str) -> Result<Event, Rejection> {
        let sig = format!("sha256={}", sign(secret, body));
        run(
            &[
                ("x-event-key", key),
                ("x-request-id", "a2d5d2e8-1b2c-4b1a-9d0e-3f4a5b6c7d8e"),
                ("x-hub-signature", &sig),
            ],
            body,
        )
    }

    #[test]
    fn bitbucket_server_signed_refs_changed_is_a_push_of_the_ref_ids() {
        assert_eq!(
            bitbucket_server("repo:refs_changed", BITBUCKET_SERVER_REFS_CHANGED, SECRET),
            pushed(
                Provider::BitbucketServer,
                &["refs/heads/master", "refs/tags/release-1"]
            )
        );
    }

    #[test]
    fn bitbucket_server_ping_and_other_events_are_ignored() {
        assert_eq!(
            bitbucket_server("diagnostics:ping", BITBUCKET_SERVER_PING, SECRET),
            Ok(Event::Ignored {
                provider: Provider::BitbucketServer,
                reason: "ping".to_string()
            })
        );
        assert_ignored(
            bitbucket_server("pr:opened", BITBUCKET_SERVER_PR_OPENED, SECRET),
            Provider::BitbucketServer,
            "Bitbucket Server event 'pr:opened' is not a push",
        );
    }

    #[test]
    fn bitbucket_server_wrong_or_missing_signature_is_unauthorized() {
        assert_unauthorized(
            bitbucket_server("repo:refs_changed", BITBUCKET_SERVER_REFS_CHANGED, "wrong"),
            "signature does not match",
        );
        assert_unauthorized(
            run(
                &[
                    ("x-event-key", "repo:refs_changed"),
                    ("x-request-id", "a2d5d2e8"),
                ],
                BITBUCKET_SERVER_REFS_CHANGED,
            ),
            "missing x-hub-signature",
        );
    }

    #[test]
    fn bitbucket_server_invalid_json_with_a_valid_signature_is_malformed() {
        assert_malformed(
            bitbucket_server("repo:refs_changed", NOT_JSON, SECRET),
            "not valid JSON",
        );
    }

    #[test]
    fn bitbucket_flavour_follows_the_event_key_then_the_headers() {
        let flavour = |headers: &[(&str, &str)]| {
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            let req = Request {
                headers: &headers,
                body: b"",
            };
            let key = header(&req, "x-event-key").unwrap_or_default();
            bitbucket_flavour(&req, key)
        };
        // Keys that exist on one product only decide, whatever a proxy added.
        assert_eq!(
            flavour(&[("x-event-key", "repo:push"), ("x-request-id", "proxy")]),
            Provider::BitbucketCloud
        );
        assert_eq!(
            flavour(&[("x-event-key", "repo:refs_changed")]),
            Provider::BitbucketServer
        );
        assert_eq!(
            flavour(&[("x-event-key", "diagnostics:ping")]),
            Provider::BitbucketServer
        );
        // Shared-looking keys: Cloud's UUID headers win over an x-request-id.
        assert_eq!(
            flavour(&[("x-event-key", "pr:opened"), ("x-request-id", "r")]),
            Provider::BitbucketServer
        );
        assert_eq!(
            flavour(&[
                ("x-event-key", "repo:updated"),
                ("x-hook-uuid", "h"),
                ("x-request-id", "proxy")
            ]),
            Provider::BitbucketCloud
        );
        assert_eq!(
            flavour(&[("x-event-key", "repo:fork")]),
            Provider::BitbucketCloud
        );
    }

    // ---------------------------------------------------------------- CodeCommit

    const CODECOMMIT_REFERENCE_CREATED: &str = r#"{
  "version": "0",
  "id": "3c8e4b1a-5f6d-4e2a-9b7c-1d2e3f4a5b6c",
  "detail-type": "CodeCommit Repository State Change",
  "source": "aws.codecommit",
  "account": "123456789012",
  "time": "2024-05-14T09:12:31Z",
  "region": "eu-west-1",
  "resources": ["arn:aws:codecommit:eu-west-1:123456789012:app"],
  "detail": {
    "callerUserArn": "arn:aws:iam::123456789012:user/ci-bot",
    "commitId": "5d4e9c1b8a7f6e5d4c3b2a1908f7e6d5c4b3a291",
    "event": "referenceCreated",
    "referenceFullName": "refs/heads/feature/login",
    "referenceName": "feature/login",
    "referenceType": "branch",
    "repositoryId": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "repositoryName": "app"
  }
}"#;

    const CODECOMMIT_REFERENCE_UPDATED: &str = r#"{
  "version": "0",
  "id": "7b2a9c4d-1e3f-4a5b-8c6d-9e0f1a2b3c4d",
  "detail-type": "CodeCommit Repository State Change",
  "source": "aws.codecommit",
  "account": "123456789012",
  "time": "2024-05-14T09:15:02Z",
  "region": "eu-west-1",
  "resources": ["arn:aws:codecommit:eu-west-1:123456789012:app"],
  "detail": {
    "callerUserArn": "arn:aws:sts::123456789012:assumed-role/Developer/mary",
    "commitId": "e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4",
    "event": "referenceUpdated",
    "oldCommitId": "5d4e9c1b8a7f6e5d4c3b2a1908f7e6d5c4b3a291",
    "referenceFullName": "refs/heads/main",
    "referenceName": "main",
    "referenceType": "branch",
    "repositoryId": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "repositoryName": "app"
  }
}"#;

    /// No `referenceFullName`: the full name is built from `referenceType`.
    const CODECOMMIT_TAG_DELETED: &str = r#"{
  "version": "0",
  "id": "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
  "detail-type": "CodeCommit Repository State Change",
  "source": "aws.codecommit",
  "account": "123456789012",
  "time": "2024-05-14T09:20:44Z",
  "region": "eu-west-1",
  "resources": ["arn:aws:codecommit:eu-west-1:123456789012:app"],
  "detail": {
    "callerUserArn": "arn:aws:iam::123456789012:user/ci-bot",
    "event": "referenceDeleted",
    "oldCommitId": "e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4",
    "referenceName": "v1.4.0",
    "referenceType": "tag",
    "repositoryId": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "repositoryName": "app"
  }
}"#;

    /// Pull request events come with their own detail-type, not "Repository State Change".
    const CODECOMMIT_PULL_REQUEST_CREATED: &str = r#"{
  "version": "0",
  "id": "98377d67-1c2b-4d3e-8f4a-5b6c7d8e9f0a",
  "detail-type": "CodeCommit Pull Request State Change",
  "source": "aws.codecommit",
  "account": "123456789012",
  "time": "2024-05-14T10:01:16Z",
  "region": "eu-west-1",
  "resources": ["arn:aws:codecommit:eu-west-1:123456789012:app"],
  "detail": {
    "author": "arn:aws:sts::123456789012:assumed-role/Developer/mary",
    "callerUserArn": "arn:aws:sts::123456789012:assumed-role/Developer/mary",
    "destinationCommit": "e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4",
    "destinationReference": "refs/heads/main",
    "event": "pullRequestCreated",
    "isMerged": "False",
    "pullRequestId": "17",
    "pullRequestStatus": "Open",
    "repositoryNames": ["app"],
    "sourceCommit": "5d4e9c1b8a7f6e5d4c3b2a1908f7e6d5c4b3a291",
    "sourceReference": "refs/heads/feature/login",
    "title": "Login page"
  }
}"#;

    const CODECOMMIT_UNREFERENCED_MERGE_COMMIT: &str = r#"{
  "version": "0",
  "id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
  "detail-type": "CodeCommit Repository State Change",
  "source": "aws.codecommit",
  "account": "123456789012",
  "time": "2024-05-14T10:05:00Z",
  "region": "eu-west-1",
  "resources": ["arn:aws:codecommit:eu-west-1:123456789012:app"],
  "detail": {
    "callerUserArn": "arn:aws:iam::123456789012:user/ci-bot",
    "commitId": "7f0103f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6",
    "event": "unreferencedMergeCommitCreated",
    "mergeOption": "SQUASH_MERGE",
    "repositoryId": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "repositoryName": "app"
  }
}"#;

    const CODECOMMIT_WITHOUT_EVENT: &str = r#"{
  "version": "0", "id": "1", "detail-type": "CodeCommit Repository State Change",
  "source": "aws.codecommit", "account": "123456789012", "time": "2024-05-14T10:05:00Z",
  "region": "eu-west-1", "resources": [], "detail": {"repositoryName": "app"}
}"#;

    fn codecommit(body: &str) -> Result<Event, Rejection> {
        let bearer = format!("Bearer {SECRET}");
        run(
            &[
                ("user-agent", "Amazon/EventBridge/ApiDestinations"),
                ("content-type", "application/json; charset=utf-8"),
                ("authorization", &bearer),
            ],
            body,
        )
    }

    #[test]
    fn codecommit_reference_changes_are_pushes() {
        assert_eq!(
            codecommit(CODECOMMIT_REFERENCE_CREATED),
            pushed(Provider::CodeCommit, &["refs/heads/feature/login"])
        );
        assert_eq!(
            codecommit(CODECOMMIT_REFERENCE_UPDATED),
            pushed(Provider::CodeCommit, &["refs/heads/main"])
        );
        assert_eq!(
            codecommit(CODECOMMIT_TAG_DELETED),
            pushed(Provider::CodeCommit, &["refs/tags/v1.4.0"])
        );
    }

    #[test]
    fn codecommit_accepts_the_ferry_token_header() {
        let result = run(&[("x-ferry-token", SECRET)], CODECOMMIT_REFERENCE_UPDATED);
        assert_eq!(result, pushed(Provider::CodeCommit, &["refs/heads/main"]));
        // The bearer scheme is case-insensitive.
        let bearer = format!("bearer {SECRET}");
        let result = run(&[("authorization", &bearer)], CODECOMMIT_REFERENCE_UPDATED);
        assert_eq!(result, pushed(Provider::CodeCommit, &["refs/heads/main"]));
    }

    #[test]
    fn codecommit_pull_requests_and_other_events_are_ignored() {
        assert_ignored(
            codecommit(CODECOMMIT_PULL_REQUEST_CREATED),
            Provider::CodeCommit,
            "CodeCommit event 'pullRequestCreated' (CodeCommit Pull Request State Change) is not \
             a reference change",
        );
        assert_ignored(
            codecommit(CODECOMMIT_UNREFERENCED_MERGE_COMMIT),
            Provider::CodeCommit,
            "CodeCommit event 'unreferencedMergeCommitCreated' is not a reference change",
        );
    }

    #[test]
    fn codecommit_state_change_without_an_event_is_malformed() {
        assert_malformed(codecommit(CODECOMMIT_WITHOUT_EVENT), "detail.event");
        assert_malformed(codecommit(NOT_JSON), "not valid JSON");
    }

    #[test]
    fn codecommit_wrong_or_missing_token_is_unauthorized() {
        assert_unauthorized(
            run(
                &[("authorization", "Bearer nope")],
                CODECOMMIT_REFERENCE_CREATED,
            ),
            "signature does not match",
        );
        assert_unauthorized(
            run(&[("x-ferry-token", "nope")], CODECOMMIT_REFERENCE_CREATED),
            "signature does not match",
        );
        // A wrong authorization is not rescued by a right x-ferry-token.
        assert_unauthorized(
            run(
                &[("authorization", "Bearer nope"), ("x-ferry-token", SECRET)],
                CODECOMMIT_REFERENCE_CREATED,
            ),
            "signature does not match",
        );
        assert_unauthorized(
            run(
                &[("user-agent", "Amazon/EventBridge/ApiDestinations")],
                CODECOMMIT_REFERENCE_CREATED,
            ),
            "EventBridge",
        );
    }

    // ---------------------------------------------------------------- generic

    fn generic(body: &str) -> Result<Event, Rejection> {
        let bearer = format!("Bearer {SECRET}");
        run(&[("authorization", &bearer)], body)
    }

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

    // ---------------------------------------------------------------- across providers

    #[test]
    fn nothing_recognisable_is_unauthorized_and_says_what_each_provider_sends() {
        let result = run(&[("content-type", "application/json")], GITHUB_PUSH);
        assert_unauthorized(result, "no signature or token");
        let result = run(&[], "{}");
        for header in [
            "x-hub-signature-256",
            "x-gitlab-token",
            "x-gitea-signature",
            "x-forgejo-signature",
            "x-hub-signature",
            "authorization: Bearer",
        ] {
            assert_unauthorized(result.clone(), header);
        }
    }

    #[test]
    fn empty_secret_rejects_everything_even_an_empty_token() {
        let result = receive_with(&[("authorization", "Bearer ")], "{}", "");
        assert_unauthorized(result, "no webhook secret is configured for this mirror");
        let sig = format!("sha256={}", sign("", GITHUB_PUSH));
        let result = receive_with(
            &[("x-github-event", "push"), ("x-hub-signature-256", &sig)],
            GITHUB_PUSH,
            "",
        );
        assert_unauthorized(result, "webhook_secret_env or webhook_secret_file");
    }

    #[test]
    fn detection_precedence() {
        // Forgejo carries Gitea and GitHub headers; Gitea carries GitHub headers.
        let headers = forgejo_headers("push", GITEA_PUSH);
        assert!(matches!(
            forgejo(&headers, GITEA_PUSH),
            Ok(Event::Push {
                provider: Provider::Forgejo,
                ..
            })
        ));
        assert!(matches!(
            gitea("push", GITEA_PUSH, SECRET),
            Ok(Event::Push {
                provider: Provider::Gitea,
                ..
            })
        ));
        // A CodeCommit body with no authorization header is not mistaken for generic either way;
        // a generic body with a bearer token is generic.
        assert!(matches!(
            codecommit(CODECOMMIT_REFERENCE_CREATED),
            Ok(Event::Push {
                provider: Provider::CodeCommit,
                ..
            })
        ));
        assert!(matches!(
            generic(GITHUB_PUSH),
            Ok(Event::Push {
                provider: Provider::Generic,
                ..
            })
        ));
    }

    #[test]
    fn provider_names_are_stable() {
        let all = [
            (Provider::GitHub, "github"),
            (Provider::GitLab, "gitlab"),
            (Provider::Gitea, "gitea"),
            (Provider::Forgejo, "forgejo"),
            (Provider::BitbucketCloud, "bitbucket_cloud"),
            (Provider::BitbucketServer, "bitbucket_server"),
            (Provider::CodeCommit, "codecommit"),
            (Provider::Generic, "generic"),
        ];
        for (provider, name) in all {
            assert_eq!(provider.as_str(), name);
        }
    }

    #[test]
    fn messages_never_echo_the_expected_signature() {
        let expected = sign(SECRET, GITHUB_PUSH);
        let result = run(
            &[
                ("x-github-event", "push"),
                ("x-hub-signature-256", "sha256=00"),
            ],
            GITHUB_PUSH,
        );
        let Err(Rejection::Unauthorized(message)) = result else {
            panic!("{result:?}")
        };
        assert!(!message.contains(&expected));
    }
}
