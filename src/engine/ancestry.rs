//! The planner's ancestry questions, all answered with one git process: commits are read
//! through a single `git cat-file --batch` ([`CatFile`]) and walked here. Each question gets
//! git's own `merge-base --is-ancestor` walk (`Walk::is_ancestor`); commits read once serve
//! every question, so a destination behind on thousands of refs costs one process, not one
//! per ref.

use crate::engine::git::{GitFailure, Session};
use crate::model::refs::Oid;
use std::collections::{BinaryHeap, HashMap};

/// What the walk needs of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub parents: Vec<Oid>,
    /// The committer timestamp: the walk visits newer commits first, as git does.
    pub time: i64,
}

/// Where the walk reads commits from.
pub trait Commits {
    /// The commit `oid` names, peeled through tags when `peel` is set, with its own id; `None`
    /// when there is no such commit (an object the cache does not have, or a tag of a tree).
    fn read(
        &mut self,
        oid: &Oid,
        peel: bool,
    ) -> impl std::future::Future<Output = Result<Option<(Oid, Commit)>, GitFailure>> + Send;
}

/// The answers, in the order of the questions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    pub answers: Vec<bool>,
    /// A walk met a commit whose parent could not be read: the cache's history has a hole.
    /// That question was answered false, as `git merge-base --is-ancestor` fails on it.
    pub history_missing: bool,
}

/// For each `(ancestor, descendant)` pair, whether `ancestor` is an ancestor of (or the same
/// commit as) `descendant`. Objects `commits` does not have answer false.
pub async fn answer(
    commits: &mut impl Commits,
    questions: &[(Oid, Oid)],
) -> Result<Answers, GitFailure> {
    let mut walk = Walk {
        commits,
        graph: Graph::default(),
        history_missing: false,
    };
    let mut known: HashMap<(usize, usize), bool> = HashMap::new();
    let mut answers = Vec::with_capacity(questions.len());
    for (ancestor, descendant) in questions {
        let (Some(one), Some(two)) = (walk.peel(ancestor).await?, walk.peel(descendant).await?)
        else {
            answers.push(false);
            continue;
        };
        let answer = match known.get(&(one, two)) {
            Some(&answer) => answer,
            None => {
                let answer = walk.is_ancestor(one, two).await?;
                known.insert((one, two), answer);
                answer
            }
        };
        answers.push(answer);
    }
    Ok(Answers {
        answers,
        history_missing: walk.history_missing,
    })
}

/// The commits read so far, by index.
#[derive(Default)]
struct Graph {
    index: HashMap<Oid, Option<usize>>,
    peeled: HashMap<Oid, Option<usize>>,
    nodes: Vec<Node>,
}

struct Node {
    commit: Commit,
    /// The parents' indexes, once the walk has needed them.
    parents: Option<Vec<usize>>,
}

struct Walk<'a, C> {
    commits: &'a mut C,
    graph: Graph,
    history_missing: bool,
}

const FROM_ONE: u8 = 1;
const FROM_TWO: u8 = 2;
const STALE: u8 = 4;

/// A queued commit: the newest first, then the earliest queued (git's priority queue).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Queued {
    time: i64,
    order: std::cmp::Reverse<u64>,
    node: usize,
    /// Not stale when queued: the walk goes on while such entries remain.
    live: bool,
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Queued>,
    queued: u64,
    live: usize,
}

impl Queue {
    fn put(&mut self, node: usize, time: i64, stale: bool) {
        self.queued += 1;
        self.live += usize::from(!stale);
        self.heap.push(Queued {
            time,
            order: std::cmp::Reverse(self.queued),
            node,
            live: !stale,
        });
    }

    /// The next commit, while any commit queued is not stale.
    fn next(&mut self) -> Option<usize> {
        if self.live == 0 {
            return None;
        }
        let next = self.heap.pop()?;
        self.live -= usize::from(next.live);
        Some(next.node)
    }
}

