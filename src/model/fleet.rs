//! Fleets: every repository of a source host (or directory) mirrored to a destination host,
//! found by discovery instead of written out one by one. This is the vocabulary: what
//! discovery finds ([`Repository`], [`Listing`]), which of it a fleet takes ([`RepoFilter`]) and
//! what happens when a repository leaves the source ([`OnSourceDeleted`]).

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// One repository as a source host lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Repository {
    /// The host's identity for it, which survives a rename (a directory has none: its
    /// relative path stands in).
    pub id: String,
    /// Its path on the host relative to the fleet's owner or root, `/`-separated, as the
    /// host spells it (a directory keeps a `.git` suffix). Destinations use the same path.
    pub path: String,
    pub archived: bool,
    pub fork: bool,
    /// Not visible to everyone (a destination is never made more public than its source).
    pub private: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    /// Where git fetches it from (hosts; a directory's repository is its path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clone_url: Option<String>,
}

impl Repository {
    /// The path without a trailing `.git`: the part of the member's name after the fleet's.
    pub fn short_path(&self) -> &str {
        self.path.strip_suffix(".git").unwrap_or(&self.path)
    }

    /// The name of the mirror this repository is in `fleet`: `<fleet>/<short path>`.
    pub fn member_name(&self, fleet: &str) -> String {
        format!("{fleet}/{}", self.short_path())
    }
}

/// What one discovery pass found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub repositories: Vec<Repository>,
    /// Why the listing may be missing repositories (a directory that could not be read, a
    /// page that failed): `None` only when it is known to be complete. A repository missing
    /// from an incomplete listing is never taken for deleted.
    pub incomplete: Option<String>,
}

/// What a direct lookup says of a known repository missing from a complete listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The host says it does not exist.
    Gone,
    /// It exists after all (the listing skipped it, or it moved out of reach of the listing).
    Exists,
    /// The lookup failed; nothing can be concluded.
    Failed(String),
}

/// What happens to a member's destination when its source repository is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSourceDeleted {
    /// Leave the destination as it is and stop syncing it (nothing is ever lost).
    #[default]
    Keep,
    /// Archive the destination repository (hosts that have archiving).
    Archive,
    /// Delete the destination repository. Only when asked for explicitly.
    Delete,
}

/// Who may see a repository a fleet creates on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    #[default]
    Private,
    /// Everyone in the enterprise (GitHub); treated as private where a host has no such level.
    Internal,
    Public,
}

impl Visibility {
    /// The visibility a destination of `source` gets: the configured one, but never more
    /// public than the source.
    pub fn for_source(self, source_private: bool) -> Visibility {
        if source_private {
            self.min(Visibility::Private)
        } else {
            self
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Internal => "internal",
            Visibility::Public => "public",
        }
    }
}

/// Which repositories of a listing a fleet takes.
#[derive(Debug, Clone)]
pub struct RepoFilter {
    include: Vec<String>,
    include_set: GlobSet,
    exclude: Vec<String>,
    exclude_set: GlobSet,
    pub archived: bool,
    pub forks: bool,
}

/// Why a listed repository is not a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum SkipReason {
    Archived,
    Fork,
    /// It matches this `exclude` glob.
    Excluded(String),
    /// It matches no `include` glob.
    NotIncluded,
    /// Its path cannot name a mirror (the message says why).
    BadPath(String),
    /// Another repository of the listing already has its member name (that one's path).
    NameTaken(String),
    /// Its destination repository exists and ferry did not create it for this repository.
    DestinationTaken,
}

impl SkipReason {
    pub fn describe(&self) -> String {
        match self {
            SkipReason::Archived => "archived (set archived = true to mirror it)".into(),
            SkipReason::Fork => "a fork (set forks = true to mirror it)".into(),
            SkipReason::Excluded(glob) => format!("excluded by '{glob}'"),
            SkipReason::NotIncluded => "matches no include glob".into(),
            SkipReason::BadPath(why) => why.clone(),
            SkipReason::DestinationTaken => "its destination repository exists and ferry did not \
                create it for this repository; set adopt_existing = true on the destination to \
                mirror into it, or rename one of them"
                .into(),
            SkipReason::NameTaken(other) => {
                format!("its mirror name is taken by the repository '{other}'; exclude one of them")
            }
        }
    }
}

impl RepoFilter {
    /// Globs match the whole repository path; `*` matches across `/` too, so `*` takes every
    /// repository, subgroups included, and `team-*/service-*` what it says.
    pub fn new(
        include: &[String],
        exclude: &[String],
        archived: bool,
        forks: bool,
    ) -> Result<RepoFilter, String> {
        Ok(RepoFilter {
            include_set: glob_set(include)?,
            include: include.to_vec(),
            exclude_set: glob_set(exclude)?,
            exclude: exclude.to_vec(),
            archived,
            forks,
        })
    }

