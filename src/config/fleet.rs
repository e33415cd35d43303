//! `[[fleet]]`: every repository of a source (a directory of bare repositories, a GitHub
//! organisation or user, a GitLab group with its subgroups, a Gitea or Forgejo organisation or
//! user, a Bitbucket workspace, or an AWS CodeCommit account's region) mirrored to a destination, each becoming a mirror named `<fleet>/<repository path>`.
//! This validates the table into a [`FleetSpec`]; discovery and membership live in
//! `crate::fleet`.

use super::{
    intervals, merge, parse_interval, resolve_remote, secret, selection, ConfiguredMirror, Locator,
    RawLfsAccess, RawOptions, RawRemote,
};
use crate::model::fleet::{OnSourceDeleted, RepoFilter, Repository, Visibility};
use crate::model::mirror::{Divergence, LfsMissing, LfsMode, Prune};
use crate::model::provider::Provider;
use crate::model::refs::RefSelection;
use crate::model::remote::{url_has_password, Credentials, Remote, Secret};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// How often `ferry serve` lists a fleet's source unless the fleet says otherwise.
pub const DEFAULT_DISCOVER_INTERVAL: Duration = Duration::from_secs(600);

/// The providers a fleet's source or destination may name in this version.
const SOURCE_PROVIDERS: &str =
    "directory, github, gitlab, gitea (or forgejo), bitbucket, codecommit";
const DESTINATION_PROVIDERS: &str = "directory, github, gitlab, gitea (or forgejo), url";

/// A host with an API that fleets list repositories on and create them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// GitHub and GitHub Enterprise Server.
    GitHub,
    /// GitLab.com and self-managed GitLab.
    GitLab,
    /// Gitea and Forgejo (the same API).
    Gitea,
    /// Bitbucket Cloud (a source only).
    Bitbucket,
}

impl HostKind {
    fn from_provider(provider: &str) -> Option<HostKind> {
        match provider {
            "github" => Some(HostKind::GitHub),
            "gitlab" => Some(HostKind::GitLab),
            "gitea" | "forgejo" => Some(HostKind::Gitea),
            "bitbucket" => Some(HostKind::Bitbucket),
            _ => None,
        }
    }

    /// The host's name for people.
    pub fn name(self) -> &'static str {
        match self {
            HostKind::GitHub => "GitHub",
            HostKind::GitLab => "GitLab",
            HostKind::Gitea => "Gitea",
            HostKind::Bitbucket => "Bitbucket",
        }
    }

    /// The API when `api_url` names none (Gitea and Forgejo are always self-hosted).
    fn default_api(self) -> Option<&'static str> {
        match self {
            HostKind::GitHub => Some("https://api.github.com"),
            HostKind::GitLab => Some("https://gitlab.com/api/v4"),
            HostKind::Gitea => None,
            HostKind::Bitbucket => Some("https://api.bitbucket.org/2.0"),
        }
    }

    /// The API under an `api_url`: GitHub Enterprise names its API base
    /// (`https://HOST/api/v3`); GitLab may be named by the instance or by its API.
    fn api_under(self, url: url::Url) -> url::Url {
        let suffix = match self {
            HostKind::GitHub | HostKind::Bitbucket => return url,
            HostKind::GitLab => "/api/v4",
            HostKind::Gitea => "/api/v1",
        };
        if url.path().trim_end_matches('/').ends_with(suffix) {
            return url;
        }
        let mut url = url;
        let path = format!("{}{suffix}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }

    /// The user name git sends with the token over HTTPS unless `username` says otherwise:
    /// GitHub accepts any name with a token (this one is what its own tools send); GitLab
    /// takes `oauth2` with a personal, group or project access token; Gitea and Forgejo take
    /// an access token as the password whatever the name; Bitbucket's app passwords need the
    /// account's user name, which the configuration must give (`x-token-auth` is the name it
    /// takes with an access token).
    fn token_username(self) -> &'static str {
        match self {
            HostKind::GitHub => "x-access-token",
            HostKind::GitLab | HostKind::Gitea => "oauth2",
            HostKind::Bitbucket => "x-token-auth",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    name: Spanned<String>,
    source: RawFleetEnd,
    destination: RawFleetEnd,
    /// Globs over repository paths (not refs: those are `refs.include`).
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    archived: Option<bool>,
    forks: Option<bool>,
    on_source_deleted: Option<OnSourceDeleted>,
    discover_interval: Option<Spanned<String>>,
    refs: Option<RawRefs>,
    // The per-mirror options every member gets, spelled out for `deny_unknown_fields`.
    divergence: Option<Divergence>,
    prune: Option<Prune>,
    atomic: Option<bool>,
    verify: Option<bool>,
    lfs: Option<LfsMode>,
    lfs_missing: Option<LfsMissing>,
    poll_interval: Option<Spanned<String>>,
    reconcile_interval: Option<Spanned<String>>,
    webhook_secret_env: Option<String>,
    webhook_secret_file: Option<PathBuf>,
    webhook_provider: Option<Provider>,
}

/// `refs = { include = [...], exclude = [...] }`: the members' ref selection.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefs {
    include: Option<Vec<Spanned<String>>>,
    exclude: Option<Vec<Spanned<String>>>,
}

/// A fleet's `source` or `destination` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleetEnd {
    provider: Spanned<String>,
    path: Option<PathBuf>,
    url: Option<Spanned<String>>,
    create: Option<bool>,
    owner: Option<String>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    api_url: Option<Spanned<String>>,
    visibility: Option<Visibility>,
    adopt_existing: Option<bool>,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    ssh_key: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    region: Option<String>,
}

