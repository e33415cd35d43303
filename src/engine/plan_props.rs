//! Property tests of the planner's safety invariants, over random commit histories, ref
//! tables, records and policies. The table tests in `plan.rs` say what each case does; these
//! say what no case may ever do.

use super::plan::{plan, Action, Plan, PlanInput};
use crate::model::mirror::{Divergence, Policy, Prune};
use crate::model::refs::{Oid, RefMap};
use proptest::prelude::*;

/// A random commit forest: commit `i`'s parent is `parents[i]` (`None` for a root), always an
/// earlier commit, so ancestry is a walk towards the roots.
#[derive(Debug, Clone)]
struct History {
    parents: Vec<Option<usize>>,
}

impl History {
    fn is_ancestor(&self, a: &Oid, d: &Oid) -> bool {
        let (Some(a), Some(mut d)) = (index(a), index(d)) else {
            return false;
        };
        loop {
            if a == d {
                return true;
            }
            match self.parents.get(d).copied().flatten() {
                Some(p) => d = p,
                None => return false,
            }
        }
    }
}

fn oid(i: usize) -> Oid {
    Oid::parse(&format!("{i:040x}")).expect("40 hex digits")
}

fn index(o: &Oid) -> Option<usize> {
    usize::from_str_radix(o.as_str(), 16).ok()
}

const COMMITS: usize = 12;
const NAMES: [&str; 5] = [
    "refs/heads/main",
    "refs/heads/dev",
    "refs/heads/topic",
    "refs/tags/v1",
    "refs/tags/v2",
];

fn history() -> impl Strategy<Value = History> {
    proptest::collection::vec(any::<prop::sample::Index>(), COMMITS).prop_map(|picks| History {
        parents: picks
            .iter()
            .enumerate()
            // Every third commit starts a new root, the others hang off an earlier commit.
            .map(|(i, pick)| (i % 3 != 0).then(|| pick.index(i)))
            .collect(),
    })
}

/// A ref table: each name absent or at one of the commits.
fn refs() -> impl Strategy<Value = RefMap> {
    proptest::collection::vec(proptest::option::of(0..COMMITS), NAMES.len()).prop_map(|v| {
        NAMES
            .iter()
            .zip(v)
            .filter_map(|(n, c)| Some((n.to_string(), oid(c?))))
            .collect()
    })
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![
            Just(Divergence::Keep),
            Just(Divergence::Overwrite),
            Just(Divergence::Abort)
        ],
        prop_oneof![Just(Prune::Synced), Just(Prune::All), Just(Prune::Never)],
    )
        .prop_map(|(divergence, prune)| Policy { divergence, prune })
}

fn plan_for(h: &History, source: &RefMap, dest: &RefMap, record: &RefMap, p: Policy) -> Plan {
    plan(
        PlanInput {
            source,
            dest,
            record,
        },
        p,
        |a, d| h.is_ancestor(a, d),
    )
}

/// What the destination holds after every planned push lands.
fn apply(dest: &RefMap, plan: &Plan) -> RefMap {
    let mut out = dest.clone();
    for r in plan.pushes() {
        match &r.new {
            Some(new) => out.insert(r.name.clone(), new.clone()),
            None => out.remove(&r.name),
        };
    }
    out
}

/// The record the engine keeps after a run: refs where the destination now matches the
/// source; the old record for refs that still exist on either side but do not match.
fn record_after(record: &RefMap, plan: &Plan, source: &RefMap, dest_now: &RefMap) -> RefMap {
    let mut next = RefMap::new();
    for p in &plan.refs {
        match (source.get(&p.name), dest_now.get(&p.name)) {
            (Some(s), Some(d)) if s == d => {
                next.insert(p.name.clone(), s.clone());
            }
            _ => {
                if let Some(old) = record.get(&p.name) {
                    if dest_now.contains_key(&p.name) || source.contains_key(&p.name) {
                        next.insert(p.name.clone(), old.clone());
                    }
                }
            }
        }
    }
    next
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Under `keep`, a push that can lose commits (a non-fast-forward update or a delete) only
    /// ever touches a destination ref that holds exactly what ferry recorded pushing.
    #[test]
    fn keep_never_loses_commits_ferry_did_not_push(
        h in history(), source in refs(), dest in refs(), record in refs(), prune in prop_oneof![Just(Prune::Synced), Just(Prune::All), Just(Prune::Never)],
    ) {
        let p = plan_for(&h, &source, &dest, &record, Policy { divergence: Divergence::Keep, prune });
        for r in p.pushes() {
            let Some(current) = dest.get(&r.name) else { continue };
            let loses = match &r.new {
                None => true,
                Some(new) => !h.is_ancestor(current, new),
            };
            if loses && prune != Prune::All {
                prop_assert_eq!(record.get(&r.name), Some(current), "{:?} moves {} away from a value ferry never recorded", r.action, r.name);
            }
            if loses && prune == Prune::All && r.new.is_some() {
                prop_assert_eq!(record.get(&r.name), Some(current), "{:?} rewrites {} which ferry never recorded", r.action, r.name);
            }
        }
    }

    /// `prune = never` never deletes.
    #[test]
    fn prune_never_never_deletes(
        h in history(), source in refs(), dest in refs(), record in refs(), divergence in prop_oneof![Just(Divergence::Keep), Just(Divergence::Overwrite), Just(Divergence::Abort)],
    ) {
        let p = plan_for(&h, &source, &dest, &record, Policy { divergence, prune: Prune::Never });
        prop_assert!(p.refs.iter().all(|r| r.action != Action::Delete));
    }

    /// `abort` pushes nothing at all to a destination where anything diverged.
    #[test]
    fn abort_pushes_nothing_to_a_diverged_destination(
        h in history(), source in refs(), dest in refs(), record in refs(), prune in prop_oneof![Just(Prune::Synced), Just(Prune::All), Just(Prune::Never)],
    ) {
        let p = plan_for(&h, &source, &dest, &record, Policy { divergence: Divergence::Abort, prune });
        if p.diverged().next().is_some() {
            prop_assert!(p.aborted);
        }
    }

    /// Planning again after the plan was applied (and the record updated as the engine does)
    /// pushes nothing: a sync converges in one run.
    #[test]
    fn planning_after_applying_a_plan_is_a_no_op(
        h in history(), source in refs(), dest in refs(), record in refs(), policy in policy(),
    ) {
        let first = plan_for(&h, &source, &dest, &record, policy);
        let (dest_now, record_now) = if first.aborted {
            (dest.clone(), record.clone())
        } else {
            let now = apply(&dest, &first);
            let rec = record_after(&record, &first, &source, &now);
            (now, rec)
        };
        let second = plan_for(&h, &source, &dest_now, &record_now, policy);
        let again: Vec<(&str, Action)> = if second.aborted {
            Vec::new()
        } else {
            second.pushes().map(|r| (r.name.as_str(), r.action)).collect()
        };
        prop_assert!(again.is_empty(), "second plan still pushes {:?}", again);
    }
}
