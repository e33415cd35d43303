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
//!
//! Detection, authentication and the helpers they share are here; reading each provider
//! family's payload is in a submodule of its own: `github`, `gitlab`, `gitea` (Gitea and
//! Forgejo), `bitbucket` (Cloud and Server/DC) and `generic` (ferry's own format). CodeCommit's
//! is in [`codecommit`]. `origin` reads which repository a delivery to a fleet's own hook is
//! about ([`receive_for_fleet`]).

use super::codecommit;
use crate::model::refs::{Oid, RefMap};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

mod bitbucket;
mod generic;
mod gitea;
mod github;
mod gitlab;
mod origin;

pub use origin::Origin;

/// A request as the HTTP layer hands it over: header names lowercase.
pub struct Request<'a> {
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

pub use crate::model::provider::Provider;

/// What an authenticated delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Refs changed on the source: sync. `refs` are full ref names when the payload says (may be empty).
    Push {
        provider: Provider,
        refs: Vec<String>,
        /// What a named ref points at now on the source, where the payload says so (never a
        /// deletion): a run whose cache holds exactly that already skips the fetch.
        ids: RefMap,
        /// What a named ref pointed at before this push, where the payload says so (never a
        /// creation): events whose moves follow on from each other tell where a ref ended.
        /// Every provider's payload says (`before`, Bitbucket's old hashes, CodeCommit's
        /// `oldCommitId`) but the generic one's.
        olds: RefMap,
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

/// What a mirror accepts: the secret deliveries prove knowledge of, and optionally the one
/// provider allowed to send them (`webhook_provider`).
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub secret: &'a str,
    /// When set, a delivery that authenticates any other way gets a 401: a secret that also
    /// works as a plain `x-ferry-token` or bearer token must not open a second door.
    pub provider: Option<Provider>,
}

