//! Which repositories of a listing are members of a fleet, and what happens to each: the pure
//! core of fleets. Discovery (I/O) gathers the facts, this decides, the front ends act.
//!
//! A repository counts as deleted only when it is missing from a complete listing AND a direct
//! lookup says it does not exist; anything less keeps syncing the member as before.

use crate::model::fleet::{Listing, Lookup, OnSourceDeleted, RepoFilter, Repository, SkipReason};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// A repository the fleet took at an earlier discovery: what identity and path it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    pub id: String,
    pub path: String,
    /// The host's id of the destination repository ferry created (or adopted) for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_id: Option<String>,
    /// Where git reached it on the source host, so a member a later listing misses (a
    /// failed page, a host that is down when a process starts) goes on syncing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_url: Option<String>,
    /// Where git reaches its destination on a host, for the same reason when the
    /// destination host cannot be listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_url: Option<String>,
}

/// What discovery decides for one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// A member whose destination exists: sync it.
    Mirror,
    /// A member whose destination does not exist yet: the first sync creates it.
    Create,
    /// A member the host renamed (same id, new path): synced under its new name.
    Renamed { from: String },
    /// Listed, but not a member.
    Skip(SkipReason),
    /// A member the source no longer has (confirmed by a lookup): `then` happens to its
    /// destination, and it is no longer synced.
    SourceDeleted { then: OnSourceDeleted },
    /// A member missing from this listing whose deletion could not be confirmed: still
    /// synced, and `why` is reported.
    Unlisted { why: String },
}

impl Action {
    /// Whether the member is synced.
    pub fn syncs(&self) -> bool {
        matches!(
            self,
            Action::Mirror | Action::Create | Action::Renamed { .. } | Action::Unlisted { .. }
        )
    }

    /// One line for people: what ferry does with the repository.
    pub fn describe(&self) -> String {
        match self {
            Action::Mirror => "mirror".into(),
            Action::Create => "mirror (creates the destination)".into(),
            Action::Renamed { from } => format!("mirror (renamed on the source from '{from}')"),
            Action::Skip(reason) => format!("skip: {}", reason.describe()),
            Action::SourceDeleted { then } => {
                let then = match then {
                    OnSourceDeleted::Keep => "destination kept, no longer synced",
                    OnSourceDeleted::Archive => "destination archived",
                    OnSourceDeleted::Delete => "destination deleted",
                };
                format!("source deleted: {then}")
            }
            Action::Unlisted { why } => format!("mirror (missing from the listing: {why})"),
        }
    }
}

/// One repository and the decision for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberPlan {
    /// The mirror's name, `<fleet>/<path>`.
    pub name: String,
    pub repository: Repository,
    #[serde(flatten)]
    pub action: Action,
}

/// The facts discovery gathered.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub fleet: &'a str,
    pub listing: &'a Listing,
    pub filter: &'a RepoFilter,
    /// Members of earlier discoveries.
    pub known: &'a [Known],
    /// Lookups of the known repositories missing from a complete listing, by id.
    pub lookups: &'a HashMap<String, Lookup>,
    /// Ids of listed repositories whose destination does not exist yet.
    pub missing_destinations: &'a HashSet<String>,
    /// Ids of listed repositories whose destination exists but is not theirs.
    pub foreign_destinations: &'a HashSet<String>,
    pub on_source_deleted: OnSourceDeleted,
}

/// The known repositories missing from `listing`: the ones a direct lookup must confirm
/// before any of them counts as deleted. None when the listing is incomplete (nothing can
/// be concluded, so nothing is looked up).
pub fn to_look_up<'a>(listing: &Listing, known: &'a [Known]) -> Vec<&'a Known> {
    if listing.incomplete.is_some() {
        return Vec::new();
    }
    let listed: HashSet<&str> = listing.repositories.iter().map(|r| r.id.as_str()).collect();
    known
        .iter()
        .filter(|k| !listed.contains(k.id.as_str()))
        .collect()
}