    /// `None` when the fleet takes `repo`; otherwise why not.
    pub fn skip_reason(&self, repo: &Repository) -> Option<SkipReason> {
        if let Err(why) = member_path_ok(repo.short_path()) {
            return Some(SkipReason::BadPath(why));
        }
        let paths = [repo.path.as_str(), repo.short_path()];
        if let Some(i) = paths
            .iter()
            .find_map(|p| self.exclude_set.matches(p).first().copied())
        {
            return Some(SkipReason::Excluded(self.exclude[i].clone()));
        }
        if !paths.iter().any(|p| self.include_set.is_match(p)) {
            return Some(SkipReason::NotIncluded);
        }
        if repo.archived && !self.archived {
            return Some(SkipReason::Archived);
        }
        if repo.fork && !self.forks {
            return Some(SkipReason::Fork);
        }
        None
    }

    pub fn include(&self) -> &[String] {
        &self.include
    }
}

fn glob_set(globs: &[String]) -> Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for g in globs {
        builder.add(Glob::new(g).map_err(|e| format!("'{g}' is not a valid glob: {e}"))?);
    }
    builder
        .build()
        .map_err(|e| format!("cannot compile the globs: {e}"))
}

/// Whether a repository path can be part of a mirror's name (`fleet/path`): the names appear
/// in URLs, file names and the page, so they keep to a safe alphabet.
pub fn member_path_ok(path: &str) -> Result<(), String> {
    let segments_ok = path
        .split('/')
        .all(|s| !s.is_empty() && s != "." && s != "..");
    let chars_ok = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if path.is_empty() || !segments_ok || !chars_ok {
        return Err(format!(
            "the path '{path}' cannot name a mirror: use letters, digits, '-', '_', '.' and '/' \
             (rename the repository or exclude it)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> Repository {
        Repository {
            id: path.into(),
            path: path.into(),
            ..Repository::default()
        }
    }

    fn filter(include: &[&str], exclude: &[&str]) -> RepoFilter {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        RepoFilter::new(&s(include), &s(exclude), false, false).unwrap()
    }

    #[test]
    fn a_star_takes_every_path_subgroups_included() {
        let f = filter(&["*"], &[]);
        assert_eq!(f.skip_reason(&repo("app.git")), None);
        assert_eq!(f.skip_reason(&repo("platform/sub/app")), None);
    }

    #[test]
    fn exclude_wins_over_include_and_names_its_glob() {
        let f = filter(&["team-*/service-*"], &["legacy-*", "*/service-old"]);
        assert_eq!(f.skip_reason(&repo("team-a/service-b.git")), None);
        assert_eq!(
            f.skip_reason(&repo("team-a/service-old.git")),
            Some(SkipReason::Excluded("*/service-old".into()))
        );
        assert_eq!(
            f.skip_reason(&repo("legacy-x")),
            Some(SkipReason::Excluded("legacy-*".into()))
        );
        assert_eq!(
            f.skip_reason(&repo("other/app")),
            Some(SkipReason::NotIncluded)
        );
    }

    #[test]
    fn archived_and_forks_are_skipped_unless_asked_for() {
        let f = filter(&["*"], &[]);
        let mut r = repo("a");
        r.archived = true;
        assert_eq!(f.skip_reason(&r), Some(SkipReason::Archived));
        r.archived = false;
        r.fork = true;
        assert_eq!(f.skip_reason(&r), Some(SkipReason::Fork));
        let all = RepoFilter::new(&["*".into()], &[], true, true).unwrap();
        assert_eq!(all.skip_reason(&r), None);
    }

    #[test]
    fn a_path_that_cannot_name_a_mirror_is_skipped_with_the_reason() {
        let f = filter(&["*"], &[]);
        assert!(matches!(
            f.skip_reason(&repo("has space/app")),
            Some(SkipReason::BadPath(_))
        ));
        assert!(matches!(
            f.skip_reason(&repo("a/../b")),
            Some(SkipReason::BadPath(_))
        ));
    }

    #[test]
    fn a_destination_is_never_more_public_than_its_source() {
        assert_eq!(Visibility::Public.for_source(true), Visibility::Private);
        assert_eq!(Visibility::Internal.for_source(true), Visibility::Private);
        assert_eq!(Visibility::Public.for_source(false), Visibility::Public);
        assert_eq!(Visibility::Private.for_source(false), Visibility::Private);
    }

    #[test]
    fn a_bad_glob_is_an_error_naming_it() {
        let err = RepoFilter::new(&["a[".into()], &[], false, false).unwrap_err();
        assert!(err.contains("'a['"), "{err}");
    }
}
