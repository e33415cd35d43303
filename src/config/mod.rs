//! The configuration file (`ferry.toml`) and its validation into [`Mirror`]s. Raw TOML is
//! deserialized strictly (unknown keys are errors) and then checked as a whole, so a user sees
//! every mistake with the file and line it is on, and nothing runs on a half-valid config.
//! [`env`] reads the environment: the ad hoc mirror of the command line and the classic
//! Lambda function's variables.
//!
//! Architecture invariant: `config` imports only `model`. It produces validated values and
//! runs nothing.

use crate::model::provider::Provider;
use crate::model::refs::{RefPattern, RefSelection};
use crate::model::remote::{Remote, Secret};
mod env;
mod fleet;

pub use env::{adhoc_mirror, classic_mirror, env_nonempty};
pub use fleet::{
    FleetDestination, FleetSource, FleetSpec, HostAccount, HostKind, DEFAULT_DISCOVER_INTERVAL,
};

use crate::model::mirror::{Divergence, LfsMissing, LfsMode, LfsPolicy, Mirror, Policy, Prune};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A configuration problem a user can fix; the message names the file, line and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cache_dir: Option<PathBuf>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    serve: RawServe,
    #[serde(default)]
    defaults: RawOptions,
    #[serde(default)]
    mirror: Vec<RawMirror>,
    #[serde(default)]
    fleet: Vec<fleet::RawFleet>,
}

/// Options a mirror may set and `[defaults]` may set for all mirrors.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOptions {
    pub include: Option<Vec<Spanned<String>>>,
    pub exclude: Option<Vec<Spanned<String>>>,
    pub divergence: Option<Divergence>,
    pub prune: Option<Prune>,
    pub atomic: Option<bool>,
    pub verify: Option<bool>,
    pub create: Option<bool>,
    pub poll_interval: Option<Spanned<String>>,
    pub reconcile_interval: Option<Spanned<String>>,
    pub lfs: Option<LfsMode>,
    pub lfs_missing: Option<LfsMissing>,
}

impl RawOptions {
    /// The mirror these (merged) options describe between validated remotes.
    fn mirror(
        &self,
        name: String,
        source: Remote,
        destinations: Vec<Remote>,
        selection: RefSelection,
    ) -> Mirror {
        Mirror {
            name,
            source,
            destinations,
            selection,
            policy: Policy {
                divergence: self.divergence.unwrap_or_default(),
                prune: self.prune.unwrap_or_default(),
            },
            atomic: self.atomic.unwrap_or(false),
            verify: self.verify.unwrap_or(false),
            create: self.create.unwrap_or(false),
            lfs: LfsPolicy {
                mode: self.lfs.unwrap_or_default(),
                missing: self.lfs_missing.unwrap_or_default(),
            },
        }
    }
}

/// `[serve]`: settings of `ferry serve`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    listen: Option<Spanned<String>>,
    data_dir: Option<PathBuf>,
    workers: Option<usize>,
    admin_token_env: Option<String>,
    admin_token_file: Option<PathBuf>,
    notify_url: Option<Spanned<String>>,
    notify_after: Option<u32>,
    shutdown_grace: Option<Spanned<String>>,
    max_body_bytes: Option<usize>,
    header_timeout: Option<Spanned<String>>,
    body_timeout: Option<Spanned<String>>,
    max_connections: Option<usize>,
    retry_base: Option<Spanned<String>>,
    retry_max: Option<Spanned<String>>,
    store_url_env: Option<String>,
    store_url_file: Option<PathBuf>,
    node_id: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
}

/// Settings of `ferry serve`, validated, with defaults applied.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    /// The SQLite store and (unless `cache_dir` is set) the caches live here.
    pub data_dir: Option<PathBuf>,
    /// Syncs running at once across mirrors.
    pub workers: usize,
    /// Bearer token for `POST /api/mirrors/{mirror}/sync`; without one that route is closed.
    pub admin_token: Option<Secret>,
    /// Where failure-streak and recovery notifications are POSTed.
    pub notify_url: Option<url::Url>,
    /// Consecutive failed runs before the failure notification.
    pub notify_after: u32,
    /// How long running syncs may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Webhook bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// How long a connection may take to send a request's headers (from its opening, or from
    /// the end of the previous response on a keep-alive connection) before it is closed.
    pub header_timeout: Duration,
    /// How long a webhook's body may take to arrive, and be answered, after its headers; 408
    /// after that.
    pub body_timeout: Duration,
    /// Connections served at once; beyond that, new connections wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
    /// First retry delay after a transient failure; doubles per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// The PostgreSQL store several nodes share (a URL, read from `store_url_env` or
    /// `store_url_file`); `None`: the SQLite store in the data directory.
    pub store_url: Option<Secret>,
    /// This node's name in the store (`None`: the host name and process id).
    pub node_id: Option<String>,
    /// How long a node's claim on a running sync holds without its heartbeat (every third
    /// of it); another node takes the sync over after that.
    pub lease: Duration,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(3600);