/// Decides every listed and every known repository, sorted by name.
pub fn plan(facts: Facts<'_>) -> Vec<MemberPlan> {
    let known_by_id: HashMap<&str, &Known> =
        facts.known.iter().map(|k| (k.id.as_str(), k)).collect();
    let mut taken: HashMap<String, String> = HashMap::new();
    let mut plans = Vec::new();
    let mut listed = HashSet::new();
    let mut repos: Vec<&Repository> = facts.listing.repositories.iter().collect();
    repos.sort_by(|a, b| a.path.cmp(&b.path));
    for repo in repos {
        listed.insert(repo.id.as_str());
        let name = repo.member_name(facts.fleet);
        let action = match facts.filter.skip_reason(repo) {
            Some(reason) => Action::Skip(reason),
            None => match taken.get(&name) {
                Some(other) => Action::Skip(SkipReason::NameTaken(other.clone())),
                None => {
                    taken.insert(name.clone(), repo.path.clone());
                    match known_by_id.get(repo.id.as_str()) {
                        Some(k) if k.path != repo.path => Action::Renamed {
                            from: k.path.clone(),
                        },
                        _ if facts.foreign_destinations.contains(&repo.id) => {
                            Action::Skip(SkipReason::DestinationTaken)
                        }
                        _ if facts.missing_destinations.contains(&repo.id) => Action::Create,
                        _ => Action::Mirror,
                    }
                }
            },
        };
        plans.push(MemberPlan {
            name,
            repository: repo.clone(),
            action,
        });
    }
    for k in facts.known {
        if listed.contains(k.id.as_str()) {
            continue;
        }
        let action = match (&facts.listing.incomplete, facts.lookups.get(&k.id)) {
            (Some(why), _) => Action::Unlisted {
                why: format!("the listing is incomplete ({why})"),
            },
            (None, Some(Lookup::Gone)) => Action::SourceDeleted {
                then: facts.on_source_deleted,
            },
            (None, Some(Lookup::Exists)) => Action::Unlisted {
                why: "a direct lookup finds it".into(),
            },
            (None, Some(Lookup::Failed(e))) => Action::Unlisted {
                why: format!("its lookup failed: {e}"),
            },
            (None, None) => Action::Unlisted {
                why: "it was not looked up".into(),
            },
        };
        let repository = Repository {
            id: k.id.clone(),
            path: k.path.clone(),
            clone_url: k.clone_url.clone(),
            ..Repository::default()
        };
        plans.push(MemberPlan {
            name: repository.member_name(facts.fleet),
            repository,
            action,
        });
    }
    plans.sort_by(|a, b| a.name.cmp(&b.name));
    plans
}