/// A validated `[[fleet]]`.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub name: String,
    pub source: FleetSource,
    pub destination: FleetDestination,
    pub filter: RepoFilter,
    pub on_source_deleted: OnSourceDeleted,
    /// How often `ferry serve` lists the source (`None`: only at start).
    pub discover_interval: Option<Duration>,
    template: MemberTemplate,
}

/// Where a fleet's repositories are found.
#[derive(Debug, Clone)]
pub enum FleetSource {
    /// Every bare repository below `root`, recursively.
    Directory { root: PathBuf },
    /// Every repository of a GitHub organisation or user, every project of a GitLab group
    /// (subgroups included; `owner` is the group's full path), or every repository of a Gitea
    /// or Forgejo organisation or user.
    Host {
        kind: HostKind,
        account: HostAccount,
    },
    /// Every repository of an AWS account's CodeCommit in `region` (the SDK's region settings
    /// when `None`), listed with the AWS credential chain; git fetches over HTTPS with the
    /// account's HTTPS Git credentials.
    CodeCommit {
        region: Option<String>,
        git: Credentials,
    },
}

/// An account on a host's API: whose repositories, and how to authenticate (the same token
/// serves the API and git over HTTPS).
#[derive(Debug, Clone)]
pub struct HostAccount {
    /// The API's base URL, without a trailing slash.
    pub api: url::Url,
    /// The organisation or user.
    pub owner: String,
    pub token: Secret,
    /// The user name git sends with the token.
    pub git_username: String,
    /// A PEM bundle of CAs to trust for the API and git (self-hosted instances).
    pub ca_file: Option<PathBuf>,
}

impl HostAccount {
    /// Credentials for git over HTTPS to this host.
    pub fn git_credentials(&self) -> Credentials {
        Credentials {
            username: Some(self.git_username.clone()),
            password: Some(self.token.clone()),
            ca_file: self.ca_file.clone(),
            ..Credentials::default()
        }
    }
}

/// Where a fleet's members are mirrored to.
#[derive(Debug, Clone)]
pub enum FleetDestination {
    /// `root/<the same relative path>`, a bare repository, created when `create`.
    Directory { root: PathBuf, create: bool },
    /// A URL with `{path}` in it, for repositories that exist already; no API is used.
    Url {
        template: String,
        credentials: Credentials,
    },
    /// Repositories of a GitHub organisation or user, or projects of a GitLab group, named like
    /// the source's (nested paths flattened), created when `create` (never more public than
    /// the source). A repository there that ferry did not create for the member is an error
    /// for that member unless `adopt_existing`.
    Host {
        kind: HostKind,
        account: HostAccount,
        create: bool,
        visibility: Visibility,
        adopt_existing: bool,
    },
}