/// A configured mirror: what the sync engine needs plus what the service needs.
#[derive(Debug, Clone)]
pub struct ConfiguredMirror {
    pub mirror: Mirror,
    /// Secret that webhook deliveries for this mirror are signed (or authenticated) with.
    pub webhook_secret: Option<Secret>,
    /// The only provider whose deliveries this mirror accepts (`None`: any).
    pub webhook_provider: Option<Provider>,
    /// How often to compare the source's refs with the cache (`None`: never).
    pub poll_interval: Option<Duration>,
    /// How often to run a full sync whatever happened (`None`: never).
    pub reconcile_interval: Option<Duration>,
}

impl ConfiguredMirror {
    /// Changes whenever anything that affects what the mirror does changes (not secrets).
    pub fn fingerprint(&self) -> String {
        crate::model::mirror::short_hash(format!("{:?}", self.mirror))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    name: Spanned<String>,
    source: RawRemote,
    destinations: Spanned<Vec<RawRemote>>,
    // The per-mirror options, spelled out: serde cannot combine `flatten` with
    // `deny_unknown_fields`, and unknown keys must be errors.
    include: Option<Vec<Spanned<String>>>,
    exclude: Option<Vec<Spanned<String>>>,
    divergence: Option<Divergence>,
    prune: Option<Prune>,
    atomic: Option<bool>,
    verify: Option<bool>,
    create: Option<bool>,
    poll_interval: Option<Spanned<String>>,
    reconcile_interval: Option<Spanned<String>>,
    lfs: Option<LfsMode>,
    lfs_missing: Option<LfsMissing>,
    webhook_secret_env: Option<String>,
    webhook_secret_file: Option<PathBuf>,
    webhook_provider: Option<Provider>,
}

impl RawMirror {
    fn options(&self) -> RawOptions {
        RawOptions {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            divergence: self.divergence,
            prune: self.prune,
            atomic: self.atomic,
            verify: self.verify,
            create: self.create,
            poll_interval: self.poll_interval.clone(),
            reconcile_interval: self.reconcile_interval.clone(),
            lfs: self.lfs,
            lfs_missing: self.lfs_missing,
        }
    }
}

/// A remote: either a URL string or a table with credentials.
#[derive(Debug)]
pub struct RawRemote {
    pub url: Spanned<String>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ssh_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub lfs: RawLfsAccess,
}

/// A remote table's LFS keys: its LFS endpoint and that endpoint's own credentials.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLfsAccess {
    pub lfs_url: Option<Spanned<String>>,
    pub lfs_username: Option<String>,
    pub lfs_password_env: Option<String>,
    pub lfs_password_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteTable {
    url: Spanned<String>,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    ssh_key: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    lfs_url: Option<Spanned<String>>,
    lfs_username: Option<String>,
    lfs_password_env: Option<String>,
    lfs_password_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for RawRemote {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RemoteVisitor;
        impl<'de> Visitor<'de> for RemoteVisitor {
            type Value = RawRemote;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a repository URL string, or a table like { url = \"...\", username = \"...\", password_env = \"...\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRemote, E> {
                Ok(RawRemote {
                    url: Spanned::new(0..0, v.to_owned()),
                    username: None,
                    password_env: None,
                    password_file: None,
                    ssh_key: None,
                    known_hosts: None,
                    ca_file: None,
                    lfs: RawLfsAccess::default(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRemote, A::Error> {
                let t = RawRemoteTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawRemote {
                    url: t.url,
                    username: t.username,
                    password_env: t.password_env,
                    password_file: t.password_file,
                    ssh_key: t.ssh_key,
                    known_hosts: t.known_hosts,
                    ca_file: t.ca_file,
                    lfs: RawLfsAccess {
                        lfs_url: t.lfs_url,
                        lfs_username: t.lfs_username,
                        lfs_password_env: t.lfs_password_env,
                        lfs_password_file: t.lfs_password_file,
                    },
                })
            }
        }
        deserializer.deserialize_any(RemoteVisitor)
    }
}

/// A parsed, validated configuration file.
#[derive(Debug)]
pub struct Config {
    pub cache_dir: Option<PathBuf>,
    pub timeout: Option<Duration>,
    pub serve: ServeSettings,
    pub mirrors: Vec<ConfiguredMirror>,
    /// `[[fleet]]`s: their members are found by discovery, not listed here.
    pub fleets: Vec<FleetSpec>,
}

/// Where a value came from, for error messages: `ferry.toml:12`.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn at(&self, span: std::ops::Range<usize>) -> String {
        if span.is_empty() && span.start == 0 {
            return self.path.display().to_string();
        }
        let line = self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        format!("{}:{line}", self.path.display())
    }
}

impl Config {
    pub fn load(path: &Path, overrides: &RawOptions) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read the config file {}: {e}",
                path.display()
            ))
        })?;
        Config::parse(&text, path, overrides)
    }

    /// Parses and validates `text` (read from `path`, which also anchors relative paths).
    /// `overrides` are command-line options; they win over the file.
    pub fn parse(text: &str, path: &Path, overrides: &RawOptions) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            ConfigError(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        let loc = Locator { path, text };
        // Relative paths in the file (repositories included) are relative to the file.
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::path::absolute(if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &base
        })
        .map_err(|e| {
            ConfigError(format!(
                "{}: cannot resolve its directory: {e}",
                path.display()
            ))
        })?;
        let mut errors = Vec::new();
        let serve = serve_settings(&raw.serve, &base, &loc, &mut errors);

        let timeout = match &raw.timeout {
            Some(t) => match parse_duration(t.get_ref()) {
                Ok(d) => Some(d),
                Err(e) => {
                    errors.push(format!("{}: timeout: {e}", loc.at(t.span())));
                    None
                }
            },
            None => None,
        };
        if raw.mirror.is_empty() && raw.fleet.is_empty() {
            errors.push(format!(
                "{}: no mirrors configured; add a [[mirror]] table with name, source and destinations (or a [[fleet]])",
                path.display()
            ));
        }
        let mut names = HashSet::new();
        let mut mirrors = Vec::new();
        for m in &raw.mirror {
            let name = m.name.get_ref().trim().to_owned();
            let at = loc.at(m.name.span());
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                errors.push(format!("{at}: mirror name '{name}' must be non-empty and use only letters, digits, '-', '_' and '.'"));
            }
            if !names.insert(name.clone()) {
                errors.push(format!(
                    "{at}: mirror name '{name}' is used twice; names must be unique"
                ));
            }
            let options = merge(&merge(&raw.defaults, &m.options()), overrides);
            let selection = match selection(&options) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("{at}: mirror '{name}': {e}"));
                    continue;
                }
            };
            let source = resolve_remote(&m.source, &base, &loc, &format!("mirror '{name}' source"));
            if m.destinations.get_ref().is_empty() {
                errors.push(format!(
                    "{}: mirror '{name}' has no destinations",
                    loc.at(m.destinations.span())
                ));
            }
            let dests: Vec<_> = m
                .destinations
                .get_ref()
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    resolve_remote(
                        d,
                        &base,
                        &loc,
                        &format!("mirror '{name}' destination {}", i + 1),
                    )
                })
                .collect();
            let mut ok = true;
            for r in std::iter::once(&source).chain(&dests) {
                if let Err(e) = r {
                    errors.push(e.clone());
                    ok = false;
                }
            }
            if !ok {
                continue;
            }
            let (Ok(source), Ok(destinations)) =
                (source, dests.into_iter().collect::<Result<Vec<_>, _>>())
            else {
                continue;
            };
            let (poll_interval, reconcile_interval) =
                intervals(&options, &format!("mirror '{name}'"), &loc, &mut errors);
            let webhook_secret = secret(
                m.webhook_secret_env.as_deref(),
                m.webhook_secret_file.as_deref(),
                &base,
                &format!("{at}: mirror '{name}': webhook secret"),
                ("webhook_secret_env", "webhook_secret_file"),
            )
            .unwrap_or_else(|e| {
                errors.push(e);
                None
            });
            mirrors.push(ConfiguredMirror {
                mirror: options.mirror(name, source, destinations, selection),
                webhook_secret,
                webhook_provider: m.webhook_provider,
                poll_interval,
                reconcile_interval,
            });
        }
        let fleets = fleet::fleets(
            &raw.fleet,
            &raw.defaults,
            overrides,
            &base,
            &loc,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(ConfigError(errors.join("\n")));
        }
        Ok(Config {
            fleets,
            cache_dir: raw.cache_dir.map(|d| base.join(d)),
            timeout,
            serve,
            mirrors,
        })
    }
}