/// The known repositories after acting on `plans`: every member still synced, and every
/// deleted source whose destination is kept or archived (so it goes on being reported);
/// a deleted source leaves only once its destination was deleted (`deleted` lists the ids).
/// `destinations` maps repository ids to their destination on a host: its id and URL.
pub fn next_known(
    plans: &[MemberPlan],
    deleted: &HashSet<String>,
    destinations: &HashMap<String, (String, String)>,
) -> Vec<Known> {
    plans
        .iter()
        .filter(|p| match &p.action {
            Action::SourceDeleted { .. } => !deleted.contains(&p.repository.id),
            other => other.syncs(),
        })
        .map(|p| {
            let destination = destinations.get(&p.repository.id);
            Known {
                id: p.repository.id.clone(),
                path: p.repository.path.clone(),
                destination_id: destination.map(|(id, _)| id.clone()),
                clone_url: p.repository.clone_url.clone(),
                destination_url: destination.map(|(_, url)| url.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(id: &str, path: &str) -> Repository {
        Repository {
            id: id.into(),
            path: path.into(),
            ..Repository::default()
        }
    }

    fn known(id: &str, path: &str) -> Known {
        Known {
            id: id.into(),
            path: path.into(),
            destination_id: None,
            clone_url: None,
            destination_url: None,
        }
    }

    struct Case {
        listing: Listing,
        known: Vec<Known>,
        lookups: HashMap<String, Lookup>,
        missing: HashSet<String>,
        foreign: HashSet<String>,
        filter: RepoFilter,
        on_deleted: OnSourceDeleted,
    }

    impl Case {
        fn new(repos: Vec<Repository>) -> Case {
            Case {
                listing: Listing {
                    repositories: repos,
                    incomplete: None,
                },
                known: Vec::new(),
                lookups: HashMap::new(),
                missing: HashSet::new(),
                foreign: HashSet::new(),
                filter: RepoFilter::new(&["*".into()], &["legacy-*".into()], false, false).unwrap(),
                on_deleted: OnSourceDeleted::Keep,
            }
        }

        fn plan(&self) -> Vec<(String, Action)> {
            plan(Facts {
                fleet: "acme",
                listing: &self.listing,
                filter: &self.filter,
                known: &self.known,
                lookups: &self.lookups,
                missing_destinations: &self.missing,
                foreign_destinations: &self.foreign,
                on_source_deleted: self.on_deleted,
            })
            .into_iter()
            .map(|p| (p.name, p.action))
            .collect()
        }
    }

    #[test]
    fn listed_repositories_are_mirrored_created_or_skipped_with_the_reason() {
        let mut archived = repo("3", "old.git");
        archived.archived = true;
        let mut case = Case::new(vec![
            repo("1", "app.git"),
            repo("2", "team/lib.git"),
            archived,
            repo("4", "legacy-x.git"),
        ]);
        case.missing.insert("2".into());
        assert_eq!(
            case.plan(),
            vec![
                ("acme/app".into(), Action::Mirror),
                (
                    "acme/legacy-x".into(),
                    Action::Skip(SkipReason::Excluded("legacy-*".into()))
                ),
                ("acme/old".into(), Action::Skip(SkipReason::Archived)),
                ("acme/team/lib".into(), Action::Create),
            ]
        );
    }

    #[test]
    fn two_repositories_with_one_name_keep_the_first_and_report_the_second() {
        let case = Case::new(vec![repo("1", "app.git"), repo("2", "app")]);
        assert_eq!(
            case.plan(),
            vec![
                ("acme/app".into(), Action::Mirror),
                (
                    "acme/app".into(),
                    Action::Skip(SkipReason::NameTaken("app".into()))
                ),
            ]
        );
    }

    #[test]
    fn a_destination_someone_else_owns_is_never_taken_over() {
        let mut case = Case::new(vec![repo("1", "app"), repo("2", "lib")]);
        case.foreign.insert("2".into());
        assert_eq!(
            case.plan(),
            vec![
                ("acme/app".into(), Action::Mirror),
                (
                    "acme/lib".into(),
                    Action::Skip(SkipReason::DestinationTaken)
                ),
            ]
        );
    }

    #[test]
    fn a_rename_keeps_the_member_by_its_id() {
        let mut case = Case::new(vec![repo("7", "new-name")]);
        case.known = vec![known("7", "old-name")];
        assert_eq!(
            case.plan(),
            vec![(
                "acme/new-name".into(),
                Action::Renamed {
                    from: "old-name".into()
                }
            )]
        );
    }

    #[test]
    fn a_deletion_needs_a_complete_listing_and_a_lookup_that_says_gone() {
        let mut case = Case::new(vec![repo("1", "app")]);
        case.known = vec![known("1", "app"), known("2", "gone"), known("3", "moved")];
        case.on_deleted = OnSourceDeleted::Delete;
        let look_up: Vec<&str> = to_look_up(&case.listing, &case.known)
            .iter()
            .map(|k| k.id.as_str())
            .collect();
        assert_eq!(look_up, ["2", "3"]);
        case.lookups.insert("2".into(), Lookup::Gone);
        case.lookups
            .insert("3".into(), Lookup::Failed("HTTP 500".into()));
        let plans = case.plan();
        assert_eq!(
            plans[1],
            (
                "acme/gone".into(),
                Action::SourceDeleted {
                    then: OnSourceDeleted::Delete
                }
            )
        );
        assert_eq!(
            plans[2],
            (
                "acme/moved".into(),
                Action::Unlisted {
                    why: "its lookup failed: HTTP 500".into()
                }
            )
        );
        assert!(plans[2].1.syncs());
    }

    #[test]
    fn an_incomplete_listing_deletes_nothing_and_looks_nothing_up() {
        let mut case = Case::new(vec![]);
        case.listing.incomplete = Some("page 3 failed".into());
        case.known = vec![known("2", "gone")];
        case.lookups.insert("2".into(), Lookup::Gone);
        assert!(to_look_up(&case.listing, &case.known).is_empty());
        let plans = case.plan();
        assert_eq!(
            plans,
            vec![(
                "acme/gone".into(),
                Action::Unlisted {
                    why: "the listing is incomplete (page 3 failed)".into()
                }
            )]
        );
    }

    #[test]
    fn the_next_inventory_drops_a_deleted_source_only_once_its_destination_is_gone() {
        let mut case = Case::new(vec![repo("1", "app")]);
        case.known = vec![known("1", "app"), known("2", "gone")];
        case.lookups.insert("2".into(), Lookup::Gone);
        case.on_deleted = OnSourceDeleted::Delete;
        let plans = plan(Facts {
            fleet: "acme",
            listing: &case.listing,
            filter: &case.filter,
            known: &case.known,
            lookups: &case.lookups,
            missing_destinations: &case.missing,
            foreign_destinations: &case.foreign,
            on_source_deleted: case.on_deleted,
        });
        let none = HashMap::new();
        assert_eq!(next_known(&plans, &HashSet::new(), &none), case.known);
        let deleted = HashSet::from(["2".to_string()]);
        let ids = HashMap::from([(
            "1".to_string(),
            ("900".to_string(), "https://dest/app.git".to_string()),
        )]);
        let mut app = known("1", "app");
        app.destination_id = Some("900".into());
        app.destination_url = Some("https://dest/app.git".into());
        assert_eq!(next_known(&plans, &deleted, &ids), vec![app]);
    }

    #[test]
    fn a_member_an_incomplete_listing_misses_keeps_where_git_reaches_it() {
        let mut case = Case::new(Vec::new());
        case.listing.incomplete = Some("the host answered 503".into());
        let mut app = known("1", "app");
        app.clone_url = Some("https://src/app.git".into());
        case.known = vec![app.clone()];
        let plans = plan(Facts {
            fleet: "acme",
            listing: &case.listing,
            filter: &case.filter,
            known: &case.known,
            lookups: &case.lookups,
            missing_destinations: &case.missing,
            foreign_destinations: &case.foreign,
            on_source_deleted: case.on_deleted,
        });
        assert!(plans[0].action.syncs());
        assert_eq!(
            plans[0].repository.clone_url.as_deref(),
            Some("https://src/app.git")
        );
        assert_eq!(
            next_known(&plans, &HashSet::new(), &HashMap::new()),
            vec![app]
        );
    }
}
