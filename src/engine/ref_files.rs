//! Refs read straight from git's "files" ref storage (`packed-refs` plus loose files under
//! `refs/`) instead of from a git process: a process start costs more than the read.
//!
//! - ferry's own bare cache ([`read`], [`read_named`]): a one-commit sync reads it after every
//!   fetch. It is locked by its run.
//! - A local source or destination ([`read_repository`]): what `git ls-remote` of its path would
//!   list, read where a no-op would otherwise start two processes per repository. Someone else
//!   may be writing it, so the read is git's own: git writes each ref file whole (a `.lock`
//!   file renamed into place), and loose refs are read before `packed-refs`, so a ref moved
//!   into `packed-refs` while the read runs is found in one or the other. Anything the read
//!   does not model (another ref storage, hidden refs, includes in the config, a shallow or
//!   linked repository, an odd ref name or a ref git would call broken) answers `None`: ask git.
//!
//! A repository with another ref storage (reftable) answers `None` everywhere.

use crate::model::refs::{is_plain_ref_name, Oid, RefMap};
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

/// How many symbolic refs deep a loose ref may point before it is ignored (git stops at 5).
const MAX_SYMREF_DEPTH: usize = 5;

/// Every ref under `refs/` of the bare repository `repo` with the object it names (symbolic
/// refs resolved), as `git for-each-ref` lists them; `None` when the repository does not keep
/// its refs in files. Entries git would call broken (unparsable, dangling symbolic refs) are
/// left out, as for-each-ref leaves them out.
pub fn read(repo: &Path) -> io::Result<Option<RefMap>> {
    read_files(repo, Odd::LeaveOut)
}

/// The refs `git ls-remote <path>` would list for the local repository at `path` (bare, or a
/// work tree with its `.git` directory), symbolic refs resolved; `None` when only git can say
/// (see the module's notes). Objects are not opened; git's listing does not open them either
/// (a ref naming an object the repository lacks is listed, and fetching it fails).
pub fn read_repository(path: &Path) -> io::Result<Option<RefMap>> {
    let Some(gitdir) = plain_git_dir(path)? else {
        return Ok(None);
    };
    read_files(&gitdir, Odd::AskGit)
}

/// The git directory of `path` when the repository is one [`read_repository`] models.
fn plain_git_dir(path: &Path) -> io::Result<Option<PathBuf>> {
    let dot_git = path.join(".git");
    // git tries `<path>/.git` before `<path>`; a `.git` file (a linked work tree or a
    // submodule) points elsewhere: left to git.
    let gitdir = if dot_git.is_dir() {
        dot_git
    } else if !dot_git.exists() && path.join("HEAD").is_file() && path.join("refs").is_dir() {
        path.to_path_buf()
    } else {
        return Ok(None);
    };
    if ["commondir", "shallow", "reftable"]
        .iter()
        .any(|f| gitdir.join(f).exists())
    {
        return Ok(None);
    }
    let config = match fs::read(gitdir.join("config")) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).to_ascii_lowercase(),
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    // Hidden refs change what git advertises; an include can bring anything, including
    // those; another ref storage is not files.
    if ["hiderefs", "include", "refstorage"]
        .iter()
        .any(|word| config.contains(word))
    {
        return Ok(None);
    }
    Ok(Some(gitdir))
}

/// What a read does with an entry git would skip (an unparsable loose ref, a dangling
/// symbolic ref, a name git would not accept on the command line).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Odd {
    /// Leave it out, as for-each-ref does: ferry's own cache.
    LeaveOut,
    /// Answer `None`, so that git lists the repository: someone else's.
    AskGit,
}