/// Options from `over` win over those in `base`.
fn merge(base: &RawOptions, over: &RawOptions) -> RawOptions {
    RawOptions {
        include: over.include.clone().or_else(|| base.include.clone()),
        exclude: over.exclude.clone().or_else(|| base.exclude.clone()),
        divergence: over.divergence.or(base.divergence),
        prune: over.prune.or(base.prune),
        atomic: over.atomic.or(base.atomic),
        verify: over.verify.or(base.verify),
        create: over.create.or(base.create),
        poll_interval: over
            .poll_interval
            .clone()
            .or_else(|| base.poll_interval.clone()),
        reconcile_interval: over
            .reconcile_interval
            .clone()
            .or_else(|| base.reconcile_interval.clone()),
        lfs: over.lfs.or(base.lfs),
        lfs_missing: over.lfs_missing.or(base.lfs_missing),
    }
}

/// A mirror's `poll_interval` and `reconcile_interval`, defaults applied; `what` names the
/// mirror (or fleet) in error messages.
fn intervals(
    options: &RawOptions,
    what: &str,
    loc: &Locator<'_>,
    errors: &mut Vec<String>,
) -> (Option<Duration>, Option<Duration>) {
    let mut interval = |value: &Option<Spanned<String>>, key: &str, default: Duration| match value {
        None => Some(default),
        Some(v) => parse_interval(v.get_ref()).unwrap_or_else(|e| {
            errors.push(format!("{}: {what}: {key}: {e}", loc.at(v.span())));
            None
        }),
    };
    (
        interval(
            &options.poll_interval,
            "poll_interval",
            DEFAULT_POLL_INTERVAL,
        ),
        interval(
            &options.reconcile_interval,
            "reconcile_interval",
            DEFAULT_RECONCILE_INTERVAL,
        ),
    )
}