impl<C: Commits> Walk<'_, C> {
    fn add(&mut self, oid: Oid, commit: Commit) -> usize {
        if let Some(Some(node)) = self.graph.index.get(&oid) {
            return *node;
        }
        let node = self.graph.nodes.len();
        self.graph.nodes.push(Node {
            commit,
            parents: None,
        });
        self.graph.index.insert(oid, Some(node));
        node
    }

    /// The commit `oid` peels to.
    async fn peel(&mut self, oid: &Oid) -> Result<Option<usize>, GitFailure> {
        if let Some(node) = self.graph.peeled.get(oid) {
            return Ok(*node);
        }
        let node = self
            .commits
            .read(oid, true)
            .await?
            .map(|(id, commit)| self.add(id, commit));
        self.graph.peeled.insert(oid.clone(), node);
        Ok(node)
    }

    /// The parents of `node`, read as needed; `None` when one cannot be read.
    async fn parents(&mut self, node: usize) -> Result<Option<Vec<usize>>, GitFailure> {
        if let Some(parents) = &self.graph.nodes[node].parents {
            return Ok(Some(parents.clone()));
        }
        let oids = self.graph.nodes[node].commit.parents.clone();
        let mut parents = Vec::with_capacity(oids.len());
        for oid in oids {
            let parent = match self.graph.index.get(&oid) {
                Some(known) => *known,
                None => match self.commits.read(&oid, false).await? {
                    Some((id, commit)) => Some(self.add(id, commit)),
                    None => {
                        self.graph.index.insert(oid, None);
                        None
                    }
                },
            };
            match parent {
                Some(p) => parents.push(p),
                None => return Ok(None),
            }
        }
        self.graph.nodes[node].parents = Some(parents.clone());
        Ok(Some(parents))
    }

    /// Whether `one` is an ancestor of (or is) `two`: git's `paint_down_to_common`. Commits
    /// reachable from `one` are painted one way, from `two` the other, newest first; `one` is
    /// an ancestor once `two`'s paint reaches it. A commit painted both ways is a common
    /// ancestor, and everything below it is marked stale: `one` cannot be down there. The walk
    /// ends when only stale commits remain queued.
    async fn is_ancestor(&mut self, one: usize, two: usize) -> Result<bool, GitFailure> {
        if one == two {
            return Ok(true);
        }
        let mut flags: HashMap<usize, u8> = HashMap::from([(one, FROM_ONE), (two, FROM_TWO)]);
        let mut queue = Queue::default();
        queue.put(one, self.graph.nodes[one].commit.time, false);
        queue.put(two, self.graph.nodes[two].commit.time, false);
        while let Some(node) = queue.next() {
            let mut paint = flags.get(&node).copied().unwrap_or(0);
            if paint & (FROM_ONE | FROM_TWO) == FROM_ONE | FROM_TWO {
                paint |= STALE;
            }
            let Some(parents) = self.parents(node).await? else {
                self.history_missing = true;
                return Ok(false);
            };
            for parent in parents {
                let theirs = flags.entry(parent).or_insert(0);
                if *theirs & paint == paint {
                    continue;
                }
                *theirs |= paint;
                if parent == one && *theirs & FROM_TWO != 0 {
                    return Ok(true);
                }
                let stale = *theirs & STALE != 0;
                queue.put(parent, self.graph.nodes[parent].commit.time, stale);
            }
        }
        Ok(flags.get(&one).is_some_and(|f| f & FROM_TWO != 0))
    }
}

/// Reads commits through `git cat-file --batch`.
pub struct CatFile {
    pub session: Session,
}

impl Commits for CatFile {
    async fn read(&mut self, oid: &Oid, peel: bool) -> Result<Option<(Oid, Commit)>, GitFailure> {
        let request = if peel {
            format!("{oid}^{{commit}}")
        } else {
            oid.to_string()
        };
        self.session.send(&request).await?;
        let Some(object) = self.session.read_object().await? else {
            return Ok(None);
        };
        match (object.kind.as_str(), Oid::parse(&object.id)) {
            ("commit", Some(id)) => Ok(Some((id, parse_commit(&object.body)))),
            _ => Ok(None),
        }
    }
}