/// What every member of a fleet shares: the per-mirror options, validated once.
#[derive(Debug, Clone)]
struct MemberTemplate {
    options: RawOptions,
    selection: RefSelection,
    poll_interval: Option<Duration>,
    reconcile_interval: Option<Duration>,
    webhook_secret: Option<Secret>,
    webhook_provider: Option<Provider>,
}

impl FleetSpec {
    /// The secret and the pinned provider of deliveries to the fleet's own hook (the
    /// members' own).
    pub fn webhook(&self) -> (Option<&Secret>, Option<Provider>) {
        (
            self.template.webhook_secret.as_ref(),
            self.template.webhook_provider,
        )
    }

    /// The member mirror for a repository the fleet takes; `destination_url` is where a
    /// host destination has it (from the host's API).
    pub fn member(
        &self,
        repo: &Repository,
        destination_url: Option<&str>,
    ) -> Result<ConfiguredMirror, String> {
        let source = match &self.source {
            FleetSource::Directory { root } => {
                Remote::parse(&root.join(&repo.path).to_string_lossy(), root)?
            }
            FleetSource::Host { account, .. } => {
                host_remote(clone_url(repo)?, account.git_credentials())?
            }
            FleetSource::CodeCommit { git, .. } => host_remote(clone_url(repo)?, git.clone())?,
        };
        let destination = self.destination.remote_for(repo, destination_url)?;
        let t = &self.template;
        let mut options = t.options.clone();
        if let FleetDestination::Directory { create, .. } = &self.destination {
            options.create = Some(*create);
        }
        Ok(ConfiguredMirror {
            mirror: options.mirror(
                repo.member_name(&self.name),
                source,
                vec![destination],
                t.selection.clone(),
            ),
            webhook_secret: t.webhook_secret.clone(),
            webhook_provider: t.webhook_provider,
            poll_interval: t.poll_interval,
            reconcile_interval: t.reconcile_interval,
        })
    }
}

fn clone_url(repo: &Repository) -> Result<&str, String> {
    repo.clone_url
        .as_deref()
        .ok_or_else(|| format!("the host gave no clone URL for '{}'", repo.path))
}

/// A repository on a host, reached over HTTPS with the account's credentials.
fn host_remote(url: &str, credentials: Credentials) -> Result<Remote, String> {
    let mut remote = Remote::parse(url, Path::new("/"))?;
    if url_has_password(url) {
        return Err("the host's clone URL carries a password; refusing it".into());
    }
    remote.credentials = credentials;
    Ok(remote)
}

impl FleetDestination {
    /// The destination remote of one repository; a host destination's URL comes from its API.
    pub fn remote_for(&self, repo: &Repository, url: Option<&str>) -> Result<Remote, String> {
        match self {
            FleetDestination::Host { account, .. } => {
                let url = url.ok_or_else(|| {
                    format!(
                        "the destination repository for '{}' does not exist (yet)",
                        repo.path
                    )
                })?;
                host_remote(url, account.git_credentials())
            }
            FleetDestination::Directory { root, .. } => {
                Remote::parse(&root.join(&repo.path).to_string_lossy(), root)
            }
            FleetDestination::Url {
                template,
                credentials,
            } => {
                let mut remote = Remote::parse(
                    &template.replace("{path}", repo.short_path()),
                    Path::new("/"),
                )?;
                remote.credentials = credentials.clone();
                Ok(remote)
            }
        }
    }

    /// The local path of a directory destination's repository.
    pub fn local_path(&self, repo: &Repository) -> Option<PathBuf> {
        match self {
            FleetDestination::Directory { root, .. } => Some(root.join(&repo.path)),
            FleetDestination::Url { .. } | FleetDestination::Host { .. } => None,
        }
    }
}

