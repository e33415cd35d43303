//! A mirror and how it runs: what the configuration produces and every other room consumes.

use crate::model::refs::RefSelection;
use crate::model::remote::Remote;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;

/// Everything one mirror needs, validated.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub name: String,
    pub source: Remote,
    pub destinations: Vec<Remote>,
    pub selection: RefSelection,
    pub policy: Policy,
    pub atomic: bool,
    /// Create missing local destination repositories (bare).
    pub create: bool,
    /// List each destination again after pushing to it, and take the outcome from that
    /// listing instead of from the server's per-ref push report (one round trip more).
    pub verify: bool,
    /// Whether and how the mirror carries Git LFS objects.
    pub lfs: LfsPolicy,
}

/// Whether a mirror carries the Git LFS objects its refs point to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LfsMode {
    /// On when the refs a run pushes point to LFS objects (found by scanning what changed).
    #[default]
    Auto,
    /// Always: a destination without an LFS endpoint is an error as soon as a pointer is found.
    On,
    /// Never: refs only.
    Off,
}

impl LfsMode {
    /// `auto`, `true`/`on` or `false`/`off` (the environment's and the command line's words).
    pub fn parse(text: &str) -> Option<LfsMode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(LfsMode::Auto),
            "true" | "on" | "yes" | "1" => Some(LfsMode::On),
            "false" | "off" | "no" | "0" => Some(LfsMode::Off),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for LfsMode {
    /// `lfs = "auto"`, `lfs = true` or `lfs = false` in the config file.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Word(String),
        }
        match Raw::deserialize(deserializer) {
            Ok(Raw::Flag(true)) => Ok(LfsMode::On),
            Ok(Raw::Flag(false)) => Ok(LfsMode::Off),
            Ok(Raw::Word(word)) if word == "auto" => Ok(LfsMode::Auto),
            _ => Err(serde::de::Error::custom(
                "lfs must be \"auto\", true or false",
            )),
        }
    }
}

/// What happens to a ref that needs an LFS object the source's LFS server does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LfsMissing {
    /// Do not push the ref (report it); the rest of the mirror still syncs.
    #[default]
    Hold,
    /// Push it all the same: the destination gets a dangling pointer (reported).
    Push,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LfsPolicy {
    pub mode: LfsMode,
    pub missing: LfsMissing,
}

/// How a run behaves, shared by all mirrors of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cache_dir: PathBuf,
    /// Deadline for each git operation (and for waiting on the cache lock).
    pub timeout: Duration,
    /// Forward git's progress meters to stderr.
    pub progress: bool,
}

impl Settings {
    /// Deadline for each git operation unless the user says otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
}

/// What to do when a destination ref holds something ferry did not put there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Divergence {
    /// Leave the ref alone and report it as diverged (exit 1). Nothing is ever lost.
    #[default]
    Keep,
    /// Replace it with the source's value (the destination's extra commits are dropped).
    Overwrite,
    /// Push nothing at all to that destination.
    Abort,
}

/// Which destination refs that the source no longer has are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prune {
    /// Only refs the source deleted and the destination still holds as ferry left them.
    #[default]
    Synced,
    /// Every destination ref in the selected namespaces that the source lacks: an exact mirror.
    All,
    /// Never delete.
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    pub divergence: Divergence,
    pub prune: Prune,
}

/// Why a sync ran. Stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A push webhook (GitHub, GitLab, Gitea, Forgejo, Bitbucket, generic).
    Webhook,
    /// An AWS CodeCommit reference event delivered by EventBridge.
    Codecommit,
    /// Polling saw the source change.
    Poll,
    /// The periodic full comparison of every destination with the source.
    Reconcile,
    /// `POST /api/mirrors/{mirror}/sync`.
    Manual,
    /// The mirror's configuration changed (or is new) since the service last ran.
    Config,
    /// A retry after a transient failure.
    Retry,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Webhook => "webhook",
            Trigger::Codecommit => "codecommit",
            Trigger::Poll => "poll",
            Trigger::Reconcile => "reconcile",
            Trigger::Manual => "manual",
            Trigger::Config => "config",
            Trigger::Retry => "retry",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        [
            Trigger::Webhook,
            Trigger::Codecommit,
            Trigger::Poll,
            Trigger::Reconcile,
            Trigger::Manual,
            Trigger::Config,
            Trigger::Retry,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// How the name of a local repository ferry is creating ends, beside its place until it is
/// whole (`.<name>.ferry-new`): no listing of a directory's repositories takes one.
pub const CREATING_SUFFIX: &str = ".ferry-new";

/// A stable 16-hex-digit id for a URL (cache and record file names) or any other bytes.
pub fn short_hash(data: impl AsRef<[u8]>) -> String {
    short_hash_of_parts(std::iter::once(data))
}

/// [`short_hash`] of the concatenation of `parts`, without making it.
pub fn short_hash_of_parts(parts: impl IntoIterator<Item = impl AsRef<[u8]>>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_ref());
    }
    let digest = hasher.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