fn read_files(repo: &Path, odd: Odd) -> io::Result<Option<RefMap>> {
    if repo.join("reftable").exists() {
        return Ok(None);
    }
    // Loose refs first, then packed-refs (git's order): `git pack-refs` writes packed-refs
    // before it deletes the loose files, so a ref it moves is seen in one or the other.
    let mut loose = RefMap::new();
    let mut broken = Vec::new();
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
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(path);
                continue;
            }
            let Some(name) = path
                .strip_prefix(repo)
                .ok()
                .and_then(Path::to_str)
                .filter(|name| !name.ends_with(".lock"))
            else {
                if odd == Odd::AskGit && !path.to_string_lossy().ends_with(".lock") {
                    return Ok(None);
                }
                continue;
            };
            if odd == Odd::AskGit && (kind.is_symlink() || !is_plain_ref_name(name)) {
                return Ok(None);
            }
            let content = match read_ref_file(&path) {
                Ok(content) => content,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match parse_loose(&content) {
                Some(Loose::Direct(oid)) => {
                    loose.insert(name.to_owned(), oid);
                }
                Some(Loose::Symbolic(target)) => symbolic.push((name.to_owned(), target)),
                None if odd == Odd::AskGit => return Ok(None),
                None => broken.push(name.to_owned()),
            }
        }
    }
    let mut refs = match fs::read_to_string(repo.join("packed-refs")) {
        Ok(text) => parse_packed(&text),
        Err(e) if e.kind() == ErrorKind::NotFound => RefMap::new(),
        Err(e) => return Err(e),
    };
    if odd == Odd::AskGit && refs.keys().any(|name| !is_plain_ref_name(name)) {
        return Ok(None);
    }
    // A broken loose ref hides its packed value: for-each-ref lists neither.
    for name in broken {
        refs.remove(&name);
    }
    refs.extend(loose);
    let dangling = resolve_symbolic(&mut refs, symbolic);
    if odd == Odd::AskGit && dangling {
        return Ok(None);
    }
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
        match read_ref_file(&path) {
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

/// A loose ref file's text. One open and one read for the usual file (an id or a `ref: `
/// line): a destination pushed to one ref at a time holds thousands of them, and
/// `fs::read_to_string` would also ask each one's size first and read again to see its end.
fn read_ref_file(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut buf = [0u8; 256];
    let mut len = 0;
    loop {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            // A regular file reads short only at its end: no second call to learn that.
            Ok(n) if len + n < buf.len() => {
                len += n;
                break;
            }
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if len == buf.len() {
            // Longer than any ref file git writes: read the rest as it comes.
            let mut all = buf.to_vec();
            file.read_to_end(&mut all)?;
            return String::from_utf8(all).map_err(|e| io::Error::new(ErrorKind::InvalidData, e));
        }
    }
    std::str::from_utf8(&buf[..len])
        .map(str::to_owned)
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))
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
/// [`MAX_SYMREF_DEPTH`]; dangling or too-deep ones are dropped (then it answers true). A
/// loose symbolic ref hides a packed value of the same name, as in git.
fn resolve_symbolic(refs: &mut RefMap, symbolic: Vec<(String, String)>) -> bool {
    for (name, _) in &symbolic {
        refs.remove(name);
    }
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
    let dangling = resolved.len() != symbolic.len();
    refs.extend(resolved);
    dangling
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

    fn ls_remote(path: &Path) -> RefMap {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = path.display().to_string();
        crate::model::refs::parse_ref_listing(&git(dir.path(), &["ls-remote", "--refs", &url]))
    }

    #[test]
    fn a_local_repository_reads_as_ls_remote_lists_it_bare_or_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path().join("work");
        std::fs::create_dir(&repo).expect("work dir");
        git(&repo, &["init", "-q", "-b", "main", "."]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "one"]);
        git(&repo, &["tag", "-a", "v1", "-m", "annotated"]);
        git(&repo, &["branch", "packed-then-moved"]);
        git(&repo, &["pack-refs", "--all"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "two"]);
        git(&repo, &["branch", "-f", "packed-then-moved"]);
        git(&repo, &["branch", "loose-only"]);
        git(
            &repo,
            &["symbolic-ref", "refs/heads/alias", "refs/heads/main"],
        );
        let read = read_repository(&repo)
            .expect("read")
            .expect("a plain repository");
        assert_eq!(read, ls_remote(&repo));
        assert_eq!(read.len(), 5, "{read:?}");

        let bare = dir.path().join("bare.git");
        let url = repo.display().to_string();
        git(dir.path(), &["clone", "-q", "--mirror", &url, "bare.git"]);
        let read = read_repository(&bare)
            .expect("read")
            .expect("a plain repository");
        assert_eq!(read, ls_remote(&bare));
    }

    #[test]
    fn what_the_local_read_does_not_model_is_left_to_git() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fresh = |name: &str| {
            let repo = dir.path().join(name);
            std::fs::create_dir(&repo).expect("repo dir");
            git(&repo, &["init", "-q", "--bare", "-b", "main", "."]);
            let tree = git(&repo, &["mktree"]).trim().to_owned();
            let commit = git(&repo, &["commit-tree", "-m", "one", &tree])
                .trim()
                .to_owned();
            git(&repo, &["update-ref", "refs/heads/main", &commit]);
            assert!(read_repository(&repo).expect("read").is_some());
            repo
        };
        let left_to_git = |repo: &Path, why: &str| {
            assert_eq!(read_repository(repo).expect("read"), None, "{why}");
        };

        let repo = fresh("hidden");
        git(
            &repo,
            &["config", "uploadpack.hideRefs", "refs/heads/secret"],
        );
        left_to_git(&repo, "hidden refs change the listing");
        let repo = fresh("included");
        git(&repo, &["config", "include.path", "/elsewhere"]);
        left_to_git(&repo, "an included config can hide refs");
        let repo = fresh("shallow");
        std::fs::write(repo.join("shallow"), "").expect("shallow file");
        left_to_git(&repo, "a shallow repository");
        let repo = fresh("broken");
        std::fs::write(repo.join("refs/heads/broken"), "not an id\n").expect("broken ref");
        left_to_git(&repo, "a broken loose ref");
        let repo = fresh("dangling");
        git(
            &repo,
            &["symbolic-ref", "refs/heads/dangling", "refs/heads/nowhere"],
        );
        left_to_git(&repo, "a dangling symbolic ref");
        let repo = fresh("odd");
        std::fs::write(
            repo.join("refs/heads/with space"),
            format!("{}\n", "1".repeat(40)),
        )
        .expect("odd ref");
        left_to_git(&repo, "a name git would not list");
        let linked = dir.path().join("linked");
        std::fs::create_dir(&linked).expect("linked dir");
        std::fs::write(linked.join(".git"), "gitdir: /elsewhere\n").expect(".git file");
        left_to_git(&linked, "a .git file points elsewhere");
        left_to_git(&dir.path().join("missing"), "no repository at all");
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