/// Validates every `[[fleet]]`; problems go to `errors`, each with file and line.
pub(super) fn fleets(
    raw: &[RawFleet],
    defaults: &RawOptions,
    overrides: &RawOptions,
    base: &Path,
    loc: &Locator<'_>,
    errors: &mut Vec<String>,
) -> Vec<FleetSpec> {
    let mut out: Vec<FleetSpec> = Vec::new();
    for f in raw {
        let name = f.name.get_ref().trim().to_owned();
        let at = loc.at(f.name.span());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            errors.push(format!("{at}: fleet name '{name}' must be non-empty and use only letters, digits, '-', '_' and '.'"));
            continue;
        }
        if out.iter().any(|o| o.name == name) {
            errors.push(format!(
                "{at}: fleet name '{name}' is used twice; names must be unique"
            ));
            continue;
        }
        let what = format!("fleet '{name}'");
        let before = errors.len();
        let source = fleet_source(&f.source, base, loc, &what, errors);
        let destination = fleet_destination(&f.destination, base, loc, &what, errors);
        let include = f.include.clone().unwrap_or_else(|| vec!["*".into()]);
        let filter = RepoFilter::new(
            &include,
            f.exclude.as_deref().unwrap_or_default(),
            f.archived.unwrap_or(false),
            f.forks.unwrap_or(false),
        )
        .map_err(|e| errors.push(format!("{at}: {what}: include/exclude: {e}")))
        .ok();
        let on_source_deleted = f.on_source_deleted.unwrap_or_default();
        let host_destination = matches!(destination, Some(FleetDestination::Host { .. }));
        if on_source_deleted == OnSourceDeleted::Archive && !host_destination {
            errors.push(format!(
                "{at}: {what}: on_source_deleted = \"archive\" needs a destination host that can \
                 archive repositories; a {} destination can \"keep\" or \"delete\"",
                f.destination.provider.get_ref()
            ));
        }
        if on_source_deleted == OnSourceDeleted::Delete
            && matches!(destination, Some(FleetDestination::Url { .. }))
        {
            errors.push(format!(
                "{at}: {what}: on_source_deleted = \"delete\" needs a destination ferry manages; \
                 a url destination can only \"keep\""
            ));
        }
        let discover_interval = match &f.discover_interval {
            None => Some(DEFAULT_DISCOVER_INTERVAL),
            Some(v) => parse_interval(v.get_ref()).unwrap_or_else(|e| {
                errors.push(format!(
                    "{}: {what}: discover_interval: {e}",
                    loc.at(v.span())
                ));
                None
            }),
        };
        let template = member_template(f, defaults, overrides, base, loc, &what, errors);
        if errors.len() > before {
            continue;
        }
        let (Some(source), Some(destination), Some(filter), Some(template)) =
            (source, destination, filter, template)
        else {
            continue;
        };
        out.push(FleetSpec {
            name,
            source,
            destination,
            filter,
            on_source_deleted,
            discover_interval,
            template,
        });
    }
    out
}

fn member_template(
    f: &RawFleet,
    defaults: &RawOptions,
    overrides: &RawOptions,
    base: &Path,
    loc: &Locator<'_>,
    what: &str,
    errors: &mut Vec<String>,
) -> Option<MemberTemplate> {
    let refs = f.refs.as_ref();
    let own = RawOptions {
        include: refs.and_then(|r| r.include.clone()),
        exclude: refs.and_then(|r| r.exclude.clone()),
        divergence: f.divergence,
        prune: f.prune,
        atomic: f.atomic,
        verify: f.verify,
        lfs: f.lfs,
        lfs_missing: f.lfs_missing,
        create: None,
        poll_interval: f.poll_interval.clone(),
        reconcile_interval: f.reconcile_interval.clone(),
    };
    let options = merge(&merge(defaults, &own), overrides);
    let selection = selection(&options)
        .map_err(|e| errors.push(format!("{}: {what}: refs: {e}", loc.at(f.name.span()))))
        .ok()?;
    let (poll_interval, reconcile_interval) = intervals(&options, what, loc, errors);
    let webhook_secret = secret(
        f.webhook_secret_env.as_deref(),
        f.webhook_secret_file.as_deref(),
        base,
        &format!("{}: {what}: webhook secret", loc.at(f.name.span())),
        ("webhook_secret_env", "webhook_secret_file"),
    )
    .map_err(|e| errors.push(e))
    .ok()?;
    Some(MemberTemplate {
        options,
        selection,
        poll_interval,
        reconcile_interval,
        webhook_secret,
        webhook_provider: f.webhook_provider,
    })
}

