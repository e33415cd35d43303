//! The environment as configuration: the ad hoc mirror of `ferry sync SOURCE DEST` and the
//! classic Lambda function's variables (`SRC_REPO`, `SRC_USER`, `SRC_PASS`, `DEST_REPO`,
//! `DEST_USER`, `DEST_PASS`), which the command line and the Lambda form share so that a
//! classic deployment switches without renaming anything.

use super::{existing_file, selection, ConfigError, ConfiguredMirror, RawOptions};
use crate::model::mirror::{Divergence, LfsMissing, LfsMode, Mirror, Prune};
use crate::model::provider::Provider;
use crate::model::remote::{Remote, Secret};
use std::path::Path;

pub fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The first set variable among `names`.
fn env_first(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| env_nonempty(n))
}

/// A mirror from the command line and the environment (ferry's names, then the classic
/// function's names, so its deployments switch without renaming anything).
pub fn adhoc_mirror(args: &[String], options: &RawOptions) -> Result<Mirror, ConfigError> {
    let cwd = std::env::current_dir()
        .map_err(|e| ConfigError(format!("cannot read the current directory: {e}")))?;
    let (source, dests): (String, Vec<String>) = match args.split_first() {
        Some((s, d)) if !d.is_empty() => (s.clone(), d.to_vec()),
        Some((s, _)) => match env_nonempty("DEST_REPO") {
            Some(d) => (s.clone(), vec![d]),
            None => return Err(ConfigError("missing DEST: usage: ferry sync [OPTIONS] SOURCE DEST... (or ferry sync --config ferry.toml)".into())),
        },
        None => match (env_nonempty("SRC_REPO"), env_nonempty("DEST_REPO")) {
            (Some(s), Some(d)) => (s, vec![d]),
            _ => {
                return Err(ConfigError(
                    "missing SOURCE and DEST: usage: ferry sync [OPTIONS] SOURCE DEST... (or set SRC_REPO and DEST_REPO, or use --config ferry.toml)".into(),
                ))
            }
        },
    };
    let ssh_key = env_nonempty("FERRY_SSH_KEY")
        .map(|p| {
            existing_file(Path::new(&p)).map_err(|e| ConfigError(format!("FERRY_SSH_KEY: {e}")))
        })
        .transpose()?;
    let known_hosts = env_nonempty("FERRY_KNOWN_HOSTS")
        .map(|p| {
            existing_file(Path::new(&p)).map_err(|e| ConfigError(format!("FERRY_KNOWN_HOSTS: {e}")))
        })
        .transpose()?;
    let ca_file = env_nonempty("FERRY_CA_FILE")
        .map(|p| {
            existing_file(Path::new(&p)).map_err(|e| ConfigError(format!("FERRY_CA_FILE: {e}")))
        })
        .transpose()?;
    let remote = |url: &str,
                  user_vars: &[&str],
                  pass_vars: &[&str],
                  lfs_url_var: &str,
                  what: &str|
     -> Result<Remote, ConfigError> {
        let mut r = Remote::parse(url, &cwd).map_err(|e| ConfigError(format!("{what}: {e}")))?;
        r.lfs.url = env_nonempty(lfs_url_var);
        if let Some(u) = env_first(user_vars) {
            r.credentials.username = Some(u);
        }
        if let Some(p) = env_first(pass_vars) {
            r.credentials.password = Some(Secret::new(p));
        }
        r.credentials.ssh_key = ssh_key.clone();
        r.credentials.known_hosts = known_hosts.clone();
        r.credentials.ca_file = ca_file.clone();
        Ok(r)
    };
    let source = remote(
        &source,
        &["FERRY_SOURCE_USERNAME", "SRC_USER"],
        &["FERRY_SOURCE_PASSWORD", "SRC_PASS"],
        "FERRY_SOURCE_LFS_URL",
        "SOURCE",
    )?;
    let destinations = dests
        .iter()
        .map(|d| {
            remote(
                d,
                &["FERRY_DEST_USERNAME", "DEST_USER"],
                &["FERRY_DEST_PASSWORD", "DEST_PASS"],
                "FERRY_DEST_LFS_URL",
                "DEST",
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let selection = selection(options).map_err(ConfigError)?;
    Ok(options.mirror(source.slug(), source, destinations, selection))
}

/// The mirror the classic function's variables describe.
pub fn classic_mirror() -> Result<ConfiguredMirror, ConfigError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let list = |name: &str| {
        var(name).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| toml::Spanned::new(0..0, p.to_owned()))
                .collect::<Vec<_>>()
        })
    };
    let divergence = match var("FERRY_DIVERGENCE").as_deref() {
        None => None,
        Some("keep") => Some(Divergence::Keep),
        Some("overwrite") => Some(Divergence::Overwrite),
        Some("abort") => Some(Divergence::Abort),
        Some(other) => {
            return Err(ConfigError(format!(
                "FERRY_DIVERGENCE is '{other}'; use keep, overwrite or abort"
            )))
        }
    };
    let prune = match var("FERRY_PRUNE").as_deref() {
        None => None,
        Some("synced") => Some(Prune::Synced),
        Some("all") => Some(Prune::All),
        Some("never") => Some(Prune::Never),
        Some(other) => {
            return Err(ConfigError(format!(
                "FERRY_PRUNE is '{other}'; use synced, all or never"
            )))
        }
    };
    let lfs = match var("FERRY_LFS") {
        None => None,
        Some(text) => Some(LfsMode::parse(&text).ok_or_else(|| {
            ConfigError(format!("FERRY_LFS is '{text}'; use auto, true or false"))
        })?),
    };
    let lfs_missing = match var("FERRY_LFS_MISSING").as_deref() {
        None => None,
        Some("hold") => Some(LfsMissing::Hold),
        Some("push") => Some(LfsMissing::Push),
        Some(other) => {
            return Err(ConfigError(format!(
                "FERRY_LFS_MISSING is '{other}'; use hold or push"
            )))
        }
    };
    let options = RawOptions {
        include: list("FERRY_INCLUDE"),
        exclude: list("FERRY_EXCLUDE").filter(|v| !v.is_empty()),
        divergence,
        prune,
        lfs,
        lfs_missing,
        ..RawOptions::default()
    };
    let webhook_provider = match var("FERRY_WEBHOOK_PROVIDER") {
        None => None,
        Some(name) => Some(Provider::parse(&name).ok_or_else(|| {
            ConfigError(format!(
                "FERRY_WEBHOOK_PROVIDER is '{name}'; use one of {}",
                Provider::ALL.map(Provider::as_str).join(", ")
            ))
        })?),
    };
    if var("SRC_REPO").is_none() || var("DEST_REPO").is_none() {
        return Err(ConfigError(
            "no mirror configured: set SRC_REPO and DEST_REPO (and SRC_USER/SRC_PASS, DEST_USER/DEST_PASS), or FERRY_CONFIG".into(),
        ));
    }
    let mut mirror = adhoc_mirror(&[], &options)?;
    if let Some(name) = var("FERRY_MIRROR") {
        mirror.name = name;
    }
    Ok(ConfiguredMirror {
        mirror,
        webhook_secret: var("FERRY_WEBHOOK_SECRET").map(Secret::new),
        webhook_provider,
        poll_interval: None,
        reconcile_interval: None,
    })
}