/// Detects the provider, authenticates with the mirror's secret, parses and classifies.
pub fn receive(req: &Request<'_>, expect: Expect<'_>) -> Result<Event, Rejection> {
    let secret = expect.secret;
    // Checked first: with an empty secret an empty bearer token would "match", and whatever the
    // sender does, the fix is on ferry's side.
    if secret.is_empty() {
        return Err(Rejection::Unauthorized(NO_SECRET.to_string()));
    }
    let pinned = |sent: Provider| {
        match expect.provider {
        Some(pin) if pin != sent => Err(Rejection::Unauthorized(format!(
            "this mirror accepts only {} deliveries (webhook_provider = \"{}\"); this one was sent as {}",
            pin.label(),
            pin.as_str(),
            sent.label()
        ))),
        _ => Ok(()),
    }
    };
    match detect(req) {
        Sender::Provider(provider) => {
            pinned(provider)?;
            authenticate(provider, req, secret)?;
            let body = parse_body(req.body)?;
            classify(provider, req, &body)
        }
        Sender::Token => {
            // CodeCommit and generic senders authenticate the same way, so the body (which is
            // what tells them apart) is only read once the token holds.
            // A token proves nothing about who sent it, so a pin on a signing provider
            // refuses it before the token is even compared.
            if let Some(pin) = expect.provider {
                if !matches!(pin, Provider::CodeCommit | Provider::Generic) {
                    pinned(Provider::Generic)?;
                }
            }
            check_bearer_or_ferry_token(req, secret)?;
            let body = parse_body(req.body)?;
            if body.get("source").and_then(Value::as_str) == Some("aws.codecommit") {
                pinned(Provider::CodeCommit)?;
                codecommit::classify(&body)
            } else {
                pinned(Provider::Generic)?;
                generic::classify(&body)
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

/// [`receive`] for a fleet's own hook, which many repositories' pushes reach: the event, and
/// for a push the repository it names (read only once the delivery is authentic).
pub fn receive_for_fleet(
    req: &Request<'_>,
    expect: Expect<'_>,
) -> Result<(Event, Option<Origin>), Rejection> {
    let event = receive(req, expect)?;
    let origin = match &event {
        Event::Push { provider, .. } => origin::of(*provider, &parse_body(req.body)?),
        Event::Ignored { .. } => None,
    };
    Ok((event, origin))
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
        Provider::GitHub => github::classify(req, body),
        Provider::GitLab => gitlab::classify(req, body),
        Provider::Gitea => gitea::gitea(req, body),
        Provider::Forgejo => gitea::forgejo(req, body),
        Provider::BitbucketCloud => bitbucket::cloud(req, body),
        Provider::BitbucketServer => bitbucket::server(req, body),
        Provider::CodeCommit => codecommit::classify(body),
        Provider::Generic => generic::classify(body),
    }
}

/// The full ref name for a name that may be short, given "branch" or "tag". `None` when it
/// cannot be told: the push then carries no refs and syncs everything.
pub(super) fn qualify(name: &str, kind: Option<&str>) -> Option<String> {
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

/// A push without the refs' old values (see [`Event::Push`]).
pub(super) fn push(provider: Provider, refs: Vec<String>, ids: RefMap) -> Event {
    Event::Push {
        provider,
        refs,
        ids,
        olds: RefMap::new(),
    }
}

/// A payload's id of a ref: a well-formed object id that is not the zero id (which says the
/// ref did not exist: deleted, as a new value; created, as an old one).
pub(super) fn present_id(value: Option<&Value>) -> Option<Oid> {
    Oid::parse(value?.as_str()?).filter(|o| o.as_str().bytes().any(|b| b != b'0'))
}

/// `body.<field>` (`after`, `before`) as a value of the one ref `body.ref` names (GitHub,
/// GitLab, Gitea and Forgejo push payloads); none when it is the zero id.
fn ref_value(body: &Map<String, Value>, refs: &[String], field: &str) -> RefMap {
    match (refs, present_id(body.get(field))) {
        ([name], Some(oid)) => RefMap::from([(name.clone(), oid)]),
        _ => RefMap::new(),
    }
}

/// A push naming `body.ref`, with `body.after` as its new value and `body.before` its old one.
fn ref_push(provider: Provider, body: &Map<String, Value>) -> Event {
    let refs = ref_field(body);
    let ids = ref_value(body, &refs, "after");
    let olds = ref_value(body, &refs, "before");
    Event::Push {
        provider,
        refs,
        ids,
        olds,
    }
}

pub(super) fn ignored(provider: Provider, reason: String) -> Event {
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
    //! Checks across providers, and what the providers' tests share (the `pub(super)` items).

    use super::*;

    pub(super) const SECRET: &str = "It's a Secret to Everybody";

    /// The hex HMAC-SHA256 a provider computes over the exact bytes it sends.
    pub(super) fn sign(secret: &str, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn receive_with(
        headers: &[(&str, &str)],
        body: &str,
        secret: &str,
    ) -> Result<Event, Rejection> {
        receive_pinned(headers, body, secret, None)
    }

    fn receive_pinned(
        headers: &[(&str, &str)],
        body: &str,
        secret: &str,
        provider: Option<Provider>,
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
            Expect { secret, provider },
        )
    }

    pub(super) fn run(headers: &[(&str, &str)], body: &str) -> Result<Event, Rejection> {
        receive_with(headers, body, SECRET)
    }

    pub(super) fn pushed(provider: Provider, refs: &[&str]) -> Result<Event, Rejection> {
        Ok(Event::Push {
            provider,
            refs: refs.iter().map(|r| r.to_string()).collect(),
            ids: RefMap::new(),
            olds: RefMap::new(),
        })
    }

    /// A push of refs with the old and the new id the payload gave each.
    pub(super) fn pushed_moved(
        provider: Provider,
        moves: &[(&str, &str, &str)],
    ) -> Result<Event, Rejection> {
        let news: Vec<(&str, &str)> = moves.iter().map(|(r, _, new)| (*r, *new)).collect();
        let olds: Vec<(&str, &str)> = moves.iter().map(|(r, old, _)| (*r, *old)).collect();
        pushed_at(provider, &news).map(|e| with_olds(e, &olds))
    }

    /// `event` (a push) with these old ids.
    pub(super) fn with_olds(event: Event, olds: &[(&str, &str)]) -> Event {
        match event {
            Event::Push {
                provider,
                refs,
                ids,
                ..
            } => Event::Push {
                provider,
                refs,
                ids,
                olds: olds
                    .iter()
                    .map(|(r, id)| (r.to_string(), Oid::parse(id).unwrap()))
                    .collect(),
            },
            other => other,
        }
    }

    /// A push of refs with the new id the payload gave each.
    pub(super) fn pushed_at(provider: Provider, refs: &[(&str, &str)]) -> Result<Event, Rejection> {
        let names: Vec<&str> = refs.iter().map(|(r, _)| *r).collect();
        pushed(provider, &names).map(|e| with_ids(e, refs))
    }

    /// `event` (a push) with these new ids.
    pub(super) fn with_ids(event: Event, ids: &[(&str, &str)]) -> Event {
        match event {
            Event::Push {
                provider,
                refs,
                olds,
                ..
            } => Event::Push {
                provider,
                refs,
                olds,
                ids: ids
                    .iter()
                    .map(|(r, id)| (r.to_string(), Oid::parse(id).unwrap()))
                    .collect(),
            },
            other => other,
        }
    }

    #[track_caller]
    pub(super) fn assert_ignored(
        result: Result<Event, Rejection>,
        provider: Provider,
        reason_has: &str,
    ) {
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
    pub(super) fn assert_unauthorized(result: Result<Event, Rejection>, message_has: &str) {
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
    pub(super) fn assert_malformed(result: Result<Event, Rejection>, message_has: &str) {
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

    pub(super) const NOT_JSON: &str = "{\"ref\": \"refs/heads/main\",";

    // ---------------------------------------------------------------- shared fixtures

    // A GitHub push; also the body of several checks below.
    pub(super) const GITHUB_PUSH: &str = r#"{
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

    pub(super) const GITEA_PUSH: &str = r#"{
  "ref": "refs/heads/develop",
  "before": "28e1879d029cb852e4844d9c718537df08844e03",
  "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
  "compare_url": "http://localhost:3000/gitea/webhooks/compare/28e1879d029c...bffeb7422404",
  "commits": [{"id": "bffeb74224043ba2feb48d137756c8a9331c449a", "message": "Webhooks Yay!"}],
  "repository": {"id": 140, "name": "webhooks", "full_name": "gitea/webhooks", "private": false},
  "pusher": {"id": 1, "login": "gitea", "username": "gitea"},
  "sender": {"id": 1, "login": "gitea", "username": "gitea"}
}"#;

    /// Headers as Gitea sends them: its own, plus Gogs- and GitHub-compatible ones.
    pub(super) fn gitea(event: &str, body: &str, secret: &str) -> Result<Event, Rejection> {
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
    pub(super) fn forgejo_headers(event: &str, body: &str) -> Vec<(String, String)> {
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

    pub(super) fn forgejo(headers: &[(String, String)], body: &str) -> Result<Event, Rejection> {
        receive(
            &Request {
                headers,
                body: body.as_bytes(),
            },
            Expect {
                secret: SECRET,
                provider: None,
            },
        )
    }

    pub(super) fn generic(body: &str) -> Result<Event, Rejection> {
        let bearer = format!("Bearer {SECRET}");
        run(&[("authorization", &bearer)], body)
    }

    // ---------------------------------------------------------------- authentication order

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

    // ---------------------------------------------------------------- Bitbucket detection

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
            pushed_at(
                Provider::CodeCommit,
                &[(
                    "refs/heads/feature/login",
                    "5d4e9c1b8a7f6e5d4c3b2a1908f7e6d5c4b3a291"
                )]
            )
        );
        assert_eq!(
            codecommit(CODECOMMIT_REFERENCE_UPDATED),
            pushed_moved(
                Provider::CodeCommit,
                &[(
                    "refs/heads/main",
                    "5d4e9c1b8a7f6e5d4c3b2a1908f7e6d5c4b3a291",
                    "e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4"
                )]
            )
        );
        // A deletion: its old id, no new one.
        assert_eq!(
            codecommit(CODECOMMIT_TAG_DELETED),
            pushed(Provider::CodeCommit, &["refs/tags/v1.4.0"]).map(|e| with_olds(
                e,
                &[(
                    "refs/tags/v1.4.0",
                    "e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4"
                )]
            ))
        );
    }

    #[test]
    fn codecommit_accepts_the_ferry_token_header() {
        let main = pushed_moved(
            Provider::CodeCommit,
            &[(
                "refs/heads/main",
                "5d4e9c1b8a7f6e5d4c3b2a1908f7e6d5c4b3a291",
                "e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4",
            )],
        );
        let result = run(&[("x-ferry-token", SECRET)], CODECOMMIT_REFERENCE_UPDATED);
        assert_eq!(result, main);
        // The bearer scheme is case-insensitive.
        let bearer = format!("bearer {SECRET}");
        let result = run(&[("authorization", &bearer)], CODECOMMIT_REFERENCE_UPDATED);
        assert_eq!(result, main);
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

    fn github_signed(body: &str) -> Vec<(String, String)> {
        let sig = format!("sha256={}", sign(SECRET, body));
        vec![
            ("x-github-event".to_string(), "push".to_string()),
            ("x-hub-signature-256".to_string(), sig),
        ]
    }

    fn pinned(
        headers: &[(String, String)],
        body: &str,
        provider: Provider,
    ) -> Result<Event, Rejection> {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        receive_pinned(&headers, body, SECRET, Some(provider))
    }

    #[test]
    fn a_pinned_provider_accepts_its_own_signed_deliveries() {
        assert_eq!(
            pinned(&github_signed(GITHUB_PUSH), GITHUB_PUSH, Provider::GitHub),
            pushed_moved(
                Provider::GitHub,
                &[(
                    "refs/heads/main",
                    "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                    "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
                )]
            )
        );
        let bearer = vec![("authorization".to_string(), format!("Bearer {SECRET}"))];
        assert!(matches!(
            pinned(&bearer, CODECOMMIT_REFERENCE_CREATED, Provider::CodeCommit),
            Ok(Event::Push { .. })
        ));
        assert!(matches!(
            pinned(&bearer, r#"{"ref": "refs/heads/main"}"#, Provider::Generic),
            Ok(Event::Push { .. })
        ));
    }

    #[test]
    fn a_pinned_provider_refuses_the_secret_sent_as_a_plain_token() {
        // The right secret, but as x-ferry-token: without the pin this is a valid generic push.
        let token = vec![("x-ferry-token".to_string(), SECRET.to_string())];
        let body = r#"{"ref": "refs/heads/main"}"#;
        assert!(matches!(
            pinned(&token, body, Provider::Generic),
            Ok(Event::Push { .. })
        ));
        assert_unauthorized(
            pinned(&token, body, Provider::GitHub),
            "accepts only GitHub deliveries (webhook_provider = \"github\")",
        );
        let bearer = vec![("authorization".to_string(), format!("Bearer {SECRET}"))];
        assert_unauthorized(
            pinned(&bearer, body, Provider::GitLab),
            "accepts only GitLab",
        );
    }

    #[test]
    fn a_pinned_provider_refuses_other_providers_and_token_senders_of_the_other_kind() {
        assert_unauthorized(
            pinned(&github_signed(GITHUB_PUSH), GITHUB_PUSH, Provider::GitLab),
            "this one was sent as GitHub",
        );
        let bearer = vec![("authorization".to_string(), format!("Bearer {SECRET}"))];
        assert_unauthorized(
            pinned(
                &bearer,
                r#"{"ref": "refs/heads/main"}"#,
                Provider::CodeCommit,
            ),
            "accepts only CodeCommit",
        );
        assert_unauthorized(
            pinned(&bearer, CODECOMMIT_REFERENCE_CREATED, Provider::Generic),
            "this one was sent as CodeCommit",
        );
    }
}