fn serve_settings(
    raw: &RawServe,
    base: &Path,
    loc: &Locator<'_>,
    errors: &mut Vec<String>,
) -> ServeSettings {
    let mut duration = |value: &Option<Spanned<String>>, key: &str, default: Duration| match value {
        None => default,
        Some(v) => parse_duration(v.get_ref()).unwrap_or_else(|e| {
            errors.push(format!("{}: serve.{key}: {e}", loc.at(v.span())));
            default
        }),
    };
    let shutdown_grace = duration(
        &raw.shutdown_grace,
        "shutdown_grace",
        Duration::from_secs(30),
    );
    let header_timeout = duration(
        &raw.header_timeout,
        "header_timeout",
        Duration::from_secs(10),
    );
    let body_timeout = duration(&raw.body_timeout, "body_timeout", Duration::from_secs(30));
    let retry_base = duration(&raw.retry_base, "retry_base", Duration::from_secs(5));
    let retry_max = duration(&raw.retry_max, "retry_max", Duration::from_secs(600));
    let lease = duration(&raw.lease, "lease", Duration::from_secs(30));
    let listen = match &raw.listen {
        None => DEFAULT_LISTEN.parse().ok(),
        Some(v) => v.get_ref().parse::<SocketAddr>().map_err(|e| {
            errors.push(format!(
                "{}: serve.listen: '{}' is not an address ({e}); write it like 127.0.0.1:8080 or [::]:8080",
                loc.at(v.span()),
                v.get_ref()
            ))
        }).ok(),
    };
    let notify_url = raw
        .notify_url
        .as_ref()
        .and_then(|v| match url::Url::parse(v.get_ref()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                errors.push(format!(
                    "{}: serve.notify_url: '{}' is not an http(s) URL",
                    loc.at(v.span()),
                    crate::model::remote::redact_text(v.get_ref())
                ));
                None
            }
        });
    let admin_token = secret(
        raw.admin_token_env.as_deref(),
        raw.admin_token_file.as_deref(),
        base,
        &format!("{}: serve: admin token", loc.path.display()),
        ("admin_token_env", "admin_token_file"),
    )
    .unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let store_url = secret(
        raw.store_url_env.as_deref(),
        raw.store_url_file.as_deref(),
        base,
        &format!("{}: serve: store URL", loc.path.display()),
        ("store_url_env", "store_url_file"),
    )
    .unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    if let Some(url) = &store_url {
        if !url.expose().starts_with("postgres://") && !url.expose().starts_with("postgresql://") {
            errors.push(format!(
                "{}: serve: the store URL must be a PostgreSQL URL (postgres://USER@HOST:5432/DATABASE); leave store_url_env and store_url_file out for the SQLite store in the data directory",
                loc.path.display()
            ));
        }
    }
    if let Some(id) = &raw.node_id {
        let text = id.get_ref();
        if text.is_empty()
            || text.len() > 64
            || !text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            errors.push(format!(
                "{}: serve.node_id: '{}' is not a node name; use up to 64 letters, digits, '-', '_' or '.' (such as ferry-a)",
                loc.at(id.span()),
                text.escape_debug()
            ));
        }
    }
    if raw.lease.is_some() && lease < Duration::from_secs(1) {
        errors.push(format!(
            "{}: serve.lease must be at least 1s (the heartbeat renews claims every third of it)",
            loc.path.display()
        ));
    }
    if raw.workers == Some(0) {
        errors.push(format!(
            "{}: serve.workers must be at least 1",
            loc.path.display()
        ));
    }
    if raw.max_connections == Some(0) {
        errors.push(format!(
            "{}: serve.max_connections must be at least 1",
            loc.path.display()
        ));
    }
    ServeSettings {
        listen: listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
        data_dir: raw.data_dir.as_ref().map(|d| base.join(d)),
        workers: raw
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1),
        admin_token,
        notify_url,
        notify_after: raw.notify_after.unwrap_or(3).max(1),
        shutdown_grace,
        max_body_bytes: raw.max_body_bytes.unwrap_or(1024 * 1024),
        header_timeout,
        body_timeout,
        max_connections: raw.max_connections.unwrap_or(1024).max(1),
        retry_base,
        retry_max,
        store_url,
        node_id: raw.node_id.as_ref().map(|id| id.get_ref().clone()),
        lease,
    }
}