fn fleet_source(
    raw: &RawFleetEnd,
    base: &Path,
    loc: &Locator<'_>,
    what: &str,
    errors: &mut Vec<String>,
) -> Option<FleetSource> {
    let at = loc.at(raw.provider.span());
    let provider = raw.provider.get_ref().as_str();
    if let Some(kind) = HostKind::from_provider(provider) {
        let what = format!("{what} source");
        only_keys(raw, &HOST_KEYS, &at, &what, errors)?;
        let account = host_account(kind, raw, base, loc, &at, &what, errors)?;
        return Some(FleetSource::Host { kind, account });
    }
    match provider {
        "codecommit" => codecommit_source(raw, base, &at, &format!("{what} source"), errors),
        "directory" => {
            only_keys(raw, &["path"], &at, &format!("{what} source"), errors)?;
            let root = directory(raw, base, &at, &format!("{what} source"), errors)?;
            if !root.is_dir() {
                errors.push(format!(
                    "{at}: {what} source: {} is not a directory",
                    root.display()
                ));
                return None;
            }
            Some(FleetSource::Directory { root })
        }
        other => {
            errors.push(format!(
                "{at}: {what} source: provider '{other}' is not supported by this version of \
                 ferry as a fleet source; supported: {SOURCE_PROVIDERS}"
            ));
            None
        }
    }
}

fn fleet_destination(
    raw: &RawFleetEnd,
    base: &Path,
    loc: &Locator<'_>,
    what: &str,
    errors: &mut Vec<String>,
) -> Option<FleetDestination> {
    let at = loc.at(raw.provider.span());
    let what = format!("{what} destination");
    let provider = raw.provider.get_ref().as_str();
    if provider == "bitbucket" || provider == "codecommit" {
        errors.push(format!(
            "{at}: {what}: {provider} is a fleet source only in this version; destinations: \
             {DESTINATION_PROVIDERS}"
        ));
        return None;
    }
    if let Some(kind) = HostKind::from_provider(provider) {
        let allowed: Vec<&str> = HOST_KEYS
            .iter()
            .chain(&["create", "visibility", "adopt_existing"])
            .copied()
            .collect();
        only_keys(raw, &allowed, &at, &what, errors)?;
        let account = host_account(kind, raw, base, loc, &at, &what, errors)?;
        return Some(FleetDestination::Host {
            kind,
            account,
            create: raw.create.unwrap_or(false),
            visibility: raw.visibility.unwrap_or_default(),
            adopt_existing: raw.adopt_existing.unwrap_or(false),
        });
    }
    match provider {
        "directory" => {
            only_keys(raw, &["path", "create"], &at, &what, errors)?;
            let root = directory(raw, base, &at, &what, errors)?;
            Some(FleetDestination::Directory {
                root,
                create: raw.create.unwrap_or(false),
            })
        }
        "url" => {
            let allowed = [
                "url",
                "username",
                "password_env",
                "password_file",
                "ssh_key",
                "known_hosts",
                "ca_file",
            ];
            only_keys(raw, &allowed, &at, &what, errors)?;
            let Some(url) = &raw.url else {
                errors.push(format!(
                    "{at}: {what}: a url destination needs url = \"https://host/mirrors/{{path}}.git\""
                ));
                return None;
            };
            let template = url.get_ref().trim().to_owned();
            let url_at = loc.at(url.span());
            if !template.contains("{path}") {
                errors.push(format!(
                    "{url_at}: {what}: the url must contain {{path}}, which becomes each repository's path"
                ));
                return None;
            }
            if url_has_password(&template) {
                errors.push(format!(
                    "{url_at}: {what}: the url carries a password; put it in password_env or password_file"
                ));
                return None;
            }
            // Resolves the credentials (and checks the URL) once, on an example path.
            let example = RawRemote {
                url: Spanned::new(url.span(), template.replace("{path}", "example")),
                username: raw.username.clone(),
                password_env: raw.password_env.clone(),
                password_file: raw.password_file.clone(),
                ssh_key: raw.ssh_key.clone(),
                known_hosts: raw.known_hosts.clone(),
                ca_file: raw.ca_file.clone(),
                lfs: RawLfsAccess::default(),
            };
            let remote = resolve_remote(&example, base, loc, &what)
                .map_err(|e| errors.push(e))
                .ok()?;
            Some(FleetDestination::Url {
                template,
                credentials: remote.credentials,
            })
        }
        other => {
            errors.push(format!(
                "{at}: {what}: provider '{other}' is not supported by this version of ferry as a \
                 fleet destination; supported: {DESTINATION_PROVIDERS}"
            ));
            None
        }
    }
}

