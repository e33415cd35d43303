//! The planner: which ref goes where, and why. Pure: no I/O, no clock, no git. It sees the
//! source's refs, one destination's refs, what ferry last recorded for that destination, the
//! policies, and an ancestry oracle (answers computed beforehand by the git adapter), and
//! decides one action per ref. Everything risky ferry does is decided here, so this is the
//! code the table tests exercise hardest.

use crate::model::mirror::{Divergence, Policy, Prune};
use crate::model::refs::{Oid, RefMap, SortedLookup};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    /// Fast-forward.
    Update,
    /// Non-fast-forward: following a source force-push, or overwriting under `overwrite`.
    Force,
    Delete,
    Unchanged,
    /// Deliberately not touched; the note says why.
    Skip,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Force => "force",
            Action::Delete => "delete",
            Action::Unchanged => "unchanged",
            Action::Skip => "skip",
        }
    }

    /// Whether carrying out this action needs a push.
    pub fn pushes(self) -> bool {
        matches!(
            self,
            Action::Create | Action::Update | Action::Force | Action::Delete
        )
    }
}

/// Why a ref got its action, when that is worth telling the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// The source rewrote the ref and the destination still holds what ferry pushed.
    FollowsSourceForcePush,
    /// The destination changed behind ferry's back; kept (or the destination aborted).
    Diverged,
    /// The source deleted the ref but the destination changed it behind ferry's back.
    DivergedSourceDeleted,
    /// Forced over out-of-band destination commits because divergence = overwrite.
    OverwritesDivergence,
    /// Only on the destination and ferry never pushed it: kept under prune = synced.
    DestinationOnly,
    /// The source deleted the ref; kept because prune = never.
    SourceDeletedKept,
    /// The destination lost a ref ferry had pushed; recreated.
    RecreatesDeleted,
}

impl Note {
    pub fn describe(self) -> &'static str {
        match self {
            Note::FollowsSourceForcePush => "the source was force-pushed; following it",
            Note::Diverged => {
                "the destination holds commits ferry never pushed (changed out of band)"
            }
            Note::DivergedSourceDeleted => {
                "the source deleted this ref, but the destination changed it out of band"
            }
            Note::OverwritesDivergence => {
                "overwriting commits ferry never pushed (divergence = overwrite)"
            }
            Note::DestinationOnly => {
                "only on the destination and never pushed by ferry; kept (prune = synced)"
            }
            Note::SourceDeletedKept => "deleted on the source; kept (prune = never)",
            Note::RecreatesDeleted => {
                "the destination lost this ref after ferry pushed it; recreating"
            }
        }
    }

    pub fn is_divergence(self) -> bool {
        matches!(self, Note::Diverged | Note::DivergedSourceDeleted)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefPlan {
    pub name: String,
    pub action: Action,
    /// The destination's current value (the lease: the push only applies if it still holds it).
    pub old: Option<Oid>,
    /// The value the destination should hold afterwards (`None` for a delete).
    pub new: Option<Oid>,
    pub note: Option<Note>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub refs: Vec<RefPlan>,
    /// Set when divergence = abort and some ref diverged: nothing is pushed to this destination.
    pub aborted: bool,
}

impl Plan {
    pub fn pushes(&self) -> impl Iterator<Item = &RefPlan> {
        self.refs.iter().filter(|r| r.action.pushes())
    }

    pub fn diverged(&self) -> impl Iterator<Item = &RefPlan> {
        self.refs
            .iter()
            .filter(|r| r.note.is_some_and(Note::is_divergence))
    }
}

/// The inputs for one destination. `source` and `dest` are already restricted to the mirror's
/// ref selection; `record` is what the destination held after ferry's last sync.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub source: &'a RefMap,
    pub dest: &'a RefMap,
    pub record: &'a RefMap,
}

/// The (ancestor, descendant) pairs the planner will ask about, so the adapter can answer them
/// all (in one batch, against the cache) before planning. The destination's value is the
/// candidate ancestor: if it is, updating it loses nothing.
pub fn ancestry_questions(input: PlanInput<'_>) -> Vec<(Oid, Oid)> {
    let mut dest = SortedLookup::new(input.dest);
    input
        .source
        .iter()
        .filter_map(|(name, src)| {
            let dst = dest.get(name)?;
            (dst != src).then(|| (dst.clone(), src.clone()))
        })
        .collect()
}