/// A secret named by an environment variable or read from a file (at most one of the two).
fn secret(
    env: Option<&str>,
    file: Option<&Path>,
    base: &Path,
    what: &str,
    keys: (&str, &str),
) -> Result<Option<Secret>, String> {
    match (env, file) {
        (Some(_), Some(_)) => Err(format!("{what}: set {} or {}, not both", keys.0, keys.1)),
        (Some(var), None) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
            _ => Err(format!(
                "{what}: {} names the environment variable {var}, which is not set (or empty); export it before running ferry",
                keys.0
            )),
        },
        (None, Some(file)) => {
            let file = base.join(file);
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("{what}: cannot read {} {}: {e}", keys.1, file.display()))?;
            let value = text.trim_end_matches(['\n', '\r']).to_owned();
            if value.is_empty() {
                return Err(format!("{what}: {} {} is empty", keys.1, file.display()));
            }
            Ok(Some(Secret::new(value)))
        }
        (None, None) => Ok(None),
    }
}

/// Builds the ref selection from options, defaulting to branches and tags.
pub fn selection(options: &RawOptions) -> Result<RefSelection, String> {
    let parse_all = |v: &Vec<Spanned<String>>| -> Result<Vec<RefPattern>, String> {
        v.iter().map(|p| RefPattern::parse(p.get_ref())).collect()
    };
    let mut sel = RefSelection::default();
    if let Some(include) = &options.include {
        sel.include = parse_all(include)?;
        if sel.include.is_empty() {
            return Err("include is empty, so nothing would be mirrored; list at least one pattern such as refs/heads/*".into());
        }
    }
    if let Some(exclude) = &options.exclude {
        sel.exclude = parse_all(exclude)?;
    }
    Ok(sel)
}

fn resolve_remote(
    raw: &RawRemote,
    base: &Path,
    loc: &Locator<'_>,
    what: &str,
) -> Result<Remote, String> {
    let at = loc.at(raw.url.span());
    let mut remote =
        Remote::parse(raw.url.get_ref(), base).map_err(|e| format!("{at}: {what}: {e}"))?;
    let creds = &mut remote.credentials;
    if let Some(u) = &raw.username {
        creds.username = Some(u.clone());
    }
    if let Some(password) = secret(
        raw.password_env.as_deref(),
        raw.password_file.as_deref(),
        base,
        &format!("{at}: {what}"),
        ("password_env", "password_file"),
    )? {
        creds.password = Some(password);
    }
    for (key, value, slot) in [
        ("ssh_key", &raw.ssh_key, &mut creds.ssh_key),
        ("known_hosts", &raw.known_hosts, &mut creds.known_hosts),
        ("ca_file", &raw.ca_file, &mut creds.ca_file),
    ] {
        if let Some(p) = value {
            *slot = Some(
                existing_file(&base.join(p)).map_err(|e| format!("{at}: {what}: {key}: {e}"))?,
            );
        }
    }
    resolve_lfs(&raw.lfs, &mut remote, base, loc, &at, what)?;
    Ok(remote)
}