/// Refuses keys that mean nothing for the end's provider, so a typo never goes unnoticed.
fn only_keys(
    raw: &RawFleetEnd,
    allowed: &[&str],
    at: &str,
    what: &str,
    errors: &mut Vec<String>,
) -> Option<()> {
    let present = [
        ("owner", raw.owner.is_some()),
        ("token_env", raw.token_env.is_some()),
        ("token_file", raw.token_file.is_some()),
        ("api_url", raw.api_url.is_some()),
        ("visibility", raw.visibility.is_some()),
        ("adopt_existing", raw.adopt_existing.is_some()),
        ("path", raw.path.is_some()),
        ("url", raw.url.is_some()),
        ("create", raw.create.is_some()),
        ("username", raw.username.is_some()),
        ("password_env", raw.password_env.is_some()),
        ("password_file", raw.password_file.is_some()),
        ("ssh_key", raw.ssh_key.is_some()),
        ("known_hosts", raw.known_hosts.is_some()),
        ("ca_file", raw.ca_file.is_some()),
        ("region", raw.region.is_some()),
    ];
    let stray: Vec<&str> = present
        .iter()
        .filter(|(k, set)| *set && !allowed.contains(k))
        .map(|(k, _)| *k)
        .collect();
    if stray.is_empty() {
        return Some(());
    }
    errors.push(format!(
        "{at}: {what}: provider '{}' takes only {}; remove {}",
        raw.provider.get_ref(),
        allowed.join(", "),
        stray.join(", ")
    ));
    None
}

/// The keys of a host account (source or destination).
const HOST_KEYS: [&str; 6] = [
    "owner",
    "token_env",
    "token_file",
    "api_url",
    "username",
    "ca_file",
];

fn host_account(
    kind: HostKind,
    raw: &RawFleetEnd,
    base: &Path,
    loc: &Locator<'_>,
    at: &str,
    what: &str,
    errors: &mut Vec<String>,
) -> Option<HostAccount> {
    let provider = raw.provider.get_ref();
    let Some(owner) = raw
        .owner
        .as_ref()
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
    else {
        let owner = match kind {
            HostKind::GitHub => "<organisation or user>",
            HostKind::GitLab => "<group/subgroup>",
            HostKind::Gitea => "<organisation or user>",
            HostKind::Bitbucket => "<workspace>",
        };
        errors.push(format!(
            "{at}: {what}: a {provider} account needs owner = \"{owner}\""
        ));
        return None;
    };
    if kind == HostKind::Bitbucket && raw.username.is_none() {
        errors.push(format!(
            "{at}: {what}: a bitbucket account needs username = \"<your Bitbucket user name>\": \
             the app password in token_env or token_file goes with it"
        ));
        return None;
    }
    let token = match secret(
        raw.token_env.as_deref(),
        raw.token_file.as_deref(),
        base,
        &format!("{at}: {what}: token"),
        ("token_env", "token_file"),
    ) {
        Ok(Some(token)) => token,
        Ok(None) => {
            errors.push(format!(
                "{at}: {what}: a {provider} account needs a token: token_env = \"VAR\" or token_file = \"path\""
            ));
            return None;
        }
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let api = match &raw.api_url {
        None => match kind.default_api() {
            Some(api) => url::Url::parse(api).ok()?,
            None => {
                errors.push(format!(
                    "{at}: {what}: a {provider} account needs api_url = \"https://git.example.com\" (the instance; ferry adds /api/v1)"
                ));
                return None;
            }
        },
        Some(v) => match url::Url::parse(v.get_ref().trim().trim_end_matches('/')) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && !url_has_password(v.get_ref()) => {
                kind.api_under(u)
            }
            _ => {
                let example = match kind {
                    HostKind::GitHub => "https://github.example.com/api/v3",
                    HostKind::GitLab => "https://gitlab.example.com",
                    HostKind::Gitea => "https://git.example.com",
                    HostKind::Bitbucket => "https://api.bitbucket.org/2.0",
                };
                errors.push(format!(
                    "{}: {what}: api_url '{}' is not an http(s) URL without credentials, like {example}",
                    loc.at(v.span()),
                    crate::model::remote::redact_text(v.get_ref())
                ));
                return None;
            }
        },
    };
    let ca_file = match &raw.ca_file {
        Some(p) => match super::existing_file(&base.join(p)) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(format!("{at}: {what}: ca_file: {e}"));
                return None;
            }
        },
        None => None,
    };
    Some(HostAccount {
        api,
        owner,
        token,
        git_username: raw
            .username
            .clone()
            .unwrap_or_else(|| kind.token_username().to_owned()),
        ca_file,
    })
}