/// Plans every selected ref of one destination. `is_ancestor(a, b)` must say whether commit
/// `a` is an ancestor of (or equal to) `b`; unknown objects answer false.
pub fn plan(
    input: PlanInput<'_>,
    policy: Policy,
    is_ancestor: impl Fn(&Oid, &Oid) -> bool,
) -> Plan {
    // Both maps are sorted: merge their keys rather than sort the union.
    let mut names: Vec<&String> = Vec::with_capacity(input.source.len().max(input.dest.len()));
    let (mut src_names, mut dst_names) =
        (input.source.keys().peekable(), input.dest.keys().peekable());
    loop {
        let next = match (src_names.peek(), dst_names.peek()) {
            (Some(s), Some(d)) if s < d => src_names.next(),
            (Some(s), Some(d)) if s > d => dst_names.next(),
            (Some(_), Some(_)) => {
                dst_names.next();
                src_names.next()
            }
            (Some(_), None) => src_names.next(),
            (None, Some(_)) => dst_names.next(),
            (None, None) => None,
        };
        match next {
            Some(name) => names.push(name),
            None => break,
        }
    }

    let mut refs = Vec::with_capacity(names.len());
    // The names come in order: each table is walked once, not searched per name.
    let (mut source, mut dest, mut record) = (
        SortedLookup::new(input.source),
        SortedLookup::new(input.dest),
        SortedLookup::new(input.record),
    );
    for name in names {
        let src = source.get(name);
        let dst = dest.get(name);
        let rec = record.get(name);
        let (action, note) = decide(src, dst, rec, policy, &is_ancestor);
        refs.push(RefPlan {
            name: name.clone(),
            action,
            old: dst.cloned(),
            new: match action {
                Action::Delete => None,
                Action::Skip | Action::Unchanged => dst.cloned(),
                _ => src.cloned(),
            },
            note,
        });
    }
    let aborted = policy.divergence == Divergence::Abort
        && refs.iter().any(|r| r.note.is_some_and(Note::is_divergence));
    Plan { refs, aborted }
}