/// A remote table's LFS keys: `lfs_url` (an http(s) URL without credentials) and the
/// endpoint's own user and password, which otherwise are the remote's.
fn resolve_lfs(
    raw: &RawLfsAccess,
    remote: &mut Remote,
    base: &Path,
    loc: &Locator<'_>,
    at: &str,
    what: &str,
) -> Result<(), String> {
    if let Some(url) = &raw.lfs_url {
        let text = url.get_ref().trim();
        let valid = url::Url::parse(text).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.username().is_empty()
                && u.password().is_none()
        });
        if !valid {
            return Err(format!(
                "{}: {what}: lfs_url '{}' must be an http(s) URL without credentials, like https://HOST/OWNER/REPO.git/info/lfs (put the password in lfs_password_env or lfs_password_file)",
                loc.at(url.span()),
                crate::model::remote::redact_text(text)
            ));
        }
        remote.lfs.url = Some(text.to_owned());
    }
    remote.lfs.username = raw.lfs_username.clone();
    remote.lfs.password = secret(
        raw.lfs_password_env.as_deref(),
        raw.lfs_password_file.as_deref(),
        base,
        &format!("{at}: {what}"),
        ("lfs_password_env", "lfs_password_file"),
    )?;
    Ok(())
}

/// Parses an interval: a duration, or `0` / `off` for never.
pub fn parse_interval(text: &str) -> Result<Option<Duration>, String> {
    match text.trim() {
        "0" | "off" | "never" => Ok(None),
        other => {
            let d = humantime::parse_duration(other).map_err(|e| {
                format!(
                    "'{text}' is not a duration ({e}); write it like 30s, 5m or 1h, or 0 for never"
                )
            })?;
            Ok((!d.is_zero()).then_some(d))
        }
    }
}

/// An absolute path to a file that exists (ssh and git need absolute paths).
pub fn existing_file(path: &Path) -> Result<PathBuf, String> {
    std::fs::canonicalize(path)
        .ok()
        .filter(|p| p.is_file())
        .ok_or_else(|| format!("{} does not exist or is not a file", path.display()))
}

