//! The refs of ferry's own bare cache, read straight from git's "files" ref storage
//! (`packed-refs` plus loose files under `refs/`) instead of from a `git for-each-ref`
//! process: a one-commit sync reads them after every fetch, and a process start costs more
//! than the read. Only the cache is read this way; it is locked by its run, and git writes
//! each ref file whole (a `.lock` file renamed into place), so a read never sees half a ref.
//! A repository with another ref storage (reftable) answers `None`: ask git instead.

use crate::model::refs::{Oid, RefMap};
use std::fs;
use std::io::{self, ErrorKind};
use std::path::Path;

/// How many symbolic refs deep a loose ref may point before it is ignored (git stops at 5).
const MAX_SYMREF_DEPTH: usize = 5;

/// Every ref under `refs/` of the bare repository `repo` with the object it names (symbolic
/// refs resolved), as `git for-each-ref` lists them; `None` when the repository does not keep
/// its refs in files. Entries git would call broken (unparsable, dangling symbolic refs) are
/// left out, as for-each-ref leaves them out.
pub fn read(repo: &Path) -> io::Result<Option<RefMap>> {
    if repo.join("reftable").exists() {
        return Ok(None);
    }
    let mut refs = match fs::read_to_string(repo.join("packed-refs")) {
        Ok(text) => parse_packed(&text),
        Err(e) if e.kind() == ErrorKind::NotFound => RefMap::new(),
        Err(e) => return Err(e),
    };
    let mut symbolic = Vec::new();
    let mut dirs = vec![repo.join("refs")];
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A directory git removed (an emptied namespace) while it was being walked.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
                continue;
            }
            let Some(name) = path
                .strip_prefix(repo)
                .ok()
                .and_then(Path::to_str)
                .filter(|name| !name.ends_with(".lock"))
            else {
                continue;
            };
            let content = match fs::read_to_string(&path) {
                Ok(content) => content,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match parse_loose(&content) {
                Some(Loose::Direct(oid)) => {
                    refs.insert(name.to_owned(), oid);
                }
                Some(Loose::Symbolic(target)) => symbolic.push((name.to_owned(), target)),
                None => {
                    refs.remove(name);
                }
            }
        }
    }
    resolve_symbolic(&mut refs, symbolic);
    Ok(Some(refs))
}

/// The values of `names` alone (names the repository lacks are left out), as [`read`] would
/// give them, without building a map of every ref: a narrowed run asks for one ref of a cache
/// that may hold tens of thousands. Each name's loose file wins over `packed-refs`, which is
/// scanned once for the rest. `None` as for [`read`], and also when a name is a symbolic ref
/// (then [`read`] resolves it).
pub fn read_named<'n>(
    repo: &Path,
    names: impl IntoIterator<Item = &'n String>,
) -> io::Result<Option<RefMap>> {
    if repo.join("reftable").exists() {
        return Ok(None);
    }
    let mut refs = RefMap::new();
    let mut packed: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for name in names {
        let path = repo.join(name);
        match fs::read_to_string(&path) {
            Ok(content) => match parse_loose(&content) {
                Some(Loose::Direct(oid)) => {
                    refs.insert(name.clone(), oid);
                }
                Some(Loose::Symbolic(_)) => return Ok(None),
                // Broken: for-each-ref leaves it out, whatever packed-refs says.
                None => {}
            },
            // No loose file (or a directory of refs under that name): packed-refs decides.
            Err(_) if !path.is_file() => {
                packed.insert(name);
            }
            Err(e) => return Err(e),
        }
    }
    if packed.is_empty() {
        return Ok(Some(refs));
    }
    let text = match fs::read_to_string(repo.join("packed-refs")) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Some(refs)),
        Err(e) => return Err(e),
    };
    for line in text.lines() {
        let Some((oid, name)) = line.split_once(' ') else {
            continue;
        };
        if line.starts_with('#') || !packed.contains(name) {
            continue;
        }
        if let Some(oid) = Oid::parse(oid) {
            refs.insert(name.to_owned(), oid);
        }
    }
    Ok(Some(refs))
}

enum Loose {
    Direct(Oid),
    Symbolic(String),
}

fn parse_loose(content: &str) -> Option<Loose> {
    let content = content.trim_end();
    match content.strip_prefix("ref: ") {
        Some(target) => Some(Loose::Symbolic(target.trim().to_owned())),
        None => Oid::parse(content).map(Loose::Direct),
    }
}

/// `packed-refs`: an optional `# pack-refs with: ...` header, then `<oid> <name>` lines, each
/// optionally followed by a `^<oid>` line (the tag's peeled object, not a ref of its own).
fn parse_packed(text: &str) -> RefMap {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.starts_with('^'))
        .filter_map(|line| {
            let (oid, name) = line.split_once(' ')?;
            Some((name.to_owned(), Oid::parse(oid)?))
        })
        .filter(|(name, _)| name.starts_with("refs/"))
        .collect()
}