/// The parents and committer time of a commit object.
fn parse_commit(body: &[u8]) -> Commit {
    let text = String::from_utf8_lossy(body);
    let mut parents = Vec::new();
    let mut time = 0;
    for line in text.lines().take_while(|l| !l.is_empty()) {
        if let Some(parent) = line.strip_prefix("parent ") {
            parents.extend(Oid::parse(parent));
        } else if let Some(committer) = line.strip_prefix("committer ") {
            // "Name <email> <seconds> <zone>"
            time = committer
                .rsplit(' ')
                .nth(1)
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
        }
    }
    Commit { parents, time }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory history: commit `i` has id `i` in hex, time `i`, and the given parents;
    /// tags peel to commits.
    struct Memory {
        commits: HashMap<Oid, Commit>,
        tags: HashMap<Oid, Oid>,
        reads: usize,
    }

    fn id(i: u64) -> Oid {
        Oid::parse(&format!("{i:040x}")).unwrap()
    }

    impl Memory {
        fn new(parents: &[&[u64]]) -> Memory {
            let commits = parents
                .iter()
                .enumerate()
                .map(|(i, ps)| {
                    (
                        id(i as u64),
                        Commit {
                            parents: ps.iter().map(|&p| id(p)).collect(),
                            time: i as i64,
                        },
                    )
                })
                .collect();
            Memory {
                commits,
                tags: HashMap::new(),
                reads: 0,
            }
        }

        /// Whether `a` is reachable from `b`, the slow obvious way.
        fn reachable(&self, a: &Oid, b: &Oid) -> bool {
            let mut todo = vec![b.clone()];
            let mut seen = std::collections::HashSet::new();
            while let Some(c) = todo.pop() {
                if &c == a {
                    return true;
                }
                if seen.insert(c.clone()) {
                    todo.extend(self.commits[&c].parents.iter().cloned());
                }
            }
            false
        }
    }

    impl Commits for Memory {
        async fn read(
            &mut self,
            oid: &Oid,
            peel: bool,
        ) -> Result<Option<(Oid, Commit)>, GitFailure> {
            self.reads += 1;
            let oid = match self.tags.get(oid) {
                Some(target) if peel => target,
                _ => oid,
            };
            Ok(self.commits.get(oid).map(|c| (oid.clone(), c.clone())))
        }
    }

    async fn ask(memory: &mut Memory, questions: &[(u64, u64)]) -> Answers {
        let questions: Vec<(Oid, Oid)> = questions.iter().map(|&(a, d)| (id(a), id(d))).collect();
        answer(memory, &questions).await.unwrap()
    }

    #[tokio::test]
    async fn answers_match_git_on_a_history_with_merges() {
        //   0 - 1 - 2 - 4 - 6
        //        \     /
        //         3 - 5 - 7      8 (unrelated root)
        let mut m = Memory::new(&[&[], &[0], &[1], &[1], &[2, 3], &[3], &[4], &[5], &[]]);
        let all: Vec<(u64, u64)> = (0..9).flat_map(|a| (0..9).map(move |d| (a, d))).collect();
        let got = ask(&mut m, &all).await;
        for (&(a, d), answer) in all.iter().zip(&got.answers) {
            assert_eq!(*answer, m.reachable(&id(a), &id(d)), "{a} -> {d}");
        }
        assert!(!got.history_missing);
        assert_eq!(m.reads, 9, "each commit is read once for all questions");
    }

    #[tokio::test]
    async fn commit_times_that_lie_do_not_change_the_answer() {
        // A long line whose times run backwards, and a side branch with newer times.
        let mut parents: Vec<Vec<u64>> = vec![vec![]];
        parents.extend((1..50).map(|i| vec![i - 1]));
        parents.push(vec![10]); // 50, branching off 10
        let refs: Vec<&[u64]> = parents.iter().map(Vec::as_slice).collect();
        let mut m = Memory::new(&refs);
        for (i, c) in m.commits.iter_mut() {
            let n = u64::from_str_radix(i.as_str(), 16).unwrap() as i64;
            c.time = if n == 50 { 1000 } else { 100 - n };
        }
        let got = ask(&mut m, &[(0, 49), (10, 50), (11, 50), (49, 0), (5, 5)]).await;
        assert_eq!(got.answers, [true, true, false, false, true]);
    }

    #[tokio::test]
    async fn tags_are_peeled_and_unknown_objects_answer_false() {
        let mut m = Memory::new(&[&[], &[0], &[1]]);
        m.tags.insert(id(100), id(0));
        m.tags.insert(id(101), id(2));
        let got = ask(
            &mut m,
            &[
                (100, 2),
                (2, 101),
                (100, 101),
                (101, 100),
                (999, 2),
                (0, 999),
            ],
        )
        .await;
        assert_eq!(got.answers, [true, true, true, false, false, false]);
        assert!(
            !got.history_missing,
            "an unknown endpoint is not a hole in the history"
        );
    }

    #[tokio::test]
    async fn a_missing_parent_answers_false_and_says_so() {
        let mut m = Memory::new(&[&[], &[0], &[1], &[2]]);
        m.commits.remove(&id(1));
        let got = ask(&mut m, &[(0, 3), (2, 3)]).await;
        assert_eq!(got.answers, [false, true]);
        assert!(got.history_missing);
    }

    #[test]
    fn commits_are_parsed_for_parents_and_committer_time() {
        let body = format!(
            "tree {}\nparent {}\nparent {}\nauthor A <a@x> 1 +0000\ncommitter C <c@x> 1700000000 +0200\n\nparent {}\n",
            id(9),
            id(1),
            id(2),
            id(3)
        );
        assert_eq!(
            parse_commit(body.as_bytes()),
            Commit {
                parents: vec![id(1), id(2)],
                time: 1_700_000_000
            }
        );
    }
}