/// Parses durations like `90s`, `10m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("'{text}' is not a duration ({e}); write it like 30s, 10m or 1h"))?;
    if d.is_zero() {
        return Err(format!("'{text}' is zero; a timeout must be positive"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            Path::new("/etc/ferry/ferry.toml"),
            &RawOptions::default(),
        )
    }

    #[test]
    fn parses_a_full_config() {
        let c = parse(
            r#"
cache_dir = "/var/cache/ferry"
timeout = "2m"
[defaults]
exclude = ["refs/pull/*"]
divergence = "overwrite"

[[mirror]]
name = "app"
source = "https://git.example.com/app.git"
destinations = ["file:///srv/app.git", { url = "https://h/app.git", username = "bot" }]
prune = "all"
"#,
        )
        .unwrap();
        assert_eq!(c.cache_dir, Some(PathBuf::from("/var/cache/ferry")));
        assert_eq!(c.timeout, Some(Duration::from_secs(120)));
        let m = &c.mirrors[0].mirror;
        assert_eq!(m.name, "app");
        assert_eq!(m.destinations.len(), 2);
        assert_eq!(
            m.destinations[1].credentials.username.as_deref(),
            Some("bot")
        );
        assert_eq!(
            m.policy,
            Policy {
                divergence: Divergence::Overwrite,
                prune: Prune::All
            }
        );
        assert!(!m.selection.selects("refs/pull/1/head"));
        assert!(m.selection.selects("refs/heads/main"));
        assert_eq!(c.mirrors[0].poll_interval, Some(DEFAULT_POLL_INTERVAL));
        assert_eq!(c.serve.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(m.source.git_url(), "https://git.example.com/app.git");
    }

    #[test]
    fn the_cluster_keys_name_a_postgres_store_a_node_and_a_lease() {
        let mirror = "[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/y\"]\n";
        let c = parse(mirror).unwrap();
        assert!(c.serve.store_url.is_none(), "SQLite by default");
        assert_eq!(
            (c.serve.node_id, c.serve.lease),
            (None, Duration::from_secs(30))
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("store-url"),
            "postgres://ferry:pw@db:5432/ferry\n",
        )
        .unwrap();
        let text = format!("[serve]\nstore_url_file = \"store-url\"\nnode_id = \"ferry-a\"\nlease = \"3s\"\n{mirror}");
        let c = Config::parse(
            &text,
            &dir.path().join("ferry.toml"),
            &RawOptions::default(),
        )
        .unwrap();
        assert_eq!(
            c.serve.store_url.as_ref().map(Secret::expose),
            Some("postgres://ferry:pw@db:5432/ferry")
        );
        assert_eq!(c.serve.node_id.as_deref(), Some("ferry-a"));
        assert_eq!(c.serve.lease, Duration::from_secs(3));

        std::fs::write(dir.path().join("store-url"), "mysql://ferry:pw@db/ferry").unwrap();
        let text = format!("[serve]\nstore_url_file = \"store-url\"\nnode_id = \"a b\"\nlease = \"10ms\"\n{mirror}");
        let e = Config::parse(
            &text,
            &dir.path().join("ferry.toml"),
            &RawOptions::default(),
        )
        .unwrap_err()
        .0;
        for expected in ["PostgreSQL URL", "serve.node_id", "serve.lease"] {
            assert!(e.contains(expected), "{expected}: {e}");
        }
        assert!(
            !e.contains(":pw@"),
            "the URL's password is never shown: {e}"
        );
        let e = parse(&format!(
            "[serve]\nstore_url_env = \"FERRY_TEST_UNSET_STORE_URL\"\n{mirror}"
        ))
        .unwrap_err()
        .0;
        assert!(
            e.contains("FERRY_TEST_UNSET_STORE_URL") && e.contains("not set"),
            "{e}"
        );
    }

    #[test]
    fn parses_the_serve_section_and_service_options() {
        let c = parse(
            r#"
[serve]
listen = "127.0.0.1:9000"
data_dir = "data"
workers = 3
notify_url = "https://hooks.example.com/ferry"
notify_after = 2
retry_base = "1s"
[defaults]
poll_interval = "0"
[[mirror]]
name = "a"
source = "src.git"
destinations = ["dst.git"]
reconcile_interval = "10m"
webhook_secret_file = "/dev/null"
"#,
        );
        // An empty secret file is refused with the key's name.
        let e = c.unwrap_err().0;
        assert!(
            e.contains("webhook_secret_file") && e.contains("is empty"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hook-secret"), "s3cret\n").unwrap();
        let text = "[serve]\nlisten = \"127.0.0.1:9000\"\ndata_dir = \"data\"\nworkers = 3\n[defaults]\npoll_interval = \"0\"\n[[mirror]]\nname = \"a\"\nsource = \"src.git\"\ndestinations = [\"dst.git\"]\nreconcile_interval = \"10m\"\nwebhook_secret_file = \"hook-secret\"\n";
        let path = dir.path().join("ferry.toml");
        let c = Config::parse(text, &path, &RawOptions::default()).unwrap();
        assert_eq!(c.serve.listen.port(), 9000);
        assert_eq!(c.serve.workers, 3);
        assert_eq!(c.serve.data_dir, Some(dir.path().join("data")));
        let m = &c.mirrors[0];
        assert_eq!(m.poll_interval, None);
        assert_eq!(m.reconcile_interval, Some(Duration::from_secs(600)));
        assert_eq!(
            m.webhook_secret.as_ref().map(Secret::expose),
            Some("s3cret")
        );
        assert_eq!(
            m.mirror.source.git_url(),
            dir.path().join("src.git").display().to_string(),
            "paths are relative to the file"
        );

        let e = parse("[serve]\nlisten = \"localhost\"\nfrobs = 1\n[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/y\"]\n").unwrap_err().0;
        assert!(e.contains("frobs"), "{e}");
        let e = parse("[serve]\nlisten = \"localhost\"\n[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/y\"]\npoll_interval = \"often\"\n").unwrap_err().0;
        assert!(
            e.contains("serve.listen") && e.contains("poll_interval"),
            "{e}"
        );
    }

    #[test]
    fn webhook_provider_pins_a_provider_and_unknown_names_are_errors() {
        let c = parse("[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/y\"]\nwebhook_provider = \"bitbucket_server\"\n").unwrap();
        assert_eq!(
            c.mirrors[0].webhook_provider,
            Some(Provider::BitbucketServer)
        );
        let e = parse("[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/y\"]\nwebhook_provider = \"githb\"\n").unwrap_err().0;
        assert!(
            e.contains("line 5") && e.contains("githb") && e.contains("github"),
            "{e}"
        );
    }

    #[test]
    fn the_http_limits_have_defaults_and_refuse_zero() {
        let mirror = "[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/y\"]\n";
        let c = parse(mirror).unwrap();
        assert_eq!(c.serve.header_timeout, Duration::from_secs(10));
        assert_eq!(c.serve.body_timeout, Duration::from_secs(30));
        assert_eq!(c.serve.max_connections, 1024);
        let c = parse(&format!(
            "[serve]\nheader_timeout = \"2s\"\nbody_timeout = \"1m\"\nmax_connections = 50\n{mirror}"
        ))
        .unwrap();
        assert_eq!(c.serve.header_timeout, Duration::from_secs(2));
        assert_eq!(c.serve.body_timeout, Duration::from_secs(60));
        assert_eq!(c.serve.max_connections, 50);
        let e = parse(&format!(
            "[serve]\nheader_timeout = \"0s\"\nbody_timeout = \"soon\"\nmax_connections = 0\n{mirror}"
        ))
        .unwrap_err()
        .0;
        for key in [
            "serve.header_timeout",
            "serve.body_timeout",
            "serve.max_connections",
        ] {
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn errors_name_the_file_line_and_fix() {
        let e = parse(
            "[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/y\"]\nfrobnicate = 1\n",
        )
        .unwrap_err()
        .0;
        assert!(
            e.contains("/etc/ferry/ferry.toml") && e.contains("line 5") && e.contains("frobnicate"),
            "{e}"
        );

        let e = parse("[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/y\"]\n[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/z\"]\n").unwrap_err().0;
        assert!(
            e.contains("ferry.toml:6") && e.contains("used twice"),
            "{e}"
        );

        let e = parse("[[mirror]]\nname = \"a\"\nsource = { url = \"https://h/x\", password_env = \"FERRY_TEST_UNSET_VAR\" }\ndestinations = [\"/y\"]\n").unwrap_err().0;
        assert!(
            e.contains("ferry.toml:3")
                && e.contains("FERRY_TEST_UNSET_VAR")
                && e.contains("not set"),
            "{e}"
        );

        let e = parse("[[mirror]]\nname = \"a\"\nsource = \"ftp://h/x\"\ndestinations = []\n")
            .unwrap_err()
            .0;
        assert!(
            e.contains("unsupported scheme") && e.contains("no destinations"),
            "{e}"
        );

        let e = parse("[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/y\"]\ninclude = [\"heads/*\"]\n").unwrap_err().0;
        assert!(e.contains("refs/"), "{e}");

        let e = parse("timeout = \"soon\"\n[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/y\"]\ndivergence = \"maybe\"\n").unwrap_err().0;
        assert!(e.contains("maybe") || e.contains("divergence"), "{e}");

        let e = parse("").unwrap_err().0;
        assert!(e.contains("no mirrors configured"), "{e}");
    }

    #[test]
    fn lfs_keys_are_read_per_mirror_and_per_remote() {
        let c = parse("[defaults]\nlfs = false\n[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/y\"]\n[[mirror]]\nname = \"b\"\nsource = \"/x\"\ndestinations = [{ url = \"https://h/b.git\", lfs_url = \"https://lfs.example/b\", lfs_username = \"bot\" }]\nlfs = \"auto\"\nlfs_missing = \"push\"\n[[mirror]]\nname = \"c\"\nsource = \"/x\"\ndestinations = [\"/y\"]\nlfs = true\n").unwrap();
        let policy = |i: usize| c.mirrors[i].mirror.lfs;
        assert_eq!(policy(0).mode, LfsMode::Off);
        assert_eq!(policy(1).mode, LfsMode::Auto);
        assert_eq!(policy(1).missing, LfsMissing::Push);
        assert_eq!(policy(2).mode, LfsMode::On);
        assert_eq!(policy(2).missing, LfsMissing::Hold);
        let dest = &c.mirrors[1].mirror.destinations[0];
        assert_eq!(dest.lfs.url.as_deref(), Some("https://lfs.example/b"));
        assert_eq!(dest.lfs.username.as_deref(), Some("bot"));

        let e = parse("[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/y\"]\nlfs = \"sometimes\"\n").unwrap_err().0;
        assert!(e.contains("lfs must be"), "{e}");
        let e = parse("[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [{ url = \"/y\", lfs_url = \"https://u:pw@lfs.example/y\" }]\n").unwrap_err().0;
        assert!(
            e.contains("lfs_url") && e.contains("ferry.toml:4") && !e.contains("pw@"),
            "{e}"
        );
        let e = parse("[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [{ url = \"/y\", lfs_password_env = \"FERRY_TEST_UNSET_LFS\" }]\n").unwrap_err().0;
        assert!(
            e.contains("lfs_password_env") && e.contains("FERRY_TEST_UNSET_LFS"),
            "{e}"
        );
    }

    #[test]
    fn command_line_options_win_over_the_file() {
        let over = RawOptions {
            prune: Some(Prune::Never),
            ..RawOptions::default()
        };
        let c = Config::parse(
            "[defaults]\nprune = \"all\"\n[[mirror]]\nname = \"a\"\nsource = \"/x\"\ndestinations = [\"/y\"]\n",
            Path::new("f.toml"),
            &over,
        )
        .unwrap();
        assert_eq!(c.mirrors[0].mirror.policy.prune, Prune::Never);
    }
}