/// `source = { provider = "codecommit", region = "eu-west-1", username = "...",
/// password_env = "..." }`: the API calls use the AWS credential chain (environment, profile,
/// the Lambda function's role); git needs HTTPS Git credentials, which serve every
/// repository the IAM user may read.
fn codecommit_source(
    raw: &RawFleetEnd,
    base: &Path,
    at: &str,
    what: &str,
    errors: &mut Vec<String>,
) -> Option<FleetSource> {
    let allowed = ["region", "username", "password_env", "password_file"];
    only_keys(raw, &allowed, at, what, errors)?;
    let region = raw.region.as_ref().map(|r| r.trim().to_owned());
    if let Some(r) = &region {
        if r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            errors.push(format!(
                "{at}: {what}: region '{r}' is not an AWS region name such as \"eu-west-1\""
            ));
            return None;
        }
    }
    let password = secret(
        raw.password_env.as_deref(),
        raw.password_file.as_deref(),
        base,
        &format!("{at}: {what}: password"),
        ("password_env", "password_file"),
    )
    .map_err(|e| errors.push(e))
    .ok()?;
    let (Some(username), Some(password)) = (raw.username.clone(), password) else {
        errors.push(format!(
            "{at}: {what}: git reaches CodeCommit with an IAM user's HTTPS Git credentials: set \
             username and password_env (or password_file); create them in the IAM console under \
             Users > Security credentials > HTTPS Git credentials for AWS CodeCommit"
        ));
        return None;
    };
    Some(FleetSource::CodeCommit {
        region,
        git: Credentials {
            username: Some(username),
            password: Some(password),
            ..Credentials::default()
        },
    })
}

fn directory(
    raw: &RawFleetEnd,
    base: &Path,
    at: &str,
    what: &str,
    errors: &mut Vec<String>,
) -> Option<PathBuf> {
    let Some(path) = &raw.path else {
        errors.push(format!(
            "{at}: {what}: a directory needs path = \"/srv/git\""
        ));
        return None;
    };
    let joined = base.join(path);
    Some(std::path::absolute(&joined).unwrap_or(joined))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gitlab_api_url_may_name_the_instance_or_its_api() {
        let under =
            |kind: HostKind, u: &str| kind.api_under(url::Url::parse(u).unwrap()).to_string();
        assert_eq!(
            under(HostKind::GitLab, "https://gitlab.example.com"),
            "https://gitlab.example.com/api/v4"
        );
        assert_eq!(
            under(HostKind::GitLab, "https://example.com/gitlab/api/v4"),
            "https://example.com/gitlab/api/v4"
        );
        assert_eq!(
            under(HostKind::GitLab, "https://example.com/gitlab"),
            "https://example.com/gitlab/api/v4"
        );
        assert_eq!(
            under(HostKind::GitHub, "https://github.example.com/api/v3"),
            "https://github.example.com/api/v3",
            "GitHub Enterprise's api_url is its API"
        );
        assert_eq!(HostKind::GitLab.token_username(), "oauth2");
        assert_eq!(HostKind::from_provider("gitlab"), Some(HostKind::GitLab));
        assert_eq!(HostKind::from_provider("forgejo"), Some(HostKind::Gitea));
        assert_eq!(
            under(HostKind::Gitea, "https://git.example.com/"),
            "https://git.example.com/api/v1"
        );
        assert_eq!(HostKind::from_provider("directory"), None);
    }
}