/// Gives each symbolic ref its target's object, following chains up to
/// [`MAX_SYMREF_DEPTH`]; dangling or too-deep ones are dropped.
fn resolve_symbolic(refs: &mut RefMap, symbolic: Vec<(String, String)>) {
    let targets: std::collections::HashMap<&str, &str> = symbolic
        .iter()
        .map(|(name, target)| (name.as_str(), target.as_str()))
        .collect();
    let mut resolved = Vec::new();
    for (name, target) in &symbolic {
        let mut at = target.as_str();
        for _ in 0..MAX_SYMREF_DEPTH {
            if let Some(oid) = refs.get(at) {
                resolved.push((name.clone(), oid.clone()));
                break;
            }
            match targets.get(at) {
                Some(next) => at = next,
                None => break,
            }
        }
    }
    refs.extend(resolved);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        crate::engine::test_git(dir, args, None)
    }

    fn for_each_ref(repo: &Path) -> RefMap {
        crate::model::refs::parse_ref_listing(&git(
            repo,
            &["for-each-ref", "--format=%(objectname) %(refname)"],
        ))
    }

    #[test]
    fn reads_what_for_each_ref_lists_loose_packed_peeled_and_symbolic() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path();
        git(repo, &["init", "-q", "-b", "main", "."]);
        git(repo, &["commit", "-q", "--allow-empty", "-m", "one"]);
        git(repo, &["tag", "-a", "v1", "-m", "annotated"]);
        git(repo, &["branch", "topic/deep/name"]);
        git(repo, &["pack-refs", "--all"]);
        // Loose refs over packed ones: one moved after packing, one new, one deleted.
        git(repo, &["commit", "-q", "--allow-empty", "-m", "two"]);
        git(repo, &["branch", "loose-only"]);
        git(repo, &["branch", "-D", "topic/deep/name"]);
        git(
            repo,
            &["symbolic-ref", "refs/heads/alias", "refs/heads/main"],
        );
        git(
            repo,
            &["symbolic-ref", "refs/heads/dangling", "refs/heads/nowhere"],
        );
        std::fs::write(repo.join(".git/refs/heads/stale.lock"), "junk").expect("lock file");

        let read = read(&repo.join(".git"))
            .expect("read")
            .expect("files storage");
        assert_eq!(read, for_each_ref(repo));
        assert!(read.contains_key("refs/heads/alias"));
        assert!(!read.contains_key("refs/heads/topic/deep/name"));
    }

    #[test]
    fn named_refs_read_as_the_whole_read_gives_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path();
        git(repo, &["init", "-q", "-b", "main", "."]);
        git(repo, &["commit", "-q", "--allow-empty", "-m", "one"]);
        git(repo, &["tag", "-a", "v1", "-m", "annotated"]);
        git(repo, &["branch", "packed-only"]);
        git(repo, &["branch", "topic/deep/name"]);
        git(repo, &["pack-refs", "--all"]);
        git(repo, &["commit", "-q", "--allow-empty", "-m", "two"]);
        git(repo, &["branch", "loose-only"]);
        git(repo, &["branch", "-D", "topic/deep/name"]);
        std::fs::write(repo.join(".git/refs/heads/broken"), "not an id\n").expect("broken ref");
        let gitdir = repo.join(".git");
        let all = read(&gitdir).expect("read").expect("files storage");
        let names: Vec<String> = [
            "refs/heads/main",
            "refs/tags/v1",
            "refs/heads/packed-only",
            "refs/heads/loose-only",
            "refs/heads/topic/deep/name",
            "refs/heads/topic",
            "refs/heads/broken",
            "refs/heads/never",
        ]
        .map(String::from)
        .to_vec();
        let named = read_named(&gitdir, &names)
            .expect("read")
            .expect("files storage");
        let expected: RefMap = names
            .iter()
            .filter_map(|n| Some((n.clone(), all.get(n)?.clone())))
            .collect();
        assert_eq!(named, expected);
        assert_eq!(named.len(), 4, "{named:?}");

        git(
            repo,
            &["symbolic-ref", "refs/heads/alias", "refs/heads/main"],
        );
        let alias = vec!["refs/heads/alias".to_owned()];
        assert_eq!(read_named(&gitdir, &alias).expect("read"), None);
    }

    #[test]
    fn an_empty_repository_has_no_refs_and_reftable_is_left_to_git() {
        let dir = tempfile::tempdir().expect("temp dir");
        git(dir.path(), &["init", "-q", "--bare", "."]);
        assert_eq!(read(dir.path()).expect("read"), Some(RefMap::new()));
        std::fs::create_dir(dir.path().join("reftable")).expect("reftable dir");
        assert_eq!(read(dir.path()).expect("read"), None);
    }
}
