//! Which member of a fleet an event is about (pure): an organisation's or group's webhook, or
//! a CodeCommit event, names a repository of the fleet's source; the service syncs that
//! member. By the host's repository id when the event has one (it survives renames), else by
//! the repository's path: the member whose path is the event's path, or its last segments
//! (hosts send the path with the owner, `acme/platform/app`; members' paths are relative to
//! the fleet's owner, `app`), the longest such path winning.

use crate::fleet::plan::MemberPlan;

/// The member an event is about.
#[derive(Debug, Clone, Copy)]
pub struct Routed<'a> {
    pub plan: &'a MemberPlan,
    /// Found by its id, but the event names another path: the repository was renamed (or
    /// moved) since the last discovery.
    pub moved: bool,
}

/// The syncing member of `plans` that an event naming the repository `id` / `path` is about.
pub fn member<'a>(
    plans: &'a [MemberPlan],
    id: Option<&str>,
    path: Option<&str>,
) -> Option<Routed<'a>> {
    let members = || plans.iter().filter(|p| p.action.syncs());
    if let Some(id) = id.filter(|i| !i.is_empty()) {
        if let Some(p) = members().find(|p| p.repository.id == id) {
            let moved = path.is_some_and(|path| {
                !names_the_same(&normalize(path), &normalize(&p.repository.path))
            });
            return Some(Routed { plan: p, moved });
        }
    }
    let path = normalize(path?);
    if path.is_empty() {
        return None;
    }
    let mut best: Option<(&MemberPlan, usize)> = None;
    let mut tied = false;
    for p in members() {
        let mine = normalize(&p.repository.path);
        if mine.is_empty() || !names_the_same(&path, &mine) {
            continue;
        }
        match best {
            Some((_, len)) if len > mine.len() => {}
            Some((_, len)) if len == mine.len() => tied = true,
            _ => {
                best = Some((p, mine.len()));
                tied = false;
            }
        }
    }
    // Two members equally close (paths differing only in case): neither is taken.
    best.filter(|_| !tied)
        .map(|(plan, _)| Routed { plan, moved: false })
}

/// A path without surrounding slashes or a `.git` suffix, lowercase (hosts' paths are not
/// case-sensitive).
fn normalize(path: &str) -> String {
    let path = path.trim_matches('/');
    path.strip_suffix(".git")
        .unwrap_or(path)
        .to_ascii_lowercase()
}

/// Whether the event's `path` is the member's, or ends with it at a `/`.
fn names_the_same(path: &str, mine: &str) -> bool {
    path == mine
        || path
            .strip_suffix(mine)
            .is_some_and(|owner| owner.ends_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::plan::Action;
    use crate::model::fleet::{OnSourceDeleted, Repository, SkipReason};

    fn plan(id: &str, path: &str, action: Action) -> MemberPlan {
        MemberPlan {
            name: format!("acme/{path}"),
            repository: Repository {
                id: id.into(),
                path: path.into(),
                ..Repository::default()
            },
            action,
        }
    }

    fn plans() -> Vec<MemberPlan> {
        vec![
            plan("1", "app", Action::Mirror),
            plan("2", "team/app", Action::Create),
            plan("3", "web", Action::Renamed { from: "www".into() }),
            plan(
                "4",
                "old",
                Action::SourceDeleted {
                    then: OnSourceDeleted::Keep,
                },
            ),
            plan("5", "fork", Action::Skip(SkipReason::Fork)),
            plan("6", "tools.git", Action::Mirror),
        ]
    }

    fn routed(id: Option<&str>, path: Option<&str>) -> Option<String> {
        member(&plans(), id, path).map(|r| r.plan.repository.id.clone())
    }

    #[test]
    fn a_member_found_by_id_under_another_path_has_moved() {
        let moved = |path| member(&plans(), Some("3"), path).map(|r| r.moved);
        assert_eq!(moved(Some("acme/www")), Some(true));
        assert_eq!(moved(Some("acme/web")), Some(false));
        assert_eq!(moved(None), Some(false));
        assert_eq!(
            member(&plans(), None, Some("acme/web")).map(|r| r.moved),
            Some(false)
        );
    }

    #[test]
    fn the_repository_id_wins_over_the_path() {
        assert_eq!(routed(Some("3"), Some("acme/www")), Some("3".into()));
        assert_eq!(routed(Some("2"), None), Some("2".into()));
    }

    #[test]
    fn an_unknown_id_falls_back_to_the_path_with_its_owner() {
        assert_eq!(routed(Some("99"), Some("acme/app")), Some("1".into()));
        assert_eq!(routed(None, Some("acme/team/app")), Some("2".into()));
        assert_eq!(routed(None, Some("group/sub/team/app")), Some("2".into()));
        assert_eq!(routed(None, Some("app")), Some("1".into()));
        assert_eq!(routed(None, Some("Acme/Web.git")), Some("3".into()));
        assert_eq!(routed(None, Some("tools")), Some("6".into()));
    }

    #[test]
    fn no_member_for_a_path_that_only_shares_a_suffix_or_is_not_synced() {
        assert_eq!(routed(None, Some("acme/myapp")), None);
        assert_eq!(routed(None, Some("acme/old")), None);
        assert_eq!(routed(None, Some("acme/fork")), None);
        assert_eq!(routed(Some("4"), None), None);
        assert_eq!(routed(None, Some("")), None);
        assert_eq!(routed(None, None), None);
    }

    #[test]
    fn members_equally_close_are_not_guessed_between() {
        let plans = vec![
            plan("1", "App", Action::Mirror),
            plan("2", "app", Action::Mirror),
        ];
        assert!(member(&plans, None, Some("acme/app")).is_none());
    }
}
