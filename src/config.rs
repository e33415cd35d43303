//! The configuration file (`ferry.toml`) and its validation into [`Mirror`]s. Raw TOML is
//! deserialized strictly (unknown keys are errors) and then checked as a whole, so a user sees
//! every mistake with the file and line it is on, and nothing runs on a half-valid config.

use crate::plan::{Divergence, Policy, Prune};
use crate::refs::{RefPattern, RefSelection};
use crate::remote::{Remote, Secret};
use crate::sync::Mirror;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
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
    defaults: RawOptions,
    #[serde(default)]
    mirror: Vec<RawMirror>,
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
    pub create: Option<bool>,
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
    create: Option<bool>,
}

impl RawMirror {
    fn options(&self) -> RawOptions {
        RawOptions {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            divergence: self.divergence,
            prune: self.prune,
            atomic: self.atomic,
            create: self.create,
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
    pub mirrors: Vec<Mirror>,
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
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let mut errors = Vec::new();

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
        if raw.mirror.is_empty() {
            errors.push(format!(
                "{}: no mirrors configured; add a [[mirror]] table with name, source and destinations",
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
            mirrors.push(Mirror {
                name,
                source,
                destinations,
                selection,
                policy: Policy {
                    divergence: options.divergence.unwrap_or_default(),
                    prune: options.prune.unwrap_or_default(),
                },
                atomic: options.atomic.unwrap_or(false),
                create: options.create.unwrap_or(false),
            });
        }
        if !errors.is_empty() {
            return Err(ConfigError(errors.join("\n")));
        }
        Ok(Config {
            cache_dir: raw.cache_dir.map(|d| base.join(d)),
            timeout,
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
        create: over.create.or(base.create),
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
    let cwd = std::env::current_dir().unwrap_or_else(|_| base.to_path_buf());
    let mut remote =
        Remote::parse(raw.url.get_ref(), &cwd).map_err(|e| format!("{at}: {what}: {e}"))?;
    let creds = &mut remote.credentials;
    if let Some(u) = &raw.username {
        creds.username = Some(u.clone());
    }
    match (&raw.password_env, &raw.password_file) {
        (Some(_), Some(_)) => return Err(format!("{at}: {what}: set password_env or password_file, not both")),
        (Some(var), None) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => creds.password = Some(Secret::new(v)),
            _ => {
                return Err(format!(
                    "{at}: {what}: password_env names the environment variable {var}, which is not set (or empty); export it before running ferry"
                ))
            }
        },
        (None, Some(file)) => {
            let file = base.join(file);
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("{at}: {what}: cannot read password_file {}: {e}", file.display()))?;
            let secret = text.trim_end_matches(['\n', '\r']).to_owned();
            if secret.is_empty() {
                return Err(format!("{at}: {what}: password_file {} is empty", file.display()));
            }
            creds.password = Some(Secret::new(secret));
        }
        (None, None) => {}
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
    Ok(remote)
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
        let m = &c.mirrors[0];
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
        assert_eq!(c.mirrors[0].policy.prune, Prune::Never);
    }
}