fn decide(
    src: Option<&Oid>,
    dst: Option<&Oid>,
    rec: Option<&Oid>,
    policy: Policy,
    is_ancestor: &impl Fn(&Oid, &Oid) -> bool,
) -> (Action, Option<Note>) {
    let diverged = |note: Note, resolution: Action| match policy.divergence {
        Divergence::Keep | Divergence::Abort => (Action::Skip, Some(note)),
        Divergence::Overwrite => (resolution, Some(Note::OverwritesDivergence)),
    };
    match (src, dst) {
        (None, None) => (Action::Unchanged, None),
        (Some(s), Some(d)) if s == d => (Action::Unchanged, None),
        (Some(_), None) if rec.is_some() => (Action::Create, Some(Note::RecreatesDeleted)),
        (Some(_), None) => (Action::Create, None),
        (Some(s), Some(d)) => {
            if is_ancestor(d, s) {
                // Nothing on the destination is lost, whoever put its value there.
                (Action::Update, None)
            } else if rec == Some(d) {
                (Action::Force, Some(Note::FollowsSourceForcePush))
            } else {
                // Out of band, or (with no record) a first sync onto a destination whose ref
                // is not part of the source's history.
                diverged(Note::Diverged, Action::Force)
            }
        }
        (None, Some(d)) => match policy.prune {
            Prune::Never if rec.is_some() => (Action::Skip, Some(Note::SourceDeletedKept)),
            Prune::Never => (Action::Skip, Some(Note::DestinationOnly)),
            Prune::All => (Action::Delete, None),
            Prune::Synced => match rec {
                Some(r) if r == d => (Action::Delete, None),
                Some(_) => diverged(Note::DivergedSourceDeleted, Action::Delete),
                None => (Action::Skip, Some(Note::DestinationOnly)),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(c: char) -> Oid {
        Oid::parse(&c.to_string().repeat(40)).unwrap()
    }

    /// History used by the table: a <- b <- c is one line of commits; e is unrelated (an
    /// out-of-band commit or a rewritten history).
    fn ancestry(a: &Oid, b: &Oid) -> bool {
        let line = ["a", "b", "c"];
        let pos = |o: &Oid| line.iter().position(|p| o.as_str().starts_with(p));
        match (pos(a), pos(b)) {
            (Some(i), Some(j)) => i <= j,
            _ => a == b,
        }
    }

    fn map(entries: &[(&str, char)]) -> RefMap {
        entries
            .iter()
            .map(|(n, c)| ((*n).to_owned(), oid(*c)))
            .collect()
    }

    fn one(src: Option<char>, dst: Option<char>, rec: Option<char>, policy: Policy) -> Plan {
        let m = |v: Option<char>| {
            v.map(|c| map(&[("refs/heads/main", c)]))
                .unwrap_or_default()
        };
        let (s, d, r) = (m(src), m(dst), m(rec));
        plan(
            PlanInput {
                source: &s,
                dest: &d,
                record: &r,
            },
            policy,
            ancestry,
        )
    }

    const KEEP: Policy = Policy {
        divergence: Divergence::Keep,
        prune: Prune::Synced,
    };
    const OVERWRITE: Policy = Policy {
        divergence: Divergence::Overwrite,
        prune: Prune::Synced,
    };
    const ABORT: Policy = Policy {
        divergence: Divergence::Abort,
        prune: Prune::Synced,
    };
    const PRUNE_ALL: Policy = Policy {
        divergence: Divergence::Keep,
        prune: Prune::All,
    };
    const PRUNE_NEVER: Policy = Policy {
        divergence: Divergence::Keep,
        prune: Prune::Never,
    };

    /// (what, source, destination, record, policy, action, note, aborted)
    type Case = (
        &'static str,
        Option<char>,
        Option<char>,
        Option<char>,
        Policy,
        Action,
        Option<Note>,
        bool,
    );

    #[test]
    fn decision_table() {
        use Action::*;
        #[rustfmt::skip]
        let table: &[Case] = &[
            // what,                                     src,       dst,       record,    policy,      action,    note,                                aborted
            ("in sync",                                  Some('b'), Some('b'), Some('b'), KEEP,        Unchanged, None,                                false),
            ("in sync, first sync (no record)",          Some('b'), Some('b'), None,      KEEP,        Unchanged, None,                                false),
            ("new ref on the source",                    Some('b'), None,      None,      KEEP,        Create,    None,                                false),
            ("destination lost a ref ferry pushed",      Some('b'), None,      Some('b'), KEEP,        Create,    Some(Note::RecreatesDeleted),        false),
            ("fast-forward",                             Some('c'), Some('b'), Some('b'), KEEP,        Update,    None,                                false),
            ("fast-forward, first sync onto existing",   Some('c'), Some('a'), None,      KEEP,        Update,    None,                                false),
            ("fast-forward over an out-of-band ancestor",Some('c'), Some('b'), Some('a'), KEEP,        Update,    None,                                false),
            ("source force-push is followed",            Some('e'), Some('c'), Some('c'), KEEP,        Force,     Some(Note::FollowsSourceForcePush),  false),
            ("source rewound to an ancestor",            Some('a'), Some('c'), Some('c'), KEEP,        Force,     Some(Note::FollowsSourceForcePush),  false),
            ("out-of-band commit kept",                  Some('c'), Some('e'), Some('b'), KEEP,        Skip,      Some(Note::Diverged),                false),
            ("out-of-band commit overwritten",           Some('c'), Some('e'), Some('b'), OVERWRITE,   Force,     Some(Note::OverwritesDivergence),    false),
            ("out-of-band commit aborts the destination",Some('c'), Some('e'), Some('b'), ABORT,       Skip,      Some(Note::Diverged),                true),
            ("first sync, unrelated destination ref",    Some('c'), Some('e'), None,      KEEP,        Skip,      Some(Note::Diverged),                false),
            ("first sync, destination ahead of source",  Some('b'), Some('c'), None,      KEEP,        Skip,      Some(Note::Diverged),                false),
            ("first sync, unrelated, overwrite",         Some('c'), Some('e'), None,      OVERWRITE,   Force,     Some(Note::OverwritesDivergence),    false),
            ("source deleted, destination as pushed",    None,      Some('b'), Some('b'), KEEP,        Delete,    None,                                false),
            ("source deleted, destination changed",      None,      Some('e'), Some('b'), KEEP,        Skip,      Some(Note::DivergedSourceDeleted),   false),
            ("source deleted, destination changed, overwrite", None, Some('e'), Some('b'), OVERWRITE,  Delete,    Some(Note::OverwritesDivergence),    false),
            ("source deleted, destination changed, abort",None,     Some('e'), Some('b'), ABORT,       Skip,      Some(Note::DivergedSourceDeleted),   true),
            ("destination-only ref kept (synced)",       None,      Some('e'), None,      KEEP,        Skip,      Some(Note::DestinationOnly),         false),
            ("destination-only ref removed (all)",       None,      Some('e'), None,      PRUNE_ALL,   Delete,    None,                                false),
            ("source deleted, prune all",                None,      Some('b'), Some('b'), PRUNE_ALL,   Delete,    None,                                false),
            ("source deleted, prune never",              None,      Some('b'), Some('b'), PRUNE_NEVER, Skip,      Some(Note::SourceDeletedKept),       false),
            ("destination-only, prune never",            None,      Some('e'), None,      PRUNE_NEVER, Skip,      Some(Note::DestinationOnly),         false),
            ("gone on both sides",                       None,      None,      Some('b'), KEEP,        Unchanged, None,                                false),
        ];
        for (what, src, dst, rec, policy, action, note, aborted) in table {
            let p = one(*src, *dst, *rec, *policy);
            assert_eq!(p.aborted, *aborted, "{what}: aborted");
            if src.is_none() && dst.is_none() {
                assert!(
                    p.refs.is_empty(),
                    "{what}: a ref on neither side is not planned"
                );
                continue;
            }
            let r = &p.refs[0];
            assert_eq!((r.action, r.note), (*action, *note), "{what}");
            assert_eq!(
                r.old,
                dst.map(oid),
                "{what}: old is the destination's value (the lease)"
            );
            let want_new = match action {
                Delete => None,
                Skip | Unchanged => dst.map(oid),
                _ => src.map(oid),
            };
            assert_eq!(r.new, want_new, "{what}: new");
        }
    }

    #[test]
    fn abort_blocks_every_push_to_that_destination_only_when_something_diverged() {
        let source = map(&[
            ("refs/heads/main", 'c'),
            ("refs/heads/dev", 'b'),
            ("refs/tags/v1", 'a'),
        ]);
        let dest = map(&[("refs/heads/main", 'e'), ("refs/tags/v1", 'a')]);
        let record = map(&[("refs/heads/main", 'b'), ("refs/tags/v1", 'a')]);
        let input = PlanInput {
            source: &source,
            dest: &dest,
            record: &record,
        };
        let p = plan(input, ABORT, ancestry);
        assert!(p.aborted);
        assert_eq!(
            p.pushes().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["refs/heads/dev"]
        );
        assert_eq!(p.diverged().count(), 1);
        let clean = map(&[("refs/heads/main", 'b'), ("refs/tags/v1", 'a')]);
        let p = plan(
            PlanInput {
                dest: &clean,
                ..input
            },
            ABORT,
            ancestry,
        );
        assert!(!p.aborted);
        assert_eq!(p.pushes().count(), 2);
    }

    #[test]
    fn questions_cover_every_ref_that_differs_on_both_sides() {
        let source = map(&[
            ("refs/heads/a", 'c'),
            ("refs/heads/b", 'b'),
            ("refs/heads/new", 'a'),
        ]);
        let dest = map(&[
            ("refs/heads/a", 'e'),
            ("refs/heads/b", 'b'),
            ("refs/heads/old", 'a'),
        ]);
        let q = ancestry_questions(PlanInput {
            source: &source,
            dest: &dest,
            record: &RefMap::new(),
        });
        assert_eq!(q, vec![(oid('e'), oid('c'))]);
    }

    #[test]
    fn plans_are_sorted_and_cover_the_union_of_both_sides() {
        let source = map(&[("refs/tags/z", 'a'), ("refs/heads/m", 'b')]);
        let dest = map(&[("refs/heads/a", 'e')]);
        let p = plan(
            PlanInput {
                source: &source,
                dest: &dest,
                record: &RefMap::new(),
            },
            KEEP,
            ancestry,
        );
        let names: Vec<_> = p.refs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["refs/heads/a", "refs/heads/m", "refs/tags/z"]);
    }
}
